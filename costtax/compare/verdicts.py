"""`costtax compare OLD NEW`: cost and quality deltas with confidence intervals per (cell, load
level), and a verdict that fails only on a regression beyond the limits AND beyond noise.

OLD and NEW are each a run directory (read through costtax.store.rundata.RunData: run.json,
answers.jsonl, summary.csv; a summary-only directory is compared on its summary's values) or a
pytest-benchmark JSON file (`--benchmark-json` / `--benchmark-autosave`) whose benchmarks may
carry the costtax plugin's `extra_info["costtax"]` block. Rows are matched by (cell, load level)
for run directories, by the benchmark's fullname for JSON. The output has one block per load
level; a level or cell present in only one run is listed as "only in OLD/NEW" and not compared.
The exit code is 1 only for a regression: a mismatch of levels or cells is reported, not failed.

Measurement choices: see costtax/compare/estimates.py (what each metric's point and CI are).
- Quality: win-rate vs plain (eval or proxy, with summary.csv's CI) and accuracy (with CI), judged
  on an absolute drop; the mean eval reward is reported, never judged (its scale is the reward
  model's own).
- Noise, measured metrics (latency p50/p95, answers/s, round time; peak memory and energy per
  answer): a change is a REGRESSION only beyond the larger of the limit and the noise
  costtax/compare/noise.py justifies (the runs' repeats, else this machine's recorded A/A
  calibration, else the reference machine's A/A prior, else the runs' block CIs, else none: the
  limit alone), "better" only beyond the same on the other side (never on the limit alone for a
  metric without a limit), "ok" between; the `noise` column cites the source. `--record-noise`
  records an A/A of two identical runs as this machine's calibration.
- Output tokens per answer when both runs used --ignore-eos: deterministic, judged exactly.
- Noise, other metrics: a change is "beyond noise" only when each run's point estimate lies
  outside the other run's 95% CI. Over the limit but not beyond noise is reported as `noise`, not
  failed. A metric without a CI on one side counts that side as a point.
"""
from __future__ import annotations

import json
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..errors import ConfigError
from .estimates import (  # noqa: F401  (re-exported: earlier import paths)
    NOTCH, Estimate, benchmark_estimates, cell_estimates, flatten_for_extra_info, row_level, unit_estimates,
)
from ..load.levels import LoadLevel
from .table import key_label  # noqa: F401  (re-exported)
from .noise import MEASURED, TIMING, Noise, load_calibration, load_prior, pooled_repeat_variance, record_calibration, timing_noise

# A row of a source: (cell or benchmark name, load level; None for benchmarks)
Key = tuple[str, "LoadLevel | None"]


@dataclass(frozen=True)
class Metric:
    name: str
    label: str
    better: str  # lower | higher
    limit: str | None  # which CompareConfig limit judges it; None: reported only
    relative: bool  # change as a fraction of OLD (True) or absolute (False)
    unit: str = ""


METRICS: tuple[Metric, ...] = (
    Metric("latency_p50_s", "latency p50", "lower", "slowdown", True, "s"),
    Metric("latency_p95_s", "latency p95", "lower", "slowdown", True, "s"),
    Metric("answers_per_s", "answers/s", "higher", "slowdown", True),
    Metric("round_time_median_s", "round time (median)", "lower", "slowdown", True, "s"),
    Metric("output_tokens_per_answer", "output tokens/answer", "lower", "tokens", True),
    Metric("win_rate_vs_plain", "win-rate vs plain", "higher", "quality", False),
    Metric("accuracy", "accuracy", "higher", "quality", False),
    Metric("eval_reward_mean", "reward (mean)", "higher", None, False),
    Metric("pairs_accuracy", "reward model: pairs accuracy", "higher", "quality", False),
    Metric("peak_memory_bytes", "peak memory", "lower", "memory", True, "B"),
    Metric("energy_j_per_answer", "energy/answer", "lower", "energy", True, "J"),
)
METRIC_BY_NAME = {m.name: m for m in METRICS}


@dataclass(frozen=True)
class CompareConfig:
    old: str
    new: str
    max_slowdown: float = 0.15  # fraction: +15% latency, or answers/s down to 1/1.15
    max_tokens_increase: float = 0.05
    max_quality_drop: float = 0.03  # absolute, on win-rate and accuracy
    max_memory_increase: float | None = None  # None: reported, not judged
    max_energy_increase: float | None = None
    record_noise: bool = False  # record this comparison as the machine's A/A calibration (costtax/compare/noise.py)

    def __post_init__(self):
        for name in ("max_slowdown", "max_tokens_increase", "max_quality_drop", "max_memory_increase", "max_energy_increase"):
            v = getattr(self, name)
            if v is not None and (not isinstance(v, (int, float)) or v != v or v < 0):
                raise ConfigError("--" + name.replace("_", "-"), v, "use a non-negative number, e.g. 15% or 0.15")

    def limit_for(self, kind: str | None) -> float | None:
        return {
            "slowdown": self.max_slowdown,
            "tokens": self.max_tokens_increase,
            "quality": self.max_quality_drop,
            "memory": self.max_memory_increase,
            "energy": self.max_energy_increase,
        }.get(kind or "")


def parse_fraction(text: str | float | None, field: str) -> float | None:
    """'15%' -> 0.15, '0.15' -> 0.15, 'none' -> None. A bare number above 1 is ambiguous
    (15 meaning 15% or 1500%?) and refused."""
    if text is None:
        return None
    if isinstance(text, (int, float)):
        value = float(text)
    else:
        s = str(text).strip()
        if s.lower() in ("none", "off", ""):
            return None
        try:
            value = float(s[:-1]) / 100 if s.endswith("%") else float(s)
        except ValueError:
            raise ConfigError(field, text, "write a percentage like 15% or a fraction like 0.15") from None
        if not s.endswith("%") and value > 1:
            raise ConfigError(field, text, f"ambiguous; write {s}% or {value / 100:g}")
    if value != value or value < 0:
        raise ConfigError(field, text, "use a non-negative percentage like 15%")
    return value


# -- sources ---------------------------------------------------------------------------------------
@dataclass(frozen=True)
class Source:
    path: str
    kind: str  # run | benchmark-json
    cells: dict[Key, dict[str, Estimate]]
    info: dict[str, Any] = field(default_factory=dict)  # config / machine, for the notes


def load_source(path: str, field: str) -> Source:
    p = Path(path).expanduser()
    if p.is_dir():
        return _run_source(p, path, field)
    if p.is_file():
        try:
            data = json.loads(p.read_text(encoding="utf-8"))
        except (OSError, ValueError, UnicodeDecodeError) as exc:
            raise ConfigError(field, path, f"is not JSON ({type(exc).__name__}); give a run directory or a --benchmark-json file") from None
        if not isinstance(data, dict) or not isinstance(data.get("benchmarks"), list):
            raise ConfigError(field, path, "is JSON without a \"benchmarks\" list; give a pytest-benchmark --benchmark-json file")
        cells = {(k, None): e for k, e in benchmark_estimates(data).items()}
        from .. import provenance

        # a benchmark file is judged against the calibration of the machine compare runs on
        return Source(str(p), "benchmark-json", cells, {"device": (data.get("machine_info") or {}).get("cpu", {}).get("brand_raw"),
                                                        "machine": provenance.machine(), "version": provenance.versions().get("costtax")})
    raise ConfigError(field, path, "no such file or directory; give a run directory or a pytest-benchmark JSON file")


def _run_source(p: Path, path: str, field: str) -> Source:
    from ..report import summary_records
    from ..store.rundata import RunData, RunDataError

    try:
        rd = RunData.open(p)
        rows = summary_records(p)
    except RunDataError as exc:
        where = Path(exc.path)
        name = where.name if where.parent == p else str(where)
        raise ConfigError(field, path, f"{name}: {exc.problem}") from None
    est = unit_estimates(rd, rows)
    prov = rd.meta.get("provenance") or {}
    info = {
        "config": {k: v for k, v in rd.config.items() if k not in ("out", "techniques", "cells")},
        "device": (prov.get("machine") or {}).get("device"),
        "machine": prov.get("machine"),
        "version": (prov.get("versions") or {}).get("costtax"),
        "ignore_eos": bool(rd.config.get("ignore_eos")),
        # other processes' share of the run's CPUs per row: timing verdicts of a disturbed row
        # may be the neighbours' doing, which the notes say
        "contention": {(r["cell"], row_level(r)): r.get("foreign_cpu_share") for r in rows
                       if isinstance(r.get("foreign_cpu_share"), (int, float))},
    }
    return Source(str(p), "run", est, info)


# -- the comparison --------------------------------------------------------------------------------
@dataclass(frozen=True)
class DeltaRow:
    key: Key
    metric: Metric
    old: Estimate
    new: Estimate
    change: float | None  # how much worse NEW is (fraction for relative metrics); < 0: better
    limit: float | None
    verdict: str  # REGRESSION | noise | ok | better | n/a
    noise: Noise | None = None  # timing and exact metrics: what the change had to clear (costtax/compare/noise.py)


@dataclass(frozen=True)
class CompareResult:
    old: Source
    new: Source
    rows: tuple[DeltaRow, ...]
    only_old: tuple[Key, ...]
    only_new: tuple[Key, ...]
    notes: tuple[str, ...]

    @property
    def regressions(self) -> tuple[DeltaRow, ...]:
        return tuple(r for r in self.rows if r.verdict == "REGRESSION")


def worse_by(metric: Metric, old: float, new: float) -> float | None:
    """How much worse NEW is than OLD: a fraction for relative metrics (answers/s: the increase
    in time per answer, old/new - 1), an absolute difference otherwise."""
    if metric.relative:
        if metric.better == "lower":
            return new / old - 1 if old > 0 else None
        return old / new - 1 if new > 0 else (math.inf if old > 0 else None)
    return (new - old) if metric.better == "lower" else (old - new)


def beyond_noise(old: Estimate, new: Estimate) -> bool:
    """True when each point estimate lies outside the other run's CI (a side without a CI is a point)."""
    olo, ohi = (old.lo, old.hi) if old.has_ci else (old.value, old.value)
    nlo, nhi = (new.lo, new.hi) if new.has_ci else (new.value, new.value)
    new_in_old = olo <= new.value <= ohi
    old_in_new = nlo <= old.value <= nhi
    return not (new_in_old or old_in_new)


def judge(metric: Metric, old: Estimate, new: Estimate, limit: float | None, noise: Noise | None = None) -> tuple[float | None, str]:
    """(worse by, verdict). With `noise` (timing, exact metrics): REGRESSION beyond the larger of
    the limit and the noise, better beyond it the other way (exact: any improvement), else ok.
    Without: the CI-overlap rule of the module docstring."""
    if old.value is None or new.value is None:
        return None, "n/a"
    change = worse_by(metric, old.value, new.value)
    if change is None:
        return None, "n/a"
    if noise is not None:
        bar = max(limit if limit is not None else 0.0, noise.value)
        if limit is not None and change > bar + 1e-12:
            return change, "REGRESSION"
        if (change < 0 and noise.source == "exact") or (bar > 0 and change < -bar - 1e-12):
            return change, "better"
        return change, "ok"
    noisy = not beyond_noise(old, new)
    if limit is not None and change > limit + 1e-12:
        return change, "noise" if noisy else "REGRESSION"
    if change < 0 and not noisy:
        return change, "better"
    return change, "ok"


def compare_sources(old: Source, new: Source, config: CompareConfig) -> CompareResult:
    keys = [k for k in old.cells if k in new.cells]
    rows = []
    calibration = load_calibration(new.info.get("machine"), new.info.get("version"))
    prior = None if calibration else load_prior()
    exact_tokens = bool(old.info.get("ignore_eos")) and bool(new.info.get("ignore_eos"))
    # "any regression" is one test over every timing row: Bonferroni over them (costtax/compare/noise.py)
    n_timing = sum(1 for k in keys for m in TIMING
                   if old.cells[k].get(m) is not None and new.cells[k].get(m) is not None
                   and old.cells[k][m].value is not None and new.cells[k][m].value is not None)
    alpha = 0.05 / max(n_timing, 1)
    pooled = {m: pooled_repeat_variance([(old.cells[k][m].unit_values, new.cells[k][m].unit_values) for k in keys
                                         if m in old.cells[k] and m in new.cells[k]]) for m in TIMING}
    for key in keys:
        o, n = old.cells[key], new.cells[key]
        for metric in METRICS:
            if metric.name not in o and metric.name not in n:
                continue
            oe, ne = o.get(metric.name, Estimate(None)), n.get(metric.name, Estimate(None))
            if oe.value is None and ne.value is None:
                continue
            limit = config.limit_for(metric.limit)
            noise = None
            if metric.name in MEASURED:
                noise = timing_noise(metric.name, oe, ne, calibration, alpha, pooled.get(metric.name), prior)
            elif metric.name == "output_tokens_per_answer" and exact_tokens:
                noise = Noise(0.0, "exact", "both runs generated with --ignore-eos: every answer has --max-tokens tokens")
            change, verdict = judge(metric, oe, ne, limit, noise)
            rows.append(DeltaRow(key, metric, oe, ne, change, limit, verdict, noise))
    notes = []
    if old.info.get("config") and new.info.get("config"):
        oc, nc = old.info["config"], new.info["config"]
        diff = [f"{k}: {oc.get(k)!r} -> {nc.get(k)!r}" for k in sorted(set(oc) | set(nc)) if oc.get(k) != nc.get(k)]
        if diff:
            notes.append("the runs' configs differ (" + "; ".join(diff) + "): deltas mix the change with that")
    if old.info.get("device") != new.info.get("device"):
        notes.append(f"different devices: {old.info.get('device')!r} vs {new.info.get('device')!r}")
    from ..report.table import CONTENTION_WARN_SHARE

    for side, src in (("OLD", old), ("NEW", new)):
        busy = {k: v for k, v in (src.info.get("contention") or {}).items() if k in keys and v > CONTENTION_WARN_SHARE}
        if busy:
            cells = ", ".join(f"{key_label(k)} {v:.0%}" for k, v in busy.items())
            notes.append(f"{side} ran beside other processes (foreign_cpu_share: {cells}): its timing for "
                         f"{'that cell' if len(busy) == 1 else 'those cells'} is inflated by neighbours; rerun on a quiet machine before trusting a timing verdict")
    notes += _noise_notes(rows, calibration, prior, old, new)
    return CompareResult(
        old, new, tuple(rows),
        tuple(k for k in old.cells if k not in new.cells), tuple(k for k in new.cells if k not in old.cells), tuple(notes),
    )


def _noise_notes(rows, calibration, prior, old: Source, new: Source) -> list[str]:
    """Where the timing verdicts' noise came from, and what that source cannot see."""
    by: dict[str, int] = {}
    for r in rows:
        if r.noise is not None and r.noise.source != "exact":
            by[r.noise.source] = by.get(r.noise.source, 0) + 1
    out = []
    if not by:
        return out
    parts = [f"{n} from {src}" for src, n in sorted(by.items())]
    out.append("timing noise (a change must exceed the larger of the limit and this): " + ", ".join(parts))
    if by.get("calibration"):
        out.append(f"A/A calibration of this machine and costtax {new.info.get('version')}: {calibration.get('path')}")
        if old.info.get("machine") and new.info.get("machine") and \
                (old.info["machine"].get("hostname"), old.info["machine"].get("cpu")) != (new.info["machine"].get("hostname"), new.info["machine"].get("cpu")):
            out.append("OLD and NEW ran on different machines: the calibration is NEW's machine's")
    if by.get("prior"):
        m = prior.get("machine") or {}
        out.append(f"no A/A calibration of this machine: measured rows are judged against the reference machine's "
                   f"({prior.get('pairs')} pairs of identical runs on {m.get('cpu') or '?'}, {prior.get('path')}); "
                   "record this machine's own, usually tighter, with `costtax compare A A2 --record-noise`")
    if by.get("blocks") or by.get("none"):
        out.append("rows without repeats or calibration see no drift between runs (engine state, clocks, machine load): "
                   "record this machine's A/A once with `costtax compare A A2 --record-noise` (two identical runs), "
                   "or profile with --cell-repeats 2 or more")
    return out


def noise_bands(result: CompareResult) -> dict[str, float]:
    """Per measured metric, the largest 'worse by' in either direction over the compared rows: what
    an identical rerun showed (bench/spread.py's rule), the calibration --record-noise writes and
    scripts/noise_prior.py pools into the shipped prior."""
    bands: dict[str, float] = {}
    for r in result.rows:
        if r.metric.name not in MEASURED or r.old.value is None or r.new.value is None:
            continue
        ch = [c for c in (worse_by(r.metric, r.old.value, r.new.value), worse_by(r.metric, r.new.value, r.old.value))
              if c is not None and c != math.inf]
        if ch:
            bands[r.metric.name] = max(bands.get(r.metric.name, 0.0), max(ch))
    return bands


def run_compare(config: CompareConfig, console=None, on_event=None) -> CompareResult:
    """Load both sides, compare every shared cell, print the table; the caller sets the exit code."""
    from ..phases import phase

    with phase(on_event, "reading OLD and NEW (bootstrap CIs)"):
        old = load_source(config.old, "OLD")
        new = load_source(config.new, "NEW")
    if old.kind != new.kind:
        raise ConfigError("NEW", config.new, f"is a {new.kind} but OLD is a {old.kind}; compare two of the same kind")
    result = compare_sources(old, new, config)
    if config.record_noise:
        _record(result, old, new)
    if not result.rows:
        shared = [k for k in old.cells if k in new.cells]
        what = "no (cell, load level) or benchmark name appears in both" if not shared else "the shared cells have no metric in common"
        names = ", ".join(key_label(k) for k in list(old.cells)[:5]) or "none"
        raise ConfigError("NEW", config.new, f"nothing to compare: {what} (OLD has {names})")
    from .table import print_result

    print_result(result, console)
    if config.record_noise:
        print(f"recorded A/A noise bands for this machine and costtax {new.info.get('version')}: {result.new.info.get('calibration_path')}")
    return result


def _record(result: CompareResult, old: Source, new: Source) -> None:
    from ..provenance import now_iso

    diff = [n for n in result.notes if n.startswith("the runs' configs differ") or n.startswith("different devices")]
    if diff:
        raise ConfigError("--record-noise", "on", f"an A/A needs two identical runs on one machine ({diff[0]})")
    bands = noise_bands(result)
    if not bands:
        raise ConfigError("--record-noise", "on", "no timing metric in both runs to calibrate")
    try:
        path = record_calibration(new.info.get("machine"), new.info.get("version"), bands, (old.path, new.path), now_iso())
    except ValueError as exc:
        raise ConfigError("--record-noise", "on", str(exc)) from None
    new.info["calibration_path"] = str(path)
