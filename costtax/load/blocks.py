"""Blocks of answers that share their fate, and the intervals that resample them.

Answers under load are not independent: in a closed loop (`concurrency=C`) the C answers of one
wave run in lockstep through the same engine steps, so one slow step (a preemption, a neighbour's
burst, a reward pass that waits for a cohort) delays all of them; in an open loop (`rate=R`) the
answers in flight together share the queue. A bootstrap over answers treats C correlated answers
as C independent ones and its interval is too narrow by about √(design effect). These helpers
resample whole blocks instead (a block bootstrap, Künsch 1989; non-overlapping blocks, Carlstein
1986), or, where a level was measured more than once (cell repeats, search re-probes), take the
repeats' own statistics (a t-interval over repeat values, as AIPerf does over runs).

Measurement choices (README "Measurement choices" restates them):
- Closed loop: a block is a wave, C answers consecutive in admission order (the `admission`
  field; older runs without it: arrival order), per (cell repeat, probe).
- Open loop: a block is a time window of one median answer latency (answers that arrived within
  one latency of each other were in flight together), in arrival order.
- Best-of-N and other techniques scored by the reward micro-batcher: blocks whose answers shared a
  reward pass (score calls with one `batch_id` in a unit) are merged (merge_shared): a pass that
  waits for a cohort delays every answer in it.
- Batch: every answer of a unit was released at once, so the unit is one block: no within-run
  interval for its timing; only repeats (or compare's A/A noise band) give one.
- An interval from blocks needs at least `MIN_BLOCKS` blocks; fewer (a search probe of 4×C
  answers holds 4 waves) give none, and the level's interval must come from repeats.
- answers/s: each block carries its answers and the time it added to the span (its last finish
  minus the previous block's last finish); the ratio of resampled sums, so the point is the
  level's own answers over its span.
"""
from __future__ import annotations

import math
from typing import Any, Callable, Mapping, Sequence

MIN_BLOCKS = 5  # fewer blocks: a block bootstrap is degenerate (with 4 blocks, 4^4 distinct resamples at most)
N_BOOT = 1000


def _betacf(a: float, b: float, x: float) -> float:
    """Continued fraction of the regularized incomplete beta function (modified Lentz)."""
    tiny = 1e-300
    qab, qap, qam = a + b, a + 1.0, a - 1.0
    c, d = 1.0, 1.0 - qab * x / qap
    d = 1.0 / (d if abs(d) > tiny else tiny)
    h = d
    for m in range(1, 300):
        m2 = 2 * m
        aa = m * (b - m) * x / ((qam + m2) * (a + m2))
        d = 1.0 + aa * d
        d = 1.0 / (d if abs(d) > tiny else tiny)
        c = 1.0 + aa / c if abs(1.0 + aa / c) > tiny else tiny
        h *= d * c
        aa = -(a + m) * (qab + m) * x / ((a + m2) * (qap + m2))
        d = 1.0 + aa * d
        d = 1.0 / (d if abs(d) > tiny else tiny)
        c = 1.0 + aa / c if abs(1.0 + aa / c) > tiny else tiny
        de = d * c
        h *= de
        if abs(de - 1.0) < 1e-12:
            break
    return h


def _betai(a: float, b: float, x: float) -> float:
    if x <= 0:
        return 0.0
    if x >= 1:
        return 1.0
    lbt = math.lgamma(a + b) - math.lgamma(a) - math.lgamma(b) + a * math.log(x) + b * math.log(1 - x)
    if x < (a + 1) / (a + b + 2):
        return math.exp(lbt) * _betacf(a, b, x) / a
    return 1.0 - math.exp(lbt) * _betacf(b, a, 1 - x) / b


def t_cdf(t: float, df: float) -> float:
    """Student t distribution function."""
    tail = 0.5 * _betai(df / 2, 0.5, df / (df + t * t))
    return 1 - tail if t > 0 else tail


def t_quantile(p: float, df: float) -> float:
    """Student t quantile by bisection on t_cdf (scipy is not a dependency)."""
    if not 0 < p < 1:
        raise ValueError(f"p must be in (0, 1), got {p!r}")
    if p < 0.5:
        return -t_quantile(1 - p, df)
    lo, hi = 0.0, 1.0
    while t_cdf(hi, df) < p:
        hi *= 2
    for _ in range(100):
        mid = (lo + hi) / 2
        if t_cdf(mid, df) < p:
            lo = mid
        else:
            hi = mid
    return (lo + hi) / 2


def _t975(df: int) -> float:
    """Two-sided 95% Student t quantile."""
    return t_quantile(0.975, df)


def answer_blocks(answers: Sequence[Any], mode: str, concurrency: int | None = None) -> list[list[Any]]:
    """The blocks of one load level's answers (objects with cell_repeat, admission, t_arrival_s,
    latency_s and optionally probe), by the rules of the module docstring. Units (cell repeat,
    probe) never share a block."""
    units: dict[tuple, list] = {}
    for a in answers:
        units.setdefault((getattr(a, "cell_repeat", 0) or 0, getattr(a, "probe", 0) or 0), []).append(a)
    out: list[list[Any]] = []
    for _, rows in sorted(units.items()):
        if mode == "concurrency":
            c = max(int(concurrency or 1), 1)
            order = sorted(rows, key=_admission_key)
            out += [order[i:i + c] for i in range(0, len(order), c)]
        elif mode == "rate":
            order = sorted(rows, key=lambda a: (_num(a.t_arrival_s, 0.0)))
            lats = sorted(_num(a.latency_s, 0.0) for a in order)
            window = lats[len(lats) // 2] if lats else 0.0
            if window <= 0:
                out += [[a] for a in order]
                continue
            t0 = _num(order[0].t_arrival_s, 0.0)
            groups: dict[int, list] = {}
            for a in order:
                groups.setdefault(int((_num(a.t_arrival_s, 0.0) - t0) // window), []).append(a)
            out += [groups[k] for k in sorted(groups)]
        else:  # batch: one block per unit
            out.append(list(rows))
    return out


def merge_shared(blocks: Sequence[Sequence[Any]], passes: Mapping[str, set]) -> list[list[Any]]:
    """Blocks joined where their answers shared a reward pass: best-of-N answers of different waves
    scored in one micro-batch (score calls with one `batch_id`) wait for each other, so their
    latencies share that pass's fate. `passes`: answer_id -> the pass keys of its score calls.
    Merged blocks keep the order of their first member."""
    parent = list(range(len(blocks)))

    def find(i: int) -> int:
        while parent[i] != i:
            parent[i] = parent[parent[i]]
            i = parent[i]
        return i

    owner: dict[Any, int] = {}
    for i, b in enumerate(blocks):
        for a in b:
            for key in passes.get(getattr(a, "answer_id", None), ()):
                j = owner.setdefault(key, i)
                ri, rj = find(i), find(j)
                if ri != rj:
                    parent[max(ri, rj)] = min(ri, rj)
    out: dict[int, list[Any]] = {}
    for i, b in enumerate(blocks):
        out.setdefault(find(i), []).extend(b)
    return [out[k] for k in sorted(out)]


def _num(v, default: float) -> float:
    return float(v) if isinstance(v, (int, float)) and not isinstance(v, bool) and v == v else default


def _admission_key(a) -> tuple:
    adm = getattr(a, "admission", None)
    return (0, adm, 0.0) if isinstance(adm, int) else (1, 0, _num(getattr(a, "t_arrival_s", None), math.inf))


def block_bootstrap_ci(blocks: Sequence[Sequence[float]], stat: Callable | float, *, n_boot: int = N_BOOT, seed: int = 0,
                       min_blocks: int = MIN_BLOCKS) -> tuple[float, float] | None:
    """Percentile 95% CI of stat(values) when whole blocks are resampled with replacement;
    None with fewer than `min_blocks` non-empty blocks. `stat`: a callable on a 1-D numpy array,
    or a number q for the q-th percentile (vectorised: blocks padded with NaN)."""
    import numpy as np

    bl = [np.asarray(b, dtype=float) for b in blocks if len(b)]
    if len(bl) < min_blocks:
        return None
    rng = np.random.default_rng(seed)
    k = len(bl)
    idx = rng.integers(0, k, (n_boot, k))
    if isinstance(stat, (int, float)):
        pad = np.full((k, max(len(b) for b in bl)), np.nan)
        for i, b in enumerate(bl):
            pad[i, :len(b)] = b
        vals = _row_percentile(pad[idx].reshape(n_boot, -1), float(stat))
    else:
        vals = np.array([stat(np.concatenate([bl[i] for i in row])) for row in idx])
    lo, hi = np.percentile(vals, [2.5, 97.5])
    return float(lo), float(hi)


def _row_percentile(m, q: float):
    """np.percentile(row without NaN, q) (linear interpolation) of every row, vectorised."""
    import numpy as np

    s = np.sort(m, axis=1)  # NaN last
    cnt = (~np.isnan(s)).sum(axis=1)
    pos = (cnt - 1) * q / 100.0
    lo = np.floor(pos).astype(int)
    hi = np.minimum(lo + 1, cnt - 1)
    a = np.take_along_axis(s, lo[:, None], 1)[:, 0]
    b = np.take_along_axis(s, hi[:, None], 1)[:, 0]
    return a + (b - a) * (pos - lo)


def ratio_block_ci(pairs: Sequence[tuple[float, float]], *, n_boot: int = N_BOOT, seed: int = 0,
                   min_blocks: int = MIN_BLOCKS) -> tuple[float, float] | None:
    """95% CI of sum(num)/sum(den) over blocks given as (num, den) pairs, blocks resampled."""
    import numpy as np

    arr = np.asarray(pairs, dtype=float).reshape(-1, 2)
    if len(arr) < min_blocks:
        return None
    rng = np.random.default_rng(seed)
    idx = rng.integers(0, len(arr), (n_boot, len(arr)))
    num, den = arr[idx, 0].sum(axis=1), arr[idx, 1].sum(axis=1)
    ok = den > 0
    if not ok.any():
        return None
    lo, hi = np.percentile(num[ok] / den[ok], [2.5, 97.5])
    return float(lo), float(hi)


def throughput_blocks(blocks: Sequence[Sequence[Any]]) -> list[tuple[float, float]]:
    """(answers, seconds) per block: the time each block added to its unit's span (its last finish
    minus the previous block's; the first block from its first arrival), so the sums give the
    unit's answers and span. Blocks without arrival/finish times are left out."""
    out: list[tuple[float, float]] = []
    prev: dict[tuple, float] = {}
    for b in blocks:
        fin = [_num(a.t_finish_s, math.nan) for a in b]
        arr = [_num(a.t_arrival_s, math.nan) for a in b]
        fin = [x for x in fin if x == x]
        arr = [x for x in arr if x == x]
        if not fin or not arr:
            continue
        unit = (getattr(b[0], "cell_repeat", 0) or 0, getattr(b[0], "probe", 0) or 0)
        start = prev.get(unit, min(arr))
        end = max(max(fin), start)
        out.append((float(len(b)), end - start))
        prev[unit] = end
    return out


def repeat_t_ci(values: Sequence[float]) -> tuple[float, float] | None:
    """95% t-interval over repeat-level values (cell repeats, probes); None under 2 values.
    Positive values (times, rates) are taken on the log scale (a geometric interval: never
    below zero, and symmetric in ratio, as the slowdown limits are); others as they are."""
    v = [float(x) for x in values if isinstance(x, (int, float)) and x == x]
    if len(v) < 2:
        return None
    log = all(x > 0 for x in v)
    w = [math.log(x) for x in v] if log else v
    m = sum(w) / len(w)
    sd = math.sqrt(sum((x - m) ** 2 for x in w) / (len(w) - 1))
    half = _t975(len(w) - 1) * sd / math.sqrt(len(w))
    return (math.exp(m - half), math.exp(m + half)) if log else (m - half, m + half)


MIN_CLUSTERS = 5  # the slope over cluster means has G-2 degrees of freedom; at 3 (P(t3 > 3) = 2.9%) the stop's T_MIN keeps its meaning


def cluster_slope_t(xs: Sequence[float], ys: Sequence[float], cluster: int) -> tuple[float, float, int] | None:
    """(slope, t, clusters) of y on x when runs of `cluster` consecutive points share their fate:
    the least-squares slope over the G cluster means (x mean, y mean), with its own standard error
    on G-2 degrees of freedom, so a wave counts once however many answers it holds. None with fewer
    than MIN_CLUSTERS clusters or no spread in x. A last, partial cluster counts when at least half full."""
    c = max(int(cluster), 1)
    groups = [(xs[i:i + c], ys[i:i + c]) for i in range(0, len(xs), c)]
    groups = [g for g in groups if len(g[0]) * 2 >= c]
    g = len(groups)
    if g < MIN_CLUSTERS:
        return None
    mxs = [sum(gx) / len(gx) for gx, _ in groups]
    mys = [sum(gy) / len(gy) for _, gy in groups]
    mx, my = sum(mxs) / g, sum(mys) / g
    sxx = sum((x - mx) ** 2 for x in mxs)
    if sxx <= 0:
        return None
    slope = sum((x - mx) * (y - my) for x, y in zip(mxs, mys)) / sxx
    resid = sum((y - my - slope * (x - mx)) ** 2 for x, y in zip(mxs, mys))
    se = math.sqrt(resid / (g - 2) / sxx)
    t = slope / se if se > 0 else (math.inf if slope > 0 else 0.0)
    return slope, t, g


def latency_interval(answers: Sequence[Any], mode: str, concurrency: int | None, q: float,
                     passes: Mapping[str, set] | None = None) -> tuple[float | None, float | None, str]:
    """(low, high, from) of the 95% interval of the q-th latency percentile of one (cell, load
    level), the one rule summary.csv's `*_ci95_*` columns and `costtax compare` share: with two or
    more units (cell repeats, search probes) a t-interval over the units' percentiles ("repeats");
    with one, a bootstrap over its blocks (waves / time windows, merged where they shared a reward
    pass: `passes`, answer_id -> pass keys) ("blocks"), none with fewer than MIN_BLOCKS
    ("too few blocks"); a batch unit resamples its answers ("answers": the spread of one batch,
    not of a rerun)."""
    from .. import stats as M

    def lat(rows):
        return [x for x in (_num(a.latency_s, math.nan) for a in rows) if x == x]

    units: dict[tuple, list] = {}
    for a in answers:
        units.setdefault((getattr(a, "cell_repeat", 0) or 0, getattr(a, "probe", 0) or 0), []).append(a)
    if len(units) >= 2:
        vals = [M.percentiles(lat(rows), (q,))[f"p{q:g}"] for rows in units.values() if lat(rows)]
        ci = repeat_t_ci([v for v in vals if v is not None])
        return (*(ci or (None, None)), "repeats")
    if mode not in ("concurrency", "rate"):
        values = lat(answers)
        ci = (M.bootstrap_ci(values, stat="median") if q == 50 else block_bootstrap_ci([[x] for x in values], q, min_blocks=2))
        return (*(ci or (None, None)), "answers")
    blocks = answer_blocks(answers, mode, concurrency)
    if passes:
        blocks = merge_shared(blocks, passes)
    ci = block_bootstrap_ci([lat(b) for b in blocks], q)
    return (*(ci or (None, None)), "blocks" if ci else "too few blocks")
