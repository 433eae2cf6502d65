"""bench/fidelity.py's targets, workload sizes and statistics: plain numbers in, numbers out.

No vLLM, no torch (bench/test_bench_fidelity.py checks it): the overhead and throughput parts
(fidelity_overhead.py, fidelity_throughput.py) and the report (fidelity_report.py) share these.
"""
from __future__ import annotations

import math
import random
import statistics
from typing import Any, Sequence

from costtax.model_files import DEFAULT_MODEL as MODEL  # noqa: F401  (the embedded default; both parts run it)

SCHEMA = "costtax-fidelity/1"
TARGET_OVERHEAD_PCT = 2.0
TARGET_RATIO_TOL = 0.10  # |costtax / vLLM bench - 1|
FULL = dict(runs=5, n_prompts=16, max_tokens=32)
QUICK = dict(runs=2, n_prompts=4, max_tokens=8)
QUIET_LIMIT = 0.10  # a round is "quiet" when other tenants used <= 10 % of the machine in both arms


def median(xs: Sequence[float]) -> float:
    if not xs:
        raise ValueError("median of an empty sequence")
    return float(statistics.median(xs))


def spread(xs: Sequence[float]) -> dict[str, float | int]:
    """Summary of a list of timings; rel_range = (max - min) / median (the noise gauge)."""
    xs = [float(x) for x in xs]
    m = median(xs)
    return {
        "n": len(xs),
        "median": m,
        "mean": statistics.fmean(xs),
        "min": min(xs),
        "max": max(xs),
        "stdev": statistics.stdev(xs) if len(xs) > 1 else 0.0,
        "rel_range_pct": 100.0 * (max(xs) - min(xs)) / m if m else float("nan"),
    }


def overhead_pct(raw: Sequence[float], instrumented: Sequence[float]) -> float:
    """(median(instrumented) - median(raw)) / median(raw), in percent."""
    a, b = median(raw), median(instrumented)
    if a <= 0:
        raise ValueError("median raw time must be > 0")
    return 100.0 * (b - a) / a


def paired_overhead_pcts(raw: Sequence[float], instrumented: Sequence[float]) -> list[float]:
    """Per-round (b_i - a_i) / a_i in percent: rounds are adjacent in time, so slow drifts in the
    machine's load cancel within a pair."""
    if len(raw) != len(instrumented):
        raise ValueError("raw and instrumented need the same number of rounds")
    return [100.0 * (b - a) / a for a, b in zip(raw, instrumented)]


def bootstrap_median_ci(xs: Sequence[float], *, level: float = 0.95, resamples: int = 4000, seed: int = 0) -> tuple[float, float]:
    """Percentile bootstrap CI of the median (seeded: the same numbers give the same CI):
    costtax.stats.bootstrap_ci, with this bench's degenerate cases (0 or 1 value)."""
    from costtax.stats import bootstrap_ci

    xs = list(xs)
    if len(xs) < 2:
        return (float(xs[0]), float(xs[0])) if xs else (float("nan"), float("nan"))
    return bootstrap_ci(xs, stat="median", n_boot=resamples, alpha=1 - level, seed=seed)


def throughput_ratio(costtax_tps: Sequence[float], vllm_tps: Sequence[float]) -> float:
    return median(costtax_tps) / median(vllm_tps)


def rotated(arms: Sequence[str], round_index: int) -> list[str]:
    """Arm order for one round: rotate by the round index so no arm always runs first."""
    k = round_index % len(arms)
    return list(arms[k:]) + list(arms[:k])


def bootstrap_overhead_ci(
    raw: Sequence[float], instrumented: Sequence[float], *, level: float = 0.95, resamples: int = 4000, seed: int = 0
) -> tuple[float, float]:
    """Percentile bootstrap CI of the UNPAIRED overhead, overhead_pct(raw, instrumented) (the
    difference of medians over the raw median, in percent): each arm resampled on its own,
    seeded. The paired estimate has its own CI (bootstrap_median_ci of paired_overhead_pcts);
    the two are never mixed."""
    raw, instrumented = [float(x) for x in raw], [float(x) for x in instrumented]
    if len(raw) < 2 or len(instrumented) < 2:
        v = overhead_pct(raw, instrumented)
        return (v, v)
    rng = random.Random(seed)
    vals = sorted(
        overhead_pct([rng.choice(raw) for _ in raw], [rng.choice(instrumented) for _ in instrumented])
        for _ in range(resamples)
    )
    lo = vals[int(math.floor((1 - level) / 2 * (resamples - 1)))]
    hi = vals[int(math.ceil((1 + level) / 2 * (resamples - 1)))]
    return (lo, hi)


def overhead_verdict(pct: float, ci: tuple[float, float], target: float = TARGET_OVERHEAD_PCT) -> dict[str, Any]:
    """The verdict on one estimate (``pct``) and ITS OWN 95 % CI: pass when the CI's upper end is
    under the target (the overhead is shown to be below it), not when the point estimate is.
    resolved: the CI is on one side of the target (upper end under it, or lower end at/over it);
    an unresolved CI fails the check ("not resolved: noise")."""
    lo, hi = float(ci[0]), float(ci[1])
    return {
        "target_pct": target,
        "value_pct": pct,
        "ci95_pct": [lo, hi],
        "pass": hi < target,
        "resolved": hi < target or lo >= target,
        "rule": f"pass when the CI95's upper end < {target:g} %",
    }


def overhead_estimates(raw: Sequence[float], instrumented: Sequence[float], target: float = TARGET_OVERHEAD_PCT) -> dict[str, Any]:
    """Both overhead estimates, each with its own CI95, and the verdict, which is on the paired
    one (rounds are adjacent in time, so slow drifts cancel within a pair):
    {"paired": {value_pct, ci95_pct}, "unpaired": {value_pct, ci95_pct}, "verdict": ...}."""
    paired = paired_overhead_pcts(raw, instrumented)
    p_val, p_ci = median(paired), bootstrap_median_ci(paired)
    u_val, u_ci = overhead_pct(raw, instrumented), bootstrap_overhead_ci(raw, instrumented)
    return {
        "paired": {"value_pct": p_val, "ci95_pct": list(p_ci), "what": "median of per-round (instrumented - raw) / raw"},
        "unpaired": {"value_pct": u_val, "ci95_pct": list(u_ci), "what": "(median instrumented - median raw) / median raw"},
        "verdict": {**overhead_verdict(p_val, p_ci, target), "estimate": "paired"},
    }


def ratio_verdict(ratio: float, tol: float = TARGET_RATIO_TOL) -> dict[str, Any]:
    return {"target": f"within {tol:.0%}", "ratio": ratio, "deviation_pct": 100.0 * (ratio - 1.0), "pass": abs(ratio - 1.0) <= tol}


def tokens_per_s(output_tokens: Sequence[int], seconds: float) -> float:
    return float(sum(output_tokens)) / seconds


def fmt(x, nd=2, unit=""):
    """A number for a log line or a table cell; None reads "n/a"."""
    return "n/a" if x is None else f"{x:.{nd}f}{unit}"
