"""costtax.prompts.pass_at_k: the unbiased estimator against enumeration, known values, errors."""
from __future__ import annotations

import itertools
import math

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from costtax.prompts import pass_at_k as M

pytestmark = pytest.mark.unit


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
