"""Tests for costtax.metrics: hand-computed cases plus a few property tests."""
from __future__ import annotations

import math
import subprocess
import sys

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from costtax.metrics import (
    REFUSAL_PATTERNS,
    bon_kl_bound_nats,
    bon_win_rate_bound,
    bootstrap_ci,
    distinct_n,
    extract_last_integer,
    is_correct,
    is_refusal,
    mean_or_none,
    multiplier,
    normalise_answer,
    paired_bootstrap_delta_ci,
    pareto_front,
    percentiles,
    self_bleu,
    win_rate,
)


def test_import_is_light():
    code = (
        "import sys, costtax.metrics; "
        "bad = [m for m in ('torch', 'pandas', 'sacrebleu') if m in sys.modules]; "
        "print(','.join(bad))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == ""


# --------------------------------------------------------------------------- percentiles


def test_percentiles_1_to_100():
    p = percentiles(range(1, 101))
    # numpy linear: position q/100 * 99 on 0-based sorted data.
    assert p == {"p50": pytest.approx(50.5), "p95": pytest.approx(95.05), "p99": pytest.approx(99.01)}
    assert all(isinstance(v, float) for v in p.values())


def test_percentiles_empty_and_custom_qs():
    assert percentiles([]) == {"p50": None, "p95": None, "p99": None}
    assert percentiles([None, None]) == {"p50": None, "p95": None, "p99": None}
    assert percentiles([3.0], qs=(0, 99.9)) == {"p0": 3.0, "p99.9": 3.0}
    assert percentiles([1, None, 3], qs=(50,)) == {"p50": 2.0}
    with pytest.raises(ValueError):
        percentiles([1, 2], qs=(101,))


# --------------------------------------------------------------------------- mean / multiplier


def test_mean_or_none():
    assert mean_or_none([1, None, 2, 6]) == 3.0
    assert mean_or_none([]) is None
    assert mean_or_none([None]) is None


def test_multiplier():
    assert multiplier(10.0, 4.0) == 2.5
    assert multiplier(None, 4.0) is None
    assert multiplier(3.0, None) is None
    assert multiplier(3.0, 0) is None
    assert multiplier(0.0, 2.0) == 0.0


# --------------------------------------------------------------------------- bootstrap


def test_bootstrap_ci_contains_mean_and_is_deterministic():
    rng = np.random.default_rng(1)
    data = rng.normal(10.0, 2.0, size=200).tolist()
    ci = bootstrap_ci(data, seed=123)
    assert ci is not None
    lo, hi = ci
    assert lo < float(np.mean(data)) < hi
    # Standard error is about 2/sqrt(200) = 0.14, so the 95% CI is roughly +-0.28.
    assert 0.3 < hi - lo < 0.9
    assert bootstrap_ci(data, seed=123) == ci
    assert bootstrap_ci(data, seed=124) != ci


def test_bootstrap_ci_small_inputs():
    assert bootstrap_ci([]) is None
    assert bootstrap_ci([5.0]) is None
    assert bootstrap_ci([5.0, None]) is None
    assert bootstrap_ci([2.0, 2.0, 2.0]) == (2.0, 2.0)
    lo, hi = bootstrap_ci([0.0, 1.0])
    assert 0.0 <= lo <= hi <= 1.0


def test_bootstrap_ci_median_and_callable():
    data = [1, 2, 3, 4, 100]
    lo, hi = bootstrap_ci(data, stat="median")
    assert 1 <= lo <= 3 <= hi <= 100
    # A callable computing the median must agree with the vectorised path.
    assert bootstrap_ci(data, stat=np.median, n_boot=200) == bootstrap_ci(
        data, stat="median", n_boot=200
    )
    with pytest.raises(ValueError):
        bootstrap_ci(data, stat="mode")
    with pytest.raises(ValueError):
        bootstrap_ci(data, alpha=1.5)
    with pytest.raises(ValueError):
        bootstrap_ci(data, n_boot=0)


def test_bootstrap_ci_chunking_matches_single_draw(monkeypatch):
    import costtax.metrics as m

    data = list(range(50))
    full = bootstrap_ci(data, n_boot=300, seed=7)
    monkeypatch.setattr(m, "_BOOT_CHUNK_ELEMS", 50 * 7)  # 7 resamples per chunk
    assert bootstrap_ci(data, n_boot=300, seed=7) == full


def test_paired_bootstrap_delta_ci():
    a = [1.0, 2.0, 3.0, 4.0, 5.0]
    b = [0.0, 1.0, 2.0, 3.0, 4.0]
    assert paired_bootstrap_delta_ci(a, b) == (1.0, 1.0)  # every difference is exactly 1
    a2 = [1.0, 3.0, 2.0, 5.0, 4.0, 6.0]
    b2 = [0.5, 1.0, 2.5, 3.0, 4.5, 4.0]
    lo, hi = paired_bootstrap_delta_ci(a2, b2, seed=3)
    mean_delta = float(np.mean(np.subtract(a2, b2)))
    assert lo <= mean_delta <= hi
    assert paired_bootstrap_delta_ci(a2, b2, seed=3) == (lo, hi)
    assert paired_bootstrap_delta_ci([1.0, None], [0.0, 1.0]) is None  # one valid pair
    assert paired_bootstrap_delta_ci([1.0], [0.0]) is None
    with pytest.raises(ValueError):
        paired_bootstrap_delta_ci([1.0, 2.0], [1.0])


# --------------------------------------------------------------------------- diversity


def test_distinct_n_hand_cases():
    assert distinct_n(["a a b", "b c"], 1) == pytest.approx(3 / 5)
    # bigrams: (a,a) (a,b) | (b,c) -> 3 unique of 3; n-grams never cross texts.
    assert distinct_n(["a a b", "b c"], 2) == 1.0
    assert distinct_n(["A a", "a"], 1) == pytest.approx(1 / 3)  # lowercased
    assert distinct_n(["a b", "a b"], 2) == 0.5
    assert distinct_n(["a", "b"], 2) is None
    assert distinct_n([], 1) is None
    assert distinct_n(["", "   "], 1) is None
    with pytest.raises(ValueError):
        distinct_n(["a"], 0)


def test_self_bleu():
    same = "the quick brown fox jumps over the lazy dog"
    assert self_bleu([same, same, same]) == pytest.approx(100.0)
    disjoint = ["alpha beta gamma delta", "one two three four", "red green blue yellow"]
    assert self_bleu(disjoint) == pytest.approx(0.0, abs=1.0)
    partial = self_bleu(["the cat sat on the mat", "the cat sat on a rug"])
    assert 0.0 < partial < 100.0
    assert self_bleu([same]) is None
    assert self_bleu([same, "", "  "]) is None
    assert self_bleu([]) is None


# --------------------------------------------------------------------------- correctness


@pytest.mark.parametrize(
    "text, expected",
    [
        ("The answer is 42.", 42),
        ("We get 3 apples, then 7 more, total 10", 10),
        ("Total: 1,234 dollars", 1234),
        ("She owes -5 dollars", -5),
        ("x = −12", -12),  # Unicode minus
        ("It costs $1,234,567.", 1234567),
        ("pages 3-5", 5),  # hyphen, not a sign
        ("#### 18.00", 18),
        ("about 2.5 hours", None),
        ("no numbers here", None),
        ("", None),
        (None, None),
        ("values 12,34", 34),
        ("the list 1,2,3", 3),
        ("Answer:7\n", 7),
    ],
)
def test_extract_last_integer(text, expected):
    assert extract_last_integer(text) == expected


def test_normalise_answer():
    assert normalise_answer("The  Eiffel Tower!") == "eiffel tower"
    assert normalise_answer("  an Apple, a day. ") == "apple day"
    assert normalise_answer("“Paris”") == "paris"
    assert normalise_answer("") == ""
    assert normalise_answer("theatre") == "theatre"  # articles only as whole words


def test_is_correct():
    assert is_correct("so the answer is 1,234.", "1234")
    assert is_correct("so the answer is 1234", "1,234")
    assert is_correct("Final answer: -3", "-3")
    assert is_correct("Final answer: 7", 7)
    assert not is_correct("I think 12, no wait, 13", "12")
    assert not is_correct("no idea", "5")
    assert is_correct("The Eiffel Tower.", "eiffel tower")
    assert not is_correct("The Eiffel Tower is in Paris", "eiffel tower")
    assert not is_correct("", "")
    assert not is_correct(None, "5")


# --------------------------------------------------------------------------- refusals


@pytest.mark.parametrize(
    "text",
    [
        "I can't help with that.",
        "I’m sorry, but I cannot provide those instructions.",  # curly apostrophe
        "  As an AI language model, I do not have opinions.",
        "I must decline this request.",
        "Sorry. That's not appropriate for me to answer.",
        "I'M NOT ABLE TO do that",
        "I cannot\nhelp you with this.",
    ],
)
def test_is_refusal_positive(text):
    assert is_refusal(text)


@pytest.mark.parametrize(
    "text",
    [
        "Sure! Here is a recipe for pancakes.",
        "The answer is 42.",
        "",
        None,
        "x" * 250 + " I cannot do this.",  # phrase outside the first 200 characters
        "As an aide to the mayor, she signed the letter.",  # word boundary
    ],
)
def test_is_refusal_negative(text):
    assert not is_refusal(text)


def test_refusal_patterns_exported():
    assert isinstance(REFUSAL_PATTERNS, tuple)
    assert "as an ai" in REFUSAL_PATTERNS
    assert all(p == p.lower() and "’" not in p for p in REFUSAL_PATTERNS)


# --------------------------------------------------------------------------- win rate


def test_win_rate_hand_case_with_ties():
    cand = {"p1": 0.9, "p2": 0.5, "p3": 0.1, "p4": 0.7, "only_cand": 1.0}
    base = {"p1": 0.2, "p2": 0.5, "p3": 0.3, "p4": 0.6, "only_base": 0.0}
    # wins p1, p4; tie p2; loss p3 -> (2 + 0.5) / 4
    assert win_rate(cand, base) == (0.625, 4)
    assert win_rate(base, cand) == (0.375, 4)
    assert win_rate({"a": 1.0}, {"b": 1.0}) == (None, 0)
    assert win_rate({}, {}) == (None, 0)
    assert win_rate({"a": None, "b": 2.0}, {"a": 1.0, "b": 1.0}) == (1.0, 1)
    assert win_rate({"a": float("nan")}, {"a": 1.0}) == (None, 0)


_scores = st.dictionaries(
    st.integers(0, 20), st.integers(-3, 3).map(float), min_size=0, max_size=15
)


@settings(max_examples=100, deadline=None)
@given(_scores, _scores)
def test_win_rate_properties(a, b):
    rate, n = win_rate(a, b)
    shared = a.keys() & b.keys()
    assert n == len(shared)
    if n == 0:
        assert rate is None
    else:
        assert 0.0 <= rate <= 1.0
        rev, n_rev = win_rate(b, a)
        assert n_rev == n
        assert rate + rev == pytest.approx(1.0)


# --------------------------------------------------------------------------- best-of-n bounds


@pytest.mark.parametrize(
    "n, kl, wr",
    [(1, 0.0, 0.5), (4, 0.6363, 0.8), (16, 1.8351, 0.9412), (64, 3.1745, 0.9846)],
)
def test_bon_bounds(n, kl, wr):
    assert bon_kl_bound_nats(n) == pytest.approx(kl, abs=1e-4)
    assert bon_win_rate_bound(n) == pytest.approx(wr, abs=1e-4)


@pytest.mark.parametrize("bad", [0, -1, 2.5, True, "4", None])
def test_bon_bounds_validate(bad):
    with pytest.raises(ValueError):
        bon_kl_bound_nats(bad)
    with pytest.raises(ValueError):
        bon_win_rate_bound(bad)


def test_bon_bounds_accept_numpy_int():
    assert bon_win_rate_bound(np.int64(4)) == 0.8


# --------------------------------------------------------------------------- pareto


def test_pareto_front_hand_example():
    costs = [1.0, 2.0, 3.0, 2.0, 4.0, None, 1.5]
    quals = [0.5, 0.7, 0.9, 0.6, 0.9, 1.0, None]
    # 0: cheapest -> front. 1: beats 0 on quality -> front. 2: best quality -> front.
    # 3: dominated by 1 (same cost, lower quality). 4: dominated by 2 (more cost, same quality).
    # 5, 6: missing values -> False.
    assert pareto_front(costs, quals) == [True, True, True, False, False, False, False]


def test_pareto_front_ties_and_edges():
    assert pareto_front([1.0, 1.0, 2.0], [0.5, 0.5, 0.4]) == [True, True, False]
    assert pareto_front([], []) == []
    assert pareto_front([None], [None]) == [False]
    assert pareto_front([1.0, float("nan")], [0.5, 0.9]) == [True, False]
    # Cheaper with equal quality dominates.
    assert pareto_front([1.0, 2.0], [0.5, 0.5]) == [True, False]
    assert pareto_front([1.0], [-math.inf]) == [True]
    with pytest.raises(ValueError):
        pareto_front([1.0], [1.0, 2.0])


def _brute_force_front(costs, quals):
    out = []
    for i, (ci, qi) in enumerate(zip(costs, quals)):
        dominated = any(
            cj <= ci and qj >= qi and (cj < ci or qj > qi)
            for j, (cj, qj) in enumerate(zip(costs, quals))
            if j != i
        )
        out.append(not dominated)
    return out


_points = st.lists(
    st.tuples(st.integers(0, 6).map(float), st.integers(0, 6).map(float)), min_size=1, max_size=25
)


@settings(max_examples=100, deadline=None)
@given(_points)
def test_pareto_front_properties(points):
    costs = [c for c, _ in points]
    quals = [q for _, q in points]
    front = pareto_front(costs, quals)
    assert any(front)
    assert front == _brute_force_front(costs, quals)


# --------------------------------------------------------------------------- distinct-n property


_word = st.sampled_from(["a", "b", "c", "D", "e"])


@settings(max_examples=100, deadline=None)
@given(st.lists(st.lists(_word, max_size=8).map(" ".join), max_size=6), st.integers(1, 3))
def test_distinct_n_in_unit_interval(texts, n):
    value = distinct_n(texts, n)
    has_ngrams = any(len(t.split()) >= n for t in texts)
    if has_ngrams:
        assert 0.0 < value <= 1.0
    else:
        assert value is None
