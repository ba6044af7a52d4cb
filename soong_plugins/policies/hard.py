"""The hard timeout: launch time + ``hard_timeout_hours``, fixed at launch (``hard_timeout``).

Nothing moves it: not activity, not extensions (DESIGN, "The hard deadline is fixed at
launch"). It is a separate policy from the lease, rather than a clamp inside it, so
that the hard limit still holds when a bug or a hand-edited state file puts the lease
deadline past it.
"""

from __future__ import annotations

from typing import Any, Mapping

from soong_core.interfaces import CostPolicy
from soong_core.models import Decision, InstanceView, Reason, Timestamp
from soong_core.policy import deadline_decision


class HardTimeoutPolicy(CostPolicy):
    name = "hard_timeout"
    reason = Reason.HARD_TIMEOUT.value

    @classmethod
    def from_config(cls, config: Mapping[str, Any]) -> HardTimeoutPolicy:
        """The hard deadline is in the view (from the launch tag), not in config."""
        return cls()

    def evaluate(self, view: InstanceView, now: Timestamp) -> Decision:
        return deadline_decision(self.reason, view.hard_deadline, now, view.warn_before_s)
