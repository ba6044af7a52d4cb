"""The budget cap: admission control only (DESIGN, "Budget is admission control").

:meth:`BudgetPolicy.evaluate` returns ``None``: an instance already admitted is bounded
by its deadlines, so the budget never stops one and the agent never evaluates it.
:meth:`BudgetPolicy.admit` refuses a launch or an extension whose cost would take
committed spend in the period past ``budget.max_dollars``; exactly at the cap is allowed.
"""

from __future__ import annotations

from decimal import Decimal
from typing import Any, Mapping

from soong_core.budget import DEFAULT_PERIOD, budget_settings, period_phrase
from soong_core.costs import format_money, format_rate, hours_affordable
from soong_core.interfaces import CostPolicy
from soong_core.models import Admission, Decision, InstanceView, Timestamp


class BudgetPolicy(CostPolicy):
    name = "budget"

    def __init__(self, max_dollars: Decimal | None = None, period: str = DEFAULT_PERIOD) -> None:
        period_phrase(period)  # validates: an unknown period is an error here, not later
        self.max_dollars = max_dollars
        self.period = period

    @classmethod
    def from_config(cls, config: Mapping[str, Any]) -> BudgetPolicy:
        """From ``config["budget"]``: ``max_dollars`` (absent/None: no cap) and ``period``."""
        settings = budget_settings(config)
        return cls(settings.max_dollars, settings.period)

    def evaluate(self, view: InstanceView, now: Timestamp) -> Decision | None:
        return None

    def admit(self, admission: Admission) -> str | None:
        if self.max_dollars is None:
            return None
        committed = admission.committed_for(self.period)
        if committed is None:
            # The caller summed history for its configured period only (the built-in
            # policy reads the same config, so this is a third party's other period):
            # the best figure there is, and the reason check_launch prefers a callable.
            committed = admission.committed
        if committed + admission.cost <= self.max_dollars:
            return None
        what = "this extension" if admission.kind == "extend" else f"this {admission.kind}"
        phrase = period_phrase(self.period)
        message = (f"budget: {format_money(committed)} committed {phrase} + "
                   f"{format_money(admission.cost)} for {what} would pass the "
                   f"{format_money(self.max_dollars)} cap")
        return f"{message}; {self._room(committed, admission)}"

    def _room(self, committed: Decimal, admission: Admission) -> str:
        """What still fits: the money left and, with a known price, the hours it buys."""
        left = self.max_dollars - committed if self.max_dollars is not None else Decimal(0)
        if left <= 0:
            return f"nothing is left {period_phrase(self.period)}"
        price = admission.price_cents_per_hour
        if price is None or price <= 0:
            return f"{format_money(left)} is left"
        hours = hours_affordable(left, price)
        if hours <= 0:
            return f"{format_money(left)} is left, less than 0.01 hours at {format_rate(price)}"
        return f"{format_money(left)} is left: at most {_hours(hours)} at {format_rate(price)}"


def _hours(hours: Decimal) -> str:
    text = format(hours.normalize(), "f")
    return f"{text} hour" if hours == 1 else f"{text} hours"
