"""Numbers typed by a user: one parser for every numeric flag and option.

``start --hours``, ``start --timeout``, ``configure``'s answers, ``status --hours`` and
the simulator's start-up options all read text the same way and refuse it with the same
kind of line: ``--port must be an integer from 0 to 65535, got '70000'``. The line
names what was expected (kind, unit, range), so the next attempt needs no manual.

Standard library only: the simulator's background process and the agent may use it.
"""

from __future__ import annotations

import math
from typing import Any, Union, overload

from soong_core.errors import UsageError

Number = Union[int, float]


def finite_number(value: Any) -> float | None:
    """``value`` as a float when it is a finite int or float (not a bool), else None:
    how a number read from JSON someone else wrote (history, an agent's answer) is
    taken, or not."""
    if isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value):
        return float(value)
    return None


def parse_number(text: str | int | float, what: str, *, unit: str | None = None,
                 minimum: float | None = None, maximum: float | None = None,
                 above: float | None = None, integer: bool = False,
                 note: str | None = None) -> Number:
    """``text`` as a finite number within bounds, or ``ValueError`` with one line.

    :param what: how the user named it (``"--hours"``); the message starts with it.
    :param unit: ``"hours"`` makes the message say "a number of hours".
    :param minimum: the least allowed value (inclusive); ``maximum`` the largest.
    :param above: an exclusive lower bound ("greater than 0").
    :param integer: only whole numbers written as integers (``"8"``, not ``"8.0"``).
    :param note: what the number means, in parentheses after the expectation.
    :returns: an ``int`` for an integer or a whole number (``"4.0"`` is ``4``, so it is
        written back to a config file as the user meant it), else a ``float``.

    NaN and infinities are refused: no limit or duration is infinite. A number (not
    text) is accepted as it is, for values that come from defaults rather than typing.
    """
    value = _read(text, integer)
    if value is None or not _within(value, minimum, maximum, above):
        expected = expectation(unit=unit, minimum=minimum, maximum=maximum, above=above,
                               integer=integer, note=note)
        raise ValueError(f"{what} must be {expected}, got {text!r}")
    return value


@overload
def number_option(text: str, flag: str, **rules: Any) -> Number: ...


@overload
def number_option(text: None, flag: str, **rules: Any) -> None: ...


@overload
def number_option(text: str | None, flag: str, **rules: Any) -> Number | None: ...


def number_option(text: str | None, flag: str, **rules: Any) -> Number | None:
    """:func:`parse_number` for a command-line option: ``None`` when it was not given,
    a :class:`~soong_core.errors.UsageError` (exit 2) when it is not a number the
    rules allow. ``rules`` are :func:`parse_number`'s keywords."""
    if text is None:
        return None
    try:
        return parse_number(text, flag, **rules)
    except ValueError as exc:
        raise UsageError(str(exc)) from None


def expectation(*, unit: str | None = None, minimum: float | None = None,
                maximum: float | None = None, above: float | None = None,
                integer: bool = False, note: str | None = None) -> str:
    """What :func:`parse_number` asks for, in words: ``"a number of hours greater than 0"``,
    ``"an integer from 0 to 65535"``, ``"a number of seconds >= 0"``."""
    if unit:
        text = f"a whole number of {unit}" if integer else f"a number of {unit}"
    else:
        text = "an integer" if integer else "a number"
    if above is not None:
        text += f" greater than {above:g}"
        if maximum is not None:
            text += f" and at most {maximum:g}"
    elif minimum is not None and maximum is not None:
        text += f" from {minimum:g} to {maximum:g}"
    elif minimum is not None:
        text += f" >= {minimum:g}"
    elif maximum is not None:
        text += f" <= {maximum:g}"
    if note:
        text += f" ({note})"
    return text


def _read(text: str | int | float, integer: bool) -> Number | None:
    if isinstance(text, bool):
        return None
    if isinstance(text, int):
        return text
    if isinstance(text, float):
        value = text
    else:
        raw = text.strip()
        try:
            return int(raw)
        except ValueError:
            if integer:
                return None
        try:
            value = float(raw)
        except ValueError:
            return None
    if not math.isfinite(value):
        return None
    if value.is_integer():
        return int(value)
    return None if integer else value


def _within(value: Number, minimum: float | None, maximum: float | None,
            above: float | None) -> bool:
    if minimum is not None and value < minimum:
        return False
    if maximum is not None and value > maximum:
        return False
    return above is None or value > above

