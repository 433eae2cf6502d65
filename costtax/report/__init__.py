"""Reports built from a run directory; the only package that builds DataFrames.

One module per job: summary (assembles summary.csv rows from the run, read through
costtax.store.rundata), cost (latency, throughput, tokens, meters, load-level columns), quality (reward,
accuracy, refusal, diversity), tax (×plain multipliers, deltas vs plain, Pareto), checks (sanity
flags, accounting, A/A, cold start), params (provenance and technique parameter columns), columns
(every summary.csv column: name, unit, meaning), table (the printed tax table), plots, plan
(capacity plan).
"""
from __future__ import annotations

from .columns import COLUMNS, CONTRACT_COLUMNS, Column, add_column, all_columns, param_columns
from .plan import capacity_plan
from .plots import write_plots
from .summary import (
    METER_COLUMNS, PROVENANCE_COLUMNS, SMALL_N, build_summary, ensure_summary, load_run, load_summary, summary_records, write_summary,
)
from .table import HEADLINE, headline_rows, reward_model_line, row_warnings

__all__ = [
    "COLUMNS", "CONTRACT_COLUMNS", "Column", "add_column", "all_columns", "param_columns",
    "capacity_plan", "write_plots", "METER_COLUMNS", "PROVENANCE_COLUMNS", "SMALL_N",
    "build_summary", "ensure_summary", "load_run", "load_summary", "summary_records", "write_summary", "HEADLINE", "headline_rows", "reward_model_line", "row_warnings",
]
