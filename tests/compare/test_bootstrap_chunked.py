"""The ratio and p95 bootstraps resample in chunks of bounded memory and give, for the same seed,
the floats the whole (n_boot, n) matrices gave."""
from __future__ import annotations

import numpy as np
import pytest

from costtax import stats
from costtax.compare import estimates
from costtax.load import search

pytestmark = pytest.mark.unit


def ratio_ci_whole(num_, den, stat, n_boot=1000, seed=0):
    """estimates._ratio_ci before chunking (full matrices)."""
    a = np.asarray([x for x in num_ if x is not None], dtype=float)
    b = np.asarray([x for x in den if x is not None], dtype=float)
    if a.size < 2 or b.size < 2:
        return None
    rng = np.random.default_rng(seed)
    sa = stat(a[rng.integers(0, a.size, (n_boot, a.size))])
    sb = stat(b[rng.integers(0, b.size, (n_boot, b.size))])
    ok = sb > 0
    if not ok.any():
        return None
    lo, hi = np.percentile(sa[ok] / sb[ok], [2.5, 97.5])
    return float(lo), float(hi)


def p95_ci_whole(values, n_boot=1000, seed=0):
    """search.p95_ci before chunking."""
    arr = np.asarray([v for v in values if v is not None and v == v], dtype=float)
    if arr.size < 2:
        return None
    idx = np.random.default_rng(seed).integers(0, arr.size, size=(n_boot, arr.size))
    boots = np.percentile(arr[idx], 95, axis=1)
    return float(np.percentile(boots, 2.5)), float(np.percentile(boots, 97.5))


@pytest.mark.parametrize("chunk", [1, 7, 1000, 2_000_000])  # from one index per chunk to unchunked
def test_same_floats_as_whole_matrices(monkeypatch, chunk):
    monkeypatch.setattr(stats, "_BOOT_CHUNK_ELEMS", chunk)
    rng = np.random.default_rng(3)
    for n_a, n_b, seed in [(2, 3, 0), (17, 5, 1), (101, 64, 42)]:
        a = list(rng.lognormal(0, 1, n_a))
        b = list(rng.lognormal(0, 1, n_b))
        for stat in (estimates._p(50), estimates._p(95), estimates._mean):
            assert estimates._ratio_ci(a, b, stat, n_boot=200, seed=seed) == ratio_ci_whole(a, b, stat, n_boot=200, seed=seed)
        assert search.p95_ci(a, n_boot=200, seed=seed) == p95_ci_whole(a, n_boot=200, seed=seed)


def test_memory_bounded_at_100k_answers():
    """The full matrices were 1000 x 100k float64 (~0.8 GB each, twice for the ratio); chunked,
    the peak stays near one chunk."""
    import tracemalloc

    x = list(np.random.default_rng(0).lognormal(0, 1, 100_000))
    tracemalloc.start()
    try:
        search.p95_ci(x, n_boot=400)
        estimates._ratio_ci(x, x, estimates._p(50), n_boot=400)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert peak < 200e6, peak
