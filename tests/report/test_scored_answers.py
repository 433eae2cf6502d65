"""costtax.report.scored_answers: per-cell pass@1 and refusal rates, and deltas paired by prompt."""
from __future__ import annotations

import pytest

from costtax.report import scored_answers as M

pytestmark = pytest.mark.unit


def code(pid, passed, reason=None, cand=None):
    e = {"prompt_id": pid, "scorer": "pass_at_k", "code_passed": passed, "code_fail_reason": reason}
    if cand is not None:
        e.update(candidates_n=cand[0], candidates_passed=cand[1])
    return e


def refusal(pid, rule, judge):
    return {"prompt_id": pid, "scorer": "refusal", "refusal_rule": rule, "refusal_judge": judge}


def test_summarize_scored_answers():
    evals = [
        code("a", True, cand=(4, 2)), code("b", False, "timeout", (4, 0)), code("c", False, "assertion", (4, 4)),
        refusal("x", True, True), refusal("y", False, True), refusal("z", False, None),
        {"prompt_id": "h", "scorer": "reward"},
    ]
    s = M.summarize_scored_answers(evals)
    assert s["pass_at_1"] == pytest.approx(1 / 3) and s["n_code_answers"] == 3 and s["code_timeouts"] == 1
    assert s["pass_at_1_ci_low"] < 1 / 3 < s["pass_at_1_ci_high"]
    assert s["candidates_pass_at_1"] == pytest.approx((0.5 + 0 + 1) / 3)
    assert s["candidates_pass_at_4"] == pytest.approx(2 / 3) and "candidates_pass_at_8" not in s
    assert s["refusal_rate_rule"] == pytest.approx(1 / 3) and s["refusal_rate_judge"] == pytest.approx(1.0)
    assert s["refusal_disagreement"] == pytest.approx(0.5) and s["n_refusal_answers"] == 3
    empty = M.summarize_scored_answers([{"prompt_id": "h", "scorer": "reward"}])
    assert empty["pass_at_1"] is None and empty["refusal_rate_judge"] is None and empty["refusal_disagreement"] is None


def test_scored_deltas_are_paired_by_prompt():
    plain = [code(str(i), i < 5) for i in range(10)] + [refusal(f"r{i}", i < 2, None) for i in range(10)]
    cell = [code(str(i), i < 3) for i in range(10)] + [refusal(f"r{i}", i < 8, None) for i in range(10)]
    d = M.scored_deltas(plain, cell, n_boot=500)
    assert d["pass_at_1_delta"] == pytest.approx(-0.2)  # capability tax: 2 of 10 lost
    assert d["pass_at_1_delta_ci_low"] <= -0.2 <= d["pass_at_1_delta_ci_high"]
    assert d["refusal_rate_rule_delta"] == pytest.approx(0.6)  # safety gain
    assert d["refusal_rate_rule_delta_ci_low"] > 0
    assert d["refusal_rate_judge_delta"] is None
