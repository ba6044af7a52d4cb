"""What every reporter shows of one instance, computed once: the table and JSON agree.

Pure standard library and the core's pure modules (no rich): computing uptime, time
left and the next stop is the same work whichever way it is rendered, and a third-party
reporter may import :func:`facts_of` to stay consistent with the built-in ones.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from decimal import Decimal
from typing import Any, Mapping, TextIO

from soong_core.models import (
    LIMIT_OF_REASON,
    Action,
    InstanceState,
    InstanceStatus,
    Reason,
    Timestamp,
)
from soong_core.reconcile import HISTORY_DETAILS, cost_min
from soong_core.select import short_ids

__all__ = ["EMPTY_MESSAGE", "Ended", "Facts", "facts_of", "short_ids", "wants_ansi"]

EMPTY_MESSAGE = "no instances; start one with `soong start`"


@dataclass(frozen=True)
class Ended:
    """Why and when an instance ended, as history recorded it."""

    reason: str | None
    inferred: bool
    at: Timestamp | None
    cost_min: Decimal | None = None
    """The lower bound of its cost when soong did not see it end (the status's
    ``cost_so_far`` is then the upper bound); ``None`` when the cost is exact."""


@dataclass(frozen=True)
class Facts:
    """One instance as a reporter shows it, at ``now``.

    ``None`` means unknown (an instance without soong tags has no known launch time,
    hence no uptime, deadlines or cost).
    """

    status: InstanceStatus
    now: Timestamp
    managed: bool
    launched_at: Timestamp | None
    uptime_s: float | None
    lease_deadline: Timestamp | None
    hard_deadline: Timestamp | None
    time_left_s: float | None
    """Until the lease deadline; negative once it has passed."""
    next_stop_at: Timestamp | None
    next_stop_in_s: float | None
    overdue: bool
    """Still billing although a limit has passed (the agent died, or termination is
    being retried): the row users must notice."""
    ended: Ended | None
    enforced_by: tuple[str, ...] | None = None
    """What enforces the limits behind the next stop's reasons on the instance (plugin
    names; empty: nothing does); ``None`` when not known (no launch of it in history,
    or no next stop)."""

    @property
    def billing(self) -> bool:
        return self.status.instance.state.billing


def facts_of(status: InstanceStatus, now: Timestamp) -> Facts:
    """Compute :class:`Facts` for ``status`` at ``now`` (its own ``as_of`` when it has one)."""
    if status.as_of is not None:
        now = status.as_of
    instance = status.instance
    decision = status.decision
    ended = _ended(status)
    launched = instance.launched_at
    end = ended.at if ended is not None and ended.at is not None else now
    uptime = max(0.0, end - launched) if launched is not None else None
    lease = _lease_deadline(status)
    billing = instance.state.billing
    time_left = lease - now if lease is not None and billing else None
    stop_at = decision.deadline if decision is not None and billing else None
    if stop_at is None and decision is not None and billing and decision.action is Action.TERMINATE:
        stop_at = now  # a policy wants it stopped now, with no deadline of its own
    stop_in = stop_at - now if stop_at is not None else None
    overdue = billing and decision is not None and decision.action is Action.TERMINATE
    return Facts(status=status, now=now, managed=instance.managed, launched_at=launched,
                 uptime_s=uptime, lease_deadline=lease, hard_deadline=instance.hard_deadline,
                 time_left_s=time_left, next_stop_at=stop_at, next_stop_in_s=stop_in,
                 overdue=overdue, ended=ended, enforced_by=_enforced_by(status, billing))


def _enforced_by(status: InstanceStatus, billing: bool) -> tuple[str, ...] | None:
    """The plugins enforcing the limits behind the decision's reasons (DESIGN, "Who
    enforces what is declared"). A reason with no known limit behind it (a third
    party's own policy) is enforced by nothing that declared it."""
    decision = status.decision
    if status.enforcement is None or decision is None or not billing or not decision.reasons:
        return None
    names: list[str] = []
    for reason in decision.reasons:
        limit = LIMIT_OF_REASON.get(reason)
        for name in status.enforcement.get(limit, ()) if limit else ():
            if name not in names:
                names.append(name)
    return tuple(names)


def _lease_deadline(status: InstanceStatus) -> Timestamp | None:
    """The current lease deadline, extensions included.

    The tags hold only the deadline set at launch; extensions live in history and the
    agent. ``Soong.status()`` passes the view the policies judged; without it (a status
    built by hand), the lease policy's decision carries it:
    when ``lease_expired`` is among the decision's reasons its deadline *is* the lease
    deadline (the lease never passes the hard deadline, so it cannot hide behind it).
    Otherwise (another limit comes first) the launch tag is the best known.
    """
    if status.view is not None:
        return status.view.lease_deadline
    decision = status.decision
    if decision is not None and decision.deadline is not None \
            and Reason.LEASE_EXPIRED.value in decision.reasons:
        return decision.deadline
    return status.instance.initial_lease_deadline


def _ended(status: InstanceStatus) -> Ended | None:
    raw = status.details.get(HISTORY_DETAILS)
    if isinstance(raw, Mapping):
        at = raw.get("ended_at")
        return Ended(reason=raw.get("reason") if isinstance(raw.get("reason"), str) else None,
                     inferred=bool(raw.get("inferred")),
                     at=float(at) if isinstance(at, (int, float)) and not isinstance(at, bool)
                     else None, cost_min=cost_min(raw))
    state = status.instance.state
    if state.ended:
        return Ended(reason=Reason.PREEMPTED.value if state is InstanceState.PREEMPTED else None,
                     inferred=False, at=None)
    return None


def wants_ansi(out: TextIO, environ: Mapping[str, str] | None = None) -> bool:
    """Whether to style output written to ``out``.

    A stream with a boolean ``ansi`` attribute decides (the CLI passes cleo's decision,
    which already weighs ``--ansi``, ``--no-ansi`` and ``NO_COLOR``); otherwise styles
    go only to a terminal, and never when ``NO_COLOR`` is set to a non-empty value
    (https://no-color.org).
    """
    explicit = getattr(out, "ansi", None)
    if isinstance(explicit, bool):
        return explicit
    env: Mapping[str, Any] = os.environ if environ is None else environ
    if env.get("NO_COLOR"):
        return False
    isatty = getattr(out, "isatty", None)
    try:
        return bool(isatty()) if callable(isatty) else False
    except (OSError, ValueError):  # a closed or detached stream
        return False
