"""The printed `costtax compare` table, as a FitTable (costtax/report/fit.py).

compare_columns() is the one list of its columns: the width test iterates over it, so a column
added here is fitted and tested like the others. The cell is a group: a column off a terminal,
a heading line above its metrics on one (a benchmark's name can be 40 characters).
"""
from __future__ import annotations

from typing import Callable

from ..report.fit import FitColumn, FitTable, make_table

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
