"""`costtax compare` by (cell, load level): two runs with three concurrency levels each, built by
a real profile run on the fake engine; one level of one run is slowed down. Exactly that level
is flagged, the other levels pass, every level gets its own block, and no estimate pools
answers of different levels. Levels present in one run only are listed, not failed."""
from __future__ import annotations

import json
import shutil
import statistics

import pytest

from costtax.cli import main
from costtax.compare.verdicts import CompareConfig, compare_sources, load_source
from costtax.config import RunConfig
from costtax.compare.estimates import unit_estimates
from costtax.load.levels import LoadLevel
from costtax.run.profile import profile
from costtax.jsonio import read_jsonl
from costtax.report import summary_records, write_summary
from costtax.store.rundata import RunData
from fakes import FakeEngine, FakeReward

pytestmark = [pytest.mark.unit, pytest.mark.filterwarnings("ignore:NVML unavailable")]
CELL = "bon:n=2"
LEVELS = ("concurrency=1", "concurrency=2", "concurrency=4")
SLOW = "concurrency=2"


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    out = tmp_path_factory.mktemp("levels") / "old"
    cfg = RunConfig(techniques=(CELL,), prompts=("helpful", "arith"), limit=8, max_tokens=16, out=str(out),
                    judge_calibration=False, load=(",".join(["concurrency=1", "2", "4"]),), warmup_answers=0,
                    # a fake engine has no queue to over-saturate: on a loaded machine the slope
                    # stop fired on scheduler jitter and cut a level short (13 of 16 answers)
                    oversaturation_stop=False)
    eng = FakeEngine(words_per_sample=12)
    eng.delay_s = 0.001
    scorer = FakeReward()
    profile(cfg, engine=eng, scorer=scorer, eval_scorer=scorer)
    return out


def _rewrite(path, fn):
    rows = [fn(r) for r in read_jsonl(path)]
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))


def _slow_level(run_dir, load, factor):
    """Every time of every cell at one load level stretched by `factor`; other levels untouched."""

    def calls(r):
        if r["load"] == load:
            r["t_finish_s"] = r["t_submit_s"] + (r["t_finish_s"] - r["t_submit_s"]) * factor
            r["latency_s"] *= factor
        return r

    def answers(r):
        if r["load"] == load:
            r["latency_s"] *= factor
        return r

    def cells(r):
        if r["load"] == load:
            r["cell_wall_s"] *= factor
            r["meter"]["foreign_cpu_share"] = 0.0
        return r

    _rewrite(run_dir / "calls.jsonl", calls)
    _rewrite(run_dir / "answers.jsonl", answers)
    _rewrite(run_dir / "cells.jsonl", cells)
    write_summary(run_dir)


def _copy(src, dst):
    shutil.copytree(src, dst)
    return dst


def test_only_the_slowed_level_is_flagged(run, tmp_path, capsys):
    new = _copy(run, tmp_path / "new")
    _slow_level(new, SLOW, 3.0)
    cfg = CompareConfig(str(run), str(new))
    res = compare_sources(load_source(cfg.old, "OLD"), load_source(cfg.new, "NEW"), cfg)
    assert {lvl.label for _, lvl in (r.key for r in res.rows)} == set(LEVELS)
    flagged = {(r.key[0], r.key[1].label) for r in res.regressions}
    assert flagged and all(label == SLOW for _, label in flagged), flagged
    assert {"latency_p50_s", "latency_p95_s"} <= {r.metric.name for r in res.regressions if r.key == (CELL, LoadLevel.from_label(SLOW))}
    assert not [r for r in res.rows if r.key[1].label != SLOW and r.verdict == "REGRESSION"]
    assert main_rc(["compare", str(run), str(new)]) == 1
    out = capsys.readouterr().out
    for label in LEVELS:  # one block per level, titled with it
        assert out.count(f"load {label}") >= 1
    assert f"{CELL} at load {SLOW} latency p50" in out


def test_estimates_never_pool_levels(run):
    rd = RunData.open(run)
    est = unit_estimates(rd, summary_records(run))
    for (cell, level), e in est.items():
        lat = [a.latency_s for a in rd.answers if a.cell == cell and a.load == level]
        assert e["latency_p50_s"].n == len(lat) == 16
        assert e["latency_p50_s"].value == pytest.approx(statistics.median(lat))
    levels = {lvl for _, lvl in est}
    assert levels == {LoadLevel.from_label(x) for x in LEVELS}


def test_levels_in_one_run_only_are_listed_not_failed(run, tmp_path, capsys):
    fewer = _copy(run, tmp_path / "fewer")
    keep = lambda r: r.get("load") != "concurrency=4"  # noqa: E731
    for name in ("calls.jsonl", "answers.jsonl", "cells.jsonl", "scores.jsonl"):
        p = fewer / name
        if p.exists():
            p.write_text("".join(json.dumps(r) + "\n" for r in read_jsonl(p) if keep(r)))
    write_summary(fewer)
    assert main_rc(["compare", str(run), str(fewer)]) == 0
    out = capsys.readouterr().out
    assert "only in OLD (not compared): load level concurrency=4 (every cell)" in out
    assert "only in NEW" not in out


def main_rc(args) -> int:
    try:
        main(args)
    except SystemExit as exc:
        return exc.code
    return 0
