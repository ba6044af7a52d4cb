"""The lease: an instance stops at its lease deadline unless extended (reason ``lease_expired``).

Extensions move ``view.lease_deadline`` (the agent keeps it on disk, the CLI reads it
from the agent or history); this policy only compares it with the time.
"""

from __future__ import annotations

from soong_core.models import InstanceView, Reason, Timestamp
from soong_core.policy import DeadlinePolicy


class LeasePolicy(DeadlinePolicy):
    name = "lease"
    reason = Reason.LEASE_EXPIRED.value

    def deadline(self, view: InstanceView) -> Timestamp:
        return view.lease_deadline
