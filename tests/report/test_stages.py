"""Cost per stage (report/stages.py): busy-time attribution adds up to the cell's wall and CPU
time; the waste ratio sees recomputed prefixes."""
from __future__ import annotations

import csv

import pytest

from costtax.config import RunConfig
from costtax.run.profile import profile
from costtax.jsonio import read_jsonl
from costtax.report.stages import STAGE_ORDER, busy_time, stage_columns
from fakes import FakeReward, TimedEngine

pytestmark = pytest.mark.integration


def test_busy_time_splits_overlaps_equally_and_sums_to_the_window():
    iv = [(0.0, 2.0, "sample"), (1.0, 3.0, "score"), (1.5, 2.5, "score"), (4.0, 5.0, "sample")]
    b = busy_time(iv, 0.0, 6.0)
    # 0-1 sample; 1-2 sample+score split; 2-3 score; 3-4 idle; 4-5 sample; 5-6 idle
    assert b["sample"] == pytest.approx(1 + 0.5 + 1) and b["score"] == pytest.approx(0.5 + 1) and b["idle"] == pytest.approx(2)
    assert sum(b.values()) == pytest.approx(6.0)
    # calls outside the window are clipped to it
    assert sum(busy_time([(-1.0, 10.0, "sample")], 0.0, 3.0).values()) == pytest.approx(3.0)


def _rows(tmp_path, techniques, **kw):
    cfg = RunConfig(techniques=tuple(techniques), prompts=("helpful",), limit=4, max_tokens=8, out=str(tmp_path / "run"),
                    judge_calibration=False, load=("concurrency=2",), warmup_answers=0, **kw)
    res = profile(cfg, engine=TimedEngine(base_s=0.01), scorer=FakeReward())
    return {r["cell"]: r for r in csv.DictReader(open(res.run_dir / "summary.csv"))}


def f(x):
    return float(x) if x not in ("", None) else None


def test_stages_of_a_profiled_run(tmp_path):
    rows = _rows(tmp_path, ["plain", "bon:n=4", "bon:n=4,share_prefix=false", "cai:rounds=1"], cell_repeats=2)
    cells = list(read_jsonl(tmp_path / "run" / "cells.jsonl"))
    for cell, r in rows.items():
        # the stage CPU seconds are the cell's metered CPU seconds (cells.jsonl) times the stage's share
        units = [u for u in cells if u["cell"] == cell and u["status"] == "ok"]
        total = sum(u["meter"]["cpu_s"] for u in units) / int(r["answers"])
        for s in STAGE_ORDER:
            if f(r[f"stage_{s}_busy_share"]) is not None:
                assert f(r[f"stage_{s}_cpu_s_per_answer"]) == pytest.approx(f(r[f"stage_{s}_busy_share"]) * total, rel=1e-9), (cell, s)
    assert f(rows["bon:n=4"]["stage_score_busy_share"]) > 0 and rows["plain"]["stage_score_busy_share"] == ""
    assert f(rows["cai:rounds=1"]["stage_critique_tokens_per_answer"]) > 0 and f(rows["cai:rounds=1"]["stage_revise_busy_share"]) > 0
    # generation tokens per stage add up to the generation tokens computed
    r = rows["bon:n=4"]
    assert f(r["stage_sample_tokens_per_answer"]) + f(r["stage_score_tokens_per_answer"]) == pytest.approx(f(r["tokens_computed_per_answer"]))


def test_score_stage_counts_the_tokens_the_reward_model_computed(tmp_path):
    """The score stage's tokens are what the scorer says it computed (calls.jsonl
    reward_tokens_computed, a top-level field since layout 2), not what it read: the fake scorer computes a
    best-of-N group's prompt once and each response (tests/fakes.py fake_computed_tokens)."""
    rows = _rows(tmp_path, ["bon:n=4", "bon:n=4,share_prefix=false"])
    calls = [c for c in read_jsonl(tmp_path / "run" / "calls.jsonl") if c["stage"] == "score"]
    for cell in ("bon:n=4", "bon:n=4,share_prefix=false"):
        r = rows[cell]
        mine = [c for c in calls if c["cell"] == cell]
        computed = sum(c["reward_tokens_computed"] for c in mine) / int(r["answers"])
        read = sum(c["prompt_tokens"] for c in mine) / int(r["answers"])
        assert computed < read
        assert f(r["stage_score_tokens_per_answer"]) == pytest.approx(computed)
        assert f(r["reward_tokens_computed_per_answer"]) == pytest.approx(computed)


def test_waste_ratio_sees_the_prefix_recomputed_per_sample(tmp_path):
    rows = _rows(tmp_path, ["plain", "bon:n=4", "bon:n=4,share_prefix=false"])
    assert f(rows["plain"]["waste_ratio"]) == pytest.approx(1.0)
    shared, unshared = rows["bon:n=4"], rows["bon:n=4,share_prefix=false"]
    # the same samples (the fake engine's output depends on the prompt only): the same minimum
    assert f(shared["tokens_min_per_answer"]) == pytest.approx(f(unshared["tokens_min_per_answer"]))
    # without a shared prefix every sample prefills the prompt: 3 more prompts per answer
    calls = [c for c in read_jsonl(tmp_path / "run" / "calls.jsonl") if c["stage"] == "sample" and c["cell"] == "bon:n=4"]
    extra = 3 * sum(c["prompt_tokens"] for c in calls) / int(shared["answers"])
    assert f(unshared["tokens_computed_per_answer"]) - f(shared["tokens_computed_per_answer"]) == pytest.approx(extra)
    assert f(unshared["waste_ratio"]) - f(shared["waste_ratio"]) == pytest.approx(extra / f(shared["tokens_min_per_answer"]))
    # with a shared prefix the fake engine prefills the prompt once and the fake scorer computes
    # the group's prompt (with its chat tags) once: exactly the minimum
    assert f(shared["waste_ratio"]) == pytest.approx(1.0)


def _call(aid, stage, t0, t1, prompt, out=0, n=1, computed=None, reward_computed=None):
    return {"answer_id": aid, "stage": stage, "t_submit_s": t0, "t_finish_s": t1, "latency_s": t1 - t0, "prompt_tokens": prompt,
            "output_tokens": out, "n": n, "prompt_tokens_computed": computed, "reward_tokens_computed": reward_computed, "cell_repeat": 0}


def test_stage_columns_of_a_constructed_run():
    """Two best-of-2 answers in one 10 s window with 5 CPU seconds, every value worked by hand.
    a1: sample 0-4 s (prompt 10, n=2, 12 computed: a partial block recomputed; 6 out), score
        4-6 s (26 read, 16 computed: prompt once + responses); latency 6 s.
    a2: sample 1-5 s (prompt 8, n=2, 16 computed: no shared prefix; 4 out), score 5.5-7.5 s
        (20 read, the scorer does not say what it computed: 20 count); latency 6.5 s (1-7.5)."""
    calls = [_call("a1", "sample", 0.0, 4.0, 10, 6, 2, 12), _call("a1", "score", 4.0, 6.0, 26, n=2, reward_computed=16),
             _call("a2", "sample", 1.0, 5.0, 8, 4, 2, 16), _call("a2", "score", 5.5, 7.5, 20, n=2, reward_computed=float("nan"))]
    answers = [{"answer_id": "a1", "latency_s": 6.0}, {"answer_id": "a2", "latency_s": 6.5}]
    units = [{"cell_repeat": 0, "t_start_s": 0.0, "t_end_s": 10.0, "meter": {"cpu_s": 5.0}}]
    out = stage_columns(units, calls, answers)
    # busy time: 0-4 sample; 4-5 sample+score (0.5 each); 5-7.5 score; 7.5-10 idle
    assert out["stage_sample_busy_share"] == pytest.approx(0.45) and out["stage_score_busy_share"] == pytest.approx(0.30)
    assert out["stage_idle_share"] == pytest.approx(0.25)
    assert out["stage_sample_cpu_s_per_answer"] == pytest.approx(5.0 * 0.45 / 2) and out["stage_score_cpu_s_per_answer"] == pytest.approx(5.0 * 0.30 / 2)
    assert out["stage_sample_latency_share"] == pytest.approx((4 / 6 + 4 / 6.5) / 2)
    assert out["stage_score_latency_share"] == pytest.approx((2 / 6 + 2 / 6.5) / 2)
    assert out["stage_other_latency_share"] == pytest.approx((0 + 0.5 / 6.5) / 2)
    assert out["stage_critique_busy_share"] is None and out["stage_critique_tokens_per_answer"] is None
    assert out["stage_sample_tokens_per_answer"] == pytest.approx((12 + 6 + 16 + 4) / 2)
    assert out["stage_score_tokens_per_answer"] == pytest.approx((16 + 20) / 2)
    assert out["stage_sample_call_s_per_answer"] == pytest.approx(4.0) and out["stage_score_call_s_per_answer"] == pytest.approx(2.0)
    # minimum: each prompt once, each output once, the reward model reading prompt + responses
    # a1: 10 + 6 + (10 + 6) = 32; a2: 8 + 4 + (8 + 4) = 24
    assert out["tokens_min_per_answer"] == pytest.approx(56 / 2)
    assert out["tokens_computed_per_answer"] == pytest.approx((12 + 6 + 16 + 16 + 4 + 20) / 2)
    assert out["waste_ratio"] == pytest.approx(74 / 56)


def test_committed_demo_run_counts_the_reward_tokens_computed(tmp_path):
    """bench/results/demo-cpu-2026-11-27 (a real best-of-4 run, judge on vLLM CPU): the score
    stage is what its judge computed (calls.jsonl extra.reward_tokens_computed), not the tokens
    it read, and the waste ratio follows from it (values asserted below)."""
    import shutil
    from pathlib import Path

    from costtax.report import write_summary

    run = tmp_path / "demo"
    shutil.copytree(Path(__file__).resolve().parents[2] / "bench/results/demo-cpu-2026-11-27", run)
    calls = [c for c in read_jsonl(run / "calls.jsonl") if c["cell"] == "bon:n=4" and c["stage"] == "score"]
    write_summary(run)
    r = {x["cell"]: x for x in csv.DictReader(open(run / "summary.csv"))}["bon:n=4"]
    computed = sum(c["extra"]["reward_tokens_computed"] for c in calls) / int(r["answers"])
    assert computed == pytest.approx(372.25)
    assert f(r["stage_score_tokens_per_answer"]) == pytest.approx(computed) == pytest.approx(f(r["reward_tokens_computed_per_answer"]))
    assert f(r["waste_ratio"]) == pytest.approx(f(r["tokens_computed_per_answer"]) / f(r["tokens_min_per_answer"]))
    assert f(r["waste_ratio"]) == pytest.approx(697.75 / 592.5)
