"""Tables fit the terminal they are printed on (issue 20).

Each printed table (tax table, capacity plan, compare) is built with EVERY column its registry
lists (HEADLINE + the load columns, PLAN_COLUMNS, compare_columns()): a column added there later
is covered here without touching this file. Rendered at 80, 100 and 160 columns with the width
pinned and COLUMNS unset, the text is read back independently of the renderer: no line wider
than the terminal, every row present, every formatted value whole on a line of its own row (no
"…"), every header whole on a header line or explained in the legend.
"""
from __future__ import annotations

import fcntl
import io
import os
import re
import struct
import termios

import pandas as pd
import pytest

from costtax.compare.verdicts import METRICS, CompareConfig, Estimate, Source, compare_sources
from costtax.compare.table import _fmt_change, _fmt_est, _fmt_limit
from costtax.compare.table import compare_columns, compare_table
from costtax.report.fit import FitColumn, cell_len, layout, make_table, output_console, print_table, terminal_width
from costtax.report.plan_table import PLAN_COLUMNS, plan_table
from costtax.report.table import HEADLINE, LOAD_COLUMNS, tax_table

pytestmark = pytest.mark.unit

WIDTHS = (80, 100, 160)
LONG_CELLS = ["plain", "bon:n=16", "cai:rounds=2", "bon:n=4,temperature=1.0", "my_tech:alpha=0.5,beta=7"]


@pytest.fixture(autouse=True)
def _no_columns(monkeypatch):
    monkeypatch.delenv("COLUMNS", raising=False)
    monkeypatch.delenv("LINES", raising=False)


# -- the three tables with all their columns ---------------------------------------------------
def _tax_df() -> pd.DataFrame:
    rows = []
    for li, load in enumerate(("concurrency=1", "concurrency=16", "rate=0.5")):
        for ci, cell in enumerate(LONG_CELLS):
            k = li * 10 + ci + 1
            r = {"cell": cell, "load": load, "status": "ok"}
            for j, (col, _, fmt) in enumerate(HEADLINE + LOAD_COLUMNS):
                if col in ("cell",):
                    continue
                if fmt == "{:d}":
                    r[col] = 100 + k
                elif col in ("pareto", "saturated"):
                    r[col] = k % 2 == 0
                else:  # distinct values, some wide (negative, three digits before the point)
                    r[col] = (-1) ** j * (k * 13.37 + j) if "delta" in col or "reward" in col else k * 17.31 + j
            rows.append(r)
    rows[3]["status"] = "failed"
    rows[3]["error"] = "RuntimeError: " + "a long error message " * 6
    return pd.DataFrame(rows)


def _plan_df() -> pd.DataFrame:
    basis = ["measured", "interpolated", "at least (beyond the measured range)",
             "infeasible: p95 above the SLO at every measured level", "measured"]
    rows = []
    for i, cell in enumerate(LONG_CELLS):
        r = {}
        for j, (col, _, _, fmt) in enumerate(PLAN_COLUMNS):
            if col == "cell":
                r[col] = cell
            elif col == "basis":
                r[col] = basis[i]
            elif fmt == "holds":
                r[col] = [True, False, None, True, False][i]
            elif fmt == "star":
                r[col] = i == 1
            elif fmt == "text":
                r[col] = f"{col}-{i}"
            else:
                r[col] = 1234567.0 / (i + 1) + j if i != 3 else float("nan")
        rows.append(r)
    return pd.DataFrame(rows)


def _compare_result():
    from costtax.load.levels import LoadLevel

    names = ("plain", "test_technique[bon:n=4-helpful-long-benchmark-name]", "cai:rounds=1")
    old, new = {}, {}
    for lv, level in enumerate((LoadLevel("batch"), LoadLevel("concurrency", 16))):
        for c, name in enumerate(names):
            key = (name, level)
            old[key], new[key] = {}, {}
            for j, m in enumerate(METRICS):
                v = (lv + 1) * (c + 1) * (j + 1) * (2**30 if m.unit == "B" else 1.234)
                old[key][m.name] = Estimate(v, v * 0.9, v * 1.1, 8)
                new[key][m.name] = Estimate(v * 1.5, v * 1.4, v * 1.6, 8) if j % 2 else Estimate(v * 0.99)
    config = CompareConfig(old="a", new="b", max_memory_increase=0.1, max_energy_increase=0.2)
    return compare_sources(Source("/runs/old-run-with-a-long-name-2026-12-02", "run", old),
                           Source("/runs/new-run-with-a-long-name-2026-12-02", "run", new), config)


def _tables():
    df = _tax_df()
    yield "tax", tax_table(df, "alignment tax vs plain — /some/run/dir")
    yield "plan", plan_table(_plan_df(), "capacity plan: 2 answers/s, p95 <= 5s", floors=True)
    result = _compare_result()
    for level in dict.fromkeys(r.key[1] for r in result.rows):  # one table per load level
        yield f"compare {level.label}", compare_table(result, level, est=_fmt_est, change=_fmt_change, limit=_fmt_limit)


# -- reading the text back, without the renderer's help -------------------------------------------
def _tokens(line: str) -> list[str]:
    return [t for t in re.split(r" {2,}", line.strip()) if t]


def _read_back(table, lines: list[str]):
    """{(group, label): [lines of that row]}, header lines, legend text."""
    groups = {r[i] for r in table.rows for i, c in enumerate(table.columns) if c.group}
    label_ix = [i for i, c in enumerate(table.columns) if c.label]
    labels = {r[label_ix[0]] for r in table.rows}
    rows: dict[tuple, list[str]] = {}
    heads, legend = [], []
    group, stack = None, None
    for n, line in enumerate(lines):
        nxt = lines[n + 1] if n + 1 < len(lines) else ""
        if nxt and set(nxt) == {"─"}:
            heads.append(line)
            stack = None
            continue
        if line.startswith("legend:") or (legend and line.startswith("  ") and stack is None):
            legend.append(line)
            continue
        if not line.startswith(" ") and line.strip() in groups:
            group, stack = line.strip(), None
            continue
        toks = _tokens(line)
        if toks and not line.startswith(" ") and toks[0] in labels:
            key = (group, toks[0])
            rows.setdefault(key, []).append(line)
            stack = key if len(toks) == 1 else None
        elif stack is not None and line.startswith("  "):
            rows[stack].append(line)
    return rows, heads, " ".join(legend)


def _check(table, lines: list[str], width: int | None) -> None:
    text = "\n".join(lines)
    assert "…" not in text
    if width is not None:
        too_long = [line for line in lines if cell_len(line) > width]
        assert not too_long, f"{len(too_long)} lines wider than {width}: {too_long[0]!r}"
    rows, heads, legend = _read_back(table, lines)
    head_tokens = {t for h in heads for t in _tokens(h)}
    label_i = next(i for i, c in enumerate(table.columns) if c.label)
    group_i = next((i for i, c in enumerate(table.columns) if c.group), None)
    for r in table.rows:
        key = (r[group_i] if group_i is not None and width is not None else None, r[label_i])
        if width is None and group_i is not None:  # complete format: cell shown on a group's first row only
            key = (None, r[label_i])
            mine = [line for line in lines if r[label_i] in _tokens(line) and r[group_i] in text]
        else:
            mine = rows.get(key)
        assert mine, f"row {key} missing at width {width}"
        for i, (c, v) in enumerate(zip(table.columns, r)):
            if not v or c.group or c.label:
                continue
            names = {c.header, c.short or c.header}
            ok = any(v in _tokens(line) or any(f"{h}: {v}" in _tokens(line) for h in names) for line in mine)
            assert ok, f"{c.key}={v!r} of row {key} is not whole on one of its lines at width {width}:\n" + "\n".join(mine)
    for c in table.columns:
        if c.group:
            continue
        shown = c.header in head_tokens or f"{c.header}:" in text
        explained = c.short is not None and c.short in head_tokens and f"{c.short} = {c.header}" in legend
        assert shown or explained, f"header {c.header!r} neither on a header line nor in the legend at width {width}"


@pytest.mark.parametrize("width", WIDTHS + (None,))
def test_every_table_fits_and_keeps_every_value(width):
    for name, table in _tables():
        assert len(table.rows) >= 5 or name == "plan"
        _check(table, layout(table, width).lines, width)


def test_registries_are_what_the_tables_print():
    """The test tables carry every registered column: nothing added later escapes the check."""
    tables = dict(_tables())
    assert {"compare batch", "compare concurrency=16"} <= set(tables)
    assert [c.key for c in tables["plan"].columns] == [k for k, *_ in PLAN_COLUMNS]
    assert [c.key for c in tables["compare batch"].columns] == [c.key for c, _ in compare_columns(_fmt_est, _fmt_change, _fmt_limit)]
    tax_keys = {c.key for c in tables["tax"].columns}
    assert {k for k, _, _ in HEADLINE + LOAD_COLUMNS} - tax_keys == set()
    # and the test data is wide enough to need fitting at 80 columns
    for name, table in tables.items():
        assert max(cell_len(line) for line in layout(table, None).lines) > 80, name


def test_fitting_prefers_one_table_then_short_headers_then_bands():
    cols = [FitColumn("cell", "cell", justify="left", label=True)] + [FitColumn(f"c{i}", f"header number {i}", f"h{i}") for i in range(10)]
    table = make_table("t", cols, [["plain"] + [f"{i}.0" for i in range(10)], ["bon:n=4"] + [f"{i}.5" for i in range(10)]])
    wide = layout(table, 200).lines
    assert "header number 9" in wide[1] and not any(line.startswith("legend") for line in wide)
    short = layout(table, 60).lines
    assert "h9" in short[1] and any(line.startswith("legend: h0 = header number 0") for line in short)
    assert sum(1 for line in short if line.startswith("plain")) == 1  # one band
    narrow = layout(table, 40).lines
    assert sum(1 for line in narrow if line.startswith("plain")) > 1  # several bands, label repeated
    _check(table, narrow, 40)


def test_a_label_too_long_for_any_band_becomes_stacked_blocks():
    label = "x" * 70 + ":n=4"
    cols = [FitColumn("cell", "cell", justify="left", label=True), FitColumn("a", "p50 ×"), FitColumn("b", "reward")]
    table = make_table("t", cols, [["plain", "1.00", "+0.5"], [label, "4.63", "-1.2"]])
    lines = layout(table, 60).lines
    assert "  p50 ×: 4.63  reward: -1.2" in lines
    assert max(cell_len(line) for line in lines) <= 60


def test_off_a_terminal_the_format_is_complete_and_width_independent(monkeypatch):
    monkeypatch.setenv("COLUMNS", "40")  # a narrow terminal setting must not reach piped output
    for name, table in _tables():
        lines = layout(table, None).lines
        # complete: the title, the full header, its rule, then exactly one line per row
        assert len(lines) == 3 + len(table.rows), name
        assert lines[0] == table.title and set(lines[2]) == {"─"}
        assert _tokens(lines[1]) == [c.header for c in table.columns], name
        assert not any(line.startswith("legend") for line in lines)
        _check(table, lines, None)
        # width independent: what a pipe gets through rich (no terminal, so no width) is that text,
        # however long its lines are
        buf = io.StringIO()
        assert terminal_width(buf) is None
        print_table(output_console(buf, terminal_width(buf)), table, terminal_width(buf))
        assert buf.getvalue().splitlines() == lines, name
        assert max(cell_len(line) for line in lines) > 40


def test_printed_through_rich_the_lines_stay_as_laid_out():
    """print_table on a 80-column terminal console: rich neither wraps nor crops a line."""
    table = dict(_tables())["compare batch"]
    buf = io.StringIO()
    print_table(output_console(buf, 80), table, 80)
    plain = re.sub(r"\x1b\[[0-9;]*m", "", buf.getvalue()).splitlines()
    assert plain == layout(table, 80).lines


def test_terminal_width_is_the_streams_own_terminal():
    """Asked of the stream's descriptor (a pty sized 93 columns), not of stdin or COLUMNS."""
    master, slave = os.openpty()
    try:
        fcntl.ioctl(slave, termios.TIOCSWINSZ, struct.pack("HHHH", 30, 93, 0, 0))
        with os.fdopen(os.dup(slave), "w") as tty:
            assert terminal_width(tty) == 93
        assert terminal_width(io.StringIO()) is None
    finally:
        os.close(master)
        os.close(slave)


def test_report_command_off_a_terminal_prints_the_complete_table(tmp_path, capsys, monkeypatch):
    from costtax.cli import _print_table

    df = _tax_df()
    (tmp_path / "run.json").write_text("{}")
    _print_table(tmp_path, df)
    out = capsys.readouterr().out.splitlines()
    assert max(len(line) for line in out) > 160  # complete, not fitted to anything
    assert any("warning: bon:n=4,temperature=1.0 @ concurrency=1: FAILED: RuntimeError" in line for line in out)
    _print_table(tmp_path, df, width=80)
    fitted = re.sub(r"\x1b\[[0-9;]*m", "", capsys.readouterr().out).splitlines()
    assert max(cell_len(line) for line in fitted) <= 80
    _print_table(tmp_path, df, width=80, wide=True)  # --wide on an 80-column terminal: complete again
    assert capsys.readouterr().out.splitlines() == out



def test_readme_shows_the_committed_80_column_capture():
    """README's example, and each docs page's, is the committed capture
    (scripts/readme_capture.py), and no line of it is wider than the 80-column terminal it was
    captured in (capture-pane -J joins wrapped lines)."""
    from pathlib import Path

    root = Path(__file__).resolve().parents[2]
    sys_path = str(root / "scripts")
    import importlib.util

    spec = importlib.util.spec_from_file_location("readme_capture", Path(sys_path) / "readme_capture.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    pages = [p for p in [root / "README.md", *sorted((root / "docs").glob("*.md"))]
             if "<!-- terminal-capture: " in p.read_text(encoding="utf-8")]
    assert root / "README.md" in pages and len(pages) >= 2  # README, and the docs pages that show it
    for page in pages:
        readme = page.read_text(encoding="utf-8")
        assert mod.render(readme) == readme, f"{page}: run python scripts/readme_capture.py"
        capture = (root / mod.BEGIN.search(readme).group(1)).read_text(encoding="utf-8").splitlines()
        assert capture and max(len(line) for line in capture) <= 80
