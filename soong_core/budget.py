"""The budget: a spending cap enforced as admission control at launch and extend.

DESIGN, "Budget is admission control": once every instance stops by its lease deadline,
the spend it can still cause is bounded the moment it is launched or extended, and a
budget never needs to kill anything at runtime; it refuses a launch or an extension
whose cost, added to what is already *committed* in the budget period, would pass the
cap. Nothing on an instance evaluates it. Until something enforces the lease, an instance
can run past it: committed spend then counts it up to now, and refuses what comes next.

Committed spend in a period =
  the cost of soong instances that ended in the period (from history), plus
  for each running soong instance, its cost from ``max(launched_at, period start)`` to
  its current lease deadline (or to now, if it is already running past it).

Counting from the period start, not from the launch, keeps an instance launched last
month from being charged twice to this month. Periods are calendar periods in UTC: a
``day`` starts at 00:00 UTC, a ``week`` on Monday 00:00 UTC (ISO weeks), a ``month`` on
the 1st at 00:00 UTC; ``none`` means all recorded history (``period_start`` is ``None``).

Pure functions, provider-agnostic, standard library and the core's pure modules only.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from decimal import Decimal, InvalidOperation
from typing import Any, Callable, Iterable, Mapping, Union

from soong_core.costs import cost_between, estimate, format_money, to_decimal
from soong_core.errors import ConfigError, PluginError, SoongError
from soong_core.models import Admission, Timestamp
from soong_core.periods import BUDGET_PERIODS, DEFAULT_BUDGET_PERIOD
from soong_core.policy import NamedPolicies

PERIODS: tuple[str, ...] = BUDGET_PERIODS
"""The periods ``budget.period`` allows: the same tuple the config schema allows."""
DEFAULT_PERIOD: str = DEFAULT_BUDGET_PERIOD

_PHRASES = {"day": "today", "week": "this week", "month": "this month", "none": "in total"}

LAUNCH_HINT = ("lower --hours, stop another instance, or raise budget.max_dollars with "
               "`soong config set budget.max_dollars N`")
EXTEND_HINT = ("extend by fewer hours, stop another instance, or raise budget.max_dollars "
               "with `soong config set budget.max_dollars N`")


def _check_period(period: str) -> None:
    if period not in PERIODS:
        raise ValueError(f"unknown budget period {period!r} (one of {', '.join(PERIODS)})")


def period_start(period: str, now: Timestamp) -> Timestamp | None:
    """When the budget period containing ``now`` began, in UTC; ``None`` for ``none``.

    UTC rather than local time so that the laptop, the watchdog host and the history
    agree on which spend belongs to which period wherever they run.
    """
    _check_period(period)
    if period == "none":
        return None
    day = datetime.fromtimestamp(now, tz=timezone.utc).replace(
        hour=0, minute=0, second=0, microsecond=0)
    if period == "week":
        day -= timedelta(days=day.weekday())
    elif period == "month":
        day = day.replace(day=1)
    return day.timestamp()


def period_phrase(period: str) -> str:
    """``"this month"``, ``"today"``...: how a message names the period."""
    _check_period(period)
    return _PHRASES[period]


@dataclass(frozen=True)
class RunningCost:
    """A running soong instance, as much of it as committed spend needs."""

    price_cents_per_hour: int
    launched_at: Timestamp
    lease_deadline: Timestamp
    instance_id: str | None = None

    def committed(self, now: Timestamp, since: Timestamp | None = None) -> Decimal:
        """Its cost from ``max(launched_at, since)`` to ``max(lease_deadline, now)``.

        Past its deadline an instance still bills until it actually stops, so an overrun
        counts up to ``now``: committed spend stays an upper bound.
        """
        start = self.launched_at if since is None else max(self.launched_at, since)
        return cost_between(self.price_cents_per_hour, start, max(self.lease_deadline, now))


EndedCosts = Callable[[Union[Timestamp, None]], Decimal]
"""What history knows of ended instances: ``ended_cost_since(start)`` returns the cost
of soong instances that ended at or after ``start`` (``None``: all history), so every
period can be computed, for policies that cap another period than the configured one.
History may count an instance that straddles ``start`` whole (an over-estimate, which
errs on the safe side) or from ``start`` on (``costs.cost_between``), matching how
running instances are counted."""


def committed_spend(ended_costs: Decimal, running: Iterable[RunningCost], *,
                    now: Timestamp, since: Timestamp | None = None) -> Decimal:
    """Spend committed in the period that began at ``since`` (``None``: all time).

    :param ended_costs: the cost of instances that ended in the period (from history).
    :param running: running soong instances; each counts from ``max(launched_at, since)``
        to ``max(lease_deadline, now)``.
    """
    total = Decimal(ended_costs)
    for item in running:
        total += item.committed(now, since)
    return total


@dataclass(frozen=True)
class BudgetSettings:
    """The ``budget`` config section: ``max_dollars`` (``None``: no cap) and ``period``."""

    max_dollars: Decimal | None = None
    period: str = DEFAULT_PERIOD


def budget_settings(config: Mapping[str, Any] | None) -> BudgetSettings:
    """The ``budget`` section of ``config`` as settings.

    A :class:`~soong_core.config.Config` has been validated, so its values are read as
    they are. Any other mapping (an embedding program's, the agent's, a test's) is
    checked here, with a missing section or keys meaning no cap: a cap that is not a
    number of 0 or more, an unknown period or an unknown key is a
    :class:`~soong_core.errors.ConfigError`, since a typo must not silently disable the
    budget. (The config package is not imported for this: the agent's bundle reads
    budgets without yaml or cerberus.)
    """
    if _is_validated(config):
        assert config is not None
        cap = config["budget"]["max_dollars"]
        return BudgetSettings(None if cap is None else to_decimal(cap), config["budget"]["period"])
    section = (config or {}).get("budget") or {}
    if not isinstance(section, Mapping):
        raise ConfigError(f"config section 'budget' must be a mapping, not "
                          f"{type(section).__name__}")
    unknown = sorted(set(section) - {"max_dollars", "period"})
    if unknown:
        raise ConfigError(f"unknown key budget.{unknown[0]}: the budget section has "
                          "max_dollars and period")
    period = section.get("period")
    period = DEFAULT_PERIOD if period is None else period
    if period not in PERIODS:
        raise ConfigError(f"budget.period is {period!r}: one of {', '.join(PERIODS)}",
                          hints=["set it with `soong config set budget.period month`"])
    raw = section.get("max_dollars")
    if raw is None:
        return BudgetSettings(None, period)
    try:
        if isinstance(raw, bool):
            raise InvalidOperation
        cap = Decimal(repr(raw)) if isinstance(raw, float) else Decimal(raw)
    except (InvalidOperation, TypeError, ValueError):
        raise ConfigError(f"budget.max_dollars is {raw!r}: a number of dollars, or empty "
                          "for no cap") from None
    if not cap.is_finite() or cap < 0:
        raise ConfigError(f"budget.max_dollars is {raw!r}: it must be 0 or more")
    return BudgetSettings(cap, period)


def _is_validated(config: object) -> bool:
    """Whether ``config`` is a loaded :class:`~soong_core.config.Config` (which can only
    exist once the config package is imported: importing it here would not be pure)."""
    import sys

    result = sys.modules.get("soong_core.config.result")
    return result is not None and isinstance(config, result.Config)


def commitments(ended_costs: EndedCosts, running: Iterable[RunningCost], *,
                now: Timestamp) -> dict[str, Decimal]:
    """Committed spend in every period (:data:`PERIODS`), each from its start to ``now``."""
    items = list(running)
    return {p: committed_spend(ended_costs(period_start(p, now)), items, now=now,
                               since=period_start(p, now))
            for p in PERIODS}


def admit(policies: NamedPolicies, admission: Admission, *,
          hints: Iterable[str] = ()) -> Admission:
    """Run every policy's ``admit``; raise :class:`SoongError` (exit 1) if any refuses.

    ``policies`` are ``(name, policy)`` pairs (a registry's ``create_all(config)``). A
    policy that raises refuses too, as a :class:`PluginError` naming it: when a spending
    check cannot run, spending waits (fail closed).
    """
    refusals: list[str] = []
    for name, policy in policies:
        try:
            verdict = policy.admit(admission)
        except SoongError:
            raise
        except Exception as exc:
            raise PluginError(f"cost policy {name!r} failed to check this {admission.kind}: "
                              f"{type(exc).__name__}: {' '.join(str(exc).split())}") from exc
        if verdict is None:
            continue
        if not isinstance(verdict, str):
            raise PluginError(f"cost policy {name!r}: admit returned {type(verdict).__name__}, "
                              "not a message or None")
        refusals.append(verdict)
    if refusals:
        raise SoongError("; ".join(refusals), hints=hints)
    return admission


def _build(kind: str, config: Mapping[str, Any] | None, *, now: Timestamp,
           price_cents_per_hour: int, hours: float, ended_costs: EndedCosts,
           running: Iterable[RunningCost], type_name: str | None,
           instance_id: str | None) -> Admission:
    settings = budget_settings(config)
    committed = commitments(ended_costs, running, now=now)
    return Admission(
        kind=kind,
        now=now,
        cost=estimate(price_cents_per_hour, hours),
        committed=committed[settings.period],
        period=settings.period,
        hours=float(hours),
        type_name=type_name,
        instance_id=instance_id,
        price_cents_per_hour=price_cents_per_hour,
        committed_by_period=committed,
    )


def check_launch(policies: NamedPolicies, config: Mapping[str, Any] | None, *, now: Timestamp,
                 price_cents_per_hour: int, hours: float, ended_costs: EndedCosts,
                 running: Iterable[RunningCost], type_name: str | None = None) -> Admission:
    """Admit a launch of ``hours`` (its lease) at ``price_cents_per_hour``, or raise.

    :param policies: ``(name, policy)`` pairs: ``plugins.policies().create_all(config)``.
    :param config: the configuration mapping (its ``budget`` section may be missing).
    :param ended_costs: see :data:`EndedCosts`.
    :param running: the running soong instances (:class:`RunningCost` or tuples).
    :return: the :class:`Admission`, so the launch panel can show committed spend.
    :raises SoongError: a policy refused; the message is the refusal, with a hint.
    """
    admission = _build("launch", config, now=now, price_cents_per_hour=price_cents_per_hour,
                       hours=hours, ended_costs=ended_costs, running=running,
                       type_name=type_name, instance_id=None)
    return admit(policies, admission, hints=[LAUNCH_HINT])


def check_extend(policies: NamedPolicies, config: Mapping[str, Any] | None, *, now: Timestamp,
                 instance_id: str, price_cents_per_hour: int, hours: float,
                 ended_costs: EndedCosts, running: Iterable[RunningCost],
                 type_name: str | None = None) -> Admission:
    """Admit extending ``instance_id``'s lease by ``hours``, or raise.

    ``running`` includes the instance itself with its current lease deadline; the
    request's cost is the extension alone. The hard limit is checked elsewhere (the
    extend command); this is about money.
    """
    admission = _build("extend", config, now=now, price_cents_per_hour=price_cents_per_hour,
                       hours=hours, ended_costs=ended_costs, running=running,
                       type_name=type_name, instance_id=instance_id)
    return admit(policies, admission, hints=[EXTEND_HINT])


def describe_budget(admission: Admission, max_dollars: Decimal | None) -> str:
    """``"$41.20 of $50.00 committed this month"``: a line for the launch panel."""
    committed = format_money(admission.committed)
    if max_dollars is None:
        return f"{committed} committed {period_phrase(admission.period)} (no cap)"
    return f"{committed} of {format_money(max_dollars)} committed {period_phrase(admission.period)}"
