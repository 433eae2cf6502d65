"""The best-of-n theory bounds in costtax.techniques.best_of_n (Beirami et al. 2024)."""
from __future__ import annotations

import numpy as np
import pytest

from costtax.techniques.best_of_n import bon_kl_bound_nats, bon_win_rate_bound

pytestmark = pytest.mark.unit


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
