"""Stopping a load level early when it cannot hold (costtax.load.levels.drive's `watch`).

Two signals, each a reason the level is stopped, its finished rows kept:

- **Over-saturation (slope test)**, as GuideLLM does for rate levels. Open loop (`rate=R`): the
  answers in flight, sampled at every arrival, keep rising through the level: arrivals outpace
  completions (Little's law: in flight = rate x latency, so a steady level keeps it flat).
  Closed loop (`concurrency=C`): the number in flight is fixed by construction, so the signal is
  the answers' own latency rising through the level (in order of finish): an engine that
  degrades as it runs (KV-cache preemption, swapping, a growing server-side queue). Test: the
  least-squares slope of the signal against time, over the points after the ramp-up (the first
  `RAMP_FRACTION` of the planned answers, and at least the first C finishes in closed loop),
  once there are `MIN_POINTS` of them, is positive with t = slope / its standard error above
  `T_MIN`, and the fitted rise across those points exceeds `RISE_MIN` of their mean (and, for
  counts of answers in flight, at least `RISE_MIN_ANSWERS` answers). Reason `oversaturated: ...`.
  Closed loop: the points are not independent (a wave of C answers finishes together), so the
  slope and its t are fitted to the means of runs of C consecutive finishes, and need at least 5
  such waves (costtax.load.blocks.cluster_slope_t): one slow wave is one piece of evidence, not C.
  Open loop keeps one point per arrival (see LevelWatch.released).
- **SLO out of reach** (search probes only, where the question is only "does p95 meet the SLO"):
  once k of the level's N planned answers have finished above the SLO, with
  k >= N - floor(0.95 (N - 1)), the level's p95 (linear interpolation) is above the SLO whatever
  the rest do, so running them only costs time. Reason `slo_out_of_reach: ...`.

Either way a search counts the level as "did not hold".
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field

from .levels import CLOSED_LOOP, OPEN_LOOP

MIN_POINTS = 8
T_MIN = 3.0
RISE_MIN = 0.5
RISE_MIN_ANSWERS = 2.0
RAMP_FRACTION = 0.25


def slope_test(xs: list[float], ys: list[float]) -> tuple[float, float, float] | None:
    """(slope, t statistic, fitted rise over the x range / mean y) of y on x by least squares;
    None with fewer than 3 points or no spread in x."""
    n = len(xs)
    if n < 3:
        return None
    mx, my = sum(xs) / n, sum(ys) / n
    sxx = sum((x - mx) ** 2 for x in xs)
    if sxx <= 0:
        return None
    slope = sum((x - mx) * (y - my) for x, y in zip(xs, ys)) / sxx
    resid = sum((y - (my + slope * (x - mx))) ** 2 for x, y in zip(xs, ys))
    se = math.sqrt(resid / (n - 2) / sxx) if n > 2 else float("inf")
    t = slope / se if se > 0 else (math.inf if slope > 0 else 0.0)
    rise = slope * (max(xs) - min(xs))
    return slope, t, (rise / abs(my)) if my else math.inf


def rising(xs: list[float], ys: list[float], *, min_abs_rise: float = 0.0, cluster: int = 1) -> str | None:
    """A description of the rise when the slope test says the signal keeps rising, else None.
    `cluster`: points that share their fate come in runs of this many consecutive points (a
    closed loop's wave of C finishes; in open loop about the answers in flight); the slope's
    standard error is then cluster-robust (costtax.load.blocks.cluster_slope_t), so C answers of one
    slow wave count as one piece of evidence, not C."""
    if len(xs) < MIN_POINTS:
        return None
    res = slope_test(xs, ys)
    if res is None:
        return None
    slope, t, rise_rel = res
    if cluster > 1:
        from .blocks import cluster_slope_t

        cres = cluster_slope_t(xs, ys, cluster)
        if cres is None:  # under MIN_CLUSTERS clusters: too few independent pieces to call a trend
            return None
        t = cres[1]
    rise = slope * (max(xs) - min(xs))
    if slope > 0 and t > T_MIN and rise_rel > RISE_MIN and rise >= min_abs_rise:
        return f"rose {rise:.3g} over {max(xs) - min(xs):.3g} s ({rise_rel:.0%} of its mean, t={t:.1f}, {len(xs)} points)"
    return None


def slo_out_of_reach_count(planned: int) -> int:
    """Answers above the SLO that put the p95 of `planned` answers above it for certain."""
    return planned - math.floor(0.95 * (planned - 1))


@dataclass
class LevelWatch:
    """Watches one level: `released(t, in_flight)` at every release, `finished(t_release,
    t_finish)` at every finish; each returns a stop reason or None."""

    mode: str  # concurrency | rate
    planned: int
    concurrency: int | None = None
    slo_p95_s: float | None = None  # set for search probes: the SLO-out-of-reach rule
    slope: bool = True  # the over-saturation slope test
    _arrivals: list[tuple[float, float]] = field(default_factory=list)
    _finishes: list[tuple[float, float]] = field(default_factory=list)
    _over_slo: int = 0

    def released(self, t: float, in_flight: int) -> str | None:
        if self.mode != OPEN_LOOP or not self.slope:
            return None
        self._arrivals.append((t, float(in_flight)))
        pts = self._arrivals[int(RAMP_FRACTION * self.planned):]
        # Not clustered (yet): the in-flight count of an open loop that cannot follow rises from
        # the ramp on, so "as many arrivals as were in flight" gives too few clusters to test the
        # very case the stop is for; the 50 % and 2-answer rise floors guard this series instead.
        why = rising([p[0] for p in pts], [p[1] for p in pts], min_abs_rise=RISE_MIN_ANSWERS)
        return f"oversaturated: answers in flight {why}" if why else None

    def finished(self, t_release: float, t_finish: float) -> str | None:
        latency = t_finish - t_release
        if self.slo_p95_s is not None and latency > self.slo_p95_s:
            self._over_slo += 1
            need = slo_out_of_reach_count(self.planned)
            if self._over_slo >= need:
                return (f"slo_out_of_reach: {self._over_slo} of {self.planned} planned answers took over "
                        f"{self.slo_p95_s:g} s, so their p95 cannot meet the SLO")
        if self.mode != CLOSED_LOOP or not self.slope:
            return None
        self._finishes.append((t_finish, latency))
        skip = max(int(RAMP_FRACTION * self.planned), int(self.concurrency or 0))
        pts = self._finishes[skip:]
        why = rising([p[0] for p in pts], [p[1] for p in pts], cluster=int(self.concurrency or 1))
        return f"oversaturated: answer latency {why}" if why else None


def level_watch(level, planned: int, *, slo_p95_s: float | None = None, slope: bool = True) -> LevelWatch | None:
    """The watch for one unit's level (None for the offline batch: nothing to stop there)."""
    if level.mode not in (CLOSED_LOOP, OPEN_LOOP) or (not slope and slo_p95_s is None):
        return None
    conc = int(level.value) if level.mode == CLOSED_LOOP else None
    return LevelWatch(level.mode, planned, conc, slo_p95_s, slope)
