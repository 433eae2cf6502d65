"""The shipped reference prior (costtax/data/noise_prior.json) and issue 27's done-when, on the
committed runs of the quiet 2-core reference machine (bench/results/aa-compare-cpu-quiet-2026-12-06):
a fresh clone (no calibration recorded) compares two identical runs with every row "ok", and
calls 32 -> 64 output tokens and the same run beside a CPU hog pinned to both cores regressions.
The held-out pair (h1, h2) ran after the prior's runs and is not among its sources."""
from __future__ import annotations

import importlib.util
import json
import re
from pathlib import Path

import pytest

pytestmark = pytest.mark.integration

ROOT = Path(__file__).resolve().parents[2]
AA = ROOT / "bench" / "results" / "aa-compare-cpu-quiet-2026-12-06"


def _script():
    spec = importlib.util.spec_from_file_location("noise_prior", ROOT / "scripts" / "noise_prior.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def test_the_shipped_prior_is_what_its_committed_runs_give():
    mod = _script()
    shipped = (ROOT / "costtax" / "data" / "noise_prior.json").read_text(encoding="utf-8")
    assert mod.render(mod.compute()) == shipped, "run python scripts/noise_prior.py"
    data = json.loads(shipped)
    assert data["pairs"] >= 6 and {"latency_p50_s", "latency_p95_s", "answers_per_s"} <= set(data["bands"])
    # a 2x slowdown must stay detectable on the reference machine: every timing band under 100%
    assert all(v < 1.0 for k, v in data["bands"].items() if k != "peak_memory_bytes"), data["bands"]


def test_the_prior_leaves_out_rows_that_ran_beside_neighbours(tmp_path):
    """The hog run (foreign_cpu_share ~23%) paired with a quiet one adds nothing to the bands."""
    mod = _script()
    quiet = mod.compute(groups=(tuple(str(AA / r) for r in ("q1", "q3")),), root=ROOT)
    with_hog = mod.compute(groups=(tuple(str(AA / r) for r in ("q1", "q3", "hog")),), root=ROOT)
    assert with_hog["bands"] == quiet["bands"] and with_hog["pairs"] == 3


def _compare(old: str, new: str, tmp_path, monkeypatch) -> tuple[int, str]:
    from typer.testing import CliRunner

    from costtax.cli import app

    monkeypatch.setenv("COSTTAX_NOISE_DIR", str(tmp_path / "fresh-clone-noise"))  # no calibration recorded
    monkeypatch.delenv("COSTTAX_NOISE_PRIOR", raising=False)  # the shipped prior, as a user gets it
    res = CliRunner().invoke(app, ["compare", str(AA / old), str(AA / new)], env={"COLUMNS": "200"})
    return res.exit_code, res.output


def _verdicts(out: str) -> list[str]:
    """The verdict column of compare's tables (their rows end in it)."""
    return [m.group(1) for m in re.finditer(r"^(?!no regression|note:).* (ok|better|REGRESSION|noise|n/a)\s*$", out, re.M)]


@pytest.mark.parametrize("old,new", [("h1", "h2"), ("h2", "h1"), ("q1", "q2"), ("q2", "q1"), ("q3", "q4")])
def test_identical_runs_compare_with_every_row_ok(tmp_path, monkeypatch, old, new):
    if not (AA / old).is_dir() or not (AA / new).is_dir():
        pytest.fail(f"committed run {old} or {new} missing under {AA}")
    rc, out = _compare(old, new, tmp_path, monkeypatch)
    v = _verdicts(out)
    assert rc == 0 and len(v) == 10 and set(v) == {"ok"}, out
    assert "prior" in out and "reference machine" in out


@pytest.mark.parametrize("new", ["t64", "hog"])
def test_more_tokens_and_a_2x_slowdown_are_regressions(tmp_path, monkeypatch, new):
    rc, out = _compare("h1" if (AA / "h1").is_dir() else "q1", new, tmp_path, monkeypatch)
    assert rc == 1 and "REGRESSION" in _verdicts(out), out
    if new == "t64":  # judged exactly: every answer has --max-tokens tokens
        assert re.search(r"output tokens/answer .*\+100\.0% .*exact\s+REGRESSION", out), out
    else:  # timing beyond the prior's band, at both levels
        assert len(re.findall(r"latency p50 .*prior\s+REGRESSION", out)) == 2, out
