"""Figures that code restates from a recorded measurement equal the recording, and a recording's
provenance names a commit that could have produced it."""
from __future__ import annotations

import ast
import hashlib
import json
import re
import subprocess
from pathlib import Path

import pytest

pytestmark = pytest.mark.unit

ROOT = Path(__file__).resolve().parents[2]


def test_refusal_threshold_is_the_recorded_cut():
    """CALIBRATED_THRESHOLDS restates the most accurate cut on the measure set, recorded in
    bench/results/refusal-agreement-2026-11-27-q-comply.json (rounded to 3 decimals)."""
    from costtax.rewards.refusal import CALIBRATED_THRESHOLDS

    rec = json.loads((ROOT / "bench/results/refusal-agreement-2026-11-27-q-comply.json").read_text())
    key = (rec["judge_provenance"]["name"], rec["judge_provenance"]["refusal_question"])
    assert CALIBRATED_THRESHOLDS == {key: round(rec["judge_threshold_from_measure"], 3)}


def _git(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run(["git", "-C", str(ROOT), *args], capture_output=True)


def _imports(source: str) -> list[tuple[str, list[str]]]:
    """(module, names) of every `from costtax... import ...` in a script, lazy ones included."""
    out = []
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.ImportFrom) and node.module and node.module.startswith("costtax"):
            out.append((node.module, [a.name for a in node.names]))
    return out


def tree_problems(commit: str, script: str, script_sha256: str) -> list[str]:
    """What the tree of `commit` lacks to have run `script` as recorded: the script with that
    hash, and each costtax module (and name) it imports."""
    shown = _git("show", f"{commit}:{script}")
    if shown.returncode:
        return [f"{script} not in {commit[:10]}"]
    problems = []
    if hashlib.sha256(shown.stdout).hexdigest() != script_sha256:
        problems.append(f"{script} in {commit[:10]} is not the script that ran")
    for module, names in _imports(shown.stdout.decode()):
        base = module.replace(".", "/")
        for path in (f"{base}.py", f"{base}/__init__.py"):
            text = _git("show", f"{commit}:{path}")
            if not text.returncode:
                break
        else:
            problems.append(f"{module} missing in {commit[:10]}")
            continue
        body = text.stdout.decode()
        for name in names:
            submodule = _git("cat-file", "-e", f"{commit}:{base}/{name}.py").returncode == 0
            if not submodule and not re.search(rf"\b{re.escape(name)}\b", body):  # defined or re-exported
                problems.append(f"{module}.{name} missing in {commit[:10]}")
    return problems


def test_calibration_records_the_commit_that_ran_it():
    data = json.loads((ROOT / "costtax/rewards/data/public_calibration.json").read_text())
    prov = data["provenance"]
    commit = prov["git_commit"].removesuffix("+dirty")
    if _git("cat-file", "-e", f"{commit}^{{commit}}").returncode:
        pytest.skip(f"commit {commit[:10]} not in this clone (shallow?): provenance not checkable here")
    assert tree_problems(commit, prov["script"], prov["script_sha256"]) == []
    recorded = prov.get("git_commit_recorded")
    if recorded:  # the HEAD the script wrote at the end, kept with the note that explains it
        assert prov["git_commit_note"] and tree_problems(recorded, prov["script"], prov["script_sha256"])
