"""Text from outside (a provider's names, regions, error messages) made safe to print.

A provider's text reaches the user's terminal: an instance name holding
``"\\x1b[2J\\x1b]0;pwned\\x07"`` would clear the screen and set the window title, a
newline would break a table row. :func:`printable` is the one place that prevents it;
every renderer passes such text through it, then through its own markup escape, so a
name like ``[red]x[/red]`` prints literally too: :func:`rich_literal` for rich markup,
:func:`cleo_literal` for cleo's tags, :func:`printable` alone where nothing reads
markup (a ``rich.text.Text``, JSON).

Standard library only at import: rich and cleo are imported by the function that
needs them.
"""

from __future__ import annotations

import re

__all__ = ["cleo_literal", "control_character", "printable", "rich_literal"]

_OTHERS = r"\x7f-\x9f\u2028\u2029\u061c\u200e\u200f\u202a-\u202e\u2066-\u2069"
_UNSAFE = re.compile(rf"[\x00-\x1f{_OTHERS}]")
"""C0, DEL and C1 controls (Unicode category ``Cc``), the line and paragraph separators
(they break a line as a newline does) and the bidirectional controls (invisible, they
reorder what follows them on screen, so a name could display as another)."""
_UNSAFE_BUT_NEWLINE = re.compile(rf"[\x00-\x09\x0b-\x1f{_OTHERS}]")

_NAMED = {"\n": "\\n", "\r": "\\r", "\t": "\\t"}


def _visible(match: re.Match[str]) -> str:
    char = match.group()
    named = _NAMED.get(char)
    if named is not None:
        return named
    code = ord(char)
    return f"\\x{code:02x}" if code < 0x100 else f"\\u{code:04x}"


def printable(text: object, *, multiline: bool = False) -> str:
    """``text`` (``str()`` of it) with every control character shown as an escape.

    ESC becomes the four characters ``\\x1b``, a newline ``\\n``, a tab ``\\t``, C1
    controls ``\\x9b``, separators and bidirectional controls ``\\u2028``; the rest is
    kept as it is (markup too: escaping it is the renderer's job). ``multiline`` keeps
    newlines, for text that is several lines by design (a traceback, a detail).
    """
    pattern = _UNSAFE_BUT_NEWLINE if multiline else _UNSAFE
    return pattern.sub(_visible, str(text))


def control_character(text: str) -> str | None:
    """The first character of ``text`` that :func:`printable` would escape, or ``None``."""
    found = _UNSAFE.search(text)
    return found.group() if found else None


def rich_literal(text: object) -> str:
    """:func:`printable` text to put into rich markup: ``[red]`` prints as it is."""
    from rich.markup import escape

    return escape(printable(text))


def cleo_literal(text: object, *, multiline: bool = False) -> str:
    """:func:`printable` text to put into a cleo line: ``<info>`` prints as it is."""
    from cleo.formatters.formatter import Formatter

    return Formatter.escape(printable(text, multiline=multiline))
