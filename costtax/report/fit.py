"""Tables that fit the terminal they are printed on (tax table, capacity plan, compare).

A table is a list of `FitColumn`s and rows of already formatted strings. `layout(table, width)`
turns it into plain text lines:

* ``width=None`` (off a terminal: pipes, ``| tee``, CI logs; or ``--wide``): the stable, complete
  format. Every column with its full header, one row per line, whatever the length.
* a terminal ``width``: the same table when it fits. Otherwise, in this order, the first that fits:
  1. short headers (``FitColumn.short``), explained in a ``legend:`` line under the table;
  2. bands: the columns split, in their registered order, into several tables stacked one under
     the other, each repeating the row label (``FitColumn.label``), full headers unless short
     ones save a band. Nothing is hidden and no value is cut: summary.csv still has every digit;
  3. stacked blocks, when even the label and one column do not fit side by side: one block per row,
     the label on its own line, then ``header: value`` pairs packed onto lines of the width.
* A ``group`` column (compare's cell) is a column in the complete format and a heading line
  above its rows on a terminal: a long cell name then costs one line, not a column.

Columns are separated by two spaces and no value holds two spaces in a row, so the text splits
back into cells on runs of spaces (the width test does). The layout is decided from the column
list alone, so a column someone registers later is fitted (and tested) like the others.

Stdlib and rich only; no pandas here.
"""
from __future__ import annotations

import textwrap
from dataclasses import dataclass, field
from typing import IO, Sequence

from ..console.display import terminal_width  # noqa: F401  (re-exported: where tables ask for the width)

GAP = "  "
MIN_WIDTH = 40  # below this the terminal is treated as 40 columns wide (stacked blocks)


@dataclass(frozen=True)
class FitColumn:
    """One printed column: `key` names it (a summary.csv column or a compare field), `header` is
    shown in the complete format, `short` (optional) replaces it when space is tight and is then
    explained in the legend."""

    key: str
    header: str
    short: str | None = None
    justify: str = "right"
    label: bool = False
    group: bool = False

    def __post_init__(self):
        if self.justify not in ("left", "right"):
            raise ValueError(f"FitColumn.justify: bad value {self.justify!r}: use 'left' or 'right'")
        if not self.header or "  " in self.header or (self.short is not None and ("  " in self.short or not self.short)):
            raise ValueError(f"FitColumn {self.key}: headers must be non-empty without double spaces")
        if self.label and self.group:
            raise ValueError(f"FitColumn {self.key}: a column is a row label or a group heading, not both")


@dataclass(frozen=True)
class FitTable:
    title: str
    columns: tuple[FitColumn, ...]
    rows: tuple[tuple[str, ...], ...]
    styles: tuple[str | None, ...] = field(default=())  # per row, rich style names; () for none

    def __post_init__(self):
        n = len(self.columns)
        for i, r in enumerate(self.rows):
            if len(r) != n:
                raise ValueError(f"FitTable {self.title!r}: row {i} has {len(r)} cells for {n} columns")
        if self.styles and len(self.styles) != len(self.rows):
            raise ValueError(f"FitTable {self.title!r}: {len(self.styles)} styles for {len(self.rows)} rows")


def make_table(title: str, columns: Sequence[FitColumn], rows: Sequence[Sequence[str]], styles: Sequence[str | None] = ()) -> FitTable:
    """Rows as given; a value's runs of blanks/newlines become one space (the format's invariant)."""
    clean = tuple(tuple(" ".join(str(v).split()) for v in r) for r in rows)
    return FitTable(title, tuple(columns), clean, tuple(styles))


# -- measuring -----------------------------------------------------------------------------------
def cell_len(text: str) -> int:
    from rich.cells import cell_len as _cl

    return _cl(text)


def _pad(text: str, width: int, justify: str) -> str:
    fill = " " * (width - cell_len(text))
    return text + fill if justify == "left" else fill + text


def _widths(table: FitTable, idx: list[int], short: bool) -> list[int]:
    out = []
    for i in idx:
        c = table.columns[i]
        head = c.short if short and c.short else c.header
        out.append(max([cell_len(head)] + [cell_len(r[i]) for r in table.rows]))
    return out


def _line_len(widths: list[int]) -> int:
    return sum(widths) + len(GAP) * max(0, len(widths) - 1)


# -- layouts -------------------------------------------------------------------------------------
@dataclass
class Rendered:
    """Lines to print and, per line, the row it belongs to (None: title, header, legend, gap)."""

    lines: list[str] = field(default_factory=list)
    row_of: list[int | None] = field(default_factory=list)

    def add(self, line: str, row: int | None = None) -> None:
        self.lines.append(line.rstrip())
        self.row_of.append(row)


def _grid(table: FitTable, idx: list[int], short: bool, out: Rendered, rows: list[int] | None = None,
          with_header: bool = True) -> None:
    widths = _widths(table, idx, short)
    cols = [table.columns[i] for i in idx]
    if with_header:
        heads = [(c.short if short and c.short else c.header) for c in cols]
        out.add(GAP.join(_pad(h, w, c.justify) for h, w, c in zip(heads, widths, cols)))
        out.add("─" * _line_len(widths))
    prev = None
    for r in (range(len(table.rows)) if rows is None else rows):
        row = table.rows[r]
        # a group column shows its value once, on the first row of the group
        vals = ["" if c.group and prev is not None and prev[i] == row[i] else row[i] for i, c in zip(idx, cols)]
        out.add(GAP.join(_pad(v, w, c.justify) for v, w, c in zip(vals, widths, cols)), r)
        prev = row


def _legend(table: FitTable, idx: list[int], width: int | None, out: Rendered) -> None:
    entries = [f"{c.short} = {c.header}" for c in (table.columns[i] for i in idx) if c.short and c.short != c.header]
    if not entries:
        return
    text = "legend: " + "; ".join(entries)
    if width is None:
        out.add(text)
        return
    # wrap between entries only: every entry stays whole on one line
    line = "legend:"
    for e in entries:
        piece = (" " if line == "legend:" else "; ") + e
        if cell_len(line + piece) + 1 > width and line != "legend:":
            out.add(line + ";")
            line = "  " + e
        else:
            line += piece
    out.add(line)


def _bands(table: FitTable, idx: list[int], labels: list[int], short: bool, width: int) -> list[list[int]] | None:
    """Columns (besides the labels) packed in order into bands that each fit `width`; None when a
    single column does not fit beside the labels."""
    lw = _widths(table, labels, short)
    base = _line_len(lw)
    bands: list[list[int]] = []
    cur: list[int] = []
    for i in idx:
        if i in labels:
            continue
        w = _widths(table, [i], short)[0]
        if base + len(GAP) + w > width:
            return None
        trial = _line_len(lw + _widths(table, cur + [i], short))
        if cur and trial > width:
            bands.append(cur)
            cur = []
        cur.append(i)
    if cur or not bands:
        bands.append(cur)
    return bands


def _stacked(table: FitTable, idx: list[int], labels: list[int], width: int, out: Rendered, rows: list[int]) -> None:
    for r in rows:
        head = " · ".join(table.rows[r][i] for i in labels) or f"row {r + 1}"
        for piece in textwrap.wrap(head, width, break_on_hyphens=False) or [""]:
            out.add(piece, r)
        line = ""
        for i in idx:
            if i in labels:
                continue
            c, v = table.columns[i], table.rows[r][i]
            pair = f"{c.header}: {v}" if v else f"{c.header}: —"
            if cell_len(pair) + 2 > width:
                pair = f"{c.short or c.header}: {v or '—'}"
            if line and cell_len(line + GAP + pair) > width:
                out.add(line, r)
                line = ""
            line = (line + GAP + pair) if line else "  " + pair
        if line:
            out.add(line, r)


def _title(table: FitTable, width: int | None, out: Rendered) -> None:
    if not table.title:
        return
    if width is None:
        out.add(table.title)
        return
    for piece in textwrap.wrap(table.title, width, break_on_hyphens=False, break_long_words=True):
        out.add(piece)


def layout(table: FitTable, width: int | None) -> Rendered:
    """The table as lines: complete when `width` is None, else fitted to `width` columns."""
    out = Rendered()
    _title(table, width, out)
    all_idx = list(range(len(table.columns)))
    groups = [i for i in all_idx if table.columns[i].group]
    if width is None:
        _grid(table, all_idx, False, out)
        return out
    width = max(width, MIN_WIDTH)
    idx = [i for i in all_idx if i not in groups]
    labels = [i for i in idx if table.columns[i].label]
    # rows under their group's heading (compare's cells); one section without groups
    sections: list[tuple[str | None, list[int]]] = []
    for r, row in enumerate(table.rows):
        g = " · ".join(row[i] for i in groups) if groups else None
        if sections and sections[-1][0] == g:
            sections[-1][1].append(r)
        else:
            sections.append((g, [r]))

    def emit(bands: list[list[int]], short: bool) -> None:
        # with groups, each group's heading then its rows in every band; else band after band
        if groups:
            for k, (g, rows) in enumerate(sections):
                if k:
                    out.add("")
                for piece in textwrap.wrap(g or "", width, break_on_hyphens=False, break_long_words=True):
                    out.add(piece, rows[0])
                for band in bands:
                    _grid(table, band, short, out, rows)
            return
        for b, band in enumerate(bands):
            if b:
                out.add("")
            _grid(table, band, short, out)

    for short in (False, True):
        if _line_len(_widths(table, idx, short)) <= width:
            emit([idx], short)
            if short:
                _legend(table, idx, width, out)
            return out
    full, brief = _bands(table, idx, labels, False, width), _bands(table, idx, labels, True, width)
    if full is not None and (brief is None or len(full) <= len(brief)):
        bands, short = full, False
    elif brief is not None:
        bands, short = brief, True
    else:
        _stacked(table, idx, labels, width, out, list(range(len(table.rows))))
        return out
    emit([labels + band for band in bands], short)
    if short:
        _legend(table, idx, width, out)
    return out


# -- where the table goes ------------------------------------------------------------------------
def output_console(stream: IO[str], width: int | None):
    """A rich console for the lines around a table: word-wrapped at `width` on a terminal,
    whole lines (no wrapping) off one."""
    from rich.console import Console

    tty = width is not None
    return Console(file=stream, width=width or 1000, force_terminal=tty, no_color=not tty, highlight=False,
                   soft_wrap=not tty)


def print_table(console, table: FitTable, width: int | None) -> Rendered:
    """Print `table` fitted to `width` (None: complete) on a rich console; row styles kept."""
    from rich.text import Text

    rendered = layout(table, width)
    for line, r in zip(rendered.lines, rendered.row_of):
        style = table.styles[r] if table.styles and r is not None else None
        console.print(Text(line, style=style or ""), soft_wrap=True, overflow="ignore", crop=False)
    return rendered
