"""The hard timeout: launch time + ``hard_timeout_hours``, fixed at launch (``hard_timeout``).

Nothing moves it: not activity, not extensions (DESIGN, "The hard deadline is fixed at
launch"). It is a separate policy from the lease, rather than a clamp inside it, so
that the hard limit still holds when a bug or a hand-edited state file puts the lease
deadline past it.
"""

from __future__ import annotations

from soong_core.models import InstanceView, Reason, Timestamp
from soong_core.policy import DeadlinePolicy


class HardTimeoutPolicy(DeadlinePolicy):
    name = "hard_timeout"
    reason = Reason.HARD_TIMEOUT.value

    def deadline(self, view: InstanceView) -> Timestamp:
        return view.hard_deadline
