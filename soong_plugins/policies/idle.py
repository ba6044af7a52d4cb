"""The idle timeout: stop an instance nobody uses (reason ``idle_timeout``).

Deadline = ``max(launched_at + idle_grace_s, (last_activity_at or launched_at) +
idle_timeout_s)``: idle time counts from the last activity (or from launch when there
was none), and never ends inside the boot grace period, while the machine is still
installing and nobody could have used it yet. ``idle_timeout_s`` ``None`` (or 0)
disables the policy for that instance.

``next_check`` assumes no new activity; the agent evaluates again whenever an activity
source reports some, and the deadline moves later.
"""

from __future__ import annotations

from typing import Any, Mapping

from soong_core.interfaces import CostPolicy
from soong_core.models import Decision, InstanceView, Reason, Timestamp
from soong_core.policy import deadline_decision


def idle_deadline(view: InstanceView) -> Timestamp | None:
    """When ``view`` stops for idleness if nothing happens; ``None`` when disabled."""
    if view.idle_timeout_s is None or view.idle_timeout_s <= 0:
        return None
    last = view.launched_at if view.last_activity_at is None else view.last_activity_at
    return max(view.launched_at + max(0.0, view.idle_grace_s), last + view.idle_timeout_s)


class IdlePolicy(CostPolicy):
    name = "idle"
    reason = Reason.IDLE_TIMEOUT.value

    @classmethod
    def from_config(cls, config: Mapping[str, Any]) -> IdlePolicy:
        """Timeout and grace are per instance, in the view."""
        return cls()

    def evaluate(self, view: InstanceView, now: Timestamp) -> Decision | None:
        deadline = idle_deadline(view)
        if deadline is None:
            return None
        return deadline_decision(self.reason, deadline, now, view.warn_before_s)
