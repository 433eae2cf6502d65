"""Golden test, layer (a): the frozen run directories under tests/golden/ (built once by
tests/golden/make_golden.py with the fake engine and committed: three cells, batch and
concurrency=2, two cell repeats, a run interrupted mid-cell and resumed (two sessions, an orphan
call), helpful/arith/harmful prompts with scores.jsonl, every record file) must give
byte-identical summary.csv, plan.csv and `costtax compare` output to the stored files in
tests/golden/expected/, while the code that reads runs is refactored.

Nothing is masked: every input is frozen on disk and every bootstrap is seeded, so every byte is
determined by the code. The only thing kept out is what names this machine: the compare output
is produced with relative paths (OLD `old`, NEW `new`, in a temporary copy), because the
absolute path of a checkout is not the code's doing. An intended change of output (a new
column, compare by load level) regenerates the expected files in its own commit that says why:

    PYTHONPATH=$PWD .venv/bin/python tests/test_golden.py regen
"""
from __future__ import annotations

import contextlib
import io
import os
import shutil
import sys
from pathlib import Path

import pytest

GOLDEN = Path(__file__).resolve().parent / "golden"
EXPECTED = GOLDEN / "expected"
RUNS = ("old", "new")
PLAN_ARGS = ["--qps", "3", "--slo-p95-s", "0.5", "--usd-per-device-hour", "2.5", "--min-accuracy", "0.1"]

pytestmark = [pytest.mark.unit, pytest.mark.filterwarnings("ignore")]


def _cli(args: list[str]) -> tuple[int, str]:
    from costtax.cli import main

    out = io.StringIO()
    rc = 0
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(io.StringIO()):
        try:
            main(args)
        except SystemExit as exc:
            rc = int(exc.code or 0)
    return rc, out.getvalue()


def produce(work: Path) -> dict[str, bytes]:
    """Every golden artifact, built from fresh copies of the frozen runs under `work`."""
    from costtax.report import write_summary

    out: dict[str, bytes] = {}
    for name in RUNS:
        dst = work / name
        shutil.copytree(GOLDEN / name, dst)
        (dst / "summary.csv").unlink()  # rebuilt from the records by the code under test
        write_summary(dst)
        out[f"{name}.summary.csv"] = (dst / "summary.csv").read_bytes()
        rc, _ = _cli(["plan", str(dst), *PLAN_ARGS])
        assert rc == 0, f"costtax plan {name} exited {rc}"
        out[f"{name}.plan.csv"] = (dst / "plan.csv").read_bytes()
    cwd = os.getcwd()
    os.chdir(work)
    # compare as a user gets it: the shipped reference prior, no calibration (tests/conftest.py
    # switches the prior off for the other tests; a script regen never had it off)
    prior = os.environ.pop("COSTTAX_NOISE_PRIOR", None)
    try:
        rc, text = _cli(["compare", "old", "new"])
    finally:
        os.chdir(cwd)
        if prior is not None:
            os.environ["COSTTAX_NOISE_PRIOR"] = prior
    out["compare.txt"] = f"{text}exit code: {rc}\n".encode()
    return out


def test_golden_outputs_are_byte_identical(tmp_path):
    got = produce(tmp_path)
    stored = sorted(p.name for p in EXPECTED.iterdir())
    assert stored == sorted(got), "expected files and produced artifacts differ in name"
    for name, data in got.items():
        want = (EXPECTED / name).read_bytes()
        if data != want:
            a, b = want.decode().splitlines(), data.decode().splitlines()
            first = next((i for i, (x, y) in enumerate(zip(a, b)) if x != y), min(len(a), len(b)))
            raise AssertionError(
                f"{name} changed at line {first + 1}:\n  stored:   {a[first] if first < len(a) else '<end>'}\n"
                f"  produced: {b[first] if first < len(b) else '<end>'}\n"
                "An intended change regenerates tests/golden/expected in its own commit (see this file's docstring)."
            )


def test_golden_runs_hold_what_the_test_claims():
    """The frozen runs keep the shapes the golden test is meant to cover."""
    import json

    from costtax.jsonio import read_jsonl

    for name in RUNS:
        d = GOLDEN / name
        for f in ("run.json", "calls.jsonl", "answers.jsonl", "cells.jsonl", "scores.jsonl", "summary.csv"):
            assert (d / f).is_file(), f"{name}/{f} missing"
        cells = list(read_jsonl(d / "cells.jsonl"))
        assert {c["load"] for c in cells} == {"batch", "concurrency=2"}
        assert {c["cell_repeat"] for c in cells} == {0, 1}
        assert len({c["cell"] for c in cells}) == 3
        assert any(True for _ in read_jsonl(d / "scores.jsonl"))
    meta = json.loads((GOLDEN / "old" / "run.json").read_text())
    assert [e["event"] for e in meta["events"]][:2] == ["start", "resume"]
    answers = list(read_jsonl(GOLDEN / "old" / "answers.jsonl"))
    assert len({a["session"] for a in answers}) == 2


if __name__ == "__main__" and sys.argv[1:] == ["regen"]:
    import tempfile

    sys.path.insert(0, str(Path(__file__).resolve().parent))
    with tempfile.TemporaryDirectory() as tmp:
        arts = produce(Path(tmp))
    shutil.rmtree(EXPECTED, ignore_errors=True)
    EXPECTED.mkdir()
    for name, data in arts.items():
        (EXPECTED / name).write_bytes(data)
        print(f"wrote {EXPECTED / name}")
