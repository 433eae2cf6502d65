"""Cost per stage (report/stages.py): busy-time attribution adds up to the cell's wall and CPU
time; the waste ratio sees recomputed prefixes."""
from __future__ import annotations

import csv

import pytest

from costtax.config import RunConfig
from costtax.profile import profile
from costtax.records import read_jsonl
from costtax.report.stages import STAGE_ORDER, busy_time
from fakes import FakeReward, TimedEngine


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


def test_stages_add_up_to_the_cell_total(tmp_path):
    rows = _rows(tmp_path, ["plain", "bon:n=4", "bon:n=4,share_prefix=false", "cai:rounds=1"], cell_repeats=2)
    cells = list(read_jsonl(tmp_path / "run" / "cells.jsonl"))
    for cell, r in rows.items():
        shares = [f(r[f"stage_{s}_busy_share"]) for s in STAGE_ORDER if f(r[f"stage_{s}_busy_share"]) is not None]
        assert sum(shares) + f(r["stage_idle_share"]) == pytest.approx(1.0, abs=1e-6), cell
        cpu = [f(r[f"stage_{s}_cpu_s_per_answer"]) for s in STAGE_ORDER if f(r[f"stage_{s}_cpu_s_per_answer"]) is not None]
        units = [u for u in cells if u["cell"] == cell and u["status"] == "ok"]
        total = sum(u["meter"]["cpu_s"] for u in units) / int(r["answers"])  # the cell's CPU seconds per answer, repeats pooled
        assert cpu and sum(cpu) + f(r["stage_idle_share"]) * total == pytest.approx(total, rel=1e-6), cell
        lat = [f(r[f"stage_{s}_latency_share"]) for s in STAGE_ORDER if f(r[f"stage_{s}_latency_share"]) is not None]
        assert sum(lat) <= 1.0 + 1e-9 and sum(lat) + f(r["stage_other_latency_share"]) == pytest.approx(1.0)
    assert f(rows["bon:n=4"]["stage_score_busy_share"]) > 0 and rows["plain"]["stage_score_busy_share"] == ""
    assert f(rows["cai:rounds=1"]["stage_critique_tokens_per_answer"]) > 0 and f(rows["cai:rounds=1"]["stage_revise_busy_share"]) > 0
    # generation tokens per stage add up to the generation tokens computed
    r = rows["bon:n=4"]
    assert f(r["stage_sample_tokens_per_answer"]) + f(r["stage_score_tokens_per_answer"]) == pytest.approx(f(r["tokens_computed_per_answer"]))


def test_waste_ratio_sees_the_prefix_recomputed_per_sample(tmp_path):
    rows = _rows(tmp_path, ["plain", "bon:n=4", "bon:n=4,share_prefix=false"])
    assert f(rows["plain"]["waste_ratio"]) == pytest.approx(1.0)
    shared, unshared = f(rows["bon:n=4"]["waste_ratio"]), f(rows["bon:n=4,share_prefix=false"]["waste_ratio"])
    assert unshared > shared >= 1.0
