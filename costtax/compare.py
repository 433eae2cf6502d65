"""`costtax compare OLD NEW`: per-cell cost and quality deltas with confidence intervals, and a
verdict that fails only on a regression beyond the limits AND beyond noise.

OLD and NEW are each a run directory (run.json, answers.jsonl, summary.csv) or a pytest-benchmark
JSON file (`--benchmark-json` / `--benchmark-autosave`) whose benchmarks may carry the costtax
plugin's `extra_info["costtax"]` block. Cells are matched by name (run directories) or by the
benchmark's fullname (JSON).

Measurement choices:
- Latency per final answer: p50 with a bootstrap CI of the median (as summary.csv has), p95 with a
  bootstrap CI of the 95th percentile (stats.percentile_ci), both resampling the cell's answers
  in answers.jsonl. answers/s is one number per cell (one timed window): no CI, judged on the
  limit alone. A pytest-benchmark round time gets the boxplot-notch CI of the median,
  median ± 1.58·IQR/√rounds (McGill, Tukey & Larsen 1978).
- Output tokens per answer: mean of answers.jsonl's output_tokens with a bootstrap CI.
- Quality: win-rate vs plain (eval or proxy, with summary.csv's CI) and accuracy (with CI), judged
  on an absolute drop; the mean eval reward is reported, never judged (its scale is the reward
  model's own).
- Noise: a change is "beyond noise" only when each run's point estimate lies outside the other
  run's 95% CI. Over the limit but not beyond noise is reported as `noise`, not failed. A metric
  without a CI on one side counts that side as a point.
"""
from __future__ import annotations

import json
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Mapping

from . import stats as M
from .errors import ConfigError
from .prompts.exact_match import is_correct
from .records import ANSWERS, RUN_JSON, SUMMARY, read_jsonl

NOTCH = 1.58  # boxplot notch: median ± 1.58·IQR/√n is a ~95% interval for the median


@dataclass(frozen=True)
class Estimate:
    """A point estimate with an optional 95% CI and the number of observations behind it."""

    value: float | None
    lo: float | None = None
    hi: float | None = None
    n: int | None = None

    @property
    def has_ci(self) -> bool:
        return self.lo is not None and self.hi is not None

    def to_json(self) -> dict[str, Any]:
        return {"value": self.value, "ci95": [self.lo, self.hi] if self.has_ci else None, "n": self.n}

    @classmethod
    def from_json(cls, d: Mapping[str, Any]) -> "Estimate":
        ci = d.get("ci95") or (None, None)
        return cls(_num(d.get("value")), _num(ci[0]), _num(ci[1]), d.get("n"))


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


# -- estimates from a run directory --------------------------------------------------------------
def _num(v) -> float | None:
    if v is None or isinstance(v, bool):
        return None
    try:
        f = float(v)
    except (TypeError, ValueError):
        return None
    return None if math.isnan(f) else f


def _answers_by_cell(run_dir: Path) -> dict[str, list[dict]]:
    last: dict[str, dict] = {}
    for r in read_jsonl(run_dir / ANSWERS):
        last[r["answer_id"]] = r  # a resumed answer's last record wins, as in report.load_run
    by: dict[str, list[dict]] = {}
    for r in last.values():
        by.setdefault(r["cell"], []).append(r)
    return by


def summary_rows(run_dir: str | Path) -> list[dict[str, Any]]:
    """summary.csv as a list of dicts, NaN as None."""
    from .report import load_summary

    df = load_summary(run_dir)
    rows = []
    for rec in df.to_dict("records"):
        rows.append({k: (None if isinstance(v, float) and math.isnan(v) else v) for k, v in rec.items()})
    return rows


def _ratio_ci(num: list[float], den: list[float], stat: Callable, n_boot: int = 1000, seed: int = 0):
    """Bootstrap CI of stat(num) / stat(den), the two samples resampled independently."""
    import numpy as np

    a = np.asarray([x for x in num if x is not None], dtype=float)
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


def _p(q):
    import numpy as np

    return lambda m: np.percentile(m, q, axis=1)


def _mean(m):
    return m.mean(axis=1)


def _correctness(run_dir: Path, answers: dict[str, list[dict]]) -> dict[str, dict[tuple, float]]:
    """Per cell: (prompt_id, repeat) -> 1.0/0.0 for prompts with a reference answer."""
    meta = json.loads((run_dir / RUN_JSON).read_text(encoding="utf-8"))
    cfg = meta.get("config", {})
    try:
        from .prompts import load_prompts

        ref = {p.id: p.answer for p in load_prompts(cfg.get("prompts", []), limit=cfg.get("limit"), seed=cfg.get("seed", 0))}
    except Exception:
        return {}
    out: dict[str, dict[tuple, float]] = {}
    for cell, rows in answers.items():
        out[cell] = {
            (r["prompt_id"], r.get("repeat", 0)): float(is_correct(r.get("text"), ref[r["prompt_id"]]))
            for r in rows
            if ref.get(r["prompt_id"]) is not None
        }
    return out


def cell_estimates(run_dir: str | Path) -> dict[str, dict[str, Estimate]]:
    """Every judged metric of every cell of a run directory, with CIs where the data allow, plus
    the ×plain ratios and Δ vs plain the plugin's assertions use (with CIs of their own)."""
    run_dir = Path(run_dir)
    answers = _answers_by_cell(run_dir)
    rows = {r["cell"]: r for r in summary_rows(run_dir)}
    correct = None
    out: dict[str, dict[str, Estimate]] = {}
    for cell, row in rows.items():
        a = answers.get(cell, [])
        lat = [_num(x.get("latency_s")) for x in a]
        lat = [x for x in lat if x is not None]
        tok = [float(x.get("output_tokens") or 0) for x in a]
        e: dict[str, Estimate] = {}
        pc = M.percentiles(lat, (50, 95))
        ci50 = M.bootstrap_ci(lat, stat="median")
        ci95 = M.percentile_ci(lat, 95)
        e["latency_p50_s"] = Estimate(pc["p50"], *(ci50 or (None, None)), len(lat))
        e["latency_p95_s"] = Estimate(pc["p95"], *(ci95 or (None, None)), len(lat))
        e["answers_per_s"] = Estimate(_num(row.get("answers_per_s")), n=len(a))
        tci = M.bootstrap_ci(tok)
        e["output_tokens_per_answer"] = Estimate(M.mean_or_none(tok), *(tci or (None, None)), len(tok))
        win_col = "win_rate_vs_plain" if _num(row.get("win_rate_vs_plain")) is not None else "proxy_win_rate_vs_plain"
        e["win_rate_vs_plain"] = Estimate(
            _num(row.get(win_col)), _num(row.get("win_rate_ci95_lo")), _num(row.get("win_rate_ci95_hi")), _int(row.get("win_rate_n"))
        )
        e["accuracy"] = Estimate(
            _num(row.get("accuracy")), _num(row.get("accuracy_ci95_lo")), _num(row.get("accuracy_ci95_hi")), _int(row.get("accuracy_n"))
        )
        e["eval_reward_mean"] = Estimate(
            _num(row.get("eval_reward_mean")), _num(row.get("eval_reward_ci95_lo")), _num(row.get("eval_reward_ci95_hi")),
            _int(row.get("eval_reward_n")),
        )
        e["peak_memory_bytes"] = Estimate(_num(row.get("peak_memory_bytes")))
        e["energy_j_per_answer"] = Estimate(_num(row.get("energy_j_per_answer")))
        e["cell_wall_s"] = Estimate(_num(row.get("cell_wall_s")))
        # -- against the plain baseline of the same run -----------------------------------------
        base = answers.get("plain")
        if base and "plain" in rows:
            blat = [x for x in (_num(b.get("latency_s")) for b in base) if x is not None]
            btok = [float(b.get("output_tokens") or 0) for b in base]
            for q, name in ((50, "latency_p50_x"), (95, "latency_p95_x")):
                bq = M.percentiles(blat, (q,))[f"p{q}"]
                v = M.multiplier(M.percentiles(lat, (q,))[f"p{q}"], bq)
                e[name] = Estimate(v, *(_ratio_ci(lat, blat, _p(q)) or (None, None)), len(lat))
            e["output_tokens_per_answer_x"] = Estimate(
                M.multiplier(M.mean_or_none(tok), M.mean_or_none(btok)), *(_ratio_ci(tok, btok, _mean) or (None, None)), len(tok)
            )
            if correct is None:
                correct = _correctness(run_dir, answers)
            cc, bc = correct.get(cell, {}), correct.get("plain", {})
            keys = [k for k in cc if k in bc]
            if keys:
                dci = M.paired_bootstrap_delta_ci([cc[k] for k in keys], [bc[k] for k in keys])
                delta = M.mean_or_none([cc[k] - bc[k] for k in keys])
                e["accuracy_delta_vs_plain"] = Estimate(delta, *(dci or (None, None)), len(keys))
            else:
                e["accuracy_delta_vs_plain"] = Estimate(None, n=0)
            e["eval_reward_delta_vs_plain"] = Estimate(
                _num(row.get("eval_reward_delta_vs_plain")), _num(row.get("eval_reward_delta_ci95_lo")),
                _num(row.get("eval_reward_delta_ci95_hi")), _int(row.get("win_rate_n")),
            )
            for name in ("peak_memory_x", "energy_j_per_answer_x"):
                e[name] = Estimate(_num(row.get(name)))
        out[cell] = e
    return out


def _int(v) -> int | None:
    f = _num(v)
    return None if f is None else int(f)


# -- sources ---------------------------------------------------------------------------------------
@dataclass(frozen=True)
class Source:
    path: str
    kind: str  # run | benchmark-json
    cells: dict[str, dict[str, Estimate]]
    info: dict[str, Any] = field(default_factory=dict)  # config / machine, for the notes


def load_source(path: str, field: str) -> Source:
    p = Path(path).expanduser()
    if p.is_dir():
        if not (p / RUN_JSON).is_file():
            raise ConfigError(field, path, "is a directory but not a costtax run directory (no run.json)")
        if not (p / SUMMARY).is_file():
            raise ConfigError(field, path, f"has no summary.csv; rebuild it with `costtax report {path}`")
        meta = json.loads((p / RUN_JSON).read_text(encoding="utf-8"))
        info = {
            "config": {k: v for k, v in (meta.get("config") or {}).items() if k not in ("out", "techniques", "cells")},
            "device": ((meta.get("provenance") or {}).get("machine") or {}).get("device"),
            # other processes' share of the run's CPUs per cell: timing verdicts of a disturbed
            # cell may be the neighbours' doing, which the notes say
            "contention": {r["cell"]: r.get("foreign_cpu_share") for r in summary_rows(p)
                           if isinstance(r.get("foreign_cpu_share"), (int, float))},
        }
        return Source(str(p), "run", cell_estimates(p), info)
    if p.is_file():
        try:
            data = json.loads(p.read_text(encoding="utf-8"))
        except (OSError, ValueError, UnicodeDecodeError) as exc:
            raise ConfigError(field, path, f"is not JSON ({type(exc).__name__}); give a run directory or a --benchmark-json file") from None
        if not isinstance(data, dict) or not isinstance(data.get("benchmarks"), list):
            raise ConfigError(field, path, "is JSON without a \"benchmarks\" list; give a pytest-benchmark --benchmark-json file")
        return Source(str(p), "benchmark-json", benchmark_estimates(data), {"device": (data.get("machine_info") or {}).get("cpu", {}).get("brand_raw")})
    raise ConfigError(field, path, "no such file or directory; give a run directory or a pytest-benchmark JSON file")


def benchmark_estimates(data: Mapping[str, Any]) -> dict[str, dict[str, Estimate]]:
    out: dict[str, dict[str, Estimate]] = {}
    for b in data.get("benchmarks", []):
        key = b.get("fullname") or b.get("name")
        if not key:
            continue
        e: dict[str, Estimate] = {}
        st = b.get("stats") or {}
        med, iqr, rounds = _num(st.get("median")), _num(st.get("iqr")), st.get("rounds")
        if med is not None:
            if iqr is not None and rounds and rounds >= 2:
                half = NOTCH * iqr / math.sqrt(rounds)
                e["round_time_median_s"] = Estimate(med, med - half, med + half, rounds)
            else:
                e["round_time_median_s"] = Estimate(med, n=rounds)
        ct = (b.get("extra_info") or {}).get("costtax")
        if isinstance(ct, dict):
            for name, d in (ct.get("metrics") or {}).items():
                if isinstance(d, dict):
                    e[name] = Estimate.from_json(d)
        out[key] = e
    return out


# -- the comparison --------------------------------------------------------------------------------
@dataclass(frozen=True)
class DeltaRow:
    key: str
    metric: Metric
    old: Estimate
    new: Estimate
    change: float | None  # how much worse NEW is (fraction for relative metrics); < 0: better
    limit: float | None
    verdict: str  # REGRESSION | noise | ok | better | n/a


@dataclass(frozen=True)
class CompareResult:
    old: Source
    new: Source
    rows: tuple[DeltaRow, ...]
    only_old: tuple[str, ...]
    only_new: tuple[str, ...]
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


def judge(metric: Metric, old: Estimate, new: Estimate, limit: float | None) -> tuple[float | None, str]:
    if old.value is None or new.value is None:
        return None, "n/a"
    change = worse_by(metric, old.value, new.value)
    if change is None:
        return None, "n/a"
    noisy = not beyond_noise(old, new)
    if limit is not None and change > limit + 1e-12:
        return change, "noise" if noisy else "REGRESSION"
    if change < 0 and not noisy:
        return change, "better"
    return change, "ok"


def compare_sources(old: Source, new: Source, config: CompareConfig) -> CompareResult:
    keys = [k for k in old.cells if k in new.cells]
    rows = []
    for key in keys:
        o, n = old.cells[key], new.cells[key]
        for metric in METRICS:
            if metric.name not in o and metric.name not in n:
                continue
            oe, ne = o.get(metric.name, Estimate(None)), n.get(metric.name, Estimate(None))
            if oe.value is None and ne.value is None:
                continue
            limit = config.limit_for(metric.limit)
            change, verdict = judge(metric, oe, ne, limit)
            rows.append(DeltaRow(key, metric, oe, ne, change, limit, verdict))
    notes = []
    if old.info.get("config") and new.info.get("config"):
        oc, nc = old.info["config"], new.info["config"]
        diff = [f"{k}: {oc.get(k)!r} -> {nc.get(k)!r}" for k in sorted(set(oc) | set(nc)) if oc.get(k) != nc.get(k)]
        if diff:
            notes.append("the runs' configs differ (" + "; ".join(diff) + "): deltas mix the change with that")
    if old.info.get("device") != new.info.get("device"):
        notes.append(f"different devices: {old.info.get('device')!r} vs {new.info.get('device')!r}")
    from .report.table import CONTENTION_WARN_SHARE

    for side, src in (("OLD", old), ("NEW", new)):
        busy = {k: v for k, v in (src.info.get("contention") or {}).items() if k in keys and v > CONTENTION_WARN_SHARE}
        if busy:
            cells = ", ".join(f"{k} {v:.0%}" for k, v in busy.items())
            notes.append(f"{side} ran beside other processes (foreign_cpu_share: {cells}): its timing for "
                         f"{'that cell' if len(busy) == 1 else 'those cells'} is inflated by neighbours; rerun on a quiet machine before trusting a timing verdict")
    return CompareResult(
        old, new, tuple(rows),
        tuple(k for k in old.cells if k not in new.cells), tuple(k for k in new.cells if k not in old.cells), tuple(notes),
    )


# -- output ------------------------------------------------------------------------------------------
def _fmt(metric: Metric, v: float | None) -> str:
    if v is None:
        return "—"
    if metric.unit == "B":
        return f"{v / 2**20:.0f} MiB"
    if metric.name in ("win_rate_vs_plain", "accuracy", "pairs_accuracy"):
        return f"{v:.2f}"
    return f"{v:.3g}" if abs(v) < 1000 else f"{v:.0f}"


def _fmt_est(metric: Metric, e: Estimate) -> str:
    s = _fmt(metric, e.value)
    if e.has_ci and e.value is not None:
        s += f" [{_fmt(metric, e.lo)}, {_fmt(metric, e.hi)}]"
    return s


def _fmt_change(row: DeltaRow) -> str:
    if row.change is None:
        return "—"
    if row.change == math.inf:
        return "+inf"
    return f"{row.change:+.1%}" if row.metric.relative else f"{row.change:+.3f}"


def _fmt_limit(row: DeltaRow) -> str:
    if row.limit is None:
        return "—"
    return f"{row.limit:.0%}" if row.metric.relative else f"{row.limit:.3g}"


def print_result(result: CompareResult, console=None) -> None:
    from rich.console import Console
    from rich.markup import escape
    from rich.table import Table

    console = console or Console(width=200)
    # Cell and benchmark names carry brackets (test_technique[bon:n=4]) that rich would read as markup.
    t = Table(title=escape(f"costtax compare: OLD {result.old.path}  NEW {result.new.path}"), title_justify="left")
    for h in ("cell", "metric", "OLD [95% CI]", "NEW [95% CI]", "worse by", "limit", "verdict"):
        t.add_column(h, justify="left" if h in ("cell", "metric", "verdict") else "right", overflow="fold")
    last = None
    for r in result.rows:
        style = "bold red" if r.verdict == "REGRESSION" else ("yellow" if r.verdict == "noise" else None)
        t.add_row(escape(r.key) if r.key != last else "", r.metric.label, _fmt_est(r.metric, r.old), _fmt_est(r.metric, r.new),
                  _fmt_change(r), _fmt_limit(r), r.verdict, style=style)
        last = r.key
    console.print(t)
    console.print(
        "worse by: relative change for latency/throughput/tokens/memory/energy (answers/s: increase in time per answer), "
        "absolute drop for win-rate and accuracy. noise = over the limit but a point estimate lies inside the other run's CI."
    )
    for k in result.only_old:
        console.print(escape(f"only in OLD (not compared): {k}"))
    for k in result.only_new:
        console.print(escape(f"only in NEW (not compared): {k}"))
    for n in result.notes:
        console.print(escape(f"note: {n}"))
    regs = result.regressions
    if regs:
        console.print(escape(f"REGRESSION: {len(regs)} metric(s) beyond the limits and beyond noise: "
                             + "; ".join(f"{r.key} {r.metric.label} {_fmt_change(r)} > {_fmt_limit(r)}" for r in regs)))
    else:
        noisy = sum(r.verdict == "noise" for r in result.rows)
        console.print("no regression beyond the limits and noise" + (f" ({noisy} over a limit inside the CIs)" if noisy else ""))


def run_compare(config: CompareConfig, console=None) -> CompareResult:
    """Load both sides, compare every shared cell, print the table; the caller sets the exit code."""
    old = load_source(config.old, "OLD")
    new = load_source(config.new, "NEW")
    if old.kind != new.kind:
        raise ConfigError("NEW", config.new, f"is a {new.kind} but OLD is a {old.kind}; compare two of the same kind")
    result = compare_sources(old, new, config)
    if not result.rows:
        shared = [k for k in old.cells if k in new.cells]
        what = "no cell or benchmark name appears in both" if not shared else "the shared cells have no metric in common"
        raise ConfigError("NEW", config.new, f"nothing to compare: {what} (OLD has {', '.join(list(old.cells)[:5]) or 'none'})")
    print_result(result, console)
    return result


def flatten_for_extra_info(est: Mapping[str, Estimate]) -> dict[str, Any]:
    """The plugin's pytest-benchmark extra_info block: {metric: {value, ci95, n}}."""
    return {k: v.to_json() for k, v in est.items()}

