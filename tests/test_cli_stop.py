"""`soong stop`: selection, confirmation with costs, one batched call, history."""

from __future__ import annotations

import time
from typing import Any

import pytest

from soong_core.api import Soong
from soong_core.clock import ManualClock, RealClock
from soong_core.config import write_config_file
from soong_core.fake import FakeProvider, FakeProviderPlugin
from soong_core.history import History, namespace_for
from soong_core.models import EventKind, LaunchRequest
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
