"""Load levels and the reward micro-batcher, without a model: closed-loop concurrency, seeded
Poisson arrivals, saturation and the time cap, on the fake engine and on bare coroutines."""
from __future__ import annotations

import asyncio
import csv
import time

import pytest

from costtax.config import RunConfig
from costtax.errors import ConfigError
from costtax.load.levels import LoadLevel, drive, parse_load, poisson_arrivals
from costtax.run.profile import profile
from costtax.jsonio import read_jsonl
from costtax.rewards.batcher import RewardBatcher
from fakes import FakeEngine, FakeReward

pytestmark = pytest.mark.unit


def test_parse_load_levels_and_errors():
    levels = parse_load(["batch", "concurrency=1,2,4", "rate=0.5,1"])
    assert [lv.label for lv in levels] == ["batch", "concurrency=1", "concurrency=2", "concurrency=4", "rate=0.5", "rate=1"]
    for bad in ["concurrency=0", "concurrency=1.5", "rate=-1", "rate=", "qps=3", "concurrency=a", "rate=1,,2"]:
        with pytest.raises(ConfigError) as exc:
            parse_load([bad])
        assert "--load" in str(exc.value)
    with pytest.raises(ConfigError, match="--load"):
        RunConfig(load=("burst",))


def test_run_config_holds_the_levels_parsed_once_and_typed(tmp_path, monkeypatch):
    import dataclasses

    import costtax.config as config_mod
    from costtax.run.rundir import config_from_run
    from costtax.store.records import RUN_JSON
    from costtax.jsonio import write_json_atomic

    cfg = RunConfig(load=("rate=0.5", "concurrency=1,2", "batch"))
    assert cfg.load_levels == (LoadLevel("rate", 0.5), LoadLevel("concurrency", 1), LoadLevel("concurrency", 2), LoadLevel("batch"))
    assert all(LoadLevel.from_label(lv.label) == lv for lv in cfg.load_levels)
    # reading the levels does not parse again; run.json keeps the specs as given, not the LoadLevels
    monkeypatch.setattr(config_mod, "parse_load", lambda *a, **k: pytest.fail("parsed again"))
    assert cfg.load_levels[1].mode == "concurrency" and cfg.load_levels[0].is_rate and cfg.load_levels[3].is_batch
    assert cfg.to_dict()["load"] == ["rate=0.5", "concurrency=1,2", "batch"] and "load_levels" not in cfg.to_dict()
    monkeypatch.undo()
    write_json_atomic(tmp_path / RUN_JSON, {"config": cfg.to_dict()})
    back = config_from_run(tmp_path)
    assert back == cfg and back.load_levels == cfg.load_levels
    assert dataclasses.replace(cfg, load=("batch",)).load_levels == (LoadLevel("batch"),)


def test_warmup_follows_the_level_shape():
    assert [LoadLevel.from_label(s).warmup_count(10, 64) for s in ("batch", "concurrency=3", "rate=9")] == [10, 3, 4]
    assert LoadLevel("batch").warmup_count(100, 64) == 64 and LoadLevel("concurrency", 80).warmup_count(100, 64) == 64
    assert RunConfig(warmup_answers=2).warmup_count(LoadLevel("batch"), 10) == 2


def test_mode_names_live_in_load_py_only():
    """No runner-side module spells a load mode: they ask a LoadLevel (mode, is_batch, label)."""
    import re
    from pathlib import Path

    root = Path(__file__).resolve().parents[2] / "costtax"
    runner = ["config.py", "run/rundir.py", "run/startup.py", "run/unit.py", "run/profile.py", "techniques/context.py",
              "store/records.py", "cli.py", "console/display.py"]
    spelled = re.compile(r"""["'](batch|concurrency|rate)["']""")
    hits = [f"{name}: {line.strip()}" for name in runner for line in (root / name).read_text().splitlines() if spelled.search(line)]
    assert not hits, hits
    assert spelled.search((root / "load" / "levels.py").read_text())


def test_poisson_arrivals_are_seeded_and_have_the_right_rate():
    a = poisson_arrivals(2000, 4.0, seed=1)
    assert a == poisson_arrivals(2000, 4.0, seed=1) and a != poisson_arrivals(2000, 4.0, seed=2)
    assert a[0] == 0 and all(x < y for x, y in zip(a, a[1:]))
    assert (len(a) - 1) / a[-1] == pytest.approx(4.0, rel=0.1)


def _work(delay_s: float, log: list):
    state = {"in_flight": 0, "peak": 0}

    async def run_one(item):
        state["in_flight"] += 1
        state["peak"] = max(state["peak"], state["in_flight"])
        log.append((item, time.monotonic()))
        await asyncio.sleep(delay_s)
        state["in_flight"] -= 1

    return run_one, state


def test_closed_loop_keeps_c_in_flight():
    log: list = []
    run_one, state = _work(0.02, log)
    res = asyncio.run(drive(LoadLevel("concurrency", 3), list(range(10)), run_one))
    assert state["peak"] == 3 and res.finished == 10 and not res.timed_out
    log2: list = []
    run_one, state = _work(0.02, log2)
    asyncio.run(drive(LoadLevel("batch"), list(range(10)), run_one))
    assert state["peak"] == 10


def test_open_loop_follows_arrivals_and_detects_saturation():
    # A fast server at a low rate keeps up ...
    log: list = []
    run_one, _ = _work(0.005, log)
    res = asyncio.run(drive(LoadLevel("rate", 50.0), list(range(20)), run_one, seed=3))
    st = res.stats(LoadLevel("rate", 50.0))
    assert not st["saturated"] and st["offered_answers_per_s"] == pytest.approx(50, rel=0.5)
    offsets = poisson_arrivals(20, 50.0, 3)
    t0 = log[0][1]
    for (_, t), off in zip(log, offsets):
        assert t - t0 == pytest.approx(off, abs=0.03)
    # ... a server that serves one answer at a time, 20 ms each, cannot follow 200 answers/s.
    lock = asyncio.Lock

    async def serial_factory():
        gate = lock()

        async def run_one(item):
            async with gate:
                await asyncio.sleep(0.02)

        return await drive(LoadLevel("rate", 200.0), list(range(20)), run_one, seed=3)

    st = asyncio.run(serial_factory()).stats(LoadLevel("rate", 200.0))
    assert st["saturated"] and st["completion_answers_per_s"] < 0.9 * st["offered_answers_per_s"]


def test_time_cap_cancels_and_marks_saturated():
    log: list = []
    run_one, _ = _work(0.5, log)
    res = asyncio.run(drive(LoadLevel("concurrency", 1), list(range(5)), run_one, timeout_s=0.2))
    assert res.timed_out and res.finished == 0
    assert res.stats(LoadLevel("concurrency", 1))["saturated"]


def test_an_answer_failure_fails_the_level_and_cancels_the_rest():
    async def run_one(item):
        if item == 2:
            raise RuntimeError("boom")
        await asyncio.sleep(1.0)

    t0 = time.monotonic()
    with pytest.raises(RuntimeError, match="boom"):
        asyncio.run(drive(LoadLevel("batch"), list(range(5)), run_one))
    assert time.monotonic() - t0 < 0.9


class CountingReward(FakeReward):
    def __init__(self):
        super().__init__()
        self.batch_sizes = []

    def score(self, prompts, responses, *, harmful=None):
        self.batch_sizes.append(len(responses))
        time.sleep(0.01)
        return super().score(prompts, responses)


def test_reward_batcher_merges_concurrent_calls_and_splits_results():
    scorer = CountingReward()

    async def main():
        b = RewardBatcher(scorer, max_pairs=8, max_wait_s=0.01)
        outs = await asyncio.gather(*(b.score(f"p{i}", [f"r{i} a", f"r{i} b c"]) for i in range(6)))
        await b.aclose()
        return b, outs

    b, outs = asyncio.run(main())
    assert sum(scorer.batch_sizes) == 12 and max(scorer.batch_sizes) <= 8 and len(scorer.batch_sizes) < 6
    direct = FakeReward().score(["p3", "p3"], ["r3 a", "r3 b c"])
    assert outs[3].rewards == pytest.approx(direct.rewards)
    assert outs[3].tokens == sum(direct.tokens)
    assert all(o.wait_s >= 0 and o.batch_calls >= 1 for o in outs)
    assert sum(x["pairs"] for x in b.batches) == 12


def test_reward_batcher_failure_reaches_every_waiting_call():
    async def main():
        b = RewardBatcher(FakeReward(fail=True), max_pairs=8, max_wait_s=0.01)
        res = await asyncio.gather(*(b.score("p", ["x"]) for _ in range(3)), return_exceptions=True)
        await b.aclose()
        return res

    assert all(isinstance(r, RuntimeError) for r in asyncio.run(main()))


class InFlightEngine(FakeEngine):
    def __init__(self, delay_s=0.01, **kw):
        super().__init__(**kw)
        self.delay, self.now, self.peak = delay_s, 0, 0

    async def agenerate(self, request, sampling):
        self.now += 1
        self.peak = max(self.peak, self.now)
        try:
            import dataclasses

            t0 = time.monotonic()
            res = self._results([request], sampling, t0)[0]
            await asyncio.sleep(self.delay)
            return dataclasses.replace(res, t_finish_s=time.monotonic(), queue_s=0.001)
        finally:
            self.now -= 1


def test_profile_load_levels_write_one_row_per_cell_and_level(tmp_path):
    engine = InFlightEngine()
    cfg = RunConfig(techniques=("bon:n=2",), prompts=("helpful",), limit=6, max_tokens=8, out=str(tmp_path / "r"),
                    judge_calibration=False, load=("concurrency=1,3", "rate=40"), warmup_answers=0, slo_p95_s=10.0)
    scorer = FakeReward()
    profile(cfg, engine=engine, scorer=scorer, eval_scorer=scorer)
    with open(tmp_path / "r" / "summary.csv") as fh:
        rows = list(csv.DictReader(fh))
    assert [(r["cell"], r["load"]) for r in rows] == [
        ("plain", "concurrency=1"), ("bon:n=2", "concurrency=1"), ("plain", "concurrency=3"), ("bon:n=2", "concurrency=3"),
        ("plain", "rate=40"), ("bon:n=2", "rate=40"),
    ]
    for r in rows:
        assert int(r["answers"]) == 6 and float(r["achieved_answers_per_s"]) > 0
        assert float(r["queue_p50_s"]) == pytest.approx(0.001)
        assert float(r["goodput_answers_per_s"]) == pytest.approx(float(r["achieved_answers_per_s"]))
        assert r["latency_p50_x"] != ""  # every level has its own plain baseline
    c1 = {r["cell"]: r for r in rows if r["load"] == "concurrency=1"}
    c3 = {r["cell"]: r for r in rows if r["load"] == "concurrency=3"}
    assert float(c3["plain"]["achieved_answers_per_s"]) > 1.5 * float(c1["plain"]["achieved_answers_per_s"])
    answers = list(read_jsonl(tmp_path / "r" / "answers.jsonl"))
    rate = sorted((a for a in answers if a["load"] == "rate=40" and a["cell"] == "plain"), key=lambda a: a["t_arrival_s"])
    assert all(a["t_arrival_s"] is not None for a in rate) and rate[-1]["t_arrival_s"] > rate[0]["t_arrival_s"]
    # bon's score calls under concurrency=3 can share reward-model passes
    calls = [c for c in read_jsonl(tmp_path / "r" / "calls.jsonl") if c["stage"] == "score"]
    assert all(c["score_wait_s"] is not None and c["score_batch_pairs"] >= 2 for c in calls)


def test_level_time_cap_keeps_finished_rows(tmp_path):
    engine = InFlightEngine(delay_s=0.3)
    cfg = RunConfig(techniques=("plain",), prompts=("helpful",), limit=6, max_tokens=8, out=str(tmp_path / "r"),
                    judge_calibration=False, load=("concurrency=1",), warmup_answers=0, level_timeout_s=1.0)
    profile(cfg, engine=engine, scorer=FakeReward(), eval_scorer=None)
    with open(tmp_path / "r" / "summary.csv") as fh:
        row = list(csv.DictReader(fh))[0]
    assert row["saturated"] == "True" and row["level_timed_out"] == "True"
    assert 1 <= int(row["answers"]) < 6
    cell = list(read_jsonl(tmp_path / "r" / "cells.jsonl"))[0]
    assert "time cap" in cell["load_stats"]["error"]


def test_sustainable_rate_interpolates_and_never_extrapolates():
    from costtax.report.plan import sustainable_rate

    pts = [(1, 1.0, 1.0), (2, 2.0, 2.0), (4, 3.0, 6.0)]  # (level, achieved answers/s, p95 s)
    cap, basis = sustainable_rate(pts, 4.0)
    assert basis == "interpolated" and cap == pytest.approx(2.5)  # p95 4 s halfway between 2 s and 6 s
    cap, basis = sustainable_rate(pts, 10.0)
    assert cap == 3.0 and basis.startswith("at least")
    cap, basis = sustainable_rate(pts, 0.5)
    assert cap is None and basis.startswith("infeasible")
    # thrashing: the highest load delivers less and misses the SLO; it is not "beyond the range"
    cap, basis = sustainable_rate([(1, 0.26, 5.0), (4, 0.28, 15.0), (8, 0.24, 38.0)], 20.0)
    assert cap == 0.28 and basis == "measured"


def test_capacity_plan_from_a_measured_curve(tmp_path):
    from costtax.report import capacity_plan

    engine = InFlightEngine(delay_s=0.02)
    cfg = RunConfig(techniques=("bon:n=2",), prompts=("helpful",), limit=6, max_tokens=8, out=str(tmp_path / "r"),
                    judge_calibration=False, load=("concurrency=1,2,6",), warmup_answers=0)
    scorer = FakeReward()
    profile(cfg, engine=engine, scorer=scorer, eval_scorer=scorer)
    plan = capacity_plan(tmp_path / "r", qps=50.0, slo_p95_s=30.0, usd_per_device_hour=3.6, min_reward=-100.0, min_accuracy=0.99).set_index("cell")
    for cell in ("plain", "bon:n=2"):
        r = plan.loc[cell]
        assert r["feasible"] and r["basis"].startswith("at least")  # a 30 s SLO is met at every level
        assert r["replicas_needed"] == pytest.approx(-(-50 // r["capacity_answers_per_s"]))
        assert r["usd_per_1m_answers"] == pytest.approx(1e6 * 3.6 / 3600 / r["capacity_answers_per_s"])
        assert r["quality_floor_holds"] is False or r["quality_floor_holds"] == False  # noqa: E712  (no accuracy on helpful)
    assert (tmp_path / "r" / "load.png").is_file()
