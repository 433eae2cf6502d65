"""costtax.stats: hand-computed cases plus a few property tests."""
from __future__ import annotations

import math
import subprocess
import sys

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from costtax.stats import (
    bootstrap_ci,
    mean_or_none,
    multiplier,
    paired_bootstrap_delta_ci,
    pareto_front,
    percentiles,
    positive_int,
    rate_with_ci,
    refusal_agreement,
    wilson_ci,
    win_rate,
)

pytestmark = pytest.mark.integration


def test_import_is_light():
    """The statistics and grading modules load without torch, pandas or sacrebleu."""
    code = (
        "import sys, costtax.stats, costtax.prompts.exact_match, costtax.prompts.pass_at_k; "
        "bad = [m for m in ('torch', 'pandas', 'sacrebleu') if m in sys.modules]; "
        "print(','.join(bad))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == ""


@pytest.mark.parametrize("bad", [0, -1, 2.5, True, "4", None])
def test_positive_int_refuses_and_names_the_field(bad):
    with pytest.raises(ValueError, match="^k must be an integer >= 1"):
        positive_int(bad, "k")


def test_positive_int_accepts_numpy_int():
    assert positive_int(np.int64(4)) == 4 and type(positive_int(np.int64(4))) is int


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
    import costtax.stats as m

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


# --------------------------------------------------------------------------- rates and agreement


def test_wilson_interval():
    lo, hi = wilson_ci(0, 10)
    assert lo == 0.0 and 0.25 < hi < 0.31  # a zero rate still has an upper bound
    lo, hi = wilson_ci(10, 10)
    assert hi == 1.0 and 0.69 < lo < 0.75
    lo, hi = wilson_ci(50, 100)
    assert lo == pytest.approx(0.4038, abs=1e-3) and hi == pytest.approx(0.5962, abs=1e-3)
    assert wilson_ci(0, 0) is None
    assert rate_with_ci([None, None]) == (None, None, None)
    assert rate_with_ci([True, False, None, True])[0] == pytest.approx(2 / 3)


def test_refusal_agreement():
    r = refusal_agreement([True, True, False, False, True], [True, False, False, True, True])
    assert (r["tp"], r["fp"], r["fn"], r["tn"]) == (2, 1, 1, 1)
    assert r["accuracy"] == pytest.approx(0.6) and r["precision"] == pytest.approx(2 / 3)
    assert r["recall"] == pytest.approx(2 / 3)
    assert refusal_agreement([True, False], [True, False])["kappa"] == pytest.approx(1.0)
    with pytest.raises(ValueError):
        refusal_agreement([True], [])
