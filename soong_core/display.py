"""What every reporter shows, computed and worded once: durations, per-instance facts,
whether to style.

The built-in table and JSON reporters, the commands' own lines (``stop``, ``status
--history``, ``sim status``) and the policy engine's "stops in 1h45m" all word a
duration with :func:`format_duration`; :func:`facts_of` computes uptime, time left and
the next stop of one instance, so the table and the JSON agree and a third-party
reporter can stay consistent with both. Money is :mod:`soong_core.costs`'s
(``format_money``, ``format_rate``).

Standard library and the core's pure modules only (no rich): the agent carries this
module with the policy engine.
"""

from __future__ import annotations

import math
import os
from dataclasses import dataclass
from typing import Any, Mapping, TextIO

from soong_core.models import (
    HOUR,
    LIMIT_OF_REASON,
    Action,
    Ended,
    InstanceState,
    InstanceStatus,
    Reason,
    Timestamp,
)

__all__ = ["EMPTY_MESSAGE", "Ended", "Facts", "facts_of", "format_duration", "wants_ansi"]

EMPTY_MESSAGE = "no instances; start one with `soong start`"

MINUTE = 60
DAY = 24 * HOUR


# -- durations ---------------------------------------------------------------------


def format_duration(seconds: float) -> str:
    """A short human duration: ``"2d3h"``, ``"1h45m"``, ``"2h"``, ``"3m"``, ``"45s"``.

    Truncates toward zero (a countdown never claims more time than is left) and keeps
    the two largest units at most, since "stops in 1h45m" is what a user reads; below a
    minute it shows seconds. Negative durations get a leading ``-``.
    """
    if math.isnan(seconds) or math.isinf(seconds):
        raise ValueError(f"cannot format a duration of {seconds!r} seconds")
    total = int(abs(seconds))
    sign = "-" if seconds < 0 and total > 0 else ""
    days, rest = divmod(total, DAY)
    hours, rest = divmod(rest, HOUR)
    minutes, secs = divmod(rest, MINUTE)
    if days:
        text = f"{days}d{hours}h" if hours else f"{days}d"
    elif hours:
        text = f"{hours}h{minutes}m" if minutes else f"{hours}h"
    elif minutes:
        text = f"{minutes}m"
    else:
        text = f"{secs}s"
    return sign + text


# -- one instance's facts ------------------------------------------------------------


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
    idle_s: float | None = None
    """How long the instance has gone unused, as it reported (its agent); ``None`` when
    not known (nothing on it answered, or it is not billing)."""

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
    reported = status.reported
    idle = None
    if reported is not None and reported.idle_known and billing and launched is not None:
        last = reported.last_activity_at if reported.last_activity_at is not None else launched
        idle = max(0.0, now - last)
    return Facts(status=status, now=now, managed=instance.managed, launched_at=launched,
                 uptime_s=uptime, lease_deadline=lease, hard_deadline=instance.hard_deadline,
                 time_left_s=time_left, next_stop_at=stop_at, next_stop_in_s=stop_in,
                 overdue=overdue, ended=ended, enforced_by=_enforced_by(status, billing),
                 idle_s=idle)


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
    if status.ended is not None:
        return status.ended  # what history recorded
    state = status.instance.state
    if state.ended:
        return Ended(reason=Reason.PREEMPTED.value if state is InstanceState.PREEMPTED else None,
                     inferred=False, at=None)
    return None


# -- styling ---------------------------------------------------------------------------


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
