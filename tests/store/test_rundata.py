"""RunData, the one reader of a run directory: de-duplication across resumed sessions, typed unit
keys and records, reference answers from the recorded counts, summary-only directories, and bad
directories refused with one line naming the file (report, plan, compare alike, exit 2) while a
torn last line is still tolerated. Runs are copies of the frozen golden run (tests/golden/old:
interrupted mid-cell and resumed)."""
from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from costtax.cli import main
from costtax.load.levels import LoadLevel
from costtax.jsonio import read_jsonl
from costtax.store.rundata import RunData, RunDataError, UnitKey

pytestmark = pytest.mark.unit

GOLDEN = Path(__file__).resolve().parents[1] / "golden" / "old"
CAPACITY = Path(__file__).resolve().parents[2] / "bench" / "results" / "capacity-cpu-2026-11-27"


@pytest.fixture
def run(tmp_path):
    return Path(shutil.copytree(GOLDEN, tmp_path / "run"))


def test_resumed_session_is_deduplicated():
    rd = RunData.open(GOLDEN)
    raw_answers = list(read_jsonl(GOLDEN / "answers.jsonl"))
    raw_calls = list(read_jsonl(GOLDEN / "calls.jsonl"))
    assert len({a.answer_id for a in rd.answers}) == len(rd.answers)
    owner = {a.answer_id: a.session for a in rd.answers}
    orphans = [c for c in raw_calls if owner.get(c["answer_id"]) != c["session"]]
    assert orphans, "the golden run must hold calls of a killed session's unfinished answer"
    assert len(rd.calls) == len(raw_calls) - len(orphans)
    assert all(owner[c.answer_id] == c.session for c in rd.calls)
    assert len({a.session for a in rd.answers}) == 2 and len(rd.answers) == len({a["answer_id"] for a in raw_answers})


def test_units_are_typed_and_keyed():
    rd = RunData.open(GOLDEN)
    keys = {u.key for u in rd.units}
    assert len(keys) == len(rd.units) == 12
    assert UnitKey("bon:n=2", LoadLevel("concurrency", 2), 1) in keys
    assert rd.levels == (LoadLevel("batch"), LoadLevel("concurrency", 2))
    assert all(isinstance(a.load, LoadLevel) for a in rd.answers)


def test_fields_the_report_reads_are_typed_not_extra():
    rd = RunData.open(GOLDEN)
    assert all("queue_s" not in c.extra and "score_wait_s" not in c.extra for c in rd.calls)
    assert all(hasattr(c, "queue_s") for c in rd.calls)  # recorded as null by the fake engine
    score = [c for c in rd.calls if c.stage == "score"]
    assert score and all(c.score_wait_s is not None and c.score_batch_pairs for c in score)
    bon = rd.answers_at("bon:n=2")
    assert all(a.candidate_texts and len(a.candidate_texts) == 2 for a in bon)
    evaluated = {c.answer_id for c in rd.calls if c.stage == "eval"}
    assert evaluated and all((a.eval_reward is not None) == (a.answer_id in evaluated) for a in rd.answers)


def test_reference_answers_follow_the_recorded_counts(run):
    meta = json.loads((run / "run.json").read_text())
    meta["config"]["limit"] = 1  # a changed limit must not matter: the recorded counts win
    (run / "run.json").write_text(json.dumps(meta))
    rd = RunData.open(run)
    arith = [p for p in rd.prompts if p.source == "arith"]
    assert len(arith) == 3 and all(rd.reference_answers[p.id] is not None for p in arith)
    assert {p.effective_scorer for p in rd.prompts} == {"reward", "exact", "refusal"}


def test_summary_only_directory():
    rd = RunData.open(CAPACITY)
    assert rd.summary_only and rd.answers == () and rd.units == ()
    assert [lv.label for lv in rd.levels] == ["concurrency=1", "concurrency=2", "concurrency=4", "concurrency=8"]


def test_torn_last_line_is_tolerated(run):
    with open(run / "answers.jsonl", "a") as fh:
        fh.write('{"run_id": "x", "cell": "pl')
    assert len(RunData.open(run).answers) == len(RunData.open(GOLDEN).answers)


def _break(run, how):
    if how == "missing":
        shutil.rmtree(run)
    elif how == "no run.json":
        (run / "run.json").unlink()
    elif how == "invalid":
        (run / "run.json").write_text('{"run_id": "x", "config": ')
    elif how == "newer":
        meta = json.loads((run / "run.json").read_text())
        (run / "run.json").write_text(json.dumps({**meta, "schema_version": 99}))
    elif how == "unknown":
        meta = json.loads((run / "run.json").read_text())
        (run / "run.json").write_text(json.dumps({**meta, "schema_version": "v1"}))
    elif how == "foreign":
        rows = list(read_jsonl(run / "answers.jsonl"))
        rows[3]["run_id"] = "20990101-000000-abcdef"
        (run / "answers.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))


CASES = [
    ("missing", "run: no such directory"),
    ("no run.json", "run.json: missing"),
    ("invalid", "run.json: not valid JSON (line 1"),
    ("newer", "run.json: layout 99 is newer than this costtax reads"),
    ("unknown", "run.json: unknown layout"),
    ("foreign", "answers.jsonl: row 4 belongs to run 20990101-000000-abcdef"),
]


@pytest.mark.parametrize("how, needle", CASES)
def test_bad_directory_is_one_error(run, how, needle):
    _break(run, how)
    with pytest.raises(RunDataError, match=None) as exc:
        RunData.open(run)
    assert needle in str(exc.value) and "\n" not in str(exc.value)


def _cli(args) -> int:
    try:
        main(args)
    except SystemExit as exc:
        return exc.code
    return 0


CLI_CASES = [(cmd, how, "no such" if how == "missing" else needle.split(": ", 1)[-1].split(" (")[0])
             for cmd in ("report", "plan", "compare") for how, needle in CASES
             if not (cmd == "plan" and how == "foreign")]  # plan reads summary.csv only


@pytest.mark.parametrize("command, how, needle", CLI_CASES)
def test_cli_refuses_bad_directory_in_one_line(run, capsys, command, how, needle):
    _break(run, how)
    args = {"report": ["report", str(run)], "plan": ["plan", str(run), "--qps", "1", "--slo-p95-s", "1"],
            "compare": ["compare", str(GOLDEN), str(run)]}[command]
    assert _cli(args) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1, err
    assert needle in err, err


@pytest.mark.parametrize("how, needle", [("invalid", "run.json: not valid JSON"), ("foreign", "answers.jsonl: row 4 belongs to run")])
def test_plugin_assertion_on_a_bad_run_fails_in_one_line(run, how, needle):
    """assert_cost on a summary row whose run directory is unreadable fails the test with
    RunData's line (pytest.fail without a traceback), not an exception from deep inside."""
    from costtax.compare.assertions import assert_cost

    row = {"cell": "bon:n=2", "run_dir": str(run), "latency_p95_x": 1.0}
    _break(run, how)
    with pytest.raises(pytest.fail.Exception) as exc:
        assert_cost(row, max_latency_p95_x=2.0)
    assert needle in str(exc.value) and "\n" not in str(exc.value).strip()


def test_report_on_a_summary_only_directory_keeps_its_summary(tmp_path, capsys):
    """The committed capacity runs hold run.json and summary.csv (one also cells.jsonl), no
    answers: `costtax report` prints their table and leaves summary.csv byte-identical."""
    for name in ("capacity-cpu-2026-11-27", "capacity-cpu-2026-11-27-quiet"):
        src = CAPACITY.parent / name
        dst = tmp_path / name
        dst.mkdir()
        for f in ("run.json", "summary.csv", "cells.jsonl"):
            if (src / f).exists():
                shutil.copy(src / f, dst / f)
        assert RunData.open(dst).summary_only
        assert _cli(["report", str(dst)]) == 0
        assert (dst / "summary.csv").read_bytes() == (src / "summary.csv").read_bytes()
        assert "concurrency=8" in capsys.readouterr().out
