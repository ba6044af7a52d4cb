"""Reconciliation: adopting lost launches, and why and for how much an unseen instance ended.

Each test launches through the embedding API on a fake cloud and a manual clock, lets
the fake cloud do something soong does not see, and reconciles.
"""

from __future__ import annotations

from decimal import Decimal
from typing import Any, Callable, Iterator

import pytest

from soong_core import Soong, hookimpl
from soong_core.clock import ManualClock
from soong_core.errors import SoongError
from soong_core.fake import DeclaringPlugin, FakeProvider
from soong_core.history import History, HistoryError
from soong_core.models import Ended, Event, EventKind, InstanceState
from soong_core.plugins import Plugins
from soong_core.reconcile import (
    LIST_GRACE_S,
    ended_statuses,
    launch_price_cents,
    reconcile,
    with_history,
)

HOUR = 3600
CONFIG = {"defaults": {"provider": "fake", "gpu": "gpu_1x_a10", "region": "us-east-1",
                       "lease_hours": 2, "hard_timeout_hours": 8}}


class Listener:
    """Records every lifecycle event broadcast to plugins."""

    def __init__(self) -> None:
        self.events: list[Event] = []

    @hookimpl
    def soong_lifecycle_event(self, event: Event, config: Any) -> None:
        self.events.append(event)


@pytest.fixture
def listener(register_plugin: Callable[..., str]) -> Listener:
    listener = Listener()
    register_plugin(listener, "listener")
    return listener


@pytest.fixture
def soong(plugins: Plugins, fake_provider: FakeProvider, clock: ManualClock) -> Iterator[Soong]:
    fake_provider.add_ssh_key("soong", "ssh-ed25519 AAAAtest soong")
    with Soong(CONFIG, plugins=plugins, clock=clock) as core:
        yield core


@pytest.fixture
def enforced(register_plugin: Callable[..., str]) -> Callable[..., None]:
    """``enforced("lease", "hard")``: launches from now on declare those limits enforced."""
    def declare(*limits: str) -> None:
        register_plugin(DeclaringPlugin(limits), "enforcer")

    return declare


def terminations(soong: Soong) -> list[Event]:
    return soong.history.events(kinds=[EventKind.TERMINATE])


# -- nothing enforces anything: every unseen ending is external ---------------------


def test_with_nothing_enforcing_the_lease_an_ending_after_it_is_external_not_lease_expired(
        soong: Soong, clock: ManualClock, fake_provider: FakeProvider, listener: Listener) -> None:
    launched = clock.now()
    instance = soong.launch(hours=2)
    clock.advance(3 * HOUR)
    fake_provider.terminate([instance.id])  # in the web console, say
    [event] = reconcile(soong)
    assert (event.kind, event.instance_id, event.reason, event.inferred) == (
        EventKind.TERMINATE, instance.id, "external", True)
    # It may have run until now: the cost is a range from the last sighting (the
    # launch) to now, and the event carries the upper bound for the budget.
    assert event.at == clock.now()
    assert event.cost == Decimal("2.25")
    assert event.detail["cost_min"] == "0"
    assert event.detail["last_seen_billing"] == launched
    assert event.detail["note"] == "stopped outside soong"
    assert (event.type_name, event.region, event.provider) == ("gpu_1x_a10", "us-east-1", "fake")
    assert event.detail["provider_state"] == "absent"
    assert terminations(soong) == [event]
    assert listener.events[-1] == event  # broadcast to plugins too


def test_terminated_through_the_api_after_19_hours_is_external_costed_from_its_last_sighting(
        soong: Soong, clock: ManualClock, fake_provider: FakeProvider,
        enforced: Callable[..., None]) -> None:
    enforced("lease", "hard")
    instance = soong.launch(hours=2)
    clock.advance(10 * HOUR)
    assert soong.status()[0].instance.state.billing  # seen billing past both deadlines
    clock.advance(9 * HOUR)
    fake_provider.terminate([instance.id])
    [event] = reconcile(soong)
    # Not "hard_timeout (inferred), $6.00, 8 h": it was seen billing at 10 h, so no
    # deadline stopped it; it ended between 10 h and 19 h.
    assert (event.reason, event.inferred, event.at) == ("external", True, clock.now())
    assert (Decimal(event.detail["cost_min"]), event.cost) == (Decimal("7.50"), Decimal("14.25"))


def test_listed_as_preempted_is_the_providers_word_whatever_the_deadlines_say(
        soong: Soong, clock: ManualClock, fake_provider: FakeProvider,
        enforced: Callable[..., None]) -> None:
    enforced("lease", "idle", "hard")
    instance = soong.launch(hours=2)
    clock.advance(HOUR)
    fake_provider.set_state(instance.id, InstanceState.PREEMPTED)
    [event] = reconcile(soong)
    assert (event.reason, event.inferred, event.cost) == ("preempted", False, Decimal("0.75"))
    assert event.detail["provider_state"] == "preempted"

    late = soong.launch(hours=2)
    clock.advance(3 * HOUR)  # past its lease, then preempted: still the provider's word
    fake_provider.set_state(late.id, InstanceState.PREEMPTED)
    [event] = reconcile(soong)
    assert (event.reason, event.inferred) == ("preempted", False)


# -- deadlines something enforces explain an ending --------------------------------


def test_an_enforced_lease_that_passed_unseen_is_lease_expired_costed_to_the_deadline(
        soong: Soong, clock: ManualClock, fake_provider: FakeProvider,
        enforced: Callable[..., None]) -> None:
    enforced("lease", "hard")
    launched = clock.now()
    instance = soong.launch(hours=2)
    clock.advance(3 * HOUR)
    fake_provider.terminate([instance.id])  # the agent did it; soong did not see
    [event] = reconcile(soong)
    assert (event.reason, event.inferred) == ("lease_expired", True)
    assert event.at == launched + 2 * HOUR  # dated when it stopped, not when noticed
    assert event.cost == Decimal("1.50")  # 2h x $0.75, not 3h
    assert event.detail["cost_min"] == "0"  # unseen since launch: it may have ended sooner


def test_only_the_hard_limit_enforced_infers_hard_timeout(
        soong: Soong, clock: ManualClock, fake_provider: FakeProvider,
        enforced: Callable[..., None]) -> None:
    enforced("hard")
    launched = clock.now()
    instance = soong.launch(hours=2)
    clock.advance(9 * HOUR)
    fake_provider.terminate([instance.id])
    [event] = reconcile(soong)
    assert (event.reason, event.inferred, event.at) == ("hard_timeout", True, launched + 8 * HOUR)
    assert event.cost == Decimal("6.00")


def test_a_deadline_seen_billing_past_explains_nothing(
        soong: Soong, clock: ManualClock, fake_provider: FakeProvider,
        enforced: Callable[..., None]) -> None:
    enforced("lease", "hard")
    instance = soong.launch(hours=2)
    clock.advance(2 * HOUR + 30 * 60)
    soong.instances()  # seen billing half an hour after its lease ended
    clock.advance(30 * 60)
    fake_provider.terminate([instance.id])
    [event] = reconcile(soong)
    assert (event.reason, event.detail["cost_min"], event.cost) == (
        "external", "1.875", Decimal("2.25"))
    assert event.detail["note"] == "stopped outside soong"


def test_before_any_deadline_it_is_external_and_an_enforced_idle_timeout_is_named(
        soong: Soong, clock: ManualClock, fake_provider: FakeProvider,
        enforced: Callable[..., None]) -> None:
    enforced("lease", "idle", "hard")
    instance = soong.launch(hours=2)
    clock.advance(HOUR)
    soong.instances()
    clock.advance(30 * 60)
    fake_provider.terminate([instance.id])
    [event] = reconcile(soong)
    assert (event.reason, event.inferred, event.at) == ("external", True, clock.now())
    assert (event.detail["cost_min"], event.cost) == ("0.75", Decimal("1.125"))
    assert event.detail["note"] == "stopped outside soong, or by its idle timeout"


def test_an_extension_in_history_moves_the_inferred_lease(
        soong: Soong, clock: ManualClock, fake_provider: FakeProvider,
        enforced: Callable[..., None]) -> None:
    enforced("lease", "hard")
    launched = clock.now()
    first, second = soong.launch(hours=2), soong.launch(hours=2)
    soong.extend(first.id, 2)
    soong.extend(second.id, 2)
    clock.advance(3 * HOUR)
    fake_provider.terminate([first.id])
    [early] = reconcile(soong)
    assert early.reason == "external"  # at 3h it still had an hour of lease
    clock.advance(2 * HOUR)
    fake_provider.terminate([second.id])
    [late] = reconcile(soong)
    assert (late.reason, late.at, late.cost) == ("lease_expired", launched + 4 * HOUR,
                                                 Decimal("3.00"))


# -- what reconciliation leaves alone -----------------------------------------------


def test_reconcile_is_idempotent_and_leaves_billing_and_stopping_instances_alone(
        soong: Soong, clock: ManualClock, fake_provider: FakeProvider, listener: Listener) -> None:
    gone, _booting, unhealthy, stopping, stopped = (soong.launch(hours=2) for _ in range(5))
    fake_provider.set_state(unhealthy.id, InstanceState.UNHEALTHY)
    fake_provider.set_state(stopping.id, InstanceState.TERMINATING)
    soong.stop([stopped.id])  # soong saw this one: "manual" is already recorded
    fake_provider.boot_seconds = 10 * HOUR
    clock.advance(HOUR)
    fake_provider.terminate([gone.id])
    assert [e.instance_id for e in reconcile(soong)] == [gone.id]
    seen = len(listener.events)
    assert reconcile(soong) == []
    assert reconcile(soong) == []
    assert len(listener.events) == seen
    assert sorted((e.instance_id, e.reason) for e in terminations(soong)) == sorted(
        [(gone.id, "external"), (stopped.id, "manual")])
    assert {i.state for i in soong.provider.list_instances()} >= {
        InstanceState.BOOTING, InstanceState.UNHEALTHY, InstanceState.TERMINATING}


def test_two_cores_reconciling_the_same_history_record_each_ending_once(
        soong: Soong, plugins: Plugins, clock: ManualClock, fake_provider: FakeProvider) -> None:
    instance = soong.launch(hours=2)
    clock.advance(3 * HOUR)
    fake_provider.terminate([instance.id])
    listed = fake_provider.list_instances()
    with Soong(CONFIG, plugins=plugins, clock=clock,
               history=History.open(soong.history.path, soong.history.namespace)) as other:
        # Both listed before either recorded: the check inside the write keeps one.
        first = reconcile(soong, instances=listed)
        second = reconcile(other, instances=listed)
    assert len(first) + len(second) == 1
    assert len(terminations(soong)) == 1


def test_a_just_launched_instance_missing_from_the_list_is_not_declared_gone(
        soong: Soong, clock: ManualClock, fake_provider: FakeProvider) -> None:
    instance = soong.launch(hours=2)
    fake_provider.terminate([instance.id])  # as if the list lagged the launch
    clock.advance(LIST_GRACE_S - 1)
    assert reconcile(soong) == []
    clock.advance(1)
    assert [e.instance_id for e in reconcile(soong)] == [instance.id]


def test_the_callers_list_saves_an_api_call(
        soong: Soong, clock: ManualClock, fake_provider: FakeProvider) -> None:
    instance = soong.launch(hours=2)
    clock.advance(HOUR)
    listed = fake_provider.list_instances()
    fake_provider.calls.clear()
    assert reconcile(soong, instances=listed) == []
    assert reconcile(soong, instances=[]) != []  # the given list is believed: it is gone
    assert ("list_instances", None) not in fake_provider.calls
    assert terminations(soong)[0].instance_id == instance.id


def test_an_unreachable_provider_records_nothing(
        soong: Soong, clock: ManualClock, fake_provider: FakeProvider,
        monkeypatch: pytest.MonkeyPatch) -> None:
    soong.launch(hours=2)
    clock.advance(3 * HOUR)

    def down() -> list[Any]:
        raise SoongError("cannot reach the fake cloud", hints=["is it up?"])

    monkeypatch.setattr(fake_provider, "list_instances", down)
    with pytest.raises(SoongError, match="cannot reach"):
        reconcile(soong)
    assert terminations(soong) == []


# -- launch intents ------------------------------------------------------------------


def failing_launch_records(monkeypatch: pytest.MonkeyPatch, history: History) -> None:
    """Make history refuse ``launch`` events (as a lock taken right after the intent)."""
    record = history.record

    def refuse(event: Event) -> None:
        if event.kind is EventKind.LAUNCH:
            raise HistoryError(f"cannot write to the history database {history.path}: "
                               "database is locked")
        record(event)

    monkeypatch.setattr(history, "record", refuse)


def test_a_launch_history_could_not_record_is_named_then_adopted_by_its_launch_id(
        soong: Soong, clock: ManualClock, fake_provider: FakeProvider, listener: Listener,
        monkeypatch: pytest.MonkeyPatch) -> None:
    launched = clock.now()
    failing_launch_records(monkeypatch, soong.history)
    with pytest.raises(HistoryError) as caught:
        soong.launch(hours=2, name="lost")
    [billing] = fake_provider.list_instances()
    assert caught.value.message.startswith(f"instance {billing.id} is launched and billing")
    assert f"soong stop {billing.id}" in caught.value.hints[0]
    [intent] = soong.history.open_intents()
    assert intent.instance_id == billing.launch_id and intent.cost == Decimal("1.50")
    monkeypatch.undo()

    clock.advance(5 * 60)
    [adopted] = soong.reconcile()
    assert (adopted.kind, adopted.instance_id, adopted.at) == (EventKind.LAUNCH, billing.id,
                                                               launched)
    assert adopted.detail["adopted"] is True and adopted.detail["name"] == "lost"
    assert soong.history.open_intents() == []
    assert listener.events[-1] == adopted
    assert soong.reconcile() == []  # once
    # from now on it is an instance like any other: its ending is recorded
    fake_provider.terminate([billing.id])
    [end] = soong.reconcile()
    assert (end.instance_id, end.reason) == (billing.id, "external")


def test_an_open_intent_counts_as_committed_until_settled(
        soong: Soong, clock: ManualClock, fake_provider: FakeProvider,
        monkeypatch: pytest.MonkeyPatch) -> None:
    soong.history.record(Event(EventKind.LAUNCH_INTENT, "lost-launch", clock.now(),
                               provider="fake", type_name="gpu_1x_a10", cost=Decimal("1.50"),
                               detail={"launch_id": "lost-launch", "price_cents_per_hour": 75,
                                       "lease_deadline": clock.now() + 2 * HOUR}))
    clock.advance(10)
    plan = soong.plan_launch(hours=1)
    assert plan.admission.committed == Decimal("1.50")  # it may be billing somewhere
    clock.advance(LIST_GRACE_S)
    [failed] = soong.reconcile()
    assert (failed.kind, failed.instance_id) == (EventKind.LAUNCH_FAILED, "lost-launch")
    assert soong.plan_launch(hours=1).admission.committed == Decimal(0)


def test_a_launch_the_provider_refused_closes_its_intent_at_once(
        soong: Soong, fake_provider: FakeProvider) -> None:
    fake_provider.capacity[("gpu_1x_a10", "us-east-1")] = 1
    plan = soong.plan_launch(hours=2)
    fake_provider.capacity[("gpu_1x_a10", "us-east-1")] = 0  # gone since the plan
    with pytest.raises(SoongError, match="no capacity") as caught:
        soong.launch(plan=plan)
    assert caught.value.nothing_launched is True
    kinds = [e.kind for e in soong.history.events()]
    assert kinds == [EventKind.LAUNCH_INTENT, EventKind.LAUNCH_FAILED]
    assert soong.history.open_intents() == []


def test_a_provider_failure_of_unknown_outcome_leaves_the_intent_open(
        soong: Soong, fake_provider: FakeProvider, monkeypatch: pytest.MonkeyPatch) -> None:
    def lost(request: Any) -> Any:
        raise SoongError("the connection dropped before the answer")

    monkeypatch.setattr(fake_provider, "launch", lost)
    with pytest.raises(SoongError, match="dropped"):
        soong.launch(hours=2)
    assert [e.kind for e in soong.history.open_intents()] == [EventKind.LAUNCH_INTENT]


# -- reading back ---------------------------------------------------------------------


def test_launch_price_comes_from_the_detail_or_from_cost_and_lease() -> None:
    at = 1_800_000_000.0
    derived = Event(EventKind.LAUNCH, "i-1", at, cost=Decimal("2.58"),
                    detail={"lease_deadline": at + 2 * HOUR})
    assert launch_price_cents(derived) == 129
    odd = Event(EventKind.LAUNCH, "i-1", at, cost=Decimal("0.129"),
                detail={"lease_deadline": at + 0.1 * HOUR})
    assert launch_price_cents(odd) == 129
    stored = Event(EventKind.LAUNCH, "i-1", at, cost=Decimal(99),
                   detail={"lease_deadline": at + HOUR, "price_cents_per_hour": 75})
    assert launch_price_cents(stored) == 75
    assert launch_price_cents(Event(EventKind.LAUNCH, "i-1", at)) is None
    assert launch_price_cents(Event(EventKind.LAUNCH, "i-1", at, cost=Decimal(1),
                                    detail={"lease_deadline": at})) is None


def test_without_a_price_the_reason_is_still_recorded_without_cost(
        soong: Soong, clock: ManualClock) -> None:
    at = clock.now()
    soong.history.record(Event(EventKind.LAUNCH, "elsewhere-1", at, provider="fake",
                               detail={"lease_deadline": at + HOUR,
                                       "enforced": {"lease": ["agent"]}}))
    clock.advance(2 * HOUR)
    [event] = reconcile(soong)
    assert (event.reason, event.cost) == ("lease_expired", None)


def test_ended_instances_come_back_from_history_as_statuses(
        soong: Soong, clock: ManualClock, fake_provider: FakeProvider,
        enforced: Callable[..., None]) -> None:
    enforced("lease", "hard")
    launched = clock.now()
    old, preempted, running = soong.launch(hours=2), soong.launch(hours=2), soong.launch(hours=2)
    clock.advance(3 * HOUR)
    fake_provider.terminate([old.id])
    fake_provider.set_state(preempted.id, InstanceState.PREEMPTED)
    reconcile(soong)
    [ended] = ended_statuses(soong, since=launched, exclude=[preempted.id])
    assert ended.instance.id == old.id and ended.instance.state is InstanceState.TERMINATED
    assert ended.instance.managed and ended.instance.launched_at == int(launched)
    assert ended.instance.price_cents_per_hour == 75
    assert ended.cost_so_far == ended.estimated_total == Decimal("1.50")
    assert ended.ended == Ended(reason="lease_expired", inferred=True,
                                at=launched + 2 * HOUR, cost_min=Decimal("0"))
    assert ended.details == {}  # plugins' details only: what history adds is typed
    assert ended.enforcement == {"lease": ("enforcer",), "idle": (), "hard": ("enforcer",)}
    assert [s.instance.id for s in ended_statuses(soong, since=launched + 2 * HOUR + 1)] == [
        preempted.id]  # the window starts after the lease ended

    listed = {s.instance.id: s for s in with_history(soong, soong.status())}
    assert listed[preempted.id].cost_so_far == Decimal("2.25")  # to when it was seen ended
    assert listed[preempted.id].ended is not None
    assert listed[preempted.id].ended.reason == "preempted"
    assert "history" not in listed[preempted.id].details
    assert listed[running.id].ended is None
    assert listed[running.id].cost_so_far == Decimal("2.25")


def test_status_carries_final_costs_of_listed_ended_instances_and_the_stopped_ones(
        soong: Soong, clock: ManualClock, fake_provider: FakeProvider) -> None:
    launched = clock.now()
    preempted, gone = soong.launch(hours=2), soong.launch(hours=2)
    clock.advance(HOUR)
    fake_provider.set_state(preempted.id, InstanceState.PREEMPTED)
    fake_provider.terminate([gone.id])
    clock.advance(5 * HOUR)  # the provider still lists the preempted one, days later
    statuses = {s.instance.id: s for s in soong.status(ended_since=launched)}
    assert statuses[preempted.id].cost_so_far == Decimal("4.50")  # its recorded cost...
    clock.advance(24 * HOUR)
    again = {s.instance.id: s for s in soong.status(ended_since=launched)}
    assert again[preempted.id].cost_so_far == Decimal("4.50")  # ...not "until now"
    assert again[gone.id].instance.state is InstanceState.TERMINATED
    assert [e.kind for e in soong.take_reconciled()] == [EventKind.TERMINATE] * 2


# -- what status costs: what is open, not history -----------------------------------------


def history_selects(soong: Soong, read: Callable[[], object]) -> list[str]:
    """The SELECT statements ``read`` sends to ``soong``'s history."""
    statements: list[str] = []
    soong.history._db.set_trace_callback(statements.append)
    try:
        read()
    finally:
        soong.history._db.set_trace_callback(None)
    return [s for s in statements if s.lstrip().upper().startswith("SELECT")]


def history_steps(soong: Soong, read: Callable[[], object]) -> int:
    """SQLite virtual-machine steps ``read`` takes in ``soong``'s history: the rows it
    visits, independent of the machine's speed."""
    steps = [0]

    def count() -> int:
        steps[0] += 1
        return 0

    soong.history._db.set_progress_handler(count, 1)
    try:
        read()
    finally:
        soong.history._db.set_progress_handler(None, 1)
    return steps[0]


def test_status_asks_history_once_per_question_not_once_per_instance(
        soong: Soong, clock: ManualClock, fake_provider: FakeProvider,
        enforced: Callable[..., None]) -> None:
    enforced("lease", "hard")
    first = soong.launch(hours=2)
    soong.extend(first.id, 1)
    gone = soong.launch(hours=2)
    fake_provider.set_state(gone.id, InstanceState.PREEMPTED)
    soong.status()  # its ending recorded: from now on nothing changes
    few = history_selects(soong, soong.status)
    for _ in range(8):
        extended = soong.launch(hours=2)
        soong.extend(extended.id, 1)
    many = history_selects(soong, soong.status)
    assert len(many) == len(few)
    statuses = {s.instance.id: s for s in soong.status()}
    assert len(statuses) == 10
    assert statuses[first.id].view is not None
    assert statuses[first.id].view.lease_deadline == first.launched_at + 3 * HOUR
    assert statuses[gone.id].ended is not None and statuses[gone.id].ended.reason == "preempted"


def seed_ended(soong: Soong, first: int, count: int, at: float) -> None:
    """``count`` instances launched, extended and ended at ``at``: a long past."""
    events = []
    for n in range(first, first + count):
        launch_id, instance = f"L-{n}", f"old-{n}"
        events += [
            Event(EventKind.LAUNCH_INTENT, launch_id, at, detail={"launch_id": launch_id}),
            Event(EventKind.LAUNCH, instance, at, detail={"launch_id": launch_id}),
            Event(EventKind.EXTEND, instance, at, detail={"lease_deadline": at + HOUR}),
            Event(EventKind.TERMINATE, instance, at + HOUR, reason="manual",
                  cost=Decimal("0.75"))]
    soong.history.record_many(events)


def test_what_status_reads_of_history_does_not_grow_with_history(
        soong: Soong, clock: ManualClock, fake_provider: FakeProvider) -> None:
    past = clock.now() - 30 * 24 * HOUR
    running = soong.launch(hours=2)
    clock.advance(HOUR)
    seed_ended(soong, 0, 20, past)
    soong.status()
    small = history_steps(soong, soong.status)
    seed_ended(soong, 20, 1500, past)
    assert history_steps(soong, soong.status) == small
    # and the budget's committed spend reads only its period's terminations
    spend = lambda: soong.history.ended_cost(since=clock.now() - 24 * HOUR)  # noqa: E731
    quiet = history_steps(soong, spend)
    seed_ended(soong, 2000, 1500, past)
    assert history_steps(soong, spend) == quiet
    assert [s.instance.id for s in soong.status()] == [running.id]
