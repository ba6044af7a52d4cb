"""Budget: periods, committed spend, the budget policy and admission at launch and extend."""

from __future__ import annotations

from datetime import datetime, timezone
from decimal import Decimal
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from soong_core.budget import (
    EXTEND_HINT,
    LAUNCH_HINT,
    PERIODS,
    BudgetSettings,
    RunningCost,
    budget_settings,
    check_extend,
    check_launch,
    commitments,
    committed_spend,
    describe_budget,
    period_start,
)
from soong_core.errors import EXIT_RUNTIME, ConfigError, PluginError, SoongError
from soong_core.interfaces import CostPolicy
from soong_core.models import Admission, Decision, InstanceView
from soong_core.plugins import Plugins
from soong_plugins.policies.budget import BudgetPolicy

HOUR = 3600.0



def spent(amount: Any) -> Any:
    """History that says ``amount`` ended in every period (``ended_costs``)."""
    return lambda since: Decimal(amount)

def utc(*args: int) -> float:
    return datetime(*args, tzinfo=timezone.utc).timestamp()  # type: ignore[misc]


# -- periods ------------------------------------------------------------------------------


@pytest.mark.parametrize(("period", "now", "start"), [
    ("day", utc(2024, 3, 13, 15, 30), utc(2024, 3, 13)),
    ("day", utc(2024, 3, 13), utc(2024, 3, 13)),
    ("day", utc(2024, 3, 13) - 1, utc(2024, 3, 12)),
    # 2024-03-13 is a Wednesday; ISO weeks start on Monday
    ("week", utc(2024, 3, 13, 15, 30), utc(2024, 3, 11)),
    ("week", utc(2024, 3, 11), utc(2024, 3, 11)),
    ("week", utc(2024, 3, 11) - 1, utc(2024, 3, 4)),
    ("week", utc(2025, 1, 1, 12), utc(2024, 12, 30)),
    ("month", utc(2024, 3, 13, 15, 30), utc(2024, 3, 1)),
    ("month", utc(2024, 3, 1), utc(2024, 3, 1)),
    ("month", utc(2024, 3, 1) - 1, utc(2024, 2, 1)),
    ("month", utc(2025, 1, 1) - 1, utc(2024, 12, 1)),
])
def test_period_start_in_utc(period: str, now: float, start: float) -> None:
    assert period_start(period, now) == start


def test_period_none_covers_all_history() -> None:
    assert period_start("none", utc(2024, 3, 13)) is None


def test_unknown_period() -> None:
    with pytest.raises(ValueError, match="fortnight"):
        period_start("fortnight", 0.0)


@given(st.sampled_from(["day", "week", "month"]), st.floats(0, 4e9, allow_nan=False))
def test_property_period_contains_now(period: str, now: float) -> None:
    start = period_start(period, now)
    assert start is not None and start <= now
    assert now - start < {"day": 1, "week": 7, "month": 31}[period] * 86_400
    assert period_start(period, start) == start


# -- committed spend --------------------------------------------------------------------------


def test_committed_spend_counts_running_instances_to_their_lease_deadline() -> None:
    now = utc(2024, 3, 13, 12)
    running = [RunningCost(129, now - HOUR, now + 3 * HOUR),   # 4 h
               RunningCost(75, now, now + 2 * HOUR)]          # 2 h
    assert committed_spend(Decimal("10.00"), running, now=now) == Decimal("10.00") + \
        Decimal("5.16") + Decimal("1.50")
    assert committed_spend(0, [], now=now) == 0


def test_committed_spend_counts_from_the_period_start() -> None:
    start = utc(2024, 3, 1)
    now = start + 2 * HOUR
    launched_last_month = RunningCost(100, start - 5 * HOUR, start + 4 * HOUR)
    assert committed_spend(0, [launched_last_month], now=now, since=start) == Decimal("4")
    assert committed_spend(0, [launched_last_month], now=now) == Decimal("9")


def test_committed_spend_counts_an_overrun_up_to_now() -> None:
    now = utc(2024, 3, 13, 12)
    overrun = RunningCost(100, now - 5 * HOUR, now - HOUR)
    assert committed_spend(0, [overrun], now=now) == Decimal("5")


def test_commitments_by_period_from_history() -> None:
    now = utc(2024, 3, 13, 12)
    asked: list[float | None] = []

    def ended_since(start: float | None) -> Decimal:
        asked.append(start)
        return {None: Decimal("100"), utc(2024, 3, 1): Decimal("40"),
                utc(2024, 3, 11): Decimal("7"), utc(2024, 3, 13): Decimal("2")}[start]

    running = [RunningCost(100, now - HOUR, now + HOUR)]
    result = commitments(ended_since, running, now=now)
    assert result == {"day": Decimal("4"), "week": Decimal("9"), "month": Decimal("42"),
                      "none": Decimal("102")}
    assert sorted(asked, key=lambda t: -1 if t is None else t) == [
        None, utc(2024, 3, 1), utc(2024, 3, 11), utc(2024, 3, 13)]


# -- settings -----------------------------------------------------------------------------------


@pytest.mark.parametrize(("config", "settings"), [
    ({}, BudgetSettings(None, "month")),
    ({"budget": None}, BudgetSettings(None, "month")),
    ({"budget": {"max_dollars": None, "period": "week"}}, BudgetSettings(None, "week")),
    ({"budget": {"max_dollars": 50}}, BudgetSettings(Decimal(50), "month")),
    ({"budget": {"max_dollars": 50.5, "period": "day"}}, BudgetSettings(Decimal("50.5"), "day")),
    ({"budget": {"max_dollars": "0.10", "period": "none"}}, BudgetSettings(Decimal("0.10"), "none")),
])
def test_budget_settings(config: dict[str, Any], settings: BudgetSettings) -> None:
    assert budget_settings(config) == settings


@pytest.mark.parametrize("section", [
    {"max_dollars": -1}, {"max_dollars": "lots"}, {"max_dollars": True},
    {"max_dollars": float("inf")}, {"period": "fortnight"}, "50",
])
def test_budget_settings_refuse_nonsense(section: Any) -> None:
    with pytest.raises(ConfigError):
        budget_settings({"budget": section})


# -- the budget policy ----------------------------------------------------------------------------


def launch(committed: str, cost: str, *, period: str = "month", price: int | None = 129,
           kind: str = "launch") -> Admission:
    return Admission(kind, 0.0, Decimal(cost), Decimal(committed), period,
                     price_cents_per_hour=price)


def test_budget_exactly_at_the_cap_is_allowed() -> None:
    policy = BudgetPolicy(Decimal("50.00"), "month")
    assert policy.admit(launch("39.68", "10.32")) is None


def test_budget_one_cent_over_is_refused_with_the_numbers() -> None:
    policy = BudgetPolicy(Decimal("50.00"), "month")
    message = policy.admit(launch("39.69", "10.32"))
    assert message == ("budget: $39.69 committed this month + $10.32 for this launch would pass "
                       "the $50.00 cap; $10.31 is left: at most 7.99 hours at $1.29/hr")
    extend = policy.admit(launch("41.20", "10.32", kind="extend"))
    assert extend is not None and extend.startswith(
        "budget: $41.20 committed this month + $10.32 for this extension would pass the $50.00 cap")


def test_budget_refusal_when_nothing_is_left() -> None:
    message = BudgetPolicy(Decimal("20"), "day").admit(launch("20", "0.01", period="day"))
    assert message is not None and message.endswith("; nothing is left today")
    unpriced = BudgetPolicy(Decimal("20"), "week").admit(launch("15", "6", period="week", price=None))
    assert unpriced is not None and unpriced.endswith("$5.00 is left")


def test_budget_without_cap_admits_anything_and_never_evaluates() -> None:
    policy = BudgetPolicy(None)
    assert policy.admit(launch("1000000", "1000000")) is None
    view = InstanceView("i", 0.0, 10.0, 20.0)
    assert policy.evaluate(view, 1e9) is None
    assert BudgetPolicy(Decimal(1)).evaluate(view, 1e9) is None


def test_budget_policy_uses_its_own_period() -> None:
    admission = Admission("launch", 0.0, Decimal("5"), Decimal("90"), "month",
                          committed_by_period={"month": Decimal("90"), "day": Decimal("10")})
    assert BudgetPolicy(Decimal("15"), "day").admit(admission) is None
    assert BudgetPolicy(Decimal("94.99"), "month").admit(admission) is not None


def test_budget_policy_from_config() -> None:
    policy = BudgetPolicy.from_config({"budget": {"max_dollars": 50, "period": "week"}})
    assert (policy.max_dollars, policy.period) == (Decimal(50), "week")
    assert BudgetPolicy.from_config({}).max_dollars is None
    with pytest.raises(ValueError):
        BudgetPolicy(Decimal(1), "fortnight")


# -- admission through the registry ----------------------------------------------------------------


CONFIG = {"budget": {"max_dollars": 50, "period": "month"}}
NOW = utc(2024, 3, 13, 12)


def test_check_launch_admits_up_to_the_cap(plugins: Plugins) -> None:
    admission = check_launch(plugins.policies().create_all(CONFIG), CONFIG, now=NOW, price_cents_per_hour=129,
                             hours=4, ended_costs=spent("44.84"), running=[],
                             type_name="gpu_1x_a100")
    assert admission.cost == Decimal("5.16")
    assert admission.committed == Decimal("44.84")
    assert (admission.kind, admission.period, admission.type_name) == ("launch", "month",
                                                                        "gpu_1x_a100")
    assert describe_budget(admission, Decimal(50)) == "$44.84 of $50.00 committed this month"


def test_check_launch_refuses_one_cent_over(plugins: Plugins) -> None:
    with pytest.raises(SoongError) as info:
        check_launch(plugins.policies().create_all(CONFIG), CONFIG, now=NOW, price_cents_per_hour=129, hours=4,
                     ended_costs=spent("44.85"), running=[])
    error = info.value
    assert error.exit_code == EXIT_RUNTIME
    assert error.message.startswith("budget: $44.85 committed this month + $5.16 for this launch")
    assert error.hints == (LAUNCH_HINT,)


def test_check_launch_counts_running_instances(plugins: Plugins) -> None:
    running = [RunningCost(100, NOW - HOUR, NOW + 3 * HOUR)]  # $4 committed
    check_launch(plugins.policies().create_all(CONFIG), CONFIG, now=NOW, price_cents_per_hour=100, hours=46,
                 ended_costs=lambda since: Decimal(0), running=running)
    with pytest.raises(SoongError):
        check_launch(plugins.policies().create_all(CONFIG), CONFIG, now=NOW, price_cents_per_hour=100, hours=46.01,
                     ended_costs=lambda since: Decimal(0), running=running)


def test_check_launch_without_budget_section(plugins: Plugins) -> None:
    admission = check_launch(plugins.policies().create_all({}), {}, now=NOW, price_cents_per_hour=10**6,
                             hours=1000, ended_costs=spent(10**9), running=[])
    assert admission.period == "month"


def test_check_extend_costs_the_extension_only(plugins: Plugins) -> None:
    running = [RunningCost(129, NOW - HOUR, NOW + 3 * HOUR, "i-1")]  # $5.16 committed
    admission = check_extend(plugins.policies().create_all(CONFIG), CONFIG, now=NOW, instance_id="i-1",
                             price_cents_per_hour=129, hours=2, ended_costs=spent("42.26"),
                             running=running)
    assert (admission.kind, admission.cost, admission.committed) == (
        "extend", Decimal("2.58"), Decimal("47.42"))
    with pytest.raises(SoongError) as info:
        check_extend(plugins.policies().create_all(CONFIG), CONFIG, now=NOW, instance_id="i-1",
                     price_cents_per_hour=129, hours=2, ended_costs=spent("42.27"),
                     running=running)
    assert "for this extension" in info.value.message
    assert info.value.hints == (EXTEND_HINT,)


class Refuses(CostPolicy):
    name = "refuses"

    def __init__(self, answer: Any) -> None:
        self.answer = answer

    def evaluate(self, view: InstanceView, now: float) -> Decision | None:
        return None

    def admit(self, admission: Admission) -> str | None:
        if isinstance(self.answer, Exception):
            raise self.answer
        return self.answer


def test_every_refusal_is_reported() -> None:
    policies = [("budget", BudgetPolicy(Decimal(1))),
                ("curfew", Refuses("curfew: no launches after 19:00"))]
    with pytest.raises(SoongError) as info:
        check_launch(policies, {}, now=NOW, price_cents_per_hour=129, hours=1,
                     ended_costs=spent(0), running=[])
    assert info.value.message.startswith("budget: $0.00 committed this month + $1.29 ")
    assert info.value.message.endswith("; curfew: no launches after 19:00")


@pytest.mark.parametrize("answer", [RuntimeError("db locked"), 42])
def test_a_broken_admission_check_fails_closed(answer: Any) -> None:
    with pytest.raises(PluginError, match="'curfew'"):
        check_launch([("curfew", Refuses(answer))], {}, now=NOW, price_cents_per_hour=129,
                     hours=1, ended_costs=spent(0), running=[])


def test_third_party_daily_cap_sees_daily_spend() -> None:
    """With history as a callable, a policy capping another period gets its own figure."""
    daily = BudgetPolicy(Decimal("10"), "day")
    running = [RunningCost(100, utc(2024, 3, 12, 20), NOW + HOUR)]  # since midnight: 13 h
    history = {None: Decimal(0), utc(2024, 3, 1): Decimal(0), utc(2024, 3, 11): Decimal(0),
               utc(2024, 3, 13): Decimal(0)}
    with pytest.raises(SoongError, match=r"\$13.00 committed today"):
        check_launch([("daily", daily)], CONFIG, now=NOW, price_cents_per_hour=100, hours=1,
                     ended_costs=history.__getitem__, running=running)
    admission = check_launch([("budget", BudgetPolicy(Decimal(20), "month"))], CONFIG, now=NOW,
                             price_cents_per_hour=100, hours=1,
                             ended_costs=history.__getitem__, running=running)
    assert set(admission.committed_by_period) == set(PERIODS)
    assert admission.committed_by_period["month"] == Decimal(17)
