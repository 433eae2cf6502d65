"""bench/fidelity.py's targets, workload sizes and statistics: plain numbers in, numbers out.

No vLLM, no torch (bench/test_bench_fidelity.py checks it): the overhead and throughput parts
(fidelity_overhead.py, fidelity_throughput.py) and the report (fidelity_report.py) share these.
"""
from __future__ import annotations

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


def overhead_verdict(pct: float, ci: tuple[float, float] | None = None, target: float = TARGET_OVERHEAD_PCT) -> dict[str, Any]:
    """pass: the median estimate is under target. resolved: the CI is narrow enough to tell
    (its upper end is under the target, or its lower end over it)."""
    out: dict[str, Any] = {"target_pct": target, "value_pct": pct, "pass": pct < target}
    if ci is not None:
        out["ci95_pct"] = list(ci)
        out["resolved"] = ci[1] < target or ci[0] >= target
    return out


def ratio_verdict(ratio: float, tol: float = TARGET_RATIO_TOL) -> dict[str, Any]:
    return {"target": f"within {tol:.0%}", "ratio": ratio, "deviation_pct": 100.0 * (ratio - 1.0), "pass": abs(ratio - 1.0) <= tol}


def tokens_per_s(output_tokens: Sequence[int], seconds: float) -> float:
    return float(sum(output_tokens)) / seconds


def fmt(x, nd=2, unit=""):
    """A number for a log line or a table cell; None reads "n/a"."""
    return "n/a" if x is None else f"{x:.{nd}f}{unit}"
