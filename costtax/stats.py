"""Statistics for reports: percentiles, bootstrap and Wilson intervals, win rate, Pareto front,
rank correlation, agreement with labels. Pure functions; depends only on numpy.

Conventions:

* Units are part of the name where there is one.
* When the input is too small for a quantity to be defined (no values, fewer than two samples
  for a confidence interval, ...) functions return ``None`` rather than NaN, so that report code
  can print "n/a" explicitly.
* Sample-based functions (``percentiles``, ``bootstrap_ci``, ``mean_or_none``) ignore ``None``
  entries; ``paired_bootstrap_delta_ci`` drops pairs in which either side is ``None``.
"""
from __future__ import annotations

import math
import numbers
from collections.abc import Callable, Hashable, Iterable, Mapping, Sequence

import numpy as np

__all__ = [
    "REWARD_LENGTH_MIN_N",
    "REWARD_LENGTH_STRONG_RHO",
    "bootstrap_ci",
    "mean_or_none",
    "multiplier",
    "paired_bootstrap_delta_ci",
    "pareto_front",
    "percentile_ci",
    "percentiles",
    "positive_int",
    "rate_with_ci",
    "refusal_agreement",
    "reward_length_correlation",
    "reward_length_strong",
    "wilson_ci",
    "win_rate",
]


# --------------------------------------------------------------------------- helpers


def _drop_none(values: Iterable[float | None]) -> np.ndarray:
    """Return the non-None entries of ``values`` as a 1-D float64 array."""
    return np.asarray([float(v) for v in values if v is not None], dtype=np.float64)


def _validate_alpha_nboot(alpha: float, n_boot: int) -> None:
    if not 0.0 < alpha < 1.0:
        raise ValueError(f"alpha must be in (0, 1), got {alpha!r}")
    if isinstance(n_boot, bool) or not isinstance(n_boot, numbers.Integral) or n_boot < 1:
        raise ValueError(f"n_boot must be an integer >= 1, got {n_boot!r}")


def positive_int(n: object, name: str = "n") -> int:
    """``n`` as an int, or ValueError naming ``name`` unless it is an integer >= 1 (bools refused)."""
    if isinstance(n, bool) or not isinstance(n, numbers.Integral) or n < 1:
        raise ValueError(f"{name} must be an integer >= 1, got {n!r}")
    return int(n)


# Resample indices are drawn in chunks so memory stays bounded (about this many
# int64 indices per chunk) even for large samples.
_BOOT_CHUNK_ELEMS = 2_000_000


# --------------------------------------------------------------------------- summary statistics


def percentiles(
    values: Iterable[float | None], qs: Sequence[float] = (50, 95, 99)
) -> dict[str, float | None]:
    """Percentiles of ``values`` (numpy ``percentile``, linear interpolation).

    Keys are ``"p<q>"`` with ``q`` formatted compactly (``50`` -> ``"p50"``,
    ``99.9`` -> ``"p99.9"``). ``None`` entries in ``values`` are ignored; if no
    values remain every percentile is ``None``.
    """
    arr = _drop_none(values)
    keys = [f"p{float(q):g}" for q in qs]
    for q in qs:
        if not 0 <= q <= 100:
            raise ValueError(f"percentile q must be in [0, 100], got {q!r}")
    if arr.size == 0:
        return {k: None for k in keys}
    vals = np.percentile(arr, list(qs), method="linear")
    return {k: float(v) for k, v in zip(keys, np.atleast_1d(vals))}


def mean_or_none(values: Iterable[float | None]) -> float | None:
    """Arithmetic mean of the non-None entries of ``values``; ``None`` if there are none."""
    arr = _drop_none(values)
    if arr.size == 0:
        return None
    return float(arr.mean())


def multiplier(value: float | None, baseline: float | None) -> float | None:
    """``value / baseline`` (e.g. "BoN-16 costs 11.3x greedy").

    ``None`` if either argument is ``None`` or ``baseline == 0``.
    """
    if value is None or baseline is None or baseline == 0:
        return None
    return float(value) / float(baseline)


# --------------------------------------------------------------------------- bootstrap


def bootstrap_ci(
    values: Iterable[float | None],
    stat: str | Callable[[np.ndarray], float] = "mean",
    n_boot: int = 1000,
    alpha: float = 0.05,
    seed: int = 0,
) -> tuple[float, float] | None:
    """Percentile-bootstrap ``(1 - alpha)`` confidence interval for a statistic.

    Draws ``n_boot`` resamples (with replacement, same size as the data) using
    ``numpy.random.default_rng(seed)``, so the result is deterministic for a
    given seed. The interval is the ``alpha/2`` and ``1 - alpha/2`` percentiles
    (linear interpolation) of the bootstrap distribution.

    ``stat`` is ``"mean"`` or ``"median"`` (both fully vectorised) or a callable
    taking a 1-D float array and returning a float (called once per resample).
    ``None`` entries are ignored; returns ``None`` when fewer than 2 values remain.
    """
    _validate_alpha_nboot(alpha, n_boot)
    arr = _drop_none(values)
    n = arr.size
    if n < 2:
        return None
    if isinstance(stat, str):
        if stat == "mean":
            reduce = lambda m: m.mean(axis=1)  # noqa: E731
        elif stat == "median":
            reduce = lambda m: np.median(m, axis=1)  # noqa: E731
        else:
            raise ValueError(f"stat must be 'mean', 'median' or a callable, got {stat!r}")
    elif callable(stat):
        fn = stat
        reduce = lambda m: np.array([float(fn(row)) for row in m])  # noqa: E731
    else:
        raise ValueError(f"stat must be 'mean', 'median' or a callable, got {stat!r}")

    boot = _resample(arr, reduce, n_boot, seed)
    lo, hi = np.percentile(boot, [100.0 * alpha / 2.0, 100.0 * (1.0 - alpha / 2.0)])
    return float(lo), float(hi)


def _resample(arr: np.ndarray, reduce, n_boot: int, seed: int) -> np.ndarray:
    """n_boot bootstrap statistics of arr: `reduce` maps a (rows, n) resample matrix to one value
    per row; resamples are drawn in chunks so memory stays bounded for large n."""
    return resample_with(np.random.default_rng(seed), arr, reduce, n_boot)


def resample_with(rng: np.random.Generator, arr: np.ndarray, reduce, n_boot: int) -> np.ndarray:
    """`_resample` drawing from a caller's generator (two samples resampled from one stream).
    Chunks of at most _BOOT_CHUNK_ELEMS indices: numpy's Generator draws the same index stream
    whatever the chunking, so the statistics equal one (n_boot, n) matrix's, row by row."""
    n = arr.size
    rows_per_chunk = max(1, _BOOT_CHUNK_ELEMS // n)
    boot = np.empty(n_boot, dtype=np.float64)
    for start in range(0, n_boot, rows_per_chunk):
        stop = min(n_boot, start + rows_per_chunk)
        idx = rng.integers(0, n, size=(stop - start, n))
        boot[start:stop] = reduce(arr[idx])
    return boot


def paired_bootstrap_delta_ci(
    a: Sequence[float | None],
    b: Sequence[float | None],
    n_boot: int = 1000,
    alpha: float = 0.05,
    seed: int = 0,
) -> tuple[float, float] | None:
    """Percentile-bootstrap CI for the mean of paired differences ``a[i] - b[i]``.

    Pairs are resampled together (the pairing is preserved). ``a`` and ``b`` must
    have the same length (``ValueError`` otherwise); pairs where either side is
    ``None`` are dropped. Returns ``None`` when fewer than 2 pairs remain. Same
    ``n_boot``/``alpha``/``seed`` conventions as :func:`bootstrap_ci`.
    """
    a = list(a)
    b = list(b)
    if len(a) != len(b):
        raise ValueError(f"paired samples must have equal length, got {len(a)} and {len(b)}")
    deltas = [float(x) - float(y) for x, y in zip(a, b) if x is not None and y is not None]
    return bootstrap_ci(deltas, stat="mean", n_boot=n_boot, alpha=alpha, seed=seed)


def percentile_ci(
    values: Iterable[float | None],
    q: float,
    n_boot: int = 1000,
    alpha: float = 0.05,
    seed: int = 0,
) -> tuple[float, float] | None:
    """Percentile-bootstrap ``(1 - alpha)`` CI for the ``q``-th percentile (e.g. p95 latency).

    Same resampling, seed and ``None`` conventions as :func:`bootstrap_ci` (vectorised: one
    ``np.percentile`` over the resample matrix). With few values the upper end of a high
    percentile's interval is the sample maximum: at n=8, p95 cannot be bounded tighter than
    the largest observation, and the interval says so.
    """
    if not 0 <= q <= 100:
        raise ValueError(f"percentile q must be in [0, 100], got {q!r}")
    _validate_alpha_nboot(alpha, n_boot)
    arr = _drop_none(values)
    n = arr.size
    if n < 2:
        return None
    boot = _resample(arr, lambda m: np.percentile(m, q, axis=1, method="linear"), n_boot, seed)
    lo, hi = np.percentile(boot, [100.0 * alpha / 2.0, 100.0 * (1.0 - alpha / 2.0)])
    return float(lo), float(hi)


# --------------------------------------------------------------------------- comparisons


def win_rate(
    candidate: Mapping[Hashable, float | None], baseline: Mapping[Hashable, float | None]
) -> tuple[float | None, int]:
    """Pairwise win rate of ``candidate`` over ``baseline`` on their shared keys.

    For each shared key (e.g. a prompt id) the candidate scores 1 if its value is
    higher, 0.5 on a tie, 0 if lower. Keys where either value is ``None`` or NaN
    are skipped. Returns ``(rate, n_pairs)``; ``(None, 0)`` when no pairs remain.
    ``win_rate(a, b)[0] + win_rate(b, a)[0] == 1`` whenever pairs exist.
    """
    wins = 0.0
    n = 0
    for key in candidate.keys() & baseline.keys():
        c, b = candidate[key], baseline[key]
        if c is None or b is None:
            continue
        c, b = float(c), float(b)
        if math.isnan(c) or math.isnan(b):
            continue
        n += 1
        if c > b:
            wins += 1.0
        elif c == b:
            wins += 0.5
    if n == 0:
        return None, 0
    return wins / n, n


def pareto_front(
    costs: Sequence[float | None], qualities: Sequence[float | None]
) -> list[bool]:
    """Mask of points on the cost/quality Pareto front (lower cost, higher quality).

    Point ``i`` is on the front iff no other valid point ``j`` has
    ``cost_j <= cost_i`` and ``quality_j >= quality_i`` with at least one strict.
    Identical points therefore do not dominate each other and are all on the
    front. Points whose cost or quality is ``None`` or NaN are invalid: they are
    ``False`` and never dominate anything. ``costs`` and ``qualities`` must have
    the same length (``ValueError`` otherwise).
    """
    costs = list(costs)
    qualities = list(qualities)
    if len(costs) != len(qualities):
        raise ValueError(
            f"costs and qualities must have equal length, got {len(costs)} and {len(qualities)}"
        )
    valid = [
        i
        for i, (c, q) in enumerate(zip(costs, qualities))
        if c is not None and q is not None and not math.isnan(c) and not math.isnan(q)
    ]
    on_front = [False] * len(costs)
    # Sweep cost groups in increasing order; best_prev is the best quality among
    # strictly cheaper points. Within a group only the points at the group's top
    # quality can survive, and only if they beat every strictly cheaper point.
    valid.sort(key=lambda i: float(costs[i]))
    best_prev: float | None = None
    k = 0
    while k < len(valid):
        group_cost = float(costs[valid[k]])
        end = k
        while end < len(valid) and float(costs[valid[end]]) == group_cost:
            end += 1
        group = valid[k:end]
        top = max(float(qualities[i]) for i in group)
        if best_prev is None or top > best_prev:
            for i in group:
                if float(qualities[i]) == top:
                    on_front[i] = True
            best_prev = top
        k = end
    return on_front


# --------------------------------------------------------------------------- reward vs length

#: A reward-length correlation is flagged "strong" when |Spearman rho| >= this ...
REWARD_LENGTH_STRONG_RHO = 0.5
#: ... over at least this many answers. Choice: rho = 0.5 is a large rank association, and at
#: n = 16 it is also about the two-sided 5% critical value of Spearman's rho (0.50), so a
#: flagged cell is unlikely to be noise; below 16 answers nothing is flagged.
REWARD_LENGTH_MIN_N = 16


def _average_ranks(x: np.ndarray) -> np.ndarray:
    """1-based ranks, ties sharing their average rank."""
    order = np.argsort(x, kind="mergesort")
    ranks = np.empty(len(x), dtype=np.float64)
    sx = x[order]
    i = 0
    while i < len(x):
        j = i
        while j + 1 < len(x) and sx[j + 1] == sx[i]:
            j += 1
        ranks[order[i : j + 1]] = (i + j) / 2.0 + 1.0
        i = j + 1
    return ranks


def reward_length_correlation(
    rewards: Iterable[float | None], lengths: Iterable[float | None]
) -> tuple[float | None, int]:
    """Spearman rank correlation between reward and response length, and the pairs used.

    The classic reward-hacking direction is a reward that grows with length (rho > 0).
    Pairs where either side is None or NaN are dropped. Ties get average ranks (Spearman's
    rho = Pearson correlation of the ranks). Returns ``(None, n)`` when n < 3 or either side
    is constant (the correlation is undefined)."""
    pairs = [
        (float(r), float(n))
        for r, n in zip(rewards, lengths)
        if r is not None and n is not None and not math.isnan(float(r)) and not math.isnan(float(n))
    ]
    n = len(pairs)
    if n < 3:
        return None, n
    r = _average_ranks(np.asarray([p[0] for p in pairs]))
    q = _average_ranks(np.asarray([p[1] for p in pairs]))
    r -= r.mean()
    q -= q.mean()
    den = math.sqrt(float((r * r).sum()) * float((q * q).sum()))
    if den == 0.0:
        return None, n
    return max(-1.0, min(1.0, float((r * q).sum()) / den)), n


def reward_length_strong(rho: float | None, n: int) -> bool:
    """True when |rho| >= REWARD_LENGTH_STRONG_RHO over n >= REWARD_LENGTH_MIN_N answers."""
    return rho is not None and n >= REWARD_LENGTH_MIN_N and abs(rho) >= REWARD_LENGTH_STRONG_RHO


# --------------------------------------------------------------------------- rates and agreement


def wilson_ci(successes: int, n: int, alpha: float = 0.05) -> tuple[float, float] | None:
    """Wilson score interval for a binomial proportion; ``None`` when ``n == 0``.

    Used for rates (pass@1, refusal rate) instead of the bootstrap: with few prompts and a rate
    of 0 or 1 the percentile bootstrap collapses to a zero-width interval, Wilson does not.
    """
    if not 0.0 < alpha < 1.0:
        raise ValueError(f"alpha must be in (0, 1), got {alpha!r}")
    if n < 0 or not 0 <= successes <= n:
        raise ValueError(f"need 0 <= successes <= n, got {successes}/{n}")
    if n == 0:
        return None
    from statistics import NormalDist

    z = NormalDist().inv_cdf(1.0 - alpha / 2.0)
    p = successes / n
    denom = 1.0 + z * z / n
    centre = (p + z * z / (2 * n)) / denom
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / denom
    lo = 0.0 if successes == 0 else max(0.0, centre - half)  # exact ends: no 1e-17 residue
    hi = 1.0 if successes == n else min(1.0, centre + half)
    return lo, hi


def rate_with_ci(flags: Iterable[bool | None], alpha: float = 0.05) -> tuple[float | None, float | None, float | None]:
    """(rate, ci_low, ci_high) of the true entries among the non-None ``flags`` (Wilson interval);
    all ``None`` when there are no flags."""
    vals = [bool(f) for f in flags if f is not None]
    if not vals:
        return None, None, None
    lo_hi = wilson_ci(sum(vals), len(vals), alpha)
    assert lo_hi is not None
    return sum(vals) / len(vals), lo_hi[0], lo_hi[1]


def refusal_agreement(predicted: Sequence[bool], human: Sequence[bool]) -> dict[str, float | int | None]:
    """Agreement of a refusal scorer with human labels (True = refusal).

    Returns ``n``, the confusion counts (``tp`` refusals caught, ``fn`` refusals missed, ``fp``
    non-refusals called refusals, ``tn``), ``accuracy``, ``precision``, ``recall`` and Cohen's
    ``kappa`` (agreement beyond chance; ``None`` where a denominator is 0).
    """
    predicted, human = list(predicted), list(human)
    if len(predicted) != len(human):
        raise ValueError(f"predicted and human must have equal length, got {len(predicted)} and {len(human)}")
    n = len(human)
    tp = sum(1 for p, h in zip(predicted, human) if p and h)
    fp = sum(1 for p, h in zip(predicted, human) if p and not h)
    fn = sum(1 for p, h in zip(predicted, human) if not p and h)
    tn = n - tp - fp - fn
    acc = (tp + tn) / n if n else None
    kappa = None
    if n:
        pe = ((tp + fp) * (tp + fn) + (fn + tn) * (fp + tn)) / (n * n)
        kappa = (acc - pe) / (1 - pe) if pe < 1 else None
    return {
        "n": n, "tp": tp, "fn": fn, "fp": fp, "tn": tn, "accuracy": acc,
        "precision": tp / (tp + fp) if tp + fp else None,
        "recall": tp / (tp + fn) if tp + fn else None,
        "kappa": kappa,
    }
