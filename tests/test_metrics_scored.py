"""pass@k (Chen et al. 2021), Wilson intervals, refusal agreement and the cell aggregators."""
from __future__ import annotations

import itertools
import math

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from costtax import metrics as M


def brute_pass_at_k(n: int, c: int, k: int) -> float:
    """Probability that a random k-subset of n samples (c correct) contains a correct one."""
    samples = [True] * c + [False] * (n - c)
    subsets = list(itertools.combinations(range(n), k))
    return sum(any(samples[i] for i in s) for s in subsets) / len(subsets)


@settings(max_examples=60, deadline=None)
@given(st.integers(1, 9).flatmap(lambda n: st.tuples(st.just(n), st.integers(0, n), st.integers(1, n))))
def test_pass_at_k_matches_enumeration(nck):
    n, c, k = nck
    assert M.pass_at_k(n, c, k) == pytest.approx(brute_pass_at_k(n, c, k), abs=1e-12)


def test_pass_at_k_known_values_and_errors():
    assert M.pass_at_k(10, 3, 1) == pytest.approx(0.3)
    assert M.pass_at_k(4, 1, 4) == 1.0 and M.pass_at_k(4, 0, 4) == 0.0
    assert M.pass_at_k(200, 10, 100) == pytest.approx(1 - math.comb(190, 100) / math.comb(200, 100))
    with pytest.raises(ValueError, match="k must be <= n"):
        M.pass_at_k(3, 1, 4)
    with pytest.raises(ValueError, match="c must be"):
        M.pass_at_k(3, 4, 1)
    assert M.pass_at_k_mean([(4, 1), (4, 0), (2, 2)], 4) == pytest.approx(0.5)  # (2,2) has n < k: skipped
    assert M.pass_at_k_mean([(2, 1)], 4) is None


def test_wilson_interval():
    lo, hi = M.wilson_ci(0, 10)
    assert lo == 0.0 and 0.25 < hi < 0.31  # a zero rate still has an upper bound
    lo, hi = M.wilson_ci(10, 10)
    assert hi == 1.0 and 0.69 < lo < 0.75
    lo, hi = M.wilson_ci(50, 100)
    assert lo == pytest.approx(0.4038, abs=1e-3) and hi == pytest.approx(0.5962, abs=1e-3)
    assert M.wilson_ci(0, 0) is None
    assert M.rate_with_ci([None, None]) == (None, None, None)
    assert M.rate_with_ci([True, False, None, True])[0] == pytest.approx(2 / 3)


def test_refusal_agreement():
    r = M.refusal_agreement([True, True, False, False, True], [True, False, False, True, True])
    assert (r["tp"], r["fp"], r["fn"], r["tn"]) == (2, 1, 1, 1)
    assert r["accuracy"] == pytest.approx(0.6) and r["precision"] == pytest.approx(2 / 3)
    assert r["recall"] == pytest.approx(2 / 3)
    assert M.refusal_agreement([True, False], [True, False])["kappa"] == pytest.approx(1.0)
    with pytest.raises(ValueError):
        M.refusal_agreement([True], [])


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
