"""`soong stop`: selection, confirmation with costs, one batched call, history."""

from __future__ import annotations

import re
import time
from typing import Any

import pytest

from soong_core.api import Soong
from soong_core.clock import ManualClock, RealClock
from soong_core.config import write_config_file
from soong_core.fake import FakeProvider, FakeProviderPlugin
from soong_core.history import History, namespace_for
from soong_core.models import EventKind, InstanceState, LaunchRequest
from soong_core.testing import SoongEnv

CONFIG = {"defaults": {"provider": "fake", "gpu": "gpu_1x_a10", "region": "us-east-1"}}


@pytest.fixture
def cloud(soong_env: SoongEnv, register_plugin: Any) -> FakeProvider:
    provider = FakeProvider(RealClock(), boot_seconds=0)
    provider.add_ssh_key("soong", "ssh-ed25519 AAAAtest soong")
    register_plugin(FakeProviderPlugin(provider), "fake")
    write_config_file(soong_env.config_file, CONFIG)
    return provider


def launch(plugins: Any, name: str, hours_ago: float = 2) -> str:
    """Launch through the API as if ``hours_ago`` hours ago (the CLI then runs on real time)."""
    clock = ManualClock(time.time() - hours_ago * 3600)
    return Soong(CONFIG, plugins=plugins, clock=clock).launch(name=name).id


def terminations(provider: FakeProvider) -> list[tuple[str, ...]]:
    return [ids for call, ids in provider.calls if call == "terminate"]


def test_stop_the_single_running_instance(run_cli: Any, cloud: FakeProvider, plugins: Any) -> None:
    instance_id = launch(plugins, "exp")
    cloud.calls.clear()
    result = run_cli("stop -y")
    assert result.exit_code == 0, result.stderr
    assert "exp" in result.stdout and "$1.50" in result.stdout  # 2 h at $0.75
    assert f"{instance_id} terminated" in result.stdout
    assert terminations(cloud) == [(instance_id,)]
    # one listing to choose, one to see it gone: no third just to terminate
    assert [call for call, _ in cloud.calls].count("list_instances") == 2
    with History.open(namespace=namespace_for("fake")) as history:
        [event] = history.events(kinds=[EventKind.TERMINATE])
    assert (event.reason, event.inferred, event.cost) == ("manual", False, event.cost)
    assert str(event.cost).startswith("1.5")


def test_several_by_name_and_prefix_in_one_call(run_cli: Any, cloud: FakeProvider,
                                                plugins: Any) -> None:
    a, b, c = launch(plugins, "alpha"), launch(plugins, "beta"), launch(plugins, "gamma")
    result = run_cli(f"stop -y alpha {b} {a}")
    assert result.exit_code == 0, result.stderr
    assert terminations(cloud) == [(a, b)]
    assert "total" in result.stdout
    assert [i.id for i in cloud.list_instances()] == [c]


def test_all_stops_soong_instances_and_leaves_others(run_cli: Any, cloud: FakeProvider,
                                                     plugins: Any) -> None:
    a, b = launch(plugins, "alpha"), launch(plugins, "beta")
    foreign = cloud.launch(LaunchRequest("gpu_1x_a10", ("us-east-1",)))
    result = run_cli("stop --all -y")
    assert result.exit_code == 0, result.stderr
    assert terminations(cloud) == [(a, b)]
    assert f"left running (not launched by soong; stop them by id): {foreign.id}" in result.stdout


def test_asks_first_and_no_keeps_everything(run_cli: Any, cloud: FakeProvider, plugins: Any) -> None:
    launch(plugins, "exp")
    result = run_cli("stop", inputs="n\n")
    assert result.exit_code == 1 and "cancelled" in result.stderr
    assert terminations(cloud) == []
    needs_yes = run_cli("stop")
    assert needs_yes.exit_code == 2 and "pass -y" in needs_yes.stderr


@pytest.mark.parametrize("args, code, first", [
    ("stop -y", 1, "error: no running instance"),
    ("stop -y nope", 1, "error: no instance matches 'nope': there are no instances"),
])
def test_nothing_to_stop(run_cli: Any, cloud: FakeProvider, args: str, code: int, first: str) -> None:
    result = run_cli(args)
    assert (result.exit_code, result.stderr.splitlines()[0]) == (code, first)


def test_ambiguous_and_unknown_list_the_candidates(run_cli: Any, cloud: FakeProvider,
                                                   plugins: Any) -> None:
    a, b = launch(plugins, "alpha"), launch(plugins, "beta")
    several = run_cli("stop -y")
    assert several.exit_code == 1
    assert several.stderr.splitlines()[0] == (f"error: 2 instances are running, say which: "
                                              f"{a} (alpha, active), {b} (beta, active)")
    unknown = run_cli("stop -y zeta")
    assert unknown.exit_code == 1 and "candidates:" in unknown.stderr
    prefix = run_cli("stop -y fake-")
    assert prefix.exit_code == 1 and "'fake-' matches 2 instances" in prefix.stderr
    mixed = run_cli("stop -y --all alpha")
    assert mixed.exit_code == 2 and "not both" in mixed.stderr
    assert terminations(cloud) == []


def test_stopping_a_terminated_instance_says_so_and_sends_nothing(
        run_cli: Any, cloud: FakeProvider, plugins: Any) -> None:
    instance_id = launch(plugins, "exp")
    assert run_cli(f"stop -y {instance_id}").exit_code == 0
    cloud.calls.clear()
    # the provider forgot it; history did not
    again = run_cli(f"stop -y {instance_id}")
    assert again.exit_code == 0, again.stderr  # what a script asked for holds already
    assert re.fullmatch(rf"instance {instance_id} is already terminated \(ended \d+s ago: "
                        r"manual\): nothing to stop\n", again.stdout), again.stdout
    assert again.stderr == ""
    assert terminations(cloud) == []
    with History.open(namespace=namespace_for("fake")) as history:
        assert len(history.events(kinds=[EventKind.TERMINATE])) == 1  # not a second one
    by_name = run_cli("stop -y exp")
    assert by_name.exit_code == 0 and "is already terminated" in by_name.stdout
    assert run_cli("stop -y nope").exit_code == 1  # unknown is still unknown


@pytest.mark.parametrize("state, line", [
    (InstanceState.TERMINATING, r"is already terminating: nothing to stop"),
    (InstanceState.PREEMPTED, r"is already preempted \(ended \d+s ago: preempted"),
])
def test_stopping_an_instance_that_no_longer_bills_says_so(
        run_cli: Any, cloud: FakeProvider, plugins: Any, state: InstanceState, line: str) -> None:
    ending, running = launch(plugins, "ending"), launch(plugins, "running")
    cloud.set_state(ending, state)
    result = run_cli(f"stop -y {ending} running")
    assert result.exit_code == 0, result.stderr
    assert re.search(f"instance {ending} {line}", result.stdout), result.stdout
    assert terminations(cloud) == [(running,)]  # only the one that bills
    assert f"{running} terminated" in result.stdout and f"{ending} terminated" not in result.stdout


def test_an_id_matches_in_any_case(run_cli: Any, cloud: FakeProvider, plugins: Any) -> None:
    instance_id = launch(plugins, "exp")
    result = run_cli(f"stop -y {instance_id.upper()}")
    assert result.exit_code == 0, result.stderr
    assert terminations(cloud) == [(instance_id,)]


def test_without_a_terminal_the_refusal_names_what_it_would_do(
        run_cli: Any, cloud: FakeProvider, plugins: Any) -> None:
    a = launch(plugins, "alpha")
    one = run_cli("stop")
    assert one.exit_code == 2
    assert one.stderr.splitlines() == [f"error: Terminate {a}: needs a confirmation",
                                       "  pass -y to confirm without a prompt"]
    launch(plugins, "beta")
    two = run_cli("stop --all")
    assert two.stderr.splitlines()[0] == "error: Terminate 2 instances: needs a confirmation"
    assert terminations(cloud) == []
