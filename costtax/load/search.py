"""`--load search`: the highest load a cell sustains under a p95 latency SLO, found per cell.

Each probe is an ordinary load level (`concurrency=C`, or `rate=R` for `--load search=rate`):
its rows are written like any level's and it gets its own summary row. The search itself keeps
no state of its own: every decision is a function of the rows already written, so a report, a
resume and the runner all replay the same sequence (`replay`).

Rules (README "Capacity search" restates them):
- **Sequence.** Start at `--search-start` (default concurrency 1, rate 0.25 answers/s); double
  while the level holds, up to `--search-max` (the cap; a probe never exceeds it); after the
  first level that does not hold, bisect between the highest level that held and the lowest that
  did not, until they are adjacent integers (rate: within `RATE_RESOLUTION` of each other,
  relative), or until `--search-probes` probes are spent. A start level that does not hold is
  followed by bisection towards concurrency 1 (rate: halving), so a cell that cannot hold even
  that is `infeasible`.
- **Probe size.** A probe at concurrency C runs max(k x C, `--search-min-answers`) answers
  (k = `--search-answers-per-slot`, default 4, minimum 16), prompts cycled (each prompt answered
  again, as another repeat, when the set is smaller), so every slot turns over k times and C is
  really sustained: a probe with fewer answers than C would never have C in flight. A rate probe
  runs max(k x R x SLO, minimum) answers: R x SLO is the answers in flight at the SLO (Little).
- **Meets the SLO.** A probe holds when it finished every planned answer, was not saturated,
  stopped early (costtax.load.oversaturation) or failed, and its p95 (the summary row's
  `latency_p95_s`: with --cell-repeats the median of the repeats' p95s) is at or below the SLO.
  The point estimate decides the search; the p95's 95% CI (bootstrap over the probe's answers,
  widened to cover every repeat's p95) decides the capacity *interval* when no level was measured
  twice.
- **Capacity interval without re-probes** (units: the probe's load, concurrency or answers/s offered; and
  achieved answers/s): low end = the highest probed level that held with its whole p95 CI at or
  below the SLO (0 when none did); high end = one below the lowest probed level that failed
  for certain (whole CI above the SLO, or stopped, saturated, failed), or the highest probed
  level when none did (`capacity_hi_bounded` false). In achieved answers/s: the low end's
  throughput, and the best throughput measured at or below the level just above the high end
  (throughput does not fall as load rises below saturation; stated, not checked).
- **Over-saturation stop.** Open loop: a level the slope test stopped did not hold (its queue
  kept growing; the search does not climb past it) but counts as a *certain* failure only when
  the p95 of its finished answers has its whole CI above the SLO; otherwise it is "uncertain" and
  goes into the capacity interval. Closed loop: C requests in flight leave no queue to grow, so a
  latency trend is drift (a neighbour's burst), not the level failing: the finished answers' p95
  decides held or not, always "uncertain" (seen on the CPU machine: plain at concurrency 1, p95
  far under the SLO, stopped beside a test run and read as infeasible).
  A stop because the SLO was out of reach is certain by construction.
- **Re-probes** (`--search-reprobes R`, default 2; `reprobes` here, 0 for runs before them): once
  the search has finished, the bracketing levels (the last that held, the first that did not) are
  measured R more times, alternating, each under its own `probe` key (1..R; the reader keys
  units by (cell, level, cell repeat, probe)). Only probe 0 steers the search (so a replay is
  the same however many re-probes exist); re-probes feed the interval.
- **Capacity interval with re-probes** (`interval_from` "isotonic"): p95 is fitted
  non-decreasing in load (isotonic regression: the non-monotone p95 the reward cohorts cause is
  pooled, not read as capacity), bootstrapped over each level's units (cell repeats and probes)
  and, inside each unit, its waves (blocks of C answers in admission order), each replicate's
  p95s scaled by one common drift factor drawn from this machine's A/A band, else the shipped
  reference prior (costtax/load/drift.py: re-probes inside one run share its conditions, and three
  identical searches on the CPU machine put bon:n=4's capacity at different levels with
  drift-free intervals that excluded each other); the interval is the
  2.5 % and 97.5 % points of the replicates' capacities (high end: one below the next probed
  level), widened to include every uncertain over-saturated level. It has width unless every
  unit of the bracketing levels agrees which side of the SLO it is on. Without re-probes or
  repeats, the per-probe CI rule below gives the interval.
- **A level probed twice** by the search itself does not happen (bisection never revisits); a unit
  already in the run directory (finished or failed) is read, never rerun: a failed probe counts
  as "did not hold", also after a resume.
"""
from __future__ import annotations

import math
import statistics
from dataclasses import dataclass, field
from typing import Any, Iterable

from .levels import CLOSED_LOOP, OPEN_LOOP, LoadLevel

RATE_RESOLUTION = 0.10
DEFAULT_CAP = {CLOSED_LOOP: 64.0, OPEN_LOOP: 64.0}
DEFAULT_START = {CLOSED_LOOP: 1.0, OPEN_LOOP: 0.25}


@dataclass(frozen=True)
class SearchSpec:
    mode: str  # concurrency | rate
    slo_p95_s: float
    start: float
    cap: float
    probe_budget: int = 10
    answers_per_slot: int = 4
    min_answers: int = 16
    reprobes: int = 0  # re-measurements of the bracketing levels (runs before re-probes: 0)

    def __post_init__(self):
        if self.mode not in DEFAULT_CAP:
            raise ValueError(f"search mode must be one of {tuple(DEFAULT_CAP)}")
        if not self.slo_p95_s > 0:
            raise ValueError("slo_p95_s must be > 0")
        if not 0 < self.start <= self.cap:
            raise ValueError("need 0 < start <= cap")
        if self.mode == CLOSED_LOOP and (int(self.start) != self.start or int(self.cap) != self.cap):
            raise ValueError("concurrency start and cap must be integers")
        if self.probe_budget < 1 or self.answers_per_slot < 1 or self.min_answers < 1:
            raise ValueError("probe budget, answers per slot and minimum answers must be >= 1")
        if self.reprobes < 0:
            raise ValueError("reprobes must be >= 0")

    @classmethod
    def from_config(cls, config) -> "SearchSpec | None":
        from .levels import parse_search

        mode = parse_search(config.load)
        if mode is None:
            return None
        return cls(mode, float(config.slo_p95_s), float(config.search_start or DEFAULT_START[mode]),
                   float(config.search_max or DEFAULT_CAP[mode]), config.search_probes, config.search_answers_per_slot,
                   config.search_min_answers, getattr(config, "search_reprobes", 0))

    def level(self, value: float) -> LoadLevel:
        return LoadLevel(self.mode, float(int(value)) if self.mode == CLOSED_LOOP else float(value))

    def planned_answers(self, value: float) -> int:
        slots = value if self.mode == CLOSED_LOOP else value * self.slo_p95_s
        return max(int(math.ceil(self.answers_per_slot * slots)), self.min_answers)

    def to_dict(self) -> dict[str, Any]:
        return {k: getattr(self, k) for k in self.__dataclass_fields__}


@dataclass(frozen=True)
class Verdict:
    """One probe judged against the SLO."""

    value: float
    answers: int
    planned: int
    p95_s: float | None
    p95_ci95_lo_s: float | None
    p95_ci95_hi_s: float | None
    held: bool
    certain: bool  # the CI (or a stop) puts the verdict beyond doubt
    reason: str
    achieved_answers_per_s: float | None = None


def _p95(values: list[float]) -> float:
    import numpy as np

    return float(np.percentile(np.asarray(values, dtype=float), 95))


def p95_ci(values: list[float], n_boot: int = 1000, seed: int = 0) -> tuple[float, float] | None:
    """Percentile-bootstrap 95% interval of the p95 (numpy, seeded, resampled in chunks of
    bounded memory: stats.resample_with)."""
    import numpy as np

    from ..stats import resample_with

    arr = np.asarray([v for v in values if v is not None and v == v], dtype=float)
    if arr.size < 2:
        return None
    boots = resample_with(np.random.default_rng(seed), arr, lambda m: np.percentile(m, 95, axis=1), n_boot)
    return float(np.percentile(boots, 2.5)), float(np.percentile(boots, 97.5))


def judge(spec: SearchSpec, value: float, latencies_by_repeat: dict[int, list[float]], *, planned: int,
          stop_reason: str | None = None, saturated: bool = False, failed: bool = False,
          achieved_answers_per_s: float | None = None) -> Verdict:
    """Does the probe at `value` meet the SLO? (rules in the module docstring)"""
    reps = {k: [float(x) for x in v if x is not None and x == x] for k, v in latencies_by_repeat.items()}
    pooled = [x for v in reps.values() for x in v]
    per_rep = [_p95(v) for v in reps.values() if v]
    p95 = statistics.median(per_rep) if per_rep else None
    ci = p95_ci(pooled)
    lo, hi = (ci if ci else (p95, p95))
    if per_rep and lo is not None:
        lo, hi = min(lo, *per_rep), max(hi, *per_rep)
    short = min(len(v) for v in reps.values()) < planned if reps else True
    slo = spec.slo_p95_s
    if failed:
        held, certain, why = False, True, "failed"
    elif stop_reason and stop_reason.startswith("oversaturated") and p95 is not None and spec.mode == CLOSED_LOOP:
        # closed loop: C requests in flight, no queue to grow without bound; a latency trend there is
        # the machine or engine drifting (a neighbour's burst), not the level failing. The finished
        # answers' p95 decides, and the verdict is never certain: the level joins the interval
        held, certain = p95 <= slo, False
        why = (f"stopped early ({stop_reason}); p95 of the finished answers {p95:.3g} s "
               f"(CI95 {lo:.3g}..{hi:.3g} s) {'<=' if held else '>'} SLO {slo:g} s, uncertain")
    elif stop_reason and stop_reason.startswith("oversaturated") and p95 is not None:
        # open loop: the queue kept growing, so the level did not hold; whether its p95 misses the
        # SLO is for the p95 evidence to say (its finished answers): certain only when their whole CI is above
        held, certain = False, lo > slo
        why = (f"stopped early ({stop_reason}); p95 of the finished answers {p95:.3g} s "
               f"(CI95 {lo:.3g}..{hi:.3g} s) {'above' if certain else 'does not rule out'} SLO {slo:g} s")
    elif stop_reason:
        held, certain, why = False, True, f"stopped early ({stop_reason})"
    elif saturated:
        held, certain, why = False, True, "saturated"
    elif short or p95 is None:
        held, certain, why = False, True, f"finished fewer answers than the {planned} planned"
    else:
        held = p95 <= slo
        certain = (hi <= slo) if held else (lo > slo)
        why = f"p95 {p95:.3g} s {'<=' if held else '>'} SLO {slo:g} s (CI95 {lo:.3g}..{hi:.3g} s)"
    return Verdict(value, len(pooled), planned, p95, lo, hi, held, certain, why, achieved_answers_per_s)


def _fmt(spec: SearchSpec, v: float) -> float:
    return float(int(v)) if spec.mode == CLOSED_LOOP else float(f"{v:.3g}")


def next_probe(spec: SearchSpec, history: list[Verdict]) -> tuple[float, str] | None:
    """The next (value, role) to probe after `history` (in probe order), or None when done.
    Roles: start, double, bisect."""
    if not history:
        return _fmt(spec, spec.start), "start"
    if len(history) >= spec.probe_budget:
        return None
    held = [v.value for v in history if v.held]
    failed = [v.value for v in history if not v.held]
    if not failed:
        last = max(held)
        if last >= spec.cap:
            return None
        return _fmt(spec, min(2 * last, spec.cap)), "double"
    hi = min(failed)
    below = [v for v in held if v < hi]
    lo = max(below) if below else 0.0
    if spec.mode == CLOSED_LOOP:
        if hi - lo <= 1:
            return None
        return float((int(lo) + int(hi)) // 2), "bisect"
    if lo and hi / lo <= 1 + RATE_RESOLUTION:
        return None
    mid = _fmt(spec, (lo + hi) / 2 if lo else hi / 2)
    return (mid, "bisect") if mid not in (lo, hi) else None


@dataclass(frozen=True)
class Capacity:
    """A cell's search result. `interval_from`: "isotonic" (re-probed levels: a monotone fit of p95
    against load, bootstrapped over repeats, probes and waves) or "ci" (each probe's p95 CI)."""

    status: str  # bracketed | hit_cap | budget | infeasible | running
    capacity: float | None  # highest probed level that held (below the lowest that did not)
    bracket_fail: float | None  # the lowest probed level that did not hold, above it
    answers_per_s: float | None
    lo: float | None
    hi: float | None
    hi_bounded: bool
    answers_per_s_lo: float | None
    answers_per_s_hi: float | None
    probes: int
    order: tuple[tuple[float, str], ...] = field(default=())
    interval_from: str = "ci"
    uncertain: tuple[float, ...] = ()  # levels stopped as over-saturated whose p95 did not rule them out


def replay(spec: SearchSpec, measured: dict[float, Verdict]) -> tuple[list[tuple[Verdict, str]], tuple[float, str] | None]:
    """The probe sequence the search took over `measured` verdicts (keyed by level value), and
    the probe it wants next (None when finished; a value missing from `measured` otherwise)."""
    seq: list[tuple[Verdict, str]] = []
    while True:
        nxt = next_probe(spec, [v for v, _ in seq])
        if nxt is None or nxt[0] not in measured:
            return seq, nxt
        seq.append((measured[nxt[0]], nxt[1]))


def capacity(spec: SearchSpec, seq: list[tuple[Verdict, str]], pending: tuple[float, str] | None = None,
             units: dict[float, list[dict]] | None = None, drift_sd: float = 0.0) -> Capacity:
    """The cell's result from its probe sequence; with `units` (level_units: every repeat and
    re-probe of each level) where some level was measured more than once, the interval is the
    isotonic bootstrap's (isotonic_interval, with the run-to-run drift `drift_sd`) instead of the
    per-probe CIs'."""
    cap = _capacity(spec, seq, pending)
    if not units or pending is not None or max((len(u) for u in units.values()), default=0) < 2:
        return cap
    from .search_interval import isotonic_interval

    lo, hi = isotonic_interval(spec, units, drift_sd=drift_sd)
    uncertain = tuple(sorted(v.value for v, _ in seq if not v.held and not v.certain and v.reason.startswith("stopped early (oversaturated")))
    hi = max([hi, *uncertain])
    values = sorted(units)
    bounded = hi < max(values) or any(not v.held and v.certain and v.value > hi for v, _ in seq)

    # achieved answers/s per level: the median over its units (repeats and re-probes), as summary.csv
    aps: dict[float, float] = {}
    for v, us in units.items():
        got = sorted(float(u["achieved_answers_per_s"]) for u in us if isinstance(u.get("achieved_answers_per_s"), (int, float)))
        if got:
            aps[v] = statistics.median(got)

    def best_up_to(value: float) -> float | None:
        vals = [a for v, a in aps.items() if v <= value]
        return max(vals) if vals else None

    above = [v for v in values if v > hi]
    aps_lo = aps.get(lo) if lo else 0.0
    point = aps.get(cap.capacity, cap.answers_per_s) if cap.capacity is not None else cap.answers_per_s
    return Capacity(cap.status, cap.capacity, cap.bracket_fail, point, lo, hi, bounded, aps_lo,
                    best_up_to(min(above) if above else hi), cap.probes, cap.order, "isotonic", uncertain)


def _capacity(spec: SearchSpec, seq: list[tuple[Verdict, str]], pending: tuple[float, str] | None = None) -> Capacity:
    history = [v for v, _ in seq]
    order = tuple((v.value, r) for v, r in seq)
    if not history:
        return Capacity("running", None, None, None, None, None, False, None, None, 0, order)
    held = [v for v in history if v.held]
    failed = [v for v in history if not v.held]
    hi_v = min((v.value for v in failed), default=None)
    cap_v = max((v for v in held if hi_v is None or v.value < hi_v), key=lambda v: v.value, default=None)
    if pending is not None:
        status = "running"
    elif cap_v is None:
        status = "infeasible"
    elif hi_v is None:
        status = "hit_cap" if cap_v.value >= spec.cap else "budget"
    elif spec.mode == CLOSED_LOOP:
        status = "bracketed" if hi_v - cap_v.value <= 1 else "budget"
    else:
        status = "bracketed" if hi_v / cap_v.value <= 1 + RATE_RESOLUTION or len(history) < spec.probe_budget else "budget"
    sure_held = [v for v in held if v.certain and (hi_v is None or v.value < hi_v)]
    lo_v = max(sure_held, key=lambda v: v.value, default=None)
    sure_fail = [v for v in failed if v.certain and (cap_v is None or v.value > cap_v.value)]
    f_v = min(sure_fail, key=lambda v: v.value, default=None)
    by_value = {v.value: v for v in history}
    # throughput bounds: the best achieved answers/s at or below the level that bounds the
    # interval (a stopped level's own span includes its ramp, so it alone can read low)
    def best_up_to(value: float) -> float | None:
        vals = [v.achieved_answers_per_s for v in history if v.value <= value and v.achieved_answers_per_s is not None]
        return max(vals) if vals else None

    if f_v is not None:
        hi = f_v.value - 1 if spec.mode == CLOSED_LOOP else f_v.value
        aps_hi = best_up_to(f_v.value)
        bounded = True
    else:
        top = max(history, key=lambda v: v.value)
        hi, aps_hi, bounded = top.value, best_up_to(top.value), False
    return Capacity(
        status,
        cap_v.value if cap_v else None,
        hi_v,
        cap_v.achieved_answers_per_s if cap_v else None,
        lo_v.value if lo_v else 0.0,
        hi,
        bounded,
        by_value[lo_v.value].achieved_answers_per_s if lo_v else 0.0,
        aps_hi,
        len(history),
        order,
    )


# -- reading probes from a run directory's rows ---------------------------------------------------


def verdicts(spec: SearchSpec, cell: str, cell_rows: Iterable[dict], answers: Iterable[dict], repeats: int) -> dict[float, Verdict]:
    """Verdict per probed level of `cell`, from cells.jsonl records (the last record of a unit
    wins) and answers.jsonl rows; a level counts once all its `repeats` units have a record."""
    units: dict[tuple[str, int], dict] = {}
    for r in cell_rows:
        if r.get("cell") == cell and not _probe(r):  # re-probes never steer the search (level_units reads them)
            units[(r.get("load", "batch"), int(r.get("cell_repeat", 0)))] = r
    lat: dict[tuple[str, int], list[float]] = {}
    for a in answers:
        if a.get("cell") == cell and not _probe(a):
            lat.setdefault((a.get("load", "batch"), int(a.get("cell_repeat", 0))), []).append(a.get("latency_s"))
    out: dict[float, Verdict] = {}
    labels = {lbl for lbl, _ in units}
    for label in labels:
        mode, _, value = label.partition("=")
        if mode != spec.mode or not value:
            continue
        recs = [units.get((label, k)) for k in range(repeats)]
        if any(r is None for r in recs):
            continue
        v = float(value)
        stats = [r.get("load_stats") or {} for r in recs]
        achieved = [s.get("achieved_answers_per_s") for s in stats if isinstance(s.get("achieved_answers_per_s"), (int, float))]
        achieved_med = sorted(achieved)[len(achieved) // 2] if achieved else None
        out[v] = judge(
            spec, v, {k: lat.get((label, k), []) for k in range(repeats)},
            planned=spec.planned_answers(v),
            stop_reason=next((s.get("stop_reason") for s in stats if s.get("stop_reason")), None),
            saturated=any(bool(s.get("saturated")) for s in stats),
            failed=any(r.get("status") != "ok" for r in recs),
            achieved_answers_per_s=achieved_med,
        )
    return out


def _probe(r) -> int:
    p = r.get("probe")
    return int(p) if isinstance(p, (int, float)) and p == p else 0


def reprobes_wanted(spec: SearchSpec, cap: Capacity, repeats: int) -> list[tuple[float, int]]:
    """(level, probe) units a finished search still owes: the bracketing levels (the last that held
    and the first that did not) re-measured under probes 1..reprobes, alternating between them."""
    if cap.status == "running" or spec.reprobes < 1:
        return []
    bracket = [v for v in (cap.capacity, cap.bracket_fail) if v is not None]
    return [(v, p) for p in range(1, spec.reprobes + 1) for v in bracket]
