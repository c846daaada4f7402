"""Tables that stay readable in a narrow terminal (80 columns and less).

Left to itself, rich shrinks every column alike when a table is too wide, and cuts cells with
an ellipsis: `key_…` is an id nobody can pass to `turnout keys revoke`. `fit` instead gives
each column a fixed width chosen here: a "whole" column (an id, a name, a number) is never
narrower than its longest word, so it wraps between words and never splits one; a "fold"
column (free text: an error, a list) may fold anywhere; and when even that does not fit, the
least useful columns are dropped, in the order the command names. Nothing is ever cut.
"""

from __future__ import annotations

import copy
from collections.abc import Iterable, Sequence

from rich.cells import cell_len
from rich.console import RenderableType
from rich.table import Column, Table
from rich.text import Text

_FOLD_FLOOR = 20  # a fold column narrower than this is hard to read: drop a column instead


def _text(cell: RenderableType) -> Text:
    """A cell as plain text: a str cell is shown as it is, never read as rich markup (a key
    name or an error may hold square brackets)."""
    return cell if isinstance(cell, Text) else Text(str(cell))


def _widths(texts: Iterable[Text]) -> tuple[int, int]:
    """(longest line, longest word) of these texts, in terminal cells."""
    line = word = 0
    for text in texts:
        for part in text.plain.splitlines() or [""]:
            line = max(line, cell_len(part))
            word = max([word, *(cell_len(w) for w in part.split())])
    return line, word


def _spread(natural: list[int], floor: list[int], room: int) -> list[int]:
    """Widths between floor and natural summing to at most `room`: the widest columns give
    way first (one common cap), the narrow ones keep their natural width."""
    if sum(natural) <= room:
        return natural
    cap = 0
    while sum(min(n, max(f, cap + 1)) for n, f in zip(natural, floor, strict=True)) <= room:
        cap += 1
    return [min(n, max(f, cap)) for n, f in zip(natural, floor, strict=True)]


def fit(
    table: Table,
    width: int,
    *,
    fold: Iterable[str] = (),
    drop: Sequence[str] = (),
    without: Iterable[str] = (),
) -> Table:
    """`table` made to fit `width` terminal cells. Columns are named by their header: those
    in `fold` may fold anywhere; `drop` lists the columns that may go, the first to go first;
    every other column is whole (wrapped between words only, never cut). The columns named in
    `without` go first, whatever the width."""
    columns = list(table.columns)
    header = {id(c): _text(c.header).plain for c in columns}
    cells = {id(c): [_text(c.header), *map(_text, c.cells)] for c in columns}
    natural, floor = {}, {}
    for column in columns:
        line, word = _widths(cells[id(column)])
        natural[id(column)] = line
        foldable = header[id(column)] in fold
        floor[id(column)] = min(line, _FOLD_FLOOR) if foldable else word

    def room(kept: list[Column]) -> int:  # borders and padding: 3 cells a column, 1 more
        return width - 3 * len(kept) - 1

    kept = [c for c in columns if header[id(c)] not in set(without)]
    for name in drop:
        if sum(floor[id(c)] for c in kept) <= room(kept):
            break
        kept = [c for c in kept if header[id(c)] != name]
    widths: list[int | None] = [None] * len(kept)  # too narrow even so: rich shrinks them all,
    if sum(floor[id(c)] for c in kept) <= room(kept):  # folding ids rather than cutting them
        natural_kept, floor_kept = [natural[id(c)] for c in kept], [floor[id(c)] for c in kept]
        widths = list(_spread(natural_kept, floor_kept, room(kept)))
    fitted = copy.copy(table)
    fitted.columns, fitted.rows = [], []
    for column, column_width in zip(kept, widths, strict=True):
        fitted.add_column(
            _text(column.header),
            justify=column.justify,
            style=column.style,
            header_style=column.header_style,
            overflow="fold",
            width=None if column_width is None else max(column_width, 1),
        )
    for i, row in enumerate(table.rows):
        fitted.add_row(
            *(cells[id(c)][i + 1] for c in kept), style=row.style, end_section=row.end_section
        )
    return fitted


def fit_alike(tables: Sequence[Table], width: int, *, drop: Sequence[str] = ()) -> list[Table]:
    """Tables shown one under the other (the same columns) fitted to `width` with the same
    columns kept in each: the narrowest fit of any of them decides for all."""
    fitted = [fit(t, width, drop=drop) for t in tables]
    kept = [{_text(c.header).plain for c in t.columns} for t in fitted]
    gone = {name for name in drop if any(name not in shown for shown in kept)}
    return [fit(t, width, drop=drop, without=gone) for t in tables] if gone else fitted
