"""The printed capacity plan (`costtax plan`): its columns, headers and formats, as a FitTable.

PLAN_COLUMNS is the one list of printed plan columns: add a column here (plan.csv key, header,
short header, format) and the table, its fitting to the terminal and the width test
(tests/report/test_fit.py) all pick it up. Formats: a str.format pattern for numbers, or one of
"text", "holds" (quality floor), "star" (cheapest).
"""
from __future__ import annotations

from .fit import FitColumn, FitTable, make_table

# (plan.csv column, header, short header or None, format)
PLAN_COLUMNS: list[tuple[str, str, str | None, str]] = [
    ("cell", "cell", None, "text"),
    ("capacity_answers_per_s", "ans/s per replica", "ans/s", "{:.3g}"),
    ("basis", "basis", None, "text"),
    ("replicas_needed", "replicas", "repl", "{:.0f}"),
    ("replicas_x_plain", "× plain", None, "{:.2f}"),
    ("usd_per_1m_answers", "$/1M answers", "$/1M", "{:,.0f}"),
    ("kwh_per_1m_answers", "kWh/1M answers", "kWh/1M", "{:,.1f}"),
    ("quality_floor_holds", "quality floor", "floor", "holds"),
    ("cheapest", "cheapest", "★", "star"),
]
FLOOR_ONLY = ("quality_floor_holds",)  # shown only when the plan was asked for quality floors


def _fmt(v, fmt: str) -> str:
    if fmt == "star":
        return "★" if v is True or v == 1 else ""
    if v is None or (isinstance(v, float) and v != v):
        return "—"
    if fmt == "holds":
        return "holds" if bool(v) else "NOT MET"
    if fmt == "text":
        return str(v)
    try:
        return fmt.format(float(v))
    except (TypeError, ValueError):
        return str(v)


def plan_table(df, title: str, *, floors: bool) -> FitTable:
    """plan.csv's rows as the printed table (floors: the plan was given quality floors)."""
    specs = [c for c in PLAN_COLUMNS if floors or c[0] not in FLOOR_ONLY]
    cols = [FitColumn(k, h, s, justify="left" if f == "text" else "right", label=k == "cell") for k, h, s, f in specs]
    rows = []
    for _, r in df.iterrows():
        rows.append([_fmt(r.get(k), f) for k, _, _, f in specs])
    return make_table(title, cols, rows)
