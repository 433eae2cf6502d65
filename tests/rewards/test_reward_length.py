"""reward_length_correlation: Spearman's rho by hand, ties, undefined cases, the strong flag."""
from __future__ import annotations

import math

import numpy as np
import pytest

from costtax.stats import (
    REWARD_LENGTH_MIN_N,
    REWARD_LENGTH_STRONG_RHO,
    reward_length_correlation,
    reward_length_strong,
)

pytestmark = pytest.mark.unit


def test_monotone_and_reversed():
    assert reward_length_correlation([1, 2, 3, 4], [10, 20, 30, 400]) == (pytest.approx(1.0), 4)
    assert reward_length_correlation([4, 3, 2, 1], [10, 20, 30, 400]) == (pytest.approx(-1.0), 4)


def test_by_hand_with_ties():
    # rewards ranks [1, 2.5, 2.5, 4]; lengths ranks [2, 1, 4, 3]
    # centred: [-1.5, 0, 0, 1.5] and [-0.5, -1.5, 1.5, 0.5]; cov = 0.75 + 0.75 = 1.5
    # |r| = sqrt(4.5), |q| = sqrt(5) -> rho = 1.5 / sqrt(22.5)
    rho, n = reward_length_correlation([0.1, 0.5, 0.5, 0.9], [20, 10, 40, 30])
    assert n == 4 and rho == pytest.approx(1.5 / math.sqrt(22.5))


def test_matches_pearson_of_ranks_on_random_data():
    rng = np.random.default_rng(0)
    x = rng.normal(size=50)
    y = np.round(2 * x + rng.normal(size=50))  # ties in y
    rho, n = reward_length_correlation(x.tolist(), y.tolist())

    def ranks(v):
        return np.array([np.mean(np.flatnonzero(np.sort(v) == a)) + 1 for a in v])

    assert n == 50 and rho == pytest.approx(float(np.corrcoef(ranks(x), ranks(y))[0, 1]))


def test_drops_missing_and_undefined_cases():
    assert reward_length_correlation([1.0, None, float("nan"), 2.0, 3.0], [1, 5, 6, None, 2]) == (None, 2)
    assert reward_length_correlation([1.0, 2.0, 3.0], [5, 5, 5]) == (None, 3)  # constant length
    assert reward_length_correlation([], []) == (None, 0)
    rho, n = reward_length_correlation([3.0, 1.0, None, 2.0], [30, 10, 99, 20])
    assert (rho, n) == (pytest.approx(1.0), 3)


def test_strong_flag_needs_size_and_strength():
    assert REWARD_LENGTH_STRONG_RHO == 0.5 and REWARD_LENGTH_MIN_N == 16
    assert reward_length_strong(0.6, 16) and reward_length_strong(-0.5, 40)
    assert not reward_length_strong(0.49, 100)
    assert not reward_length_strong(0.9, 15)
    assert not reward_length_strong(None, 100)
