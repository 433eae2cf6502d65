"""The printed `costtax compare` result: its table, as a FitTable (costtax/report/fit.py), the
value formats, and the lists, notes and verdict line below it (print_result).

compare_columns() is the one list of its columns: the width test iterates over it, so a column
added here is fitted and tested like the others. The cell is a group: a column off a terminal,
a heading line above its metrics on one (a benchmark's name can be 40 characters).
"""
from __future__ import annotations

import math
from typing import TYPE_CHECKING, Callable

from ..report.fit import FitColumn, FitTable, make_table

if TYPE_CHECKING:
    from .estimates import Estimate
    from .verdicts import CompareResult, DeltaRow, Key, Metric, Source

NOTE = ("worse by: relative change for latency/throughput/tokens/memory/energy (answers/s: increase in time per answer), "
        "absolute drop for win-rate and accuracy. noise column (timing, memory, energy): what a change must also exceed, and "
        "from where (repeats, calibration: this machine's A/A, prior: the reference machine's A/A, blocks: within-run CIs, "
        "none: the limit alone; exact: --ignore-eos tokens). "
        "verdict noise = over the limit but a point estimate lies inside the other run's CI.")


def compare_columns(est: Callable, change: Callable, limit: Callable) -> list[tuple[FitColumn, Callable]]:
    """The columns with the formatters compare.py passes in (estimate with CI, change, limit)."""
    return [
        (FitColumn("cell", "cell", justify="left", group=True), lambda r: r.key[0]),
        (FitColumn("metric", "metric", justify="left", label=True), lambda r: r.metric.label),
        (FitColumn("old", "OLD [95% CI]", "OLD"), lambda r: est(r.metric, r.old)),
        (FitColumn("new", "NEW [95% CI]", "NEW"), lambda r: est(r.metric, r.new)),
        (FitColumn("worse_by", "worse by", "worse"), change),
        (FitColumn("limit", "limit"), limit),
        (FitColumn("noise", "noise"), lambda r: r.noise.label if r.noise is not None else "CIs"),
        (FitColumn("verdict", "verdict", justify="left"), lambda r: r.verdict),
    ]


def compare_table(result, level=None, *, est: Callable, change: Callable, limit: Callable) -> FitTable:
    """The rows of one load level (None: a benchmark file's, which have none)."""
    cols = compare_columns(est, change, limit)
    picked = [r for r in result.rows if r.key[1] == level]
    rows = [[fmt(r) for _, fmt in cols] for r in picked]
    styles = ["bold red" if r.verdict == "REGRESSION" else ("yellow" if r.verdict == "noise" else None) for r in picked]
    title = f"costtax compare: OLD {result.old.path}  NEW {result.new.path}" + (f"  load {level.label}" if level is not None else "")
    return make_table(title, [c for c, _ in cols], rows, styles)


def key_label(key: Key) -> str:
    name, level = key
    return name if level is None else f"{name} at load {level.label}"


# -- printing a compare result ------------------------------------------------------------------------
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


def _fmt_bar(row: DeltaRow) -> str:
    """What a REGRESSION row cleared: its limit, and its noise band where that was the larger."""
    if row.noise is not None and row.limit is not None and row.noise.value > row.limit and row.noise.source not in ("none", "exact"):
        return f"{_fmt_limit(row)} limit and {row.noise.label} noise"
    return _fmt_limit(row)


def _levels(keys) -> list:
    return list(dict.fromkeys(level for _, level in keys))


def _only(keys: tuple[Key, ...], other: Source) -> list[str]:
    """Keys of one side missing from the other: whole load levels named once, then single rows."""
    other_levels = {level for _, level in other.cells}
    out = [f"load level {lvl.label} (every cell)" for lvl in _levels(keys) if lvl is not None and lvl not in other_levels]
    out += [key_label(k) for k in keys if k[1] is None or k[1] in other_levels]
    return out


def print_result(result: CompareResult, console=None, width: int | None = None) -> None:
    """One table per load level (one for benchmark files), fitted to the terminal stdout is
    (complete off a terminal; costtax/report/fit.py), then the lists, notes and verdict."""
    import sys

    from rich.markup import escape

    from ..report.fit import output_console, print_table, terminal_width

    if console is None:
        width = width or terminal_width(sys.stdout)
        console = output_console(sys.stdout, width)
    for level in _levels(r.key for r in result.rows):
        print_table(console, compare_table(result, level, est=_fmt_est, change=_fmt_change, limit=_fmt_limit), width)
    console.print(NOTE)
    for k in _only(result.only_old, result.new):
        console.print(escape(f"only in OLD (not compared): {k}"))
    for k in _only(result.only_new, result.old):
        console.print(escape(f"only in NEW (not compared): {k}"))
    for n in result.notes:
        console.print(escape(f"note: {n}"))
    regs = result.regressions
    if regs:
        console.print(escape(f"REGRESSION: {len(regs)} metric(s) beyond the limits and beyond noise: "
                             + "; ".join(f"{key_label(r.key)} {r.metric.label} {_fmt_change(r)} > {_fmt_bar(r)}" for r in regs)))
    else:
        noisy = sum(r.verdict == "noise" for r in result.rows)
        console.print("no regression beyond the limits and noise" + (f" ({noisy} over a limit inside the CIs)" if noisy else ""))
