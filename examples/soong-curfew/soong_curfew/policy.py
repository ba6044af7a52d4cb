"""The curfew policy: pure standard library, so the lease agent can carry it."""

from __future__ import annotations

from datetime import datetime, timedelta, timezone

from soong_core.interfaces import CostPolicy
from soong_core.models import Action, Decision, InstanceView

REASON = "curfew"


def next_curfew(after: float, hour: int) -> float:
    """The first ``hour``:00 UTC strictly after the timestamp ``after``."""
    moment = datetime.fromtimestamp(after, tz=timezone.utc)
    curfew = moment.replace(hour=hour, minute=0, second=0, microsecond=0)
    if curfew <= moment:
        curfew += timedelta(days=1)
    return curfew.timestamp()


class CurfewPolicy(CostPolicy):
    """Stops every instance at the first curfew hour after its launch."""

    name = "curfew"

    def __init__(self, hour: int = 19) -> None:
        self.hour = hour

    def evaluate(self, view: InstanceView, now: float) -> Decision:
        deadline = next_curfew(view.launched_at, self.hour)
        warn_at = deadline - view.warn_before_s
        if now >= deadline:
            return Decision(Action.TERMINATE, (REASON,), deadline, None,
                            f"curfew at {self.hour:02d}:00 UTC")
        if now >= warn_at:
            return Decision(Action.WARN, (REASON,), deadline, deadline,
                            f"curfew at {self.hour:02d}:00 UTC")
        return Decision(Action.KEEP, (REASON,), deadline, warn_at)
