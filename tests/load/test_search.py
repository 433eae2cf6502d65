"""--load search (costtax.load.search): the sequence against known latency curves, the capacity
interval against a noisy one, and a whole search run through profile() on a fake engine whose
latency is a + b x (answers in flight)."""
from __future__ import annotations

import asyncio
import csv
import itertools
import json
import math
import random
import time

import pytest

from costtax.config import RunConfig
from costtax.techniques.context import CellContext
from costtax.load.levels import LoadLevel
from costtax.jsonio import read_jsonl
from costtax.load.search import SearchSpec, capacity, judge, next_probe, replay
from fakes import FakeEngine, FakeReward

pytestmark = pytest.mark.unit


def _search(spec, latencies_at):
    """Run the search against a measurement function: value -> list of latencies."""
    measured = {}
    while True:
        seq, nxt = replay(spec, measured)
        if nxt is None:
            return seq, capacity(spec, seq)
        v = nxt[0]
        measured[v] = judge(spec, v, {0: latencies_at(v)}, planned=spec.planned_answers(v), achieved_answers_per_s=v / 2)


@pytest.mark.parametrize("a, b, slo, cap", [(0.5, 0.3, 3.0, 64), (1.0, 1.0, 10.5, 64), (0.2, 0.01, 1.0, 128), (2.0, 0.5, 2.6, 64)])
def test_search_finds_the_exact_capacity_of_a_linear_curve(a, b, slo, cap):
    spec = SearchSpec("concurrency", slo, 1, cap, probe_budget=16)
    seq, res = _search(spec, lambda c: [a + b * c] * spec.planned_answers(c))
    truth = math.floor((slo - a) / b + 1e-9)
    assert res.status == "bracketed" and res.capacity == truth and res.bracket_fail == truth + 1
    # doubling then bisection: at most log2 twice, within the budget
    assert res.probes <= 2 * math.ceil(math.log2(truth + 1)) + 1 <= spec.probe_budget
    assert [r for _, r in seq][0] == "start" and set(r for _, r in seq) <= {"start", "double", "bisect"}
    assert len({v.value for v, _ in seq}) == len(seq)  # no level probed twice
    # a noiseless curve: every verdict is certain, the interval is the point
    assert (res.lo, res.hi) == (truth, truth)


def test_search_cap_infeasible_budget_and_start():
    lin = lambda c: [0.1 * c] * 64  # noqa: E731  capacity 100 at SLO 10
    res = _search(SearchSpec("concurrency", 10.0, 1, 16), lin)[1]
    assert res.status == "hit_cap" and res.capacity == 16 and res.probes == 5
    res = _search(SearchSpec("concurrency", 0.05, 1, 16), lin)[1]
    assert res.status == "infeasible" and res.capacity is None and res.probes == 1
    res = _search(SearchSpec("concurrency", 10.0, 1, 1000, probe_budget=4), lin)[1]
    assert res.status == "budget" and res.capacity == 8 and res.probes == 4
    # a start above the capacity bisects down towards 1
    seq, res = _search(SearchSpec("concurrency", 0.55, 8, 64), lambda c: [0.1 * c] * 64)
    assert res.capacity == 5 and [v.value for v, _ in seq][0] == 8


def test_rate_search_brackets_within_its_resolution():
    spec = SearchSpec("rate", 2.0, 0.25, 64, probe_budget=12)
    # p95 = 1 / (mu - r): an M/M/1-like curve with mu = 3, capacity at r = 2.5
    seq, res = _search(spec, lambda r: [1 / max(3 - r, 1e-6)] * spec.planned_answers(r))
    assert res.status == "bracketed" and res.capacity <= 2.5 < res.bracket_fail <= 2.5 * 1.1 + 1e-9


def test_a_stopped_saturated_or_short_probe_does_not_hold():
    spec = SearchSpec("concurrency", 1.0, 1, 8)
    fast = {0: [0.1] * 16}
    assert judge(spec, 2, fast, planned=16).held
    # closed loop: a trend stop is drift, not failure; the finished answers' p95 decides, uncertain
    v = judge(spec, 2, fast, planned=16, stop_reason="oversaturated: x")
    assert v.held and not v.certain
    assert not judge(SearchSpec("rate", 1.0, 0.25, 8), 2, fast, planned=16, stop_reason="oversaturated: x").held
    assert not judge(spec, 2, fast, planned=16, saturated=True).held
    assert not judge(spec, 2, {0: [0.1] * 15}, planned=16).held
    # with repeats the verdict uses the median of the repeats' p95s, the CI covers each of them
    v = judge(spec, 2, {0: [0.5] * 16, 1: [0.6] * 16, 2: [1.4] * 16}, planned=16)
    assert v.held and v.p95_s == pytest.approx(0.6) and v.p95_ci95_hi_s >= 1.4 and not v.certain


def test_capacity_interval_covers_the_true_capacity_under_noise():
    """Latency a + b C + noise, noise uniform on [0, w]: the true p95 at C is a + b C + 0.95 w,
    so the true capacity is floor((S - a - 0.95 w) / b). Over 20 seeds the interval covers it
    every time, and the point estimate is inside its own interval. The SLO sits 0.01 s above
    the true p95 at C = 10, closer than the p95 of ~40 answers can resolve."""
    a, b, w, slo = 0.5, 0.25, 1.0, 3.96
    truth = math.floor((slo - a - 0.95 * w) / b)
    assert truth == 10
    widths = []
    for seed in range(20):
        rng = random.Random(seed)
        spec = SearchSpec("concurrency", slo, 1, 64, probe_budget=12)
        res = _search(spec, lambda c: [a + b * c + rng.uniform(0, w) for _ in range(spec.planned_answers(c))])[1]
        assert res.lo <= truth <= res.hi, (seed, res)
        assert res.lo <= res.capacity <= res.hi
        assert res.answers_per_s_lo <= res.answers_per_s <= res.answers_per_s_hi
        widths.append(res.hi - res.lo)
        # ... and is no wider than the noise explains: the bootstrap CI of the p95 of the ~40
        # answers near C = 10 spans about 0.13 w (order statistics 35-40 of 40 uniform draws),
        # half a level (b = 0.25 s) either side of the SLO, so at most the levels 9, 10, 11 are
        # uncertain: width <= 2 levels; in answers/s (achieved = C / 2 here) the interval reaches
        # the first failing level too: <= (2 + 1) / 2
        assert res.hi - res.lo <= 2, (seed, res)
        assert res.answers_per_s_hi - res.answers_per_s_lo <= 1.5, (seed, res)
    assert max(widths) >= 1  # the noise shows as width


def test_expand_cycles_prompts_to_the_planned_answers():
    from costtax.prompts import select_prompts

    prompts, _ = select_prompts(["helpful"], limit=3, seed=0)
    ctx = CellContext(run_id="r", cell="plain", technique="plain", engine=None, sampling=None, writer=None, epoch=0.0,
                      level=LoadLevel("concurrency", 4), cell_repeat=0)
    insts = ctx.expand(prompts, answers=8)
    assert len(insts) == 8 and len({i.answer_id for i in insts}) == 8
    assert [i.prompt.id for i in insts[:3]] == [p.id for p in prompts] and [i.answer_repeat for i in insts] == [0, 0, 0, 1, 1, 1, 2, 2]


class LinearEngine(FakeEngine):
    """Every request takes a + b x (requests in flight when it starts) seconds."""

    def __init__(self, a: float, b: float, **kw):
        super().__init__(**kw)
        self.a, self.b, self.in_flight = a, b, 0

    async def agenerate(self, request, sampling):
        import dataclasses

        self.in_flight += 1
        t0 = time.monotonic()
        try:
            res = self._results([request], sampling, t0)[0]
            await asyncio.sleep(self.a + self.b * self.in_flight)
        finally:
            self.in_flight -= 1
        t1 = time.monotonic()
        return dataclasses.replace(res, t_first_token_s=t0 + 0.001, t_finish_s=t1)


def test_profile_search_finds_floor_s_minus_a_over_b(tmp_path):
    a, b = 0.02, 0.04
    slo = a + b * 4.75  # capacity floor((S - a) / b) = 4; C=4 takes 0.18 s, C=5 0.22 s
    cfg = RunConfig(techniques=("plain",), prompts=("helpful",), limit=4, max_tokens=8, out=str(tmp_path / "run"),
                    judge_calibration=False, load=("search",), slo_p95_s=slo, search_max=16, search_probes=8,
                    warmup_answers=0)
    from costtax.run.profile import profile

    res = profile(cfg, engine=LinearEngine(a, b), scorer=FakeReward())
    assert res.status == "finished" and res.cells_ok == ("plain",)
    rows = list(csv.DictReader(open(res.run_dir / "summary.csv")))
    probes = sorted((int(r["search_probe_index"]), r["load"], r["search_role"], r["search_held"]) for r in rows)
    loads = [p[1] for p in probes]
    assert loads[:4] == ["concurrency=1", "concurrency=2", "concurrency=4", "concurrency=8"]
    assert {"concurrency=4", "concurrency=5"} <= set(loads) and len(probes) <= cfg.search_probes
    r = rows[0]
    assert float(r["capacity_concurrency"]) == 4 and r["search_status"] == "bracketed"
    assert r["search_bracket"] == "concurrency=4 held, concurrency=5 did not"
    by_load = {x["load"]: x for x in rows}
    # each probe ran k x C answers (at least 16), prompts cycled; the bracketing levels (4 held,
    # 5 did not) were re-probed twice more (--search-reprobes 2): three units each, under probes 0-2
    assert int(by_load["concurrency=4"]["answers"]) == 3 * 16 and int(by_load["concurrency=2"]["answers"]) == 16
    units = [json.loads(x) for x in open(res.run_dir / "cells.jsonl")]
    for lvl in ("concurrency=4", "concurrency=5"):
        assert sorted(u.get("probe", 0) for u in units if u["load"] == lvl) == [0, 1, 2], lvl
    assert {u.get("probe", 0) for u in units if u["load"] == "concurrency=8"} == {0}
    # the interval comes from the isotonic fit over every probe and contains the point
    assert float(r["capacity_lo"]) <= 4 <= float(r["capacity_hi"])
    assert float(by_load["concurrency=4"]["latency_p95_s"]) <= slo
    assert float(r["capacity_answers_per_s"]) == pytest.approx(float(by_load["concurrency=4"]["achieved_answers_per_s"]))
    # the failing levels stopped as soon as their p95 was out of reach (rows kept)
    assert by_load["concurrency=8"]["stop_reason"].startswith("slo_out_of_reach")
    assert int(by_load["concurrency=8"]["answers"]) < 32
    # the plan at the search's SLO takes the bracket directly, with its interval
    from costtax.report import capacity_plan

    plan = capacity_plan(res.run_dir, qps=10, slo_p95_s=slo, usd_per_device_hour=1.0).set_index("cell")
    p = plan.loc["plain"]
    assert p["capacity_answers_per_s"] == pytest.approx(float(r["capacity_answers_per_s"]))
    assert p["basis"].startswith("search: concurrency=4 held, concurrency=5 did not") and "beyond" not in p["basis"]
    assert p["replicas_needed"] == math.ceil(10 / p["capacity_answers_per_s"])
    # every verdict here is certain (CI95 at C=4 ends ~0.02 s under the SLO, at C=5 the level
    # stopped out of reach), so the interval is the point, and so are the plan's ranges
    assert (float(r["capacity_lo"]), float(r["capacity_hi"])) == (4.0, 4.0) and "interval 4..4" in p["basis"]
    assert p["capacity_answers_per_s_lo"] == pytest.approx(p["capacity_answers_per_s"]) == pytest.approx(p["capacity_answers_per_s_hi"])
    assert p["replicas_low"] == p["replicas_needed"] == p["replicas_high"]
    assert p["usd_per_1m_answers_low"] == pytest.approx(p["usd_per_1m_answers"]) == pytest.approx(p["usd_per_1m_answers_high"])
    # at another SLO the probes are read as a curve, and the basis says so
    other = capacity_plan(res.run_dir, qps=10, slo_p95_s=slo * 2).set_index("cell").loc["plain"]
    assert "search ran at p95" in other["basis"] and other["capacity_answers_per_s"] >= p["capacity_answers_per_s"]
    # a resume replays the decisions from the rows and runs nothing new
    n_cells = sum(1 for _ in open(res.run_dir / "cells.jsonl"))
    res2 = profile(cfg, resume=res.run_dir, engine=LinearEngine(a, b), scorer=FakeReward())
    assert res2.cells_ok == ("plain",) and sum(1 for _ in open(res.run_dir / "cells.jsonl")) == n_cells


def test_search_config_errors_name_the_flag():
    from costtax.errors import ConfigError

    with pytest.raises(ConfigError, match="--slo-p95-s"):
        RunConfig(load=("search",))
    for bad in (0, -1):
        with pytest.raises(ConfigError, match="--search-max"):
            RunConfig(load=("search",), slo_p95_s=5, search_max=bad)
    assert RunConfig(load=("search",), slo_p95_s=5).load_levels == ()
    spec = RunConfig(load=("search=rate",), slo_p95_s=5).search
    assert spec.mode == "rate" and spec.planned_answers(2.0) == 40 and spec.planned_answers(0.25) == 16
    assert next_probe(spec, []) == (0.25, "start")


class SwitchingReward(FakeReward):
    """A stand-in scorer whose passes cost 2 ms in cell repeat 0 and 150 ms in repeat 1."""

    def __init__(self):
        super().__init__()
        self.pass_s = 0.002

    def score(self, prompts, responses, *, harmful=None):
        time.sleep(self.pass_s)
        return super().score(prompts, responses)


def test_repeats_that_disagree_name_score_batching_with_numbers(tmp_path):
    """Repeat 0: the four answers in flight finish generating together and every reward pass
    merges all four (16 pairs). Repeat 1: every other generation call is slower, so the answers
    fall into two cohorts that alternate on the reward model (8 pairs per pass), and each pass
    costs 150 ms: p95 and the scoring share rise. The row names both, with numbers."""
    from costtax.run.profile import profile
    from fakes import TimedEngine

    scorer = SwitchingReward()
    turn = itertools.count()
    state = {"repeat": 0}

    def on_event(kind, data):
        if kind == "cell_start":
            state["repeat"] = data["cell_repeat"]
            scorer.pass_s = 0.002 if data["cell_repeat"] == 0 else 0.15

    engine = TimedEngine(base_s=0.04, slow_s=0.10, slow=lambda rid: state["repeat"] == 1 and next(turn) % 2 == 0)
    cfg = RunConfig(techniques=("bon:n=4",), prompts=("helpful",), limit=8, max_tokens=8, out=str(tmp_path / "run"),
                    judge_calibration=False, load=("concurrency=4",), cell_repeats=2, warmup_answers=4,
                    score_max_wait_ms=25,  # absorbs timer jitter on a busy machine; the slow calls land 60 ms later
                    score_gather_ms=0)  # the greedy pass, whose cohorts this test needs
    res = profile(cfg, engine=engine, scorer=scorer, eval_scorer=FakeReward(), on_event=on_event)
    row = next(r for r in csv.DictReader(open(res.run_dir / "summary.csv")) if r["cell"] == "bon:n=4")
    pairs = [float(x) for x in row["repeat_score_pairs_per_pass"].split(";")]
    shares = [float(x) for x in row["repeat_score_share_of_wall"].split(";")]
    assert pairs[0] >= 12 and pairs[1] <= 10 and shares[1] > 2 * shares[0], (pairs, shares)
    note = row["repeat_drift_note"]
    assert note.startswith("latency p95 ") and "score batching moved: pairs per pass" in note and "scoring share of wall" in note
    assert f"{pairs[0]:.1f} -> {pairs[1]:.1f}" in note
    # the note prints the exact shares to 2 places, the column holds them rounded: compare as numbers
    import re

    got = [float(x) for x in re.search(r"scoring share of wall ([0-9.]+) -> ([0-9.]+)", note).groups()]
    assert got == pytest.approx(shares, abs=0.006), (got, shares)


@pytest.mark.parametrize("gather_ms, full", [(0, False), (400, True)])
def test_gather_policy_keeps_reward_passes_full(tmp_path, gather_ms, full):
    """Staggered generation (every other call slower) and 150 ms reward passes split four
    answers in flight into cohorts of two (8 pairs per pass) under the default policy; holding
    a pass for the answers still in flight (--score-gather-ms) keeps every pass at 16 pairs."""
    from costtax.run.profile import profile
    from fakes import TimedEngine

    scorer = SwitchingReward()
    scorer.pass_s = 0.15
    turn = itertools.count()
    engine = TimedEngine(base_s=0.02, slow_s=0.045, slow=lambda rid: next(turn) % 2 == 0)
    cfg = RunConfig(techniques=("bon:n=4",), prompts=("helpful",), limit=8, repeats=2, max_tokens=8, out=str(tmp_path / "run"),
                    judge_calibration=False, load=("concurrency=4",), warmup_answers=0, score_gather_ms=gather_ms)
    res = profile(cfg, engine=engine, scorer=scorer, eval_scorer=FakeReward())
    rec = next(r for r in read_jsonl(res.run_dir / "cells.jsonl") if r["cell"] == "bon:n=4")
    pairs = [b["pairs"] for b in rec["score_batches"]]
    if full:
        assert all(p == 16 for p in pairs), pairs
    else:
        assert sum(p == 8 for p in pairs) >= len(pairs) // 2, pairs


def test_rate_search_runs_open_loop_probes(tmp_path):
    """search=rate: probes are rate levels (Poisson arrivals), doubled then bisected; the
    engine's latency a / (1 - b R) blows up near R = 1 / b = 25 answers/s."""
    from costtax.run.profile import profile

    cfg = RunConfig(techniques=("plain",), prompts=("helpful",), limit=4, max_tokens=8, out=str(tmp_path / "run"),
                    judge_calibration=False, load=("search=rate",), slo_p95_s=0.2, search_start=4, search_max=64,
                    search_probes=6, warmup_answers=0)
    res = profile(cfg, engine=LinearEngine(0.02, 0.04), scorer=FakeReward())
    rows = list(csv.DictReader(open(res.run_dir / "summary.csv")))
    probes = sorted((int(r["search_probe_index"]), r["load"], r["search_role"]) for r in rows)
    assert [p[1] for p in probes[:2]] == ["rate=4", "rate=8"] and all(p[1].startswith("rate=") for p in probes)
    r = rows[0]
    assert r["search_status"] in ("bracketed", "budget") and 4 <= float(r["capacity_rate"]) < 64
    assert r["capacity_concurrency"] == ""
