"""Costs: Decimal estimates from integer cents, cost so far, totals, and printing money."""

from __future__ import annotations

from decimal import Decimal

import pytest
from hypothesis import given
from hypothesis import strategies as st

from soong_core.clock import ManualClock
from soong_core.costs import (
    accrued,
    cost_between,
    estimate,
    estimate_total,
    format_money,
    format_rate,
    hours_affordable,
    round_cents,
)
from soong_core.models import HOUR


@pytest.mark.parametrize(("cents", "hours", "dollars"), [
    (129, 4, "5.16"), (129, 8, "10.32"), (129, 0.1, "0.129"), (75, Decimal("1.5"), "1.125"),
    (249, 0, "0"), (0, 10, "0"),
])
def test_estimate_is_exact(cents: int, hours: float | Decimal, dollars: str) -> None:
    result = estimate(cents, hours)
    assert isinstance(result, Decimal)
    assert result == Decimal(dollars)


@pytest.mark.parametrize("hours", [-1, -0.01, float("nan"), float("inf")])
def test_estimate_refuses_impossible_hours(hours: float) -> None:
    with pytest.raises(ValueError):
        estimate(129, hours)


def test_cost_between_is_never_negative(clock: ManualClock) -> None:
    start = clock.now()
    assert cost_between(129, start, start + HOUR) == Decimal("1.29")
    assert cost_between(129, start, start + 1) == Decimal(129) / 360_000
    assert cost_between(129, start, start) == 0
    assert cost_between(129, start, start - 30) == 0


def test_accrued_and_total(clock: ManualClock) -> None:
    launched = clock.now()
    clock.advance(90 * 60)
    assert accrued(129, launched, clock.now()) == Decimal("1.935")
    assert accrued(None, launched, clock.now()) is None
    assert accrued(129, None, clock.now()) is None
    deadline = launched + 4 * HOUR
    assert estimate_total(129, launched, deadline) == Decimal("5.16")
    assert estimate_total(129, launched, deadline, now=clock.now()) == Decimal("5.16")
    # running past its deadline: billed until it actually stops
    assert estimate_total(129, launched, deadline, now=deadline + HOUR) == Decimal("6.45")
    assert estimate_total(129, launched, None) is None
    assert estimate_total(None, launched, deadline) is None


@pytest.mark.parametrize(("amount", "text"), [
    (Decimal("5.16"), "$5.16"), (Decimal("5.155"), "$5.16"), (Decimal("5.165"), "$5.17"),
    (Decimal("0.125"), "$0.13"), (Decimal("5.1649"), "$5.16"), (Decimal("0.004"), "$0.00"),
    (Decimal("-0.004"), "$0.00"), (Decimal("-3"), "-$3.00"), (Decimal("-0.005"), "-$0.01"),
    (0, "$0.00"), (50, "$50.00"), (Decimal("1234.5"), "$1,234.50"), (None, "?"),
    (Decimal("NaN"), "?"),
])
def test_format_money_rounds_half_up(amount: Decimal | int | None, text: str) -> None:
    assert format_money(amount) == text


def test_format_money_refuses_floats() -> None:
    with pytest.raises(TypeError):
        format_money(5.16)  # type: ignore[arg-type]


@pytest.mark.parametrize(("cents", "text"), [(129, "$1.29/hr"), (5, "$0.05/hr"),
                                             (2490, "$24.90/hr"), (None, "?")])
def test_format_rate(cents: int | None, text: str) -> None:
    assert format_rate(cents) == text


def test_hours_affordable_rounds_down() -> None:
    assert hours_affordable(Decimal("8.80"), 129) == Decimal("6.82")
    assert hours_affordable(Decimal("1.29"), 129) == Decimal("1.00")
    assert hours_affordable(Decimal(0), 129) == 0
    assert hours_affordable(Decimal("-1"), 129) == 0
    with pytest.raises(ValueError):
        hours_affordable(Decimal(5), 0)


money = st.decimals(min_value=-10**9, max_value=10**9, allow_nan=False, allow_infinity=False,
                    places=6)


@given(money)
def test_property_format_money_round_trips(amount: Decimal) -> None:
    text = format_money(amount)
    sign = -1 if text.startswith("-") else 1
    assert sign * Decimal(text.lstrip("-").removeprefix("$").replace(",", "")) == \
        round_cents(amount)


@given(st.integers(0, 100_000), st.floats(0, 2e9, allow_nan=False),
       st.floats(0, 2e9, allow_nan=False))
def test_property_costs_never_negative(cents: int, start: float, end: float) -> None:
    cost = cost_between(cents, start, end)
    assert cost >= 0
    assert (cost > 0) == (end > start and cents > 0)


@given(st.decimals(min_value=0, max_value=10**6, allow_nan=False, allow_infinity=False, places=2),
       st.integers(1, 100_000))
def test_property_affordable_hours_fit_and_are_the_most(amount: Decimal, cents: int) -> None:
    hours = hours_affordable(amount, cents)
    assert estimate(cents, hours) <= amount
    assert estimate(cents, hours + Decimal("0.01")) > amount
