"""`costtax plan` on a --load search run (fake engine): plan.csv's interval and stage-split
columns add up, plan.md has a row per cell, plan.png is drawn."""
from __future__ import annotations

import csv
import math

import pytest

from costtax.cli import main
from costtax.config import RunConfig
from costtax.run.profile import profile
from fakes import FakeReward
from test_search import LinearEngine

pytestmark = pytest.mark.unit


def f(x):
    return float(x) if x not in ("", None) else None


def test_plan_on_a_search_run_writes_csv_md_png(tmp_path, capsys):
    a, b = 0.02, 0.04
    slo = a + b * 4.75
    cfg = RunConfig(techniques=("plain", "bon:n=2"), prompts=("helpful",), limit=4, max_tokens=8, out=str(tmp_path / "run"),
                    judge_calibration=False, load=("search",), slo_p95_s=slo, search_max=8, search_probes=6, warmup_answers=0)
    res = profile(cfg, engine=LinearEngine(a, b), scorer=FakeReward())
    main(["plan", str(res.run_dir), "--qps", "20", "--slo-p95-s", repr(slo), "--usd-per-device-hour", "2"])
    out = capsys.readouterr().out
    assert "plan.md" in out and "plan.png" in out and "beyond the measured range" not in out
    rows = {r["cell"]: r for r in csv.DictReader(open(res.run_dir / "plan.csv"))}
    for cell, r in rows.items():
        cap, usd = f(r["capacity_answers_per_s"]), f(r["usd_per_1m_answers"])
        assert r["basis"].startswith("search"), r["basis"]
        assert int(r["replicas_needed"]) == math.ceil(20 / cap - 1e-9)
        assert usd == pytest.approx(1e6 * 2 / 3600 / cap)
        parts = [f(r[f"usd_per_1m_answers_{g}"]) for g in ("generation", "critique_revise", "selection", "idle")]
        assert sum(p for p in parts if p is not None) == pytest.approx(usd, rel=1e-6), cell
        if f(r["capacity_answers_per_s_lo"]):
            assert f(r["usd_per_1m_answers_high"]) >= usd
    assert f(rows["bon:n=2"]["usd_per_1m_answers_selection"]) > 0 and f(rows["plain"]["usd_per_1m_answers_selection"]) == 0
    md = (res.run_dir / "plan.md").read_text()
    assert "| `plain` |" in md and "| `bon:n=2` |" in md
    png = (res.run_dir / "plan.png").read_bytes()
    assert png[:8] == b"\x89PNG\r\n\x1a\n" and len(png) > 10_000
