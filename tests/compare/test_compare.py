"""`costtax compare`: injected regressions (slowdown, token increase, quality drop) in run
directories built by a real profile run on the fake engine are caught; identical runs pass; a
change inside both runs' CIs is reported as noise, not failed; bad input is one line, exit 2."""
from __future__ import annotations

import json
import shutil

import pytest

from costtax import stats as M
from costtax.cli import main
from costtax.compare.verdicts import CompareConfig, Estimate, beyond_noise, cell_estimates, compare_sources, load_source, parse_fraction
from costtax.config import RunConfig
from costtax.load.levels import LoadLevel
from costtax.run.profile import profile
from costtax.jsonio import read_jsonl
from costtax.report import write_summary
from fakes import FakeEngine, FakeReward

pytestmark = [pytest.mark.unit, pytest.mark.filterwarnings("ignore:NVML unavailable")]
CELL = "bon:n=4"
BATCH = LoadLevel("batch")


@pytest.fixture(scope="module")
def base_run(tmp_path_factory):
    out = tmp_path_factory.mktemp("cmp") / "base"
    cfg = RunConfig(techniques=(CELL,), prompts=("helpful", "arith"), limit=8, max_tokens=16, out=str(out), judge_calibration=False)
    scorer = FakeReward()
    profile(cfg, engine=FakeEngine(words_per_sample=12), scorer=scorer, eval_scorer=scorer)
    return out


def _copy(base, tmp_path, name):
    dst = tmp_path / name
    shutil.copytree(base, dst)
    return dst


def _rewrite(run_dir, name, fn):
    path = run_dir / name
    rows = [fn(r) for r in read_jsonl(path)]
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))


def _slow_down(run_dir, cell, factor):
    """Every time of `cell` stretched by `factor`: per-call latency, answers' latency, wall time."""

    def calls(r):
        if r["cell"] == cell:
            t0 = r["t_submit_s"]
            r["t_finish_s"] = t0 + (r["t_finish_s"] - t0) * factor
            r["latency_s"] *= factor
        return r

    def answers(r):
        if r["cell"] == cell:
            r["latency_s"] *= factor
        return r

    def cells(r):
        if r["cell"] == cell:
            r["cell_wall_s"] *= factor
        return r

    _rewrite(run_dir, "calls.jsonl", calls)
    _rewrite(run_dir, "answers.jsonl", answers)
    _rewrite(run_dir, "cells.jsonl", cells)
    write_summary(run_dir)


def _more_tokens(run_dir, cell, factor):
    def scale(r):
        if r["cell"] == cell and r.get("stage", "sample") != "eval":
            r["output_tokens"] = int(round(r["output_tokens"] * factor))
        return r

    _rewrite(run_dir, "calls.jsonl", scale)
    _rewrite(run_dir, "answers.jsonl", scale)
    write_summary(run_dir)


def _worse_answers(run_dir, cell):
    """The evaluation reward of every answer of `cell` drops below plain's: win-rate falls to 0."""

    def calls(r):
        if r["cell"] == cell and r["stage"] == "eval":
            r["rewards"] = [-10.0]
        return r

    _rewrite(run_dir, "calls.jsonl", calls)
    write_summary(run_dir)


def _compare(old, new, **limits):
    cfg = CompareConfig(str(old), str(new), **limits)
    return compare_sources(load_source(cfg.old, "OLD"), load_source(cfg.new, "NEW"), cfg)


def _cli(args) -> int:
    try:
        main(args)
    except SystemExit as exc:
        return exc.code
    return 0


def _verdicts(result, cell):
    return {r.metric.name: r.verdict for r in result.rows if r.key[0] == cell}


def test_identical_runs_pass(base_run, tmp_path, capsys):
    twin = _copy(base_run, tmp_path, "twin")
    res = _compare(base_run, twin)
    assert not res.regressions
    assert {r.verdict for r in res.rows} <= {"ok", "n/a"}
    assert {r.key for r in res.rows} == {("plain", BATCH), (CELL, BATCH)}
    assert _cli(["compare", str(base_run), str(twin)]) == 0
    assert "no regression" in capsys.readouterr().out


def test_estimates_match_summary(base_run):
    est = cell_estimates(base_run)
    rows = {r["cell"]: r for r in json.loads(json.dumps([dict(r) for r in _summary(base_run)]))}
    for cell in ("plain", CELL):
        e = est[cell]
        assert e["latency_p50_s"].value == pytest.approx(float(rows[cell]["latency_p50_s"]))
        assert e["latency_p95_s"].value == pytest.approx(float(rows[cell]["latency_p95_s"]))
        assert e["output_tokens_per_answer"].value == pytest.approx(float(rows[cell]["output_tokens_per_answer"]))
        assert e["output_tokens_per_answer"].lo <= e["output_tokens_per_answer"].value <= e["output_tokens_per_answer"].hi
        for name in ("latency_p50_s", "latency_p95_s", "answers_per_s"):
            # an offline batch releases every answer at once: one block, no within-run interval
            assert e[name].ci_from == "blocks" and not e[name].has_ci, name
        assert e["latency_p95_s"].n == 16
    assert est[CELL]["latency_p95_x"].value == pytest.approx(float(rows[CELL]["latency_p95_x"]))
    assert est[CELL]["output_tokens_per_answer_x"].value == pytest.approx(float(rows[CELL]["output_tokens_per_answer_x"]))


def _summary(run_dir):
    import csv

    with open(run_dir / "summary.csv") as fh:
        return list(csv.DictReader(fh))


def test_injected_slowdown_is_caught(base_run, tmp_path, capsys):
    slow = _copy(base_run, tmp_path, "slow")
    _slow_down(slow, CELL, 2.0)
    res = _compare(base_run, slow)
    v = _verdicts(res, CELL)
    assert v["latency_p50_s"] == "REGRESSION" and v["latency_p95_s"] == "REGRESSION" and v["answers_per_s"] == "REGRESSION"
    assert v["output_tokens_per_answer"] == "ok"
    assert all(r.verdict in ("ok", "n/a") for r in res.rows if r.key[0] == "plain")
    p95 = [r for r in res.rows if r.key[0] == CELL and r.metric.name == "latency_p95_s"][0]
    assert p95.change == pytest.approx(1.0) and p95.old.ci_from == "blocks" and not p95.old.has_ci
    assert _cli(["compare", str(base_run), str(slow), "--max-slowdown", "15%"]) == 1
    out = capsys.readouterr().out
    assert "REGRESSION" in out and "latency p95" in out
    # a limit above the injected change passes
    assert _cli(["compare", str(base_run), str(slow), "--max-slowdown", "150%"]) == 0


def test_injected_token_increase_is_caught(base_run, tmp_path):
    more = _copy(base_run, tmp_path, "tokens")
    _more_tokens(more, CELL, 1.5)
    res = _compare(base_run, more, max_tokens_increase=0.05)
    v = _verdicts(res, CELL)
    assert v["output_tokens_per_answer"] == "REGRESSION"
    assert v["latency_p50_s"] == "ok"
    row = [r for r in res.rows if r.key[0] == CELL and r.metric.name == "output_tokens_per_answer"][0]
    assert row.change == pytest.approx(0.5, abs=0.03)


def test_injected_quality_drop_is_caught(base_run, tmp_path, capsys):
    worse = _copy(base_run, tmp_path, "worse")
    _worse_answers(worse, CELL)
    res = _compare(base_run, worse, max_quality_drop=0.03)
    v = _verdicts(res, CELL)
    assert v["win_rate_vs_plain"] == "REGRESSION"
    row = [r for r in res.rows if r.key[0] == CELL and r.metric.name == "win_rate_vs_plain"][0]
    assert row.new.value == 0.0 and row.change == pytest.approx(row.old.value)
    assert v["eval_reward_mean"] == "ok"  # reported, never judged
    assert _cli(["compare", str(base_run), str(worse), "--max-quality-drop", "0.03"]) == 1
    assert "win-rate" in capsys.readouterr().out


def test_change_inside_both_cis_is_noise_not_failure(base_run, tmp_path):
    # +10% tokens on a cell whose per-answer tokens vary a lot: over a 5% limit, but each point
    # estimate lies inside the other run's bootstrap CI at n=16.
    old = cell_estimates(base_run)[CELL]["output_tokens_per_answer"]
    factor = 1.1
    assert old.lo <= old.value * factor <= old.hi, "test premise: the change must be inside the CI"
    more = _copy(base_run, tmp_path, "noisy")
    _more_tokens(more, CELL, factor)
    res = _compare(base_run, more, max_tokens_increase=0.05)
    assert _verdicts(res, CELL)["output_tokens_per_answer"] == "noise"
    assert not res.regressions


def test_beyond_noise_rule():
    old = Estimate(10.0, 9.0, 11.0)
    assert not beyond_noise(old, Estimate(10.5, 9.5, 11.5))  # each inside the other's CI
    assert not beyond_noise(old, Estimate(11.5, 10.0, 13.0))  # old inside new's CI
    assert beyond_noise(old, Estimate(12.0, 11.5, 13.0))
    assert beyond_noise(Estimate(10.0), Estimate(10.1))  # no CI on either side: points


def test_percentile_ci():
    vals = list(range(1, 101))
    lo, hi = M.percentile_ci(vals, 95)
    assert lo <= 95.05 <= hi and hi <= 100
    assert M.percentile_ci(vals, 95) == (lo, hi)  # seeded
    assert M.percentile_ci([1.0], 95) is None
    with pytest.raises(ValueError):
        M.percentile_ci(vals, 101)


def _bench_json(path, median, iqr=0.01, rounds=15, tokens=10.0):
    data = {
        "machine_info": {"cpu": {"brand_raw": "test cpu"}},
        "benchmarks": [
            {"name": "test_k", "fullname": "bench/test_x.py::test_k", "stats": {"median": median, "iqr": iqr, "rounds": rounds}, "extra_info": {}},
            {
                "name": "test_cell[bon:n=4]", "fullname": "bench/test_x.py::test_cell[bon:n=4]",
                "stats": {"median": 2.0, "iqr": 0.1, "rounds": 3},
                "extra_info": {"costtax": {"cell": "bon:n=4", "metrics": {
                    "output_tokens_per_answer": {"value": tokens, "ci95": [tokens * 0.98, tokens * 1.02], "n": 8},
                    "latency_p95_s": {"value": 1.0, "ci95": [0.9, 1.1], "n": 8},
                }}},
            },
        ],
    }
    path.write_text(json.dumps(data))
    return path


def test_benchmark_json(tmp_path, capsys):
    old = _bench_json(tmp_path / "old.json", 1.0)
    same = _bench_json(tmp_path / "same.json", 1.0)
    slow = _bench_json(tmp_path / "slow.json", 1.5)
    tok = _bench_json(tmp_path / "tok.json", 1.0, tokens=12.0)
    for new, code in ((same, 0), (slow, 1), (tok, 1)):
        assert _cli(["compare", str(old), str(new)]) == code, new
    out = capsys.readouterr().out
    assert "round time" in out and "output tokens/answer" in out
    assert "test_x.py::test_cell[bon:n=4]" in out  # brackets printed, not eaten as rich markup
    res = _compare(old, slow)
    assert _verdicts(res, "bench/test_x.py::test_k")["round_time_median_s"] == "REGRESSION"


@pytest.mark.parametrize(
    "args, needle",
    [
        (["compare", "/nonexistent/a", "/nonexistent/b"], "OLD: bad value '/nonexistent/a': no such file"),
        (["compare", "{base}", "{base}", "--max-slowdown", "15"], "--max-slowdown: bad value '15': ambiguous"),
        (["compare", "{base}", "{base}", "--max-tokens-increase", "lots"], "--max-tokens-increase"),
        (["compare", "{base}", "{base}", "--max-quality-drop", "-1"], "--max-quality-drop"),
        (["compare", "{base}", "{empty}"], "NEW: bad value"),
        (["compare", "{base}", "{bench}"], "compare two of the same kind"),
    ],
)
def test_bad_input_one_line_exit_2(base_run, tmp_path, capsys, args, needle):
    empty = tmp_path / "empty"
    empty.mkdir()
    bench = _bench_json(tmp_path / "b.json", 1.0)
    args = [a.format(base=base_run, empty=empty, bench=bench) for a in args]
    assert _cli(args) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and needle in err, err


def test_parse_fraction():
    assert parse_fraction("15%", "--x") == pytest.approx(0.15)
    assert parse_fraction("0.15", "--x") == pytest.approx(0.15)
    assert parse_fraction("none", "--x") is None


def test_config_difference_is_noted(base_run, tmp_path, capsys):
    other = _copy(base_run, tmp_path, "other-config")
    meta = json.loads((other / "run.json").read_text())
    meta["config"]["max_tokens"] = 32
    (other / "run.json").write_text(json.dumps(meta))
    assert _cli(["compare", str(base_run), str(other)]) == 0
    assert "configs differ (max_tokens: 16 -> 32)" in capsys.readouterr().out


def test_a_slowdown_measured_beside_neighbours_is_noted(base_run, tmp_path, capsys):
    """The verdict stays what the numbers say, but the note names the disturbed cell and run."""
    slow = _copy(base_run, tmp_path, "slow-busy")
    _slow_down(slow, CELL, 2.0)

    def busy(r):
        r["meter"]["foreign_cpu_share"] = 0.55 if r["cell"] == CELL else 0.02
        return r

    _rewrite(slow, "cells.jsonl", busy)
    write_summary(slow)
    # OLD quiet by construction: the base run's own reading is whatever this machine did then
    quiet = _copy(base_run, tmp_path, "quiet")

    def calm(r):
        r["meter"]["foreign_cpu_share"] = 0.02
        return r

    _rewrite(quiet, "cells.jsonl", calm)
    write_summary(quiet)
    base_run = quiet
    res = _compare(base_run, slow)
    assert _verdicts(res, CELL)["latency_p50_s"] == "REGRESSION"
    notes = [n for n in res.notes if "neighbours" in n]
    assert len(notes) == 1 and notes[0].startswith(f"NEW ran beside other processes (foreign_cpu_share: {CELL} at load batch 55%)")
    assert _cli(["compare", str(base_run), str(slow)]) == 1
    assert "inflated by neighbours" in capsys.readouterr().out


def test_record_noise_writes_this_machines_calibration_and_compare_cites_it(base_run, tmp_path, monkeypatch, capsys):
    """`compare A A2 --record-noise` on an A/A stores the timing spread per machine and costtax
    version; a later compare judges timing against it and names the file. A batch run has no block
    CI, so before the calibration its timing is judged on the limit alone ("none")."""
    from costtax.compare.noise import load_calibration

    monkeypatch.setenv("COSTTAX_NOISE_DIR", str(tmp_path / "noise"))
    slow = _copy(base_run, tmp_path, "slow-cal")
    _slow_down(slow, CELL, 1.3)
    before = [r for r in _compare(base_run, slow).rows if r.metric.name == "latency_p50_s"]
    assert {r.noise.source for r in before} == {"none"}
    # an A/A that drifted by the same 30 %: recorded as the band
    assert _cli(["compare", str(base_run), str(slow), "--record-noise"]) in (0, 1)
    assert "recorded A/A noise bands" in capsys.readouterr().out
    meta = json.loads((base_run / "run.json").read_text())["provenance"]
    cal = load_calibration(meta["machine"], meta["versions"]["costtax"])
    assert cal["bands"]["latency_p50_s"] == pytest.approx(0.3, rel=0.05)
    res = _compare(base_run, slow)
    assert not [r for r in res.regressions if r.metric.name in ("latency_p50_s", "latency_p95_s")]
    assert any(cal["path"] in n for n in res.notes)
    worse = _copy(base_run, tmp_path, "slow-2x")
    _slow_down(worse, CELL, 2.0)
    assert _verdicts(_compare(base_run, worse), CELL)["latency_p50_s"] == "REGRESSION"
    # an A/A of runs whose configs differ is refused
    other = _copy(base_run, tmp_path, "other-config")
    _rewrite_json = json.loads((other / "run.json").read_text())
    _rewrite_json["config"]["max_tokens"] = 999
    (other / "run.json").write_text(json.dumps(_rewrite_json))
    assert _cli(["compare", str(base_run), str(other), "--record-noise"]) == 2
