"""summary.csv's latency intervals follow the rule compare uses (costtax/load/blocks.py
latency_interval), on a committed closed-loop run of the quiet CPU machine: concurrency=1 holds
8 waves (a block interval), concurrency=4 holds 2 (too few: no interval), and the numbers are
compare's own."""
from __future__ import annotations

import csv
import shutil
from pathlib import Path

import pytest

pytestmark = pytest.mark.integration

RUN = Path(__file__).resolve().parents[2] / "bench" / "results" / "aa-compare-cpu-quiet-2026-12-06" / "h1"


def test_summary_intervals_are_block_intervals_and_match_compare(tmp_path):
    from costtax.compare.verdicts import load_source
    from costtax.report import write_summary

    run = tmp_path / "h1"
    shutil.copytree(RUN, run)
    write_summary(run)
    rows = {r["load"]: r for r in csv.DictReader(open(run / "summary.csv", encoding="utf-8"))}
    one, four = rows["concurrency=1"], rows["concurrency=4"]
    assert one["latency_ci95_from"] == "blocks" and four["latency_ci95_from"] == "too few blocks"
    assert four["latency_p50_ci95_lo_s"] == four["latency_p95_ci95_hi_s"] == ""
    est = {k[1].label: v for k, v in load_source(str(run), "run").cells.items()}["concurrency=1"]
    for q in (50, 95):
        lo, hi = float(one[f"latency_p{q}_ci95_lo_s"]), float(one[f"latency_p{q}_ci95_hi_s"])
        e = est[f"latency_p{q}_s"]
        assert (lo, hi) == pytest.approx((e.lo, e.hi)) and lo <= e.value <= hi
