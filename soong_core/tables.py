"""Rows of text in columns, for a person: the one layout of ``soong status`` and
``status --history`` (and of any reporter that wants it).

Up to :data:`TABLE_ROWS_MAX` rows the layout is a rich ``Table``. Beyond, rich's table
costs more than the rest of the command (it measures every cell of every row several
times: 0.43 s for 1,000 instances), so the same columns and words are laid out as one
rich ``Text``, each cell padded to its column's width (0.04 s for 1,000): the characters
are those the table would print, the styles the same per row and per cell.

Every cell passes through :func:`~soong_core.text.printable` and reaches rich as a
``Text``, never as markup: a provider's name cannot break its row, send the terminal a
command, or style itself (``[red]`` prints as it is).

Standard library only at import: rich is imported by :func:`render_table`.
"""

from __future__ import annotations

import io
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Mapping, Sequence

from soong_core.text import printable

if TYPE_CHECKING:
    from rich.console import Console
    from rich.text import Text

__all__ = ["TABLE_ROWS_MAX", "TABLE_WIDTH", "Column", "Row", "render_table"]

TABLE_ROWS_MAX = 200
"""The most rows laid out as a rich ``Table``; more are laid out as padded ``Text``."""
TABLE_WIDTH = 1000
"""The console width rich is given: more than any row needs, so no cell is ever cut."""
RULE = "\u2500"
"""What the line under the header is drawn with (rich's ``SIMPLE_HEAD`` box)."""


@dataclass(frozen=True)
class Column:
    header: str
    right: bool = False
    """Right-justified (numbers: durations, money), header included."""


@dataclass(frozen=True)
class Row:
    cells: Sequence[str]
    """One text per column, as plain text (control characters are escaped here)."""
    style: str = ""
    """A rich style for the whole row (``"red"``, ``"dim"``)."""
    cell_styles: Mapping[int, str] = field(default_factory=dict)
    """Styles of single cells by column index, over the row's."""


def render_table(columns: Sequence[Column], rows: Sequence[Row], *, ansi: bool,
                 header_rule: bool = False, rows_max: int = TABLE_ROWS_MAX) -> str:
    """``rows`` under a header of ``columns``, as the text to write (ending in a newline).

    :param ansi: style with ANSI escapes (a bold header, the rows' and cells' styles);
        without, the text has no escape code at all and no trailing spaces.
    :param header_rule: on a styled table, a line under the header (and columns three
        spaces apart instead of two).
    :param rows_max: above this many rows, the padded ``Text`` layout.
    """
    from rich.console import Console

    cells = [[printable(cell) for cell in row.cells] for row in rows]
    buffer = io.StringIO()
    # Never narrower than the table: rich would cut ids and costs to "fake-0…", which
    # loses the very facts a user reads the table for. A long line wraps in the terminal
    # instead, and piped output keeps one row per line.
    console = Console(file=buffer, force_terminal=ansi, no_color=not ansi,
                      color_system="standard" if ansi else None, width=TABLE_WIDTH,
                      highlight=False, emoji=False, markup=False, soft_wrap=False)
    boxed = header_rule and ansi
    if len(rows) <= rows_max:
        _print_table(console, columns, rows, cells, ansi=ansi, boxed=boxed)
    else:
        console.print(_padded_text(columns, cells, rows, ansi=ansi, boxed=boxed),
                      soft_wrap=True, end="")
    lines = buffer.getvalue().splitlines()
    if not ansi:
        lines = [line.rstrip() for line in lines]
    while lines and not lines[-1].strip():
        lines.pop()
    return "\n".join(lines) + "\n"


def _print_table(console: Console, columns: Sequence[Column], rows: Sequence[Row],
                 cells: Sequence[Sequence[str]], *, ansi: bool, boxed: bool) -> None:
    from rich import box
    from rich.table import Table
    from rich.text import Text

    table = Table(box=box.SIMPLE_HEAD if boxed else None, show_edge=False,
                  header_style="bold" if ansi else None, pad_edge=False)
    for column in columns:
        table.add_column(column.header, justify="right" if column.right else "left",
                         no_wrap=True)
    for row, texts in zip(rows, cells):
        styled = [Text(text) for text in texts]
        for index, style in row.cell_styles.items():
            if style:
                styled[index].stylize(style)
        table.add_row(*styled, style=row.style or None)
    console.print(table)


def _padded_text(columns: Sequence[Column], cells: Sequence[Sequence[str]],
                 rows: Sequence[Row], *, ansi: bool, boxed: bool) -> Text:
    """What :func:`_print_table` prints, built as one ``Text``: each cell padded (by
    display width: a wide character takes two) as the table pads it, columns apart by the
    table's gap (its two paddings, and the box's space between them when boxed)."""
    from rich.cells import cell_len
    from rich.text import Span, Text

    headers = [column.header for column in columns]
    widths = [cell_len(header) for header in headers]
    for texts in cells:
        for index, text in enumerate(texts):
            width = cell_len(text)
            if width > widths[index]:
                widths[index] = width
    gap = "   " if boxed else "  "
    parts: list[str] = []
    spans: list[Span] = []
    position = 0

    def add_line(texts: Sequence[str], style: str, cell_styles: Mapping[int, str]) -> None:
        nonlocal position
        start = position
        line_spans: list[Span] = []
        for index, (text, column, width) in enumerate(zip(texts, columns, widths)):
            if index:
                parts.append(gap)
                position += len(gap)
            pad = " " * (width - cell_len(text))
            padded = pad + text if column.right else text + pad
            cell_style = cell_styles.get(index)
            if cell_style:
                offset = position + (len(pad) if column.right else 0)
                line_spans.append(Span(offset, offset + len(text), cell_style))
            parts.append(padded)
            position += len(padded)
        if style:  # the row's style first: a cell's style, later, wins over it
            spans.append(Span(start, position, style))
        spans.extend(line_spans)
        parts.append("\n")
        position += 1

    add_line(headers, "bold" if ansi else "", {})
    if boxed:
        rule = RULE * (sum(widths) + len(gap) * (len(widths) - 1))
        parts.append(rule + "\n")
        position += len(rule) + 1
    for row, texts in zip(rows, cells):
        add_line(texts, row.style, row.cell_styles)
    return Text("".join(parts), spans=spans, no_wrap=True, end="")
