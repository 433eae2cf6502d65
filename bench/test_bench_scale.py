"""Smoke run of bench/scale_rundirs.py in `pytest bench`: a small synthetic run directory goes
through RunData.open, report, plan and compare in subprocesses, each timed with its peak memory.
The 1k/10k/100k measurements are the script's (bench/results/scale-*.json), not CI's."""
from __future__ import annotations

import os
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.integration

sys.path.insert(0, str(Path(__file__).resolve().parent))

import scale_rundirs  # noqa: E402


def test_synthetic_run_goes_through_every_step(tmp_path):
    n = int(os.environ.get("COSTTAX_BENCH_SCALE_ANSWERS", "300"))
    res = scale_rundirs.bench([n], tmp_path)
    row = res["sizes"][0]
    assert row["answers"] == n
    for name, step in row["steps"].items():
        assert step["rc"] in (0, 1), (name, step)  # compare exits 1 on a regression between two seeds
        assert step["wall_s"] > 0 and step["peak_rss_mb"] > 0
    rd = scale_rundirs.make_run(tmp_path / "again", n, seed=0)
    assert (rd / "answers.jsonl").read_bytes() == (tmp_path / f"n{n}" / "answers.jsonl").read_bytes()  # seeded
    import json

    answers = [json.loads(x) for x in (rd / "answers.jsonl").read_text().splitlines()]
    calls = (rd / "calls.jsonl").read_text().count("\n")
    assert len(answers) == n // 3 * 3
    assert calls == len(answers) * 11 // 3  # plain 2, bon 3, cai:rounds=2 6 calls per answer
