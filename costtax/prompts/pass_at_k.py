"""pass@k for code benchmarks (Chen et al. 2021): the unbiased estimator per problem and its
mean over problems."""
from __future__ import annotations

import numbers
from collections.abc import Iterable

import numpy as np

from ..stats import positive_int

__all__ = ["pass_at_k", "pass_at_k_mean"]



def pass_at_k(n: int, c: int, k: int) -> float:
    """Unbiased pass@k for one problem with ``n`` samples of which ``c`` pass (Chen et al. 2021,
    "Evaluating Large Language Models Trained on Code", eq. 1): ``1 - C(n-c, k) / C(n, k)``.

    Computed as ``1 - prod_{i=n-c+1}^{n} (1 - k/i)`` (their numerically stable form). Requires
    ``1 <= k <= n`` and ``0 <= c <= n``. With ``k == 1`` this is ``c / n``.
    """
    n = positive_int(n)
    k = positive_int(k, "k")
    if isinstance(c, bool) or not isinstance(c, numbers.Integral) or not 0 <= c <= n:
        raise ValueError(f"c must be an integer in [0, n={n}], got {c!r}")
    if k > n:
        raise ValueError(f"k must be <= n ({n}), got {k}")
    if n - c < k:
        return 1.0
    return float(1.0 - np.prod(1.0 - k / np.arange(n - c + 1, n + 1, dtype=np.float64)))


def pass_at_k_mean(counts: Iterable[tuple[int, int]], k: int) -> float | None:
    """Mean of :func:`pass_at_k` over problems given as ``(n, c)`` pairs. Problems with fewer
    than ``k`` samples are skipped (pass@k is undefined there); ``None`` when none remain."""
    vals = [pass_at_k(n, c, k) for n, c in counts if n >= k]
    return float(np.mean(vals)) if vals else None
