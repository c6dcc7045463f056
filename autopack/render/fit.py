"""The one rule for fitting a report table to the terminal's width.

Ids (run, phase and session ids, categories, states) and figures are never wrapped and never
cut: their column is exactly as wide as its widest cell. Only prose (reasons, notes, evidence)
wraps, folded at the column's edge. When the columns do not fit, the lowest-priority columns
are dropped; when the columns that are never dropped still do not fit, every row is shown as a
key/value record instead of a table row.

Every report table is built here (`fit_table`), so the rule lives in one place; callers say what
each column holds and how much it matters.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal

from rich import box as boxes
from rich.box import Box
from rich.cells import cell_len
from rich.console import Group, RenderableType
from rich.table import Table
from rich.text import Text

ColumnKind = Literal["id", "figure", "text"]
"""id: names and ids, never broken; figure: numbers and short values, never broken;
text: prose, wraps."""

TEXT_MIN_WIDTH = 20
"""A prose column narrower than this reads badly: below it, columns are dropped instead."""

RECORD_KEY_GAP = 2

NO_VALUE = frozenset({"", "—", "-"})
"""Cells that hold nothing: a column of only these is the first dropped when room is short."""


@dataclass(frozen=True)
class Column:
    header: str
    kind: ColumnKind = "figure"
    justify: Literal["left", "right"] = "left"
    priority: int | None = None
    """None: always shown (in a table or as a record); otherwise dropped, lowest first (the
    rightmost first among equals), when the table would not fit."""
    style: str | None = None


@dataclass(frozen=True)
class Row:
    cells: Sequence[str]
    """Rich markup, one per column (the caller escapes what it does not mean as markup)."""
    style: str | None = None


@dataclass(frozen=True)
class TableStyle:
    box: Box | None = boxes.HEAVY_HEAD
    show_header: bool = True
    padding: int = 1
    """Cells on each side of a cell's content."""
    pad_edge: bool = True
    show_edge: bool = True

    def overhead(self, columns: int) -> int:
        """Cells a table of `columns` columns spends on borders and padding."""
        pads = 2 * self.padding * columns - (0 if self.pad_edge else 2 * self.padding)
        borders = 0
        if self.box is not None:
            borders = columns - 1 + (2 if self.show_edge else 0)
        return pads + borders


BOXED = TableStyle()
PLAIN = TableStyle(box=None, show_header=True, padding=1, pad_edge=False)
KEY_VALUE = TableStyle(box=None, show_header=False, padding=1, pad_edge=False)
COMPACT = TableStyle(box=boxes.SIMPLE_HEAD, show_edge=False, pad_edge=False)
"""A rule under the header and nothing else (the runs and phases reports)."""


def _width(markup: str) -> int:
    """The widest line of a cell, in terminal cells (markup does not count)."""
    if "[" not in markup:
        return max(cell_len(line) for line in markup.split("\n"))
    plain = Text.from_markup(markup).plain
    return max(cell_len(line) for line in plain.split("\n"))


def _longest_word(text: str) -> int:
    return max((cell_len(word) for word in text.split()), default=0)


@dataclass(frozen=True)
class _Measured:
    column: Column
    natural: int
    """Width that shows every cell and the header on one line."""
    minimum: int
    """Narrowest acceptable: every id and figure on one line, headers wrapped at spaces."""
    empty: bool
    """No row has a value in it: the first to go when room is short."""


def _measure(columns: Sequence[Column], rows: Sequence[Row], show_header: bool) -> list[_Measured]:
    measured = []
    for index, column in enumerate(columns):
        cells = max((_width(row.cells[index]) for row in rows), default=0)
        header = _width(column.header) if show_header else 0
        # An id's header never wraps (the column is no_wrap); other headers may wrap at spaces.
        word = header if column.kind == "id" else _longest_word(column.header) * show_header
        natural = max(cells, header, 1)
        if column.kind == "text":
            minimum = max(min(cells, TEXT_MIN_WIDTH), word, 1)
        else:
            minimum = max(cells, word, 1)
        empty = all(row.cells[index].strip() in NO_VALUE for row in rows)
        measured.append(_Measured(column, natural, minimum, empty))
    return measured


def _drop_order(measured: Sequence[_Measured]) -> list[int]:
    """Indexes of the droppable columns, the first to drop first: empty ones, then by priority
    (the rightmost first among equals)."""
    droppable = [i for i, m in enumerate(measured) if m.column.priority is not None]
    return sorted(droppable, key=lambda i: (not measured[i].empty, measured[i].column.priority, -i))


def _fitting_columns(measured: Sequence[_Measured], width: int, style: TableStyle) -> list[int]:
    """The columns kept, in order; empty when not even the essential columns fit."""
    kept = list(range(len(measured)))
    drops = _drop_order(measured)
    while True:
        needed = sum(measured[i].minimum for i in kept) + style.overhead(len(kept))
        if needed <= width:
            return kept
        if not drops:
            return []
        kept.remove(drops.pop(0))


def _widths(measured: Sequence[_Measured], kept: Sequence[int], room: int) -> dict[int, int]:
    """Minimum widths, then the spare cells shared out up to each column's natural width (in
    column order: the leftmost columns, the most telling, first)."""
    widths = {i: measured[i].minimum for i in kept}
    spare = room - sum(widths.values())
    for i in kept:
        if spare <= 0:
            break
        grow = min(spare, measured[i].natural - widths[i])
        widths[i] += grow
        spare -= grow
    return widths


def fit_table(
    columns: Sequence[Column],
    rows: Sequence[Row | Sequence[str]],
    *,
    width: int,
    title: str | None = None,
    group: int | None = None,
    style: TableStyle = BOXED,
) -> RenderableType:
    """A table of `rows` that reads at `width` cells (see the module's rule).

    `title` is printed above the table (Rich markup), wrapping at spaces only. `group` is the
    index of a column whose value groups consecutive rows (e.g. the run): the value is shown
    once per group, with a rule between groups.
    """
    rows_ = [row if isinstance(row, Row) else Row(tuple(row)) for row in rows]
    for row in rows_:
        if len(row.cells) != len(columns):
            raise ValueError(f"a row has {len(row.cells)} cells for {len(columns)} columns")
    measured = _measure(columns, rows_, style.show_header)
    kept = _fitting_columns(measured, width, style)
    if not kept:
        body = _records(columns, rows_, width)
    else:
        body = _table(measured, kept, rows_, width, group, style)
    if title is None:
        return body
    return Group(Text.from_markup(title, style="table.title"), body)


def _table(
    measured: Sequence[_Measured],
    kept: Sequence[int],
    rows: Sequence[Row],
    width: int,
    group: int | None,
    style: TableStyle,
) -> Table:
    widths = _widths(measured, kept, width - style.overhead(len(kept)))
    table = Table(
        box=style.box,
        show_header=style.show_header,
        padding=(0, style.padding),
        pad_edge=style.pad_edge,
        show_edge=style.show_edge,
    )
    for i in kept:
        column = measured[i].column
        table.add_column(
            Text(column.header),
            justify=column.justify,
            style=column.style,
            width=widths[i],
            # Every id and figure fits its column (its width is the widest cell), so only prose
            # and the headers of figures (at spaces) ever wrap; prose folds at the edge.
            no_wrap=column.kind == "id",
            overflow="fold",
        )
    previous: str | None = None
    for row in rows:
        cells = list(row.cells)
        if group is not None:
            value = cells[group]
            if previous is not None and value != previous:
                table.add_section()
            if value == previous:
                cells[group] = ""
            previous = value
        table.add_row(*(cells[i] for i in kept), style=row.style)
    return table


def _records(columns: Sequence[Column], rows: Sequence[Row], width: int) -> RenderableType:
    """Each row as `header  value` lines, a blank line between rows: nothing is dropped.

    Values go beside their keys when every id fits there, else under them; an id wider than
    the terminal itself can only fold (it is never cut).
    """
    key_width = max(cell_len(column.header) for column in columns)
    value_width = width - key_width - RECORD_KEY_GAP
    widest_fixed = max(
        (
            _width(row.cells[i])
            for row in rows
            for i, column in enumerate(columns)
            if column.kind != "text"
        ),
        default=0,
    )
    beside = value_width >= max(widest_fixed, TEXT_MIN_WIDTH)
    parts: list[RenderableType] = []
    for number, row in enumerate(rows):
        if number:
            parts.append(Text(""))
        grid = Table.grid(padding=(0, RECORD_KEY_GAP) if beside else 0)
        if beside:
            grid.add_column(style="bold", no_wrap=True, width=key_width)
            grid.add_column(overflow="fold", width=value_width)
        else:
            grid.add_column(overflow="fold")
        for column, cell in zip(columns, row.cells, strict=True):
            if not cell:
                continue
            value = Text.from_markup(cell, style=row.style or "")
            if column.kind != "text" and beside:
                value.no_wrap = True  # it fits: beside is chosen only when every id does
            if beside:
                grid.add_row(Text(column.header), value)
            else:
                grid.add_row(Text(column.header, style="bold"))
                grid.add_row(Text("  ") + value)
        parts.append(grid)
    return Group(*parts)
