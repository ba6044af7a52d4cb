"""What instances cost: estimates, cost so far, totals to a deadline, and how to print money.

Money is :class:`~decimal.Decimal` dollars computed from the provider's integer cents
per hour; no float ever holds money, so a sum of costs is exact and a budget exactly at
its cap is not refused by a rounding error. Values are kept unrounded (a fraction of a
cent per second of uptime) and rounded to cents only for display, half up, as a person
rounds.

Standard library and the core's pure modules only: the agent carries it.
"""

from __future__ import annotations

from decimal import ROUND_DOWN, ROUND_HALF_UP, Decimal, InvalidOperation
from typing import Union

from soong_core.models import HOUR, Timestamp

CENT = Decimal("0.01")
UNKNOWN = "?"
"""Shown where an amount is not known (an instance without soong tags or price)."""

Number = Union[int, float, Decimal]


def to_decimal(value: Number | str) -> Decimal:
    """An exact Decimal from a count of hours or seconds.

    Floats go through their shortest ``repr`` (``0.1`` becomes ``Decimal("0.1")``, not
    the binary expansion), so ``estimate(129, 0.1)`` is exactly 12.9 cents.
    """
    if isinstance(value, Decimal):
        return value
    if isinstance(value, bool):
        raise TypeError("a boolean is not a number of hours")
    if isinstance(value, int):
        return Decimal(value)
    if isinstance(value, float):
        return Decimal(repr(value))
    try:
        return Decimal(value)
    except InvalidOperation:
        raise ValueError(f"not a number: {value!r}") from None


def estimate(price_cents_per_hour: int, hours: Number) -> Decimal:
    """The cost in dollars of ``hours`` at ``price_cents_per_hour`` (unrounded).

    Negative hours are a caller's mistake (a deadline in the past), not a refund.
    """
    amount = to_decimal(hours)
    if not amount.is_finite() or amount < 0:
        raise ValueError(f"hours must be a finite number >= 0, got {hours!r}")
    return Decimal(price_cents_per_hour) * amount / 100


def cost_between(price_cents_per_hour: int, start: Timestamp, end: Timestamp) -> Decimal:
    """The cost of running from ``start`` to ``end``; zero when ``end`` is not after ``start``.

    Clamped rather than refused because clocks disagree by a few seconds (a tag
    written by one machine, ``now`` read on another): cost is never negative.
    """
    seconds = to_decimal(end) - to_decimal(start)
    if seconds <= 0:
        return Decimal(0)
    return Decimal(price_cents_per_hour) * seconds / (100 * HOUR)


def accrued(price_cents_per_hour: int | None, launched_at: Timestamp | None,
            now: Timestamp) -> Decimal | None:
    """Cost so far, from launch to ``now``; ``None`` when the price or launch time is unknown."""
    if price_cents_per_hour is None or launched_at is None:
        return None
    return cost_between(price_cents_per_hour, launched_at, now)


def estimate_total(price_cents_per_hour: int | None, launched_at: Timestamp | None,
                   deadline: Timestamp | None, now: Timestamp | None = None) -> Decimal | None:
    """The instance's cost from launch to ``deadline`` (when it will be stopped).

    With ``now`` past the deadline (an overrun: the agent died, termination is being
    retried) the total runs to ``now``, since the provider bills until the instance
    actually stops. ``None`` when any input is unknown.
    """
    if price_cents_per_hour is None or launched_at is None or deadline is None:
        return None
    end = deadline if now is None else max(deadline, now)
    return cost_between(price_cents_per_hour, launched_at, end)


def round_cents(amount: Decimal) -> Decimal:
    """``amount`` rounded to whole cents, half up (``0.005`` -> ``0.01``)."""
    return amount.quantize(CENT, rounding=ROUND_HALF_UP)


def format_money(amount: Decimal | int | None) -> str:
    """``Decimal("5.155")`` -> ``"$5.16"``; ``-3`` -> ``"-$3.00"``; ``None`` -> ``"?"``.

    Thousands are separated (``"$1,234.50"``). Floats are refused: money that went
    through a float has already lost cents somewhere.
    """
    if amount is None:
        return UNKNOWN
    if isinstance(amount, (float, bool)):
        raise TypeError(f"money must be a Decimal or int, not {type(amount).__name__}")
    value = Decimal(amount)
    if not value.is_finite():
        return UNKNOWN
    cents = round_cents(value)
    sign = "-" if cents < 0 else ""
    return f"{sign}${abs(cents):,.2f}"


def format_money_range(low: Decimal | int | None, high: Decimal | int | None) -> str:
    """``"$0.50-$0.75"``: a cost known only within bounds (an ending soong did not see);
    one amount when there is no lower bound or both round to the same cent."""
    if low is None or high is None or format_money(low) == format_money(high):
        return format_money(high)
    return f"{format_money(low)}-{format_money(high)}"


def format_rate(price_cents_per_hour: int | None) -> str:
    """``129`` -> ``"$1.29/hr"``; ``None`` -> ``"?"``."""
    if price_cents_per_hour is None:
        return UNKNOWN
    return f"{format_money(Decimal(price_cents_per_hour) / 100)}/hr"


def hours_affordable(amount: Decimal, price_cents_per_hour: int, *,
                     step: Decimal = CENT) -> Decimal:
    """The most hours ``amount`` dollars pay for, rounded *down* to ``step`` hours.

    Rounded down so that the answer always fits: a refusal that suggests "at most 6.97
    hours" must accept 6.97 hours. Zero when nothing is left. A price that is not
    positive buys unbounded hours, which is no answer: that is a ``ValueError``.
    """
    if price_cents_per_hour <= 0:
        raise ValueError(f"price must be positive, got {price_cents_per_hour!r} cents/hour")
    if amount <= 0:
        return Decimal(0)
    hours = amount * 100 / Decimal(price_cents_per_hour)
    return hours.quantize(step, rounding=ROUND_DOWN)
