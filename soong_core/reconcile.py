"""Reconcile history with the provider: record why instances ended without us.

An instance can end while no soong process watches: its agent stopped it (idle, lease,
hard limit), the provider preempted it, someone terminated it in the web console. The
provider then forgets it, and history would say forever that it is running, counting
its cost in the budget as if it still billed. DESIGN, "The agent never writes the
laptop's history": the CLI infers the reason of a vanished instance from its deadlines
and records it, marked ``inferred``.

:func:`reconcile` does that; ``soong status`` calls it first. The rules:

* a candidate is an instance with a ``launch`` event and no ``terminate`` event in
  this history namespace (one provider endpoint);
* one the provider still lists in a billing or ``terminating`` state is left alone
  (``terminating`` will be ``terminated`` on a later call; nothing is lost by waiting);
* one listed as ``preempted`` ends with reason ``preempted``, not inferred: the provider
  said so;
* one absent or ``terminated`` ends with an inferred reason: ``hard_timeout`` if its
  hard deadline has passed, else ``lease_expired`` if its current lease deadline (the
  latest extension in history, else the launch's) has passed, else ``idle_timeout``;
* its cost is the price times the time from launch to the end: ``min(now, that
  deadline)``, ``now`` for an idle stop (no deadline had passed), ``min(now, hard
  deadline)`` for a preemption. The agent enforces the deadlines, so the instance
  cannot have billed past them, and ending no earlier than the evidence allows keeps
  the budget's committed spend an upper bound rather than a guess.

The event is dated at that end, so ``--history`` windows and budget periods count it
when the instance stopped, not when soong noticed. Recording is idempotent: an
instance with a termination in history is never considered again.

:func:`ended_statuses` and :func:`with_history` read the same events back for
``status --stopped`` and for instances the provider still lists as ended.
"""

from __future__ import annotations

from dataclasses import replace
from decimal import ROUND_HALF_UP, Decimal, InvalidOperation
from typing import TYPE_CHECKING, Any, Iterable, Sequence

from soong_core import costs
from soong_core.models import (
    TAG_HARD_DEADLINE,
    TAG_LAUNCH_ID,
    TAG_LAUNCHED_AT,
    TAG_LEASE_DEADLINE,
    Event,
    EventKind,
    Instance,
    InstanceState,
    InstanceStatus,
    Reason,
    Timestamp,
    format_timestamp,
)

if TYPE_CHECKING:
    from soong_core.api import Soong

HOUR = 3600.0

LIST_GRACE_S = 60.0
"""An instance launched less than this long ago is not declared gone for being absent
from the provider's list: a list that lags a just-returned launch must not make soong
record a termination (and count the cost twice in the budget) for a billing instance."""

HISTORY_DETAILS = "history"
"""The key under which :func:`with_history` and :func:`ended_statuses` put what
history says about an ended instance in ``InstanceStatus.details``: ``reason``,
``inferred``, ``ended_at`` (a timestamp). No plugin may register under this name's
meaning; reporters read it to show why an instance stopped."""

PRICE_DETAIL = "price_cents_per_hour"
"""The launch event's detail key for the instance's price (integer cents per hour)."""


def launch_price_cents(launch: Event) -> int | None:
    """The price of the instance a launch event recorded, in integer cents per hour.

    Read from ``detail["price_cents_per_hour"]`` when the launch stored it; otherwise
    derived from the event's cost (the lease priced at launch) and the lease length
    (``detail["lease_deadline"] - at``): provider prices are whole cents per hour, so
    the quotient rounds back to the exact price. ``None`` when neither is there.
    """
    stored = launch.detail.get(PRICE_DETAIL)
    if isinstance(stored, int) and not isinstance(stored, bool) and stored >= 0:
        return stored
    lease_deadline = _number(launch.detail.get("lease_deadline"))
    if launch.cost is None or lease_deadline is None:
        return None
    hours = costs.to_decimal(lease_deadline - launch.at) / 3600
    if hours <= 0:
        return None
    try:
        cents = (launch.cost * 100 / hours).quantize(Decimal(1), rounding=ROUND_HALF_UP)
    except InvalidOperation:
        return None
    return int(cents)


def reconcile(soong: Soong, *, instances: Sequence[Instance] | None = None,
              grace_s: float = LIST_GRACE_S) -> list[Event]:
    """Record a termination for each launched instance that ended without soong seeing it.

    :param soong: the core whose provider, history, config, clock and plugins are used.
    :param instances: the provider's current list, when the caller already has it (one
        fewer API call under a 1 request/s rate limit); by default it is listed here.
    :param grace_s: see :data:`LIST_GRACE_S`.
    :return: the events recorded by this call (each also broadcast to
        ``soong_lifecycle_event``), oldest end first; empty when nothing changed.
    :raises SoongError: the provider could not be listed (nothing is recorded then:
        an unreachable API is not evidence that anything ended).
    """
    listed = {i.id: i for i in (soong.instances() if instances is None else instances)}
    history = soong.history
    ended = {e.instance_id for e in history.events(kinds=[EventKind.TERMINATE])}
    now = soong.clock.now()
    recorded: list[Event] = []
    for launch in history.events(kinds=[EventKind.LAUNCH]):
        if launch.instance_id in ended:
            continue
        current = listed.get(launch.instance_id)
        if current is None and now - launch.at < grace_s:
            continue
        if current is not None and not current.state.ended:
            continue  # still billing, or terminating: look again next time
        if history.has_terminated(launch.instance_id):
            continue  # another process recorded it since we listed (the watchdog)
        event = _termination(soong, launch, current, now)
        history.record(event)
        soong.plugins.emit(event, soong.config)
        ended.add(launch.instance_id)
        recorded.append(event)
    return sorted(recorded, key=lambda e: e.at)


def _termination(soong: Soong, launch: Event, current: Instance | None, now: Timestamp) -> Event:
    """The terminate event for ``launch``'s instance, which the provider shows ended."""
    defaults = soong.config["defaults"]
    launched = launch.at
    hard = _number(launch.detail.get("hard_deadline"))
    if hard is None:
        hard = launched + float(defaults["hard_timeout_hours"]) * HOUR
    lease = soong.history.current_lease_deadline(launch.instance_id)
    if lease is None:
        lease = _number(launch.detail.get("lease_deadline"))
    if lease is None:
        lease = launched + float(defaults["lease_hours"]) * HOUR
    lease = min(lease, hard)  # an extension never passes the hard limit

    if current is not None and current.state is InstanceState.PREEMPTED:
        reason, inferred, end = Reason.PREEMPTED.value, False, min(now, hard)
    elif now >= hard:
        reason, inferred, end = Reason.HARD_TIMEOUT.value, True, hard
    elif now >= lease:
        reason, inferred, end = Reason.LEASE_EXPIRED.value, True, lease
    else:
        reason, inferred, end = Reason.IDLE_TIMEOUT.value, True, now

    price = current.price_cents_per_hour if current is not None else None
    if price is None:
        price = launch_price_cents(launch)
    cost = costs.cost_between(price, launched, end) if price is not None else None
    detail: dict[str, Any] = {
        "observed_at": now,
        "provider_state": current.state.value if current is not None else "absent",
        "lease_deadline": lease,
        "hard_deadline": hard,
    }
    if price is not None:
        detail[PRICE_DETAIL] = price
    for key in ("launch_id", "name"):
        if key in launch.detail:
            detail[key] = launch.detail[key]
    return Event(EventKind.TERMINATE, launch.instance_id, max(end, launched),
                 provider=launch.provider or soong.provider.name, reason=reason,
                 inferred=inferred,
                 type_name=launch.type_name or (current.type_name if current else None),
                 region=launch.region or (current.region if current else None),
                 cost=cost, detail=detail)


# -- reading ended instances back -----------------------------------------------------


def ended_statuses(soong: Soong, *, since: Timestamp,
                   exclude: Iterable[str] = ()) -> list[InstanceStatus]:
    """Instances whose termination history dates at or after ``since``, as statuses.

    What ``status --stopped`` adds to the provider's list (which forgets terminated
    instances). Each is rebuilt from its launch and latest termination events: state
    ``preempted`` or ``terminated``, the launch facts as soong tags (so uptime and
    deadlines show as for a running one), cost so far and estimated total both the
    recorded cost, and ``details["history"]`` = ``{reason, inferred, ended_at}``.
    Ids in ``exclude`` (those the provider still lists) are left out. Oldest end first.
    """
    skip = set(exclude)
    history = soong.history
    latest: dict[str, Event] = {}
    for event in history.events(since=since, kinds=[EventKind.TERMINATE]):
        if event.instance_id not in skip:
            latest[event.instance_id] = event  # oldest first: the last one wins
    statuses = []
    for instance_id, end in latest.items():
        launch = _launch_event(history.instance_events(instance_id))
        statuses.append(InstanceStatus(
            instance=_instance_from_history(launch, end), decision=None,
            cost_so_far=end.cost, estimated_total=end.cost,
            details={HISTORY_DETAILS: _ended_detail(end)}))
    return sorted(statuses, key=lambda s: s.details[HISTORY_DETAILS]["ended_at"])


def with_history(soong: Soong, statuses: Sequence[InstanceStatus]) -> list[InstanceStatus]:
    """``statuses`` with what history knows of those the provider lists as ended.

    A ``preempted`` or ``terminated`` instance no longer bills, but ``Soong.status()``
    prices it up to now; its recorded cost replaces that, and ``details["history"]``
    says why it ended. Statuses of billing instances come back unchanged.
    """
    result = []
    for status in statuses:
        if status.instance.state.ended:
            ends = soong.history.events(instance_id=status.instance.id,
                                        kinds=[EventKind.TERMINATE])
            if ends:
                end = ends[-1]
                status = replace(status, cost_so_far=end.cost, estimated_total=end.cost,
                                 details={**status.details, HISTORY_DETAILS: _ended_detail(end)})
        result.append(status)
    return result


def _ended_detail(end: Event) -> dict[str, Any]:
    return {"reason": end.reason, "inferred": end.inferred, "ended_at": end.at}


def _launch_event(events: Sequence[Event]) -> Event | None:
    launches = [e for e in events if e.kind is EventKind.LAUNCH]
    return launches[-1] if launches else None


def _instance_from_history(launch: Event | None, end: Event) -> Instance:
    """An :class:`Instance` as the provider showed it, rebuilt from history events."""
    state = (InstanceState.PREEMPTED if end.reason == Reason.PREEMPTED.value
             else InstanceState.TERMINATED)
    price = _int(end.detail.get(PRICE_DETAIL))
    tags: dict[str, str] = {}
    name = end.detail.get("name")
    if launch is not None:
        if price is None:
            price = launch_price_cents(launch)
        name = name or launch.detail.get("name")
        tags[TAG_LAUNCH_ID] = str(launch.detail.get("launch_id") or launch.instance_id)
        tags[TAG_LAUNCHED_AT] = format_timestamp(launch.at)
        for key, tag in (("lease_deadline", TAG_LEASE_DEADLINE),
                         ("hard_deadline", TAG_HARD_DEADLINE)):
            value = _number(launch.detail.get(key))
            if value is not None:
                tags[tag] = format_timestamp(value)
    source = launch or end
    return Instance(id=end.instance_id, state=state, provider=source.provider,
                    name=name if isinstance(name, str) else None,
                    type_name=source.type_name or end.type_name,
                    region=source.region or end.region, price_cents_per_hour=price,
                    tags=tags)


def _number(value: Any) -> float | None:
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        return float(value)
    return None


def _int(value: Any) -> int | None:
    if isinstance(value, int) and not isinstance(value, bool):
        return value
    return None
