"""The embedding API, driven from plain Python with the fake provider: no CLI."""

from __future__ import annotations

import email
from decimal import Decimal
from typing import Any

import pytest

from soong_core import Soong
from soong_core.clock import ManualClock
from soong_core.errors import SoongError, UsageError
from soong_core.fake import FakeProvider
from soong_core.models import Action, EventKind, InstanceState, LaunchContribution
from soong_core.plugins import Plugins

HOUR = 3600

CONFIG = {"defaults": {"provider": "fake", "gpu": "gpu_1x_a10", "region": "us-east-1",
                       "lease_hours": 2, "hard_timeout_hours": 8}}


@pytest.fixture
def soong(plugins: Plugins, fake_provider: FakeProvider, clock: ManualClock) -> Any:
    fake_provider.add_ssh_key("soong", "ssh-ed25519 AAAAtest soong")
    with Soong(CONFIG, plugins=plugins, clock=clock) as core:
        yield core


def test_import_is_lazy_and_config_forms_agree(plugins: Plugins, fake_provider: FakeProvider) -> None:
    nested = Soong(CONFIG, plugins=plugins)
    flat = Soong({"defaults.provider": "fake", "defaults.gpu": "gpu_1x_a10"}, plugins=plugins)
    assert nested.config["defaults"]["gpu"] == flat.config["defaults"]["gpu"] == "gpu_1x_a10"
    assert nested.config["defaults"]["idle_timeout_minutes"] == 30  # defaults filled in
    with pytest.raises(SoongError, match="lease_hours: 0 is below the minimum 1"):
        Soong({"defaults": {"lease_hours": 0}}, plugins=plugins)


def test_launch_tags_history_and_status(soong: Soong, clock: ManualClock,
                                        fake_provider: FakeProvider) -> None:
    start = clock.now()
    instance = soong.launch(hours=3, name="exp-1", model="llama-3-8b")
    assert instance.state is InstanceState.BOOTING and instance.name == "exp-1"
    assert instance.launched_at == int(start)
    assert instance.initial_lease_deadline == int(start) + 3 * HOUR
    assert instance.hard_deadline == int(start) + 8 * HOUR
    assert instance.model == "llama-3-8b" and instance.managed
    [launch] = soong.history.events(kinds=[EventKind.LAUNCH])
    assert launch.instance_id == instance.id and launch.cost == Decimal("2.25")  # 3h x $0.75

    clock.advance(HOUR)
    [status] = soong.status()
    assert status.instance.state is InstanceState.ACTIVE
    assert status.cost_so_far == Decimal("0.75")
    assert status.decision.action is Action.KEEP
    assert status.decision.reasons == ("lease_expired",)
    assert status.decision.deadline == int(start) + 3 * HOUR
    assert status.estimated_total == Decimal("2.25")
    assert "lease_expired" in status.decision.message


def test_extend_adds_to_the_lease_and_never_passes_the_hard_limit(
        soong: Soong, clock: ManualClock) -> None:
    instance = soong.launch(hours=2)
    launched = instance.launched_at
    first = soong.extend(instance.id, 3)
    assert (first.previous, first.deadline) == (launched + 2 * HOUR, launched + 5 * HOUR)
    assert soong.view(soong.instance(instance.id)).lease_deadline == launched + 5 * HOUR
    exact = soong.extend(instance.id, 3)  # up to exactly the hard limit is fine
    assert exact.deadline == launched + 8 * HOUR
    with pytest.raises(SoongError, match="hard limit .*: at most nothing more"):
        soong.extend(instance.id, 1)
    with pytest.raises(SoongError, match="at most nothing more"):
        soong.extend(instance.id, 1, to_max=True)


def test_extend_to_max_clamps_and_names_the_largest_extension(soong: Soong) -> None:
    instance = soong.launch(hours=6)
    with pytest.raises(SoongError, match="would pass its hard limit .*: at most 2h more") as err:
        soong.extend(instance.id, 3)
    assert "to_max=True" in err.value.hints[0] and "2h" in err.value.hints[0]
    clamped = soong.extend(instance.id, 3, to_max=True)
    assert clamped.hours == 2 and clamped.deadline == clamped.hard_deadline
    assert clamped.cost == Decimal("1.50")


def test_budget_refuses_a_launch_and_an_extension_at_the_cap(
        plugins: Plugins, fake_provider: FakeProvider, clock: ManualClock) -> None:
    fake_provider.add_ssh_key("soong", "ssh-ed25519 AAAAtest soong")
    capped = {**CONFIG, "budget": {"max_dollars": 3, "period": "month"}}
    with Soong(capped, plugins=plugins, clock=clock) as soong:
        instance = soong.launch(hours=4)  # $3.00: exactly at the cap is allowed
        with pytest.raises(SoongError, match=r"\$3.00 committed this month \+ \$0.75"):
            soong.extend(instance.id, 1)
        with pytest.raises(SoongError, match="would pass the \\$3.00 cap"):
            soong.launch(hours=1)
        assert [i.id for i in soong.instances()] == [instance.id]  # nothing launched


def test_stop_is_one_batched_call_recorded_as_manual_with_cost(
        soong: Soong, clock: ManualClock, fake_provider: FakeProvider) -> None:
    a, b = soong.launch(), soong.launch()
    clock.advance(2 * HOUR)
    fake_provider.calls.clear()
    ended = soong.stop([a.id, b.id, a.id])
    assert [c for c in fake_provider.calls if c[0] == "terminate"] == [("terminate", (a.id, b.id))]
    assert {i.state for i in ended} == {InstanceState.TERMINATED}
    stops = soong.history.events(kinds=[EventKind.TERMINATE])
    assert [(e.instance_id, e.reason, e.cost) for e in stops] == [
        (a.id, "manual", Decimal("1.50")), (b.id, "manual", Decimal("1.50"))]
    assert soong.history.ended_cost() == Decimal("3.00")
    with pytest.raises(SoongError, match="no instance 'nope'"):
        soong.stop(["nope"])


@pytest.mark.parametrize("options, message", [
    ({"type_name": "gpu_9x_nope"}, "unknown GPU type 'gpu_9x_nope'"),
    ({"hours": 0.5}, "a lease of 0.5 hours is out of range: from 1 to 8"),
    ({"hours": 9}, "a lease of 9 hours is out of range"),
])
def test_launch_refuses_bad_input_before_calling_the_provider(
        soong: Soong, fake_provider: FakeProvider, options: dict[str, Any], message: str) -> None:
    with pytest.raises(UsageError, match=message):
        soong.launch(**options)
    assert not [c for c in fake_provider.calls if c[0] == "launch"]


def test_plugins_contribute_to_the_launch_and_receive_events(
        soong: Soong, register_plugin: Any) -> None:
    from soong_core import hookimpl

    received = []

    class Agentish:
        @hookimpl
        def soong_prepare_launch(self, request: Any) -> LaunchContribution:
            return LaunchContribution(tags={"agent:version": "1"},
                                      user_data_parts=("#!/bin/bash\necho agent\n",))

        @hookimpl
        def soong_lifecycle_event(self, event: Any) -> None:
            received.append(event.kind)

        @hookimpl
        def soong_status_details(self, instance: Any) -> dict[str, Any]:
            return {"idle_s": 12}

    register_plugin(Agentish(), "agentish")
    instance = soong.launch()
    assert instance.tags["agent:version"] == "1"
    [part] = email.message_from_string(instance.extra["user_data"]).get_payload()
    assert part.get_filename() == "00-agentish.sh"
    assert part.get_payload() == "#!/bin/bash\necho agent\n"
    assert soong.status()[0].details == {"agentish": {"idle_s": 12}}
    soong.stop([instance.id])
    assert received == [EventKind.LAUNCH, EventKind.TERMINATE]


def test_plugins_hear_what_the_core_sees_of_the_instances(
        soong: Soong, register_plugin: Any, clock: ManualClock, caplog: Any) -> None:
    from soong_core import hookimpl

    heard: list[tuple[list[tuple[str, str]], bool, str]] = []

    class Watcher:
        @hookimpl
        def soong_instances_seen(self, instances: Any, complete: bool, account: str) -> None:
            heard.append(([(i.id, i.state.value) for i in instances], complete, account))

    class Broken:
        @hookimpl
        def soong_instances_seen(self) -> None:
            raise RuntimeError("disk full")

    register_plugin(Watcher(), "watcher")
    register_plugin(Broken(), "broken")
    first = soong.launch()
    second = soong.launch()
    heard.clear()
    clock.advance(HOUR)  # both booted
    ready = soong.wait_until_ready(first.id)  # a look at one instance: not complete
    assert heard == [([(first.id, "active")], False, soong.account)]
    assert soong.account == "fake"  # the fake provider names no account or endpoint
    heard.clear()
    soong.status()  # the whole list
    assert heard == [([(first.id, "active"), (second.id, "active")], True, "fake")]
    heard.clear()
    soong.stop([ready.id])  # the list it checks against, then what it terminated
    assert heard[0][1] is True and heard[1:] == [([(first.id, "terminated")], False, "fake")]
    # a plugin that fails is one warning each time; the others still heard it
    assert "plugin 'broken' failed in soong_instances_seen: RuntimeError: disk full" \
        in caplog.text


def test_unmanaged_instances_are_shown_but_never_judged(soong: Soong,
                                                        fake_provider: FakeProvider) -> None:
    from soong_core.models import LaunchRequest

    foreign = fake_provider.launch(LaunchRequest("gpu_1x_a10", ("us-east-1",)))
    [status] = soong.status()
    assert status.instance.id == foreign.id
    assert status.decision is None and status.cost_so_far is None
    with pytest.raises(SoongError, match="was not launched by soong"):
        soong.extend(foreign.id, 1)


def test_two_cores_coexist_with_separate_plugins(fake_provider: FakeProvider, clock: ManualClock,
                                                 plugins: Plugins) -> None:
    from soong_core.plugins import make_plugins

    other = Soong({"defaults": {"provider": "fake"}}, plugins=make_plugins(entry_points=False),
                  clock=clock)
    assert other.plugins is not plugins
    with pytest.raises(UsageError, match="unknown provider 'fake'"):
        other.instances()  # the fake is registered in the fixture's manager only


def test_from_config_reads_file_profile_and_environment(soong_env: Any, monkeypatch: Any,
                                                        plugins: Plugins) -> None:
    from soong_core.config import profile_path, write_config_file

    write_config_file(soong_env.config_file, {"defaults": {"gpu": "gpu_1x_a100"}})
    write_config_file(profile_path("sim"), {"clock": {"mode": "accelerated", "factor": 60,
                                                      "sim_anchor": 0, "wall_anchor": 0}})
    monkeypatch.setenv("SOONG_DEFAULTS_LEASE_HOURS", "3")
    core = Soong.from_config(plugins=plugins, profile="sim")
    assert core.config["defaults"]["gpu"] == "gpu_1x_a100"
    assert core.config["defaults"]["lease_hours"] == 3
    assert core.clock.factor == 60
    plain = Soong.from_config(plugins=plugins)
    assert plain.clock.factor == 1.0


def test_idle_is_judged_only_with_the_agents_activity(soong: Soong, clock: ManualClock) -> None:
    instance = soong.launch(hours=4)
    clock.advance(HOUR)
    current = soong.instance(instance.id)
    assert soong.view(current).idle_timeout_s is None  # no activity data on the laptop
    seen = soong.view(current, last_activity_at=clock.now() - 15 * 60)
    from soong_core import policy

    decision = policy.evaluate(soong.plugins.policies().create_all(soong.config),
                               seen, clock.now())
    assert decision.reasons == ("idle_timeout",) and decision.action is Action.KEEP
    assert decision.deadline == clock.now() + 15 * 60


def test_wait_until_ready_reports_each_phase(plugins: Plugins, fake_provider: FakeProvider,
                                             clock: ManualClock) -> None:
    fake_provider.add_ssh_key("soong", "ssh-ed25519 AAAAtest soong")
    soong = Soong(CONFIG, plugins=plugins, clock=clock, sleep=clock.sleep)
    instance = soong.launch()
    seen = []
    ready = soong.wait_until_ready(instance.id, on_state=lambda i: seen.append(i.state))
    assert ready.state is InstanceState.ACTIVE and ready.ip
    assert seen == [InstanceState.BOOTING, InstanceState.ACTIVE]
    assert clock.now() - instance.launched_at == pytest.approx(60, abs=1)


@pytest.mark.parametrize("state", [InstanceState.UNHEALTHY, InstanceState.PREEMPTED])
def test_wait_until_ready_ends_on_a_bad_state(plugins: Plugins, fake_provider: FakeProvider,
                                              clock: ManualClock, state: InstanceState) -> None:
    fake_provider.add_ssh_key("soong", "ssh-ed25519 AAAAtest soong")
    soong = Soong(CONFIG, plugins=plugins, clock=clock, sleep=clock.sleep)
    instance = soong.launch()
    fake_provider.set_state(instance.id, state)
    with pytest.raises(SoongError, match=f"is {state.value} instead of becoming active") as err:
        soong.wait_until_ready(instance.id)
    assert ("soong stop" in err.value.hints[0]) is state.billing


def test_wait_until_ready_times_out_with_the_way_out(plugins: Plugins, clock: ManualClock,
                                                     register_plugin: Any) -> None:
    from soong_core.fake import FakeProviderPlugin

    slow = FakeProvider(clock, boot_seconds=10_000)
    slow.add_ssh_key("soong", "ssh-ed25519 AAAAtest soong")
    register_plugin(FakeProviderPlugin(slow), "fake")
    soong = Soong(CONFIG, plugins=plugins, clock=clock, sleep=clock.sleep)
    instance = soong.launch()
    with pytest.raises(SoongError, match="still booting after 30s") as err:
        soong.wait_until_ready(instance.id, timeout=30)
    assert f"soong stop {instance.id}" in err.value.hints[0]


def test_wait_for_capacity_polls_the_catalogue(plugins: Plugins, clock: ManualClock,
                                               register_plugin: Any) -> None:
    from soong_core.fake import FakeProviderPlugin

    provider = FakeProvider(clock, capacity={("gpu_1x_a10", "us-east-1"): 0,
                                             ("gpu_1x_a10", "us-west-1"): 0})
    register_plugin(FakeProviderPlugin(provider), "fake")
    polls = []

    def sleep(seconds: float) -> None:
        clock.sleep(seconds)
        if len(polls) == 2:
            provider.capacity["gpu_1x_a10", "us-west-1"] = 1

    soong = Soong(CONFIG, plugins=plugins, clock=clock, sleep=sleep)
    assert soong.wait_for_capacity("gpu_1x_a10", on_poll=polls.append) == ["us-west-1"]
    assert polls == [1, 2]
    with pytest.raises(SoongError, match="no capacity for gpu_1x_a10 in us-east-1 after 20s"):
        soong.wait_for_capacity("gpu_1x_a10", ["us-east-1"], timeout=20)


@pytest.mark.parametrize("offset, allowed", [(0, True), (60, True), (-60, True),
                                             (61, False), (-3600, False)])
def test_a_launch_from_a_clock_off_the_providers_is_refused_before_anything_is_shown(
        soong: Soong, fake_provider: FakeProvider, offset: float, allowed: bool) -> None:
    fake_provider.server_offset = offset
    if allowed:
        soong.launch(hours=2)
        return
    with pytest.raises(SoongError, match=r"this machine's clock is \S+ (ahead of|behind) the "
                                         r"fake API's clock \(at most 60s allowed\)"):
        soong.plan_launch(hours=2)
    assert [c for c, _ in fake_provider.calls if c == "launch"] == []
    assert soong.history.events() == []


def test_contributions_are_collected_at_plan_time_and_finished_at_launch(
        soong: Soong, register_plugin: Any, fake_provider: FakeProvider) -> None:
    finished: list[Any] = []

    class Agent:
        @staticmethod
        def soong_prepare_launch(request: Any) -> LaunchContribution:
            assert "soong:launch-id" not in request.tags  # planned: no launch facts yet
            return LaunchContribution(
                tags={"agent:version": "1"}, enforces=("lease", "idle"),
                finish=lambda final: finished.append(final) or LaunchContribution(
                    user_data_parts=(f"#!/bin/sh\n# token for {final.tags['soong:launch-id']}",)))

    from soong_core.hookspecs import hookimpl

    hookimpl(Agent.soong_prepare_launch)
    register_plugin(Agent, "agent")
    plan = soong.plan_launch(hours=2)
    assert plan.enforcement == {"lease": ("agent",), "idle": ("agent",), "hard": ()}
    assert finished == []
    instance = soong.launch(plan=plan)
    [request] = [r for c, r in fake_provider.calls if c == "launch"]
    assert request.tags["agent:version"] == "1"
    [part] = email.message_from_string(request.user_data).get_payload()
    assert part.get_payload() == f"#!/bin/sh\n# token for {instance.launch_id}"
    assert len(finished) == 1


def test_a_plugin_failing_at_launch_launches_nothing_and_closes_the_intent(
        soong: Soong, register_plugin: Any, fake_provider: FakeProvider) -> None:
    from soong_core.errors import PluginError
    from soong_core.hookspecs import hookimpl

    def broken(final: Any) -> None:
        raise OSError("cannot write the agent token")

    class Agent:
        @staticmethod
        @hookimpl
        def soong_prepare_launch() -> LaunchContribution:
            return LaunchContribution(enforces=("lease",), finish=broken)

    register_plugin(Agent, "agent")
    with pytest.raises(PluginError, match="plugin 'agent' failed to finish the launch: "
                                          "OSError: cannot write the agent token"):
        soong.launch(hours=2)
    assert [c for c, _ in fake_provider.calls if c == "launch"] == []
    assert [e.kind for e in soong.history.events()] == [EventKind.LAUNCH_INTENT,
                                                        EventKind.LAUNCH_FAILED]


def test_stopping_twice_or_a_terminating_instance_sends_and_records_nothing_more(
        soong: Soong, clock: ManualClock, fake_provider: FakeProvider) -> None:
    gone, going, live = soong.launch(), soong.launch(), soong.launch()
    clock.advance(HOUR)
    soong.stop([gone.id])
    fake_provider.set_state(going.id, InstanceState.TERMINATING)
    clock.advance(HOUR)
    fake_provider.calls.clear()
    # gone is forgotten by the provider but remembered by history; going no longer bills
    ended = soong.stop([gone.id, going.id, live.id])
    assert [c for c in fake_provider.calls if c[0] == "terminate"] == [("terminate", (live.id,))]
    assert [i.id for i in ended] == [live.id]
    stops = soong.history.events(kinds=[EventKind.TERMINATE])
    assert [(e.instance_id, e.cost) for e in stops if e.reason == "manual"] == [
        (gone.id, Decimal("0.75")), (live.id, Decimal("1.50"))]
    assert soong.stop([gone.id]) == []
    assert soong.stop_instances([i for i in fake_provider.list_instances()
                                 if i.id == going.id]) == []
    assert [c for c in fake_provider.calls if c[0] == "terminate"] == [("terminate", (live.id,))]
    assert soong.termination(gone.id).at == clock.now() - HOUR  # type: ignore[union-attr]
    assert soong.termination("nope") is None
    assert [i.id for i in soong.ended_instances()] == [gone.id, live.id]


class Timed:
    """A clock whose every second is a wall second, moved by hand, and a provider
    whose catalogue takes ``poll_seconds`` to answer: a slow, rate-limited API."""

    def __init__(self, clock: ManualClock) -> None:
        self.clock = clock
        self.slept: list[float] = []

    def now(self) -> float:
        return self.clock.now()

    def to_wall(self, seconds: float) -> float:
        return seconds

    def sleep(self, seconds: float) -> None:
        self.slept.append(seconds)
        self.clock.advance(seconds)


def no_capacity(register_plugin: Any, clock: ManualClock, poll_seconds: float = 0) -> FakeProvider:
    from soong_core.fake import FakeProviderPlugin

    class Slow(FakeProvider):
        def list_instance_types(self) -> Any:
            clock.advance(poll_seconds)
            return super().list_instance_types()

    provider = Slow(clock, capacity={("gpu_1x_a10", "us-east-1"): 0,
                                     ("gpu_1x_a10", "us-west-1"): 0})
    register_plugin(FakeProviderPlugin(provider), "fake")
    return provider


def test_waiting_for_capacity_never_sleeps_past_the_timeout(plugins: Plugins, clock: ManualClock,
                                                            register_plugin: Any) -> None:
    no_capacity(register_plugin, clock)
    timed = Timed(clock)
    soong = Soong(CONFIG, plugins=plugins, clock=timed, sleep=timed.sleep)
    polls: list[int] = []
    # `start --wait-for-capacity --timeout 0.05`: 3 s, against checks every 10 s
    with pytest.raises(SoongError, match=r"^no capacity for gpu_1x_a10 after 3s$"):
        soong.wait_for_capacity("gpu_1x_a10", timeout=3, on_poll=polls.append)
    assert timed.slept == [3] and polls == [1, 2]  # one check at the deadline
    timed.slept.clear()
    with pytest.raises(SoongError, match=r"after 25s$"):
        soong.wait_for_capacity("gpu_1x_a10", timeout=25)
    assert timed.slept == [10, 10, 5]


def test_waiting_for_capacity_reports_the_time_it_really_took_in_a_readable_unit(
        plugins: Plugins, clock: ManualClock, register_plugin: Any) -> None:
    no_capacity(register_plugin, clock, poll_seconds=2)  # each check takes 2 s
    timed = Timed(clock)
    soong = Soong(CONFIG, plugins=plugins, clock=timed, sleep=timed.sleep)
    with pytest.raises(SoongError, match=r"^no capacity for gpu_1x_a10 after 5s$"):
        soong.wait_for_capacity("gpu_1x_a10", timeout=3)  # 2 s check, 1 s pause, 2 s check
    assert timed.slept == [1]
    with pytest.raises(SoongError, match=r"^no capacity for gpu_1x_a10 in us-east-1 after 2h$"):
        soong.wait_for_capacity("gpu_1x_a10", ["us-east-1"], timeout=2 * HOUR, interval=HOUR)
    # a clock that tells no wall time (ManualClock) still counts what was slept
    manual = Soong(CONFIG, plugins=plugins, clock=clock, sleep=clock.sleep)
    with pytest.raises(SoongError, match=r"after 0.5s$"):
        manual.wait_for_capacity("gpu_1x_a10", timeout=0.5)


def test_waiting_for_termination_stops_at_the_timeout_too(plugins: Plugins, clock: ManualClock,
                                                         fake_provider: FakeProvider) -> None:
    fake_provider.add_ssh_key("soong", "ssh-ed25519 AAAAtest soong")
    timed = Timed(clock)
    soong = Soong(CONFIG, plugins=plugins, clock=timed, sleep=timed.sleep)
    instance = soong.launch()
    fake_provider.set_state(instance.id, InstanceState.TERMINATING)
    with pytest.raises(SoongError, match=rf"^1 instance\(s\) still terminating after 2.5s: "
                                         rf"{instance.id}$"):
        soong.wait_until_gone([instance.id], timeout=2.5)
    assert timed.slept == [1, 1, 0.5]


def test_losing_the_api_while_waiting_says_the_instance_may_be_billing(
        plugins: Plugins, clock: ManualClock, register_plugin: Any) -> None:
    from soong_core.fake import FakeProviderPlugin

    class Vanishing(FakeProvider):
        polls = 0

        def get_instance(self, instance_id: str) -> Any:
            self.polls += 1
            if self.polls > 1:
                raise SoongError("cannot reach the fake API", hints=["is it running?"],
                                 detail="connection refused")
            return super().get_instance(instance_id)

    provider = Vanishing(clock)
    provider.add_ssh_key("soong", "ssh-ed25519 AAAAtest soong")
    register_plugin(FakeProviderPlugin(provider), "fake")
    soong = Soong(CONFIG, plugins=plugins, clock=clock, sleep=clock.sleep)
    instance = soong.launch()
    with pytest.raises(SoongError) as err:
        soong.wait_until_ready(instance.id)
    assert err.value.message == (
        f"instance {instance.id} (launch id {instance.launch_id}) is launched and may be "
        "billing, but waiting for it failed: cannot reach the fake API")
    assert err.value.hints == (
        "is it running?", f"once the API answers: check it with `soong status`, or stop it "
                          f"with `soong stop {instance.id}`")
    assert err.value.detail == "connection refused"


@pytest.mark.parametrize("extra", [{"hours": 3}, {"name": "other"}, {"filesystem_names": ["x"]},
                                   {"type_name": "gpu_1x_a100"}])
def test_launch_takes_a_plan_or_its_arguments_never_both(
        soong: Soong, fake_provider: FakeProvider, extra: dict[str, Any]) -> None:
    plan = soong.plan_launch(hours=2)
    with pytest.raises(UsageError, match="launch takes a plan or the launch's arguments, "
                                         "not both"):
        soong.launch(plan=plan, **extra)
    assert [c for c, _ in fake_provider.calls if c == "launch"] == []
    assert soong.history.events() == []  # refused before the intent
    instance = soong.launch(hours=3, name="by-arguments", model="m")
    [request] = [r for c, r in fake_provider.calls if c == "launch"]
    assert (request.lease_hours, request.name, request.model) == (3, "by-arguments", "m")
    assert instance.name == "by-arguments"


def test_a_stop_of_many_records_their_endings_in_one_transaction(
        soong: Soong, clock: ManualClock, fake_provider: FakeProvider) -> None:
    from soong_core.models import Event

    heard: list[Event] = []

    class Listener:
        from soong_core import hookimpl

        @hookimpl
        def soong_lifecycle_event(self, event: Event, config: Any) -> None:
            heard.append(event)

    fleet = [soong.launch() for _ in range(5)]
    clock.advance(HOUR)
    soong.plugins.register(Listener(), "listener")
    statements: list[str] = []
    soong.history._db.set_trace_callback(statements.append)
    soong.stop_instances(fleet)
    soong.history._db.set_trace_callback(None)
    writes = [n for n, s in enumerate(statements) if s.startswith("INSERT INTO events")]
    assert len(writes) == 5
    between = statements[writes[0]:writes[-1]]  # no transaction ends or begins in there
    assert "COMMIT" not in between and "BEGIN IMMEDIATE" not in between
    assert "COMMIT" in statements[writes[-1]:]
    assert [e.instance_id for e in heard] == [i.id for i in fleet]  # each still announced
    assert len(soong.history.events(kinds=[EventKind.TERMINATE])) == 5


def test_history_failing_after_a_stop_of_many_names_them_all_and_what_comes_next(
        soong: Soong, clock: ManualClock, fake_provider: FakeProvider,
        monkeypatch: Any) -> None:
    from soong_core.history import HistoryError

    fleet = [soong.launch() for _ in range(3)]
    one = soong.launch()

    def refuse(events: Any) -> None:
        raise HistoryError("cannot write to the history database /h: disk I/O error",
                           hints=["check the disk"])

    monkeypatch.setattr(soong.history, "record_many", refuse)
    with pytest.raises(HistoryError) as caught:
        soong.stop_instances(fleet)
    ids = ", ".join(i.id for i in fleet)
    assert caught.value.message == (
        f"3 instances are terminating ({ids}), but history could not record them: cannot "
        "write to the history database /h: disk I/O error")
    assert list(caught.value.hints) == ["the next soong command records them as ended "
                                        "outside soong", "check the disk"]
    with pytest.raises(HistoryError) as single:
        soong.stop_instances([one])
    assert single.value.message.startswith(f"{one.id} is terminating, but history could not "
                                           "record it: ")
    assert single.value.hints[0] == "the next soong command records it as ended outside soong"
    assert not any(i.state.billing for i in fake_provider.list_instances())  # all stopped


def test_an_extension_goes_through_the_lease_enforcer_before_it_is_recorded(
        soong: Soong, register_plugin: Any) -> None:
    from soong_core import hookimpl
    from soong_core.errors import PluginError

    asked: list[tuple[str, float, float, float]] = []
    refuse: list[Exception] = []

    class Enforcer:
        @hookimpl
        def soong_extend_lease(self, instance: Any, hours: float, previous_deadline: float,
                               lease_deadline: float) -> None:
            asked.append((instance.id, hours, previous_deadline, lease_deadline))
            if refuse:
                raise refuse[0]

    register_plugin(Enforcer(), "enforcer")
    instance = soong.launch(hours=2)
    launched = instance.launched_at
    plan = soong.plan_extension(instance.id, 1)
    assert asked == [] and soong.history.current_lease_deadline(instance.id) is None
    done = soong.extend(instance.id, 1, plan=plan)
    assert asked == [(instance.id, 1, launched + 2 * HOUR, launched + 3 * HOUR)]
    assert soong.history.current_lease_deadline(instance.id) == done.deadline

    refuse.append(SoongError("the agent does not answer"))
    with pytest.raises(SoongError, match="the agent does not answer"):
        soong.extend(instance.id, 1)
    refuse[0] = KeyError("bug")
    with pytest.raises(PluginError, match="plugin 'enforcer' failed to extend .*nothing was "
                                          "recorded"):
        soong.extend(instance.id, 1)
    assert soong.history.current_lease_deadline(instance.id) == launched + 3 * HOUR
    assert [e.kind for e in soong.history.events()].count(EventKind.EXTEND) == 1


def test_an_extension_made_but_not_recorded_says_so(
        soong: Soong, register_plugin: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    from soong_core import hookimpl
    from soong_core.history import HistoryError

    made: list[float] = []

    class Enforcer:
        @hookimpl
        def soong_extend_lease(self, lease_deadline: float) -> None:
            made.append(lease_deadline)

    register_plugin(Enforcer(), "enforcer")
    instance = soong.launch(hours=2)

    def unwritable(event: Any) -> None:
        raise HistoryError("database is locked")

    monkeypatch.setattr(soong.history, "record", unwritable)
    with pytest.raises(SoongError, match=r"the extension of .* was made, but history could "
                                         r"not record it \(database is locked\): the budget "
                                         r"does not count its 1h yet") as caught:
        soong.extend(instance.id, 1)
    assert made and "run the same extension again (1h)" in caught.value.hints[0]
