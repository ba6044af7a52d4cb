"""Reconcile history with the provider: what soong launched, what still bills, what ended.

History is the only record of why an instance stopped and what it cost; the provider
forgets terminated instances. Whatever happened while no soong process watched (a
launch whose answer was lost, an instance ended in the web console, a preemption) is
brought into history here, every time the core lists the provider's instances:
``Soong.instances()``, ``status()``, ``plan_launch()``, ``extend()`` and ``stop()`` all
go through :func:`reconcile`, so each of them (and the budget) sees the same records.

The rules, given the provider's current list and ``now``:

* **Open launch intents** (DESIGN, "Launch intent first"): an intent whose instance
  the provider lists (found by its ``soong:launch-id`` tag) is *adopted*: the
  ``launch`` event is recorded, dated at the intent. One older than the grace period
  with no such instance is recorded ``launch_failed``. Younger ones stay open, and
  the budget counts them as running.
* **Sightings**: every listed soong instance in a billing state is noted as seen
  billing now (:meth:`~soong_core.history.History.note_billing`).
* **Endings**: a launched instance with no recorded termination that the provider
  lists as ``terminated`` or ``preempted``, or no longer lists (once the grace period
  after its launch is over), ended unseen. It ended somewhere between when it was last
  seen billing and now; its termination event says so:

  - listed ``preempted``: reason ``preempted``, the provider's word, not inferred;
  - otherwise, a deadline that something on the instance *enforces* (the launch's
    ``enforced`` detail, DESIGN "Who enforces what is declared") and that fell inside
    that window: ``hard_timeout`` or ``lease_expired``, inferred, ended at that
    deadline. A deadline nothing enforces, or one the instance was seen billing past,
    explains nothing;
  - otherwise ``external`` (inferred): stopped outside soong.

  ``cost`` is the upper bound (launch to the latest possible end), so the budget's
  committed spend never under-counts; ``detail["cost_min"]`` is the lower bound (launch
  to when it was last seen billing) when the two differ.

Instances the provider lists as ``terminating`` are left for a later call, and an
unreachable provider records nothing: no answer is not evidence that anything ended.
Every record is written with a check in the same transaction, so two processes that
reconcile at once record each fact once.

:func:`ended_statuses` and :func:`with_history` read ended instances back as statuses.

What it reads grows with what is open, not with history: the launches and intents
still open come from a table history keeps on every write
(:meth:`~soong_core.history.History.open_launches`), and reads about many instances are
batched (:meth:`~soong_core.history.History.latest_events`), one query for all.
"""

from __future__ import annotations

from dataclasses import replace
from decimal import ROUND_HALF_UP, Decimal, InvalidOperation
from typing import TYPE_CHECKING, Any, Iterable, Mapping, Sequence

from soong_core import costs
from soong_core.models import (
    HOUR,
    LIMIT_HARD,
    LIMIT_LEASE,
    LIMITS,
    TAG_HARD_DEADLINE,
    TAG_LAUNCH_ID,
    TAG_LAUNCHED_AT,
    TAG_LEASE_DEADLINE,
    Event,
    Ended,
    EventKind,
    Instance,
    InstanceState,
    InstanceStatus,
    Reason,
    Timestamp,
    format_timestamp,
)
from soong_core.numbers import finite_number

if TYPE_CHECKING:
    from soong_core.api import Soong


LIST_GRACE_S = 60.0
"""How long after a launch (or a launch intent) absence from the provider's list is not
yet evidence: an API may list a new instance a moment after answering the launch, and
a launch whose answer was lost may appear a moment later."""

PRICE_DETAIL = "price_cents_per_hour"
"""The launch event's detail key for the instance's price (integer cents per hour)."""

ENFORCED_DETAIL = "enforced"
"""The launch event's detail key for what enforces each limit on the instance:
``{"lease": [plugin, ...], "idle": [...], "hard": [...]}``."""

EXTERNAL_NOTE = "stopped outside soong"
IDLE_NOTE = "stopped outside soong, or by its idle timeout"


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
    lease_deadline = finite_number(launch.detail.get("lease_deadline"))
    if launch.cost is None or lease_deadline is None:
        return None
    hours = costs.to_decimal(lease_deadline - launch.at) / HOUR
    if hours <= 0:
        return None
    try:
        cents = (launch.cost * 100 / hours).quantize(Decimal(1), rounding=ROUND_HALF_UP)
    except InvalidOperation:
        return None
    return int(cents)


def cost_min(detail: Mapping[str, Any]) -> Decimal | None:
    """The lower bound of an unseen ending's cost kept in ``detail["cost_min"]`` (decimal
    text), or ``None`` when there is none or it is not a finite amount of 0 or more."""
    text = detail.get("cost_min")
    if not isinstance(text, str):
        return None
    try:
        value = Decimal(text)
    except ArithmeticError:
        return None
    return value if value.is_finite() and value >= 0 else None


def enforcement(launch: Event | None) -> dict[str, tuple[str, ...]] | None:
    """What enforces each limit on the instance ``launch`` recorded: ``{limit: plugins}``
    for every limit (an empty tuple: nothing). ``None`` without a launch event. A
    launch recorded before soong kept this had nothing enforcing anything."""
    if launch is None:
        return None
    raw = launch.detail.get(ENFORCED_DETAIL)
    raw = raw if isinstance(raw, Mapping) else {}
    result: dict[str, tuple[str, ...]] = {}
    for limit in LIMITS:
        names = raw.get(limit)
        result[limit] = tuple(n for n in names if isinstance(n, str)) \
            if isinstance(names, list) else ()
    return result


def reconcile(soong: Soong, *, instances: Sequence[Instance] | None = None,
              grace_s: float = LIST_GRACE_S) -> list[Event]:
    """Bring ``soong``'s history up to date with the provider's list (see the module).

    :param soong: the core whose provider, history, config, clock and plugins are used.
    :param instances: the provider's current list, when the caller already has it (one
        fewer API call under a 1 request/s rate limit); by default it is listed here.
    :param grace_s: see :data:`LIST_GRACE_S`.
    :return: the events recorded by this call (each ``launch`` and ``terminate`` also
        broadcast to ``soong_lifecycle_event``), oldest first; empty when nothing changed.
    :raises SoongError: the provider could not be listed (nothing is recorded then).
    :raises HistoryError: history could not be read or written.
    """
    listed_all = list(soong.provider.list_instances() if instances is None else instances)
    listed = {i.id: i for i in listed_all}
    by_launch_id = {i.launch_id: i for i in listed_all if i.launch_id}
    history = soong.history
    now = soong.clock.now()
    recorded: list[Event] = []

    for intent in history.open_intents():
        launch_id = str(intent.detail.get("launch_id") or intent.instance_id)
        found = by_launch_id.get(launch_id)
        if found is not None:
            event = _adopted(soong, intent, found)
            if history.record_unless(event, kinds=[EventKind.LAUNCH], launch_id=launch_id):
                soong.plugins.emit(event, soong.config)
                recorded.append(event)
        elif now - intent.at >= grace_s:
            event = Event(EventKind.LAUNCH_FAILED, intent.instance_id, now,
                          provider=intent.provider, type_name=intent.type_name,
                          detail={"launch_id": launch_id, "observed_at": now,
                                  "error": "no instance carries its launch id"})
            if history.record_unless(event, kinds=[EventKind.LAUNCH, EventKind.LAUNCH_FAILED],
                                     instance_id=intent.instance_id, launch_id=launch_id):
                recorded.append(event)

    ended: set[str] = set()  # an instance launched twice is judged once
    for launch in history.open_launches():
        if launch.instance_id in ended:
            continue
        current = listed.get(launch.instance_id)
        if current is None and now - launch.at < grace_s:
            continue
        if current is not None and not current.state.ended:
            continue  # still billing, or terminating: look again next time
        event = _termination(soong, launch, current, now)
        if history.record_unless(event, kinds=[EventKind.TERMINATE]):
            soong.plugins.emit(event, soong.config)
            recorded.append(event)
        ended.add(launch.instance_id)

    history.note_billing([i.id for i in listed_all if i.managed and i.state.billing], now)
    return sorted(recorded, key=lambda e: e.at)


def _adopted(soong: Soong, intent: Event, instance: Instance) -> Event:
    """The ``launch`` event of an intent whose instance turned up in the provider's list."""
    detail = dict(intent.detail)
    detail["adopted"] = True
    if instance.price_cents_per_hour is not None:
        detail.setdefault(PRICE_DETAIL, instance.price_cents_per_hour)
    return Event(EventKind.LAUNCH, instance.id, intent.at,
                 provider=intent.provider or soong.provider.name,
                 type_name=instance.type_name or intent.type_name,
                 region=instance.region or intent.region, cost=intent.cost, detail=detail)


def _termination(soong: Soong, launch: Event, current: Instance | None, now: Timestamp) -> Event:
    """The terminate event for ``launch``'s instance, which the provider shows ended."""
    defaults = soong.config["defaults"]
    launched = launch.at
    hard = finite_number(launch.detail.get("hard_deadline"))
    if hard is None:
        hard = launched + float(defaults["hard_timeout_hours"]) * HOUR
    lease = soong.history.current_lease_deadline(launch.instance_id)
    if lease is None:
        lease = finite_number(launch.detail.get("lease_deadline"))
    if lease is None:
        lease = launched + float(defaults["lease_hours"]) * HOUR
    lease = min(lease, hard)  # an extension never passes the hard limit
    seen = max(launched, soong.history.last_seen_billing(launch.instance_id) or launched)
    enforced = enforcement(launch) or {}

    detail: dict[str, Any] = {
        "observed_at": now,
        "provider_state": current.state.value if current is not None else "absent",
        "lease_deadline": lease,
        "hard_deadline": hard,
        "last_seen_billing": seen,
    }
    if current is not None and current.state is InstanceState.PREEMPTED:
        reason, inferred, end = Reason.PREEMPTED.value, False, now
    else:
        # Deadlines something enforced, that fell after the last sighting: the
        # earliest explains the ending (the hard limit when both fall together).
        due = sorted((deadline, rank, why) for deadline, rank, why, limit in (
            (hard, 0, Reason.HARD_TIMEOUT.value, LIMIT_HARD),
            (lease, 1, Reason.LEASE_EXPIRED.value, LIMIT_LEASE))
            if enforced.get(limit) and seen < deadline <= now)
        if due:
            end, _, reason = due[0]
            inferred = True
        else:
            reason, inferred, end = Reason.EXTERNAL.value, True, now
            detail["note"] = IDLE_NOTE if enforced.get("idle") else EXTERNAL_NOTE

    price = current.price_cents_per_hour if current is not None else None
    if price is None:
        price = launch_price_cents(launch)
    cost = None
    if price is not None:
        cost = costs.cost_between(price, launched, end)
        low = costs.cost_between(price, launched, min(seen, end))
        if low != cost:
            detail["cost_min"] = str(low)
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
    recorded cost, and :attr:`~soong_core.models.InstanceStatus.ended`.
    Ids in ``exclude`` (those the provider still lists) are left out. Oldest end first.
    Two reads: the terminations in the window (indexed by time), then their launches.
    """
    skip = set(exclude)
    history = soong.history
    latest: dict[str, Event] = {}
    for event in history.events(since=since, kinds=[EventKind.TERMINATE]):
        if event.instance_id not in skip:
            latest[event.instance_id] = event  # oldest first: the last one wins
    launches = history.latest_events(EventKind.LAUNCH, latest)
    statuses = []
    for end in sorted(latest.values(), key=lambda e: e.at):
        launch = launches.get(end.instance_id)
        statuses.append(InstanceStatus(
            instance=_instance_from_history(launch, end), decision=None,
            cost_so_far=end.cost, estimated_total=end.cost, ended=ending(end),
            enforcement=enforcement(launch)))
    return statuses


def with_history(soong: Soong, statuses: Sequence[InstanceStatus]) -> list[InstanceStatus]:
    """``statuses`` with what history knows of those the provider lists as ended.

    A ``preempted`` or ``terminated`` instance no longer bills: its recorded cost
    replaces the cost "until now", and :attr:`~soong_core.models.InstanceStatus.ended`
    says why it ended. Statuses of billing instances come back unchanged. One read for
    all the ended ones.
    """
    ends = soong.history.latest_events(
        EventKind.TERMINATE, [s.instance.id for s in statuses if s.instance.state.ended])
    result = []
    for status in statuses:
        end = ends.get(status.instance.id) if status.instance.state.ended else None
        if end is not None:
            status = replace(status, cost_so_far=end.cost, estimated_total=end.cost,
                             ended=ending(end))
        result.append(status)
    return result


def ending(end: Event) -> Ended:
    """What a ``terminate`` event says of the end: reason, inferred, when, ``cost_min``."""
    return Ended(reason=end.reason, inferred=end.inferred, at=end.at,
                 cost_min=cost_min(end.detail))


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
            value = finite_number(launch.detail.get(key))
            if value is not None:
                tags[tag] = format_timestamp(value)
    source = launch or end
    return Instance(id=end.instance_id, state=state, provider=source.provider,
                    name=name if isinstance(name, str) else None,
                    type_name=source.type_name or end.type_name,
                    region=source.region or end.region, price_cents_per_hour=price,
                    tags=tags)


def _int(value: Any) -> int | None:
    if isinstance(value, int) and not isinstance(value, bool):
        return value
    return None
