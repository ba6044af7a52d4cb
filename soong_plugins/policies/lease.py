"""The lease: an instance stops at its lease deadline unless extended (reason ``lease_expired``).

Extensions move ``view.lease_deadline`` (the agent keeps it on disk, the CLI reads it
from the agent or history); this policy only compares it with the time.
"""

from __future__ import annotations

from typing import Any, Mapping

from soong_core.interfaces import CostPolicy
from soong_core.models import Decision, InstanceView, Reason, Timestamp
from soong_core.policy import deadline_decision


class LeasePolicy(CostPolicy):
    name = "lease"
    reason = Reason.LEASE_EXPIRED.value

    @classmethod
    def from_config(cls, config: Mapping[str, Any]) -> LeasePolicy:
        """The lease length lives in the view (fixed per instance), not in config."""
        return cls()

    def evaluate(self, view: InstanceView, now: Timestamp) -> Decision:
        return deadline_decision(self.reason, view.lease_deadline, now, view.warn_before_s)
