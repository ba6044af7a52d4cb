"""Reconciliation: why an instance that vanished without soong ended, and what it cost."""

from __future__ import annotations

from decimal import Decimal
from typing import Any, Callable, Iterator

import pytest

from soong_core import Soong, hookimpl
from soong_core.clock import ManualClock
from soong_core.errors import SoongError
from soong_core.fake import FakeProvider
from soong_core.models import Event, EventKind, InstanceState
from soong_core.plugins import Plugins
from soong_core.reconcile import (
    HISTORY_DETAILS,
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


def terminations(soong: Soong) -> list[Event]:
    return soong.history.events(kinds=[EventKind.TERMINATE])


def test_vanished_after_its_lease_is_lease_expired_inferred_costed_to_the_deadline(
        soong: Soong, clock: ManualClock, fake_provider: FakeProvider, listener: Listener) -> None:
    launched = clock.now()
    instance = soong.launch(hours=2)
    clock.advance(3 * HOUR)
    fake_provider.terminate([instance.id])  # the agent did it; soong did not see
    [event] = reconcile(soong)
    assert (event.kind, event.instance_id, event.reason, event.inferred) == (
        EventKind.TERMINATE, instance.id, "lease_expired", True)
    assert event.at == launched + 2 * HOUR  # dated when it stopped, not when noticed
    assert event.cost == Decimal("1.50")  # 2h x $0.75, not 3h
    assert (event.type_name, event.region, event.provider) == ("gpu_1x_a10", "us-east-1", "fake")
    assert event.detail["provider_state"] == "absent"
    assert event.detail["observed_at"] == clock.now()
    assert terminations(soong) == [event]
    assert listener.events[-1] == event  # broadcast to plugins too


def test_vanished_past_its_hard_deadline_is_hard_timeout(
        soong: Soong, clock: ManualClock, fake_provider: FakeProvider) -> None:
    launched = clock.now()
    instance = soong.launch(hours=2)
    clock.advance(9 * HOUR)
    fake_provider.terminate([instance.id])
    [event] = reconcile(soong)
    assert (event.reason, event.inferred, event.at) == ("hard_timeout", True, launched + 8 * HOUR)
    assert event.cost == Decimal("6.00")


def test_vanished_before_any_deadline_is_idle_timeout_costed_to_now(
        soong: Soong, clock: ManualClock, fake_provider: FakeProvider) -> None:
    instance = soong.launch(hours=2)
    clock.advance(HOUR + 30 * 60)
    fake_provider.terminate([instance.id])
    [event] = reconcile(soong)
    assert (event.reason, event.inferred, event.at) == ("idle_timeout", True, clock.now())
    assert event.cost == Decimal("1.125")  # 1.5h x $0.75, unrounded in history


def test_an_extension_in_history_moves_the_inferred_lease(
        soong: Soong, clock: ManualClock, fake_provider: FakeProvider) -> None:
    launched = clock.now()
    first, second = soong.launch(hours=2), soong.launch(hours=2)
    soong.extend(first.id, 2)
    soong.extend(second.id, 2)
    clock.advance(3 * HOUR)
    fake_provider.terminate([first.id])
    [early] = reconcile(soong)
    assert early.reason == "idle_timeout"  # at 3h it still had an hour of lease
    clock.advance(2 * HOUR)
    fake_provider.terminate([second.id])
    [late] = reconcile(soong)
    assert (late.reason, late.at, late.cost) == ("lease_expired", launched + 4 * HOUR,
                                                 Decimal("3.00"))


def test_preempted_is_the_providers_word_not_an_inference(
        soong: Soong, clock: ManualClock, fake_provider: FakeProvider) -> None:
    instance = soong.launch(hours=2)
    clock.advance(HOUR)
    fake_provider.set_state(instance.id, InstanceState.PREEMPTED)
    [event] = reconcile(soong)
    assert (event.reason, event.inferred, event.cost) == ("preempted", False, Decimal("0.75"))
    assert event.detail["provider_state"] == "preempted"


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
        [(gone.id, "idle_timeout"), (stopped.id, "manual")])
    assert {i.state for i in soong.instances()} >= {InstanceState.BOOTING,
                                                    InstanceState.UNHEALTHY,
                                                    InstanceState.TERMINATING}


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
    listed = soong.instances()
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
                               detail={"lease_deadline": at + HOUR}))
    clock.advance(2 * HOUR)
    [event] = reconcile(soong)
    assert (event.reason, event.cost) == ("lease_expired", None)


def test_ended_instances_come_back_from_history_as_statuses(
        soong: Soong, clock: ManualClock, fake_provider: FakeProvider) -> None:
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
    assert ended.details[HISTORY_DETAILS] == {"reason": "lease_expired", "inferred": True,
                                              "ended_at": launched + 2 * HOUR}
    assert [s.instance.id for s in ended_statuses(soong, since=launched + 2 * HOUR + 1)] == [
        preempted.id]  # the window starts after the lease ended

    listed = {s.instance.id: s for s in with_history(soong, soong.status())}
    assert listed[preempted.id].cost_so_far == Decimal("2.25")  # to when it was seen ended
    assert listed[preempted.id].details[HISTORY_DETAILS]["reason"] == "preempted"
    assert HISTORY_DETAILS not in listed[running.id].details
    assert listed[running.id].cost_so_far == Decimal("2.25")
