"""`soong start` through the CLI, against the in-memory fake provider."""

from __future__ import annotations

from typing import Any

import pytest

from soong_core.clock import RealClock
from soong_core.config import write_config_file
from soong_core.fake import FakeProvider, FakeProviderPlugin
from soong_core.history import History, namespace_for
from soong_core.models import EventKind, InstanceState
from soong_core.testing import SoongEnv

CONFIG = {"defaults": {"provider": "fake", "gpu": "gpu_1x_a10", "region": "us-east-1",
                       "lease_hours": 2}}


@pytest.fixture
def cloud(soong_env: SoongEnv, register_plugin: Any) -> FakeProvider:
    """A fake cloud on real time whose instances are active at once (the CLI waits in
    real time), and a config file pointing at it."""
    provider = FakeProvider(RealClock(), boot_seconds=0)
    provider.add_ssh_key("soong", "ssh-ed25519 AAAAtest soong")
    register_plugin(FakeProviderPlugin(provider), "fake")
    write_config_file(soong_env.config_file, CONFIG)
    return provider


def launches(provider: FakeProvider) -> list[Any]:
    return [request for call, request in provider.calls if call == "launch"]


def test_start_shows_the_panel_launches_and_waits(run_cli: Any, cloud: FakeProvider) -> None:
    result = run_cli("start -y --hours 3 --name exp --model llama-3-8b")
    assert result.exit_code == 0, result.stderr
    for text in ("gpu_1x_a10", "$0.75/hr", "3 h = $2.25", "8 h = $6.00", "nothing on it survives",
                 "$0.00 committed this month (no cap)", "llama-3-8b", "is active at 198.51.100.", "ssh -i ~/.ssh/id_ed25519 ubuntu@198.51.100.",
                 "soong stop fake-0001"):
        assert text in result.stdout, text
    assert "launching gpu_1x_a10..." in result.stderr  # phases on stderr when not a terminal
    [request] = launches(cloud)
    assert request.lease_hours == 3 and request.name == "exp"
    assert request.tags["soong:model"] == "llama-3-8b"
    [instance] = cloud.list_instances()
    assert instance.state is InstanceState.ACTIVE
    with History.open(namespace=namespace_for("fake")) as history:
        intent, launch = history.events()
    assert (intent.kind, launch.kind) == (EventKind.LAUNCH_INTENT, EventKind.LAUNCH)
    assert intent.instance_id == launch.detail["launch_id"] == request.tags["soong:launch-id"]
    assert intent.at <= launch.at and intent.cost == launch.cost
    assert launch.detail["enforced"] == {"lease": [], "idle": [], "hard": []}
    # nothing on the instance enforces a limit yet, and the panel says so for each
    assert result.stdout.count("nothing: stop it yourself") == 3
    assert "idle stop after" not in result.stdout


def test_start_without_yes_asks_and_no_launches_nothing(run_cli: Any, cloud: FakeProvider) -> None:
    declined = run_cli("start", inputs="n\n")
    assert declined.exit_code == 1 and "cancelled" in declined.stderr
    assert launches(cloud) == []
    accepted = run_cli("start", inputs="y\n")
    assert accepted.exit_code == 0 and len(launches(cloud)) == 1


def test_start_non_interactive_needs_yes(run_cli: Any, cloud: FakeProvider) -> None:
    result = run_cli("start")
    assert result.exit_code == 2
    assert result.stderr.splitlines() == ["error: Launch it: needs a confirmation",
                                          "  pass -y to confirm without a prompt"]
    assert launches(cloud) == []


def test_no_wait_returns_while_booting(run_cli: Any, soong_env: SoongEnv,
                                       register_plugin: Any) -> None:
    provider = FakeProvider(RealClock(), boot_seconds=3600)
    provider.add_ssh_key("soong", "ssh-ed25519 AAAAtest soong")
    register_plugin(FakeProviderPlugin(provider), "fake")
    write_config_file(soong_env.config_file, CONFIG)
    result = run_cli("start -y --no-wait")
    assert result.exit_code == 0
    assert "fake-0001 is booting in us-east-1; it is billing from now" in result.stdout


@pytest.mark.parametrize("args, code, message", [
    ("start -y --gpu gpu_9x_nope", 2, "error: unknown GPU type 'gpu_9x_nope'"),
    ("start -y --region mars-1", 2, "error: unknown region 'mars-1'"),
    ("start -y --region us-west-2", 1, "error: no capacity for gpu_1x_a10 in us-west-2 right now"),
    ("start -y --hours 0.5", 2, "error: a lease of 0.5 hours is out of range: from 1 to 8"),
    ("start -y --hours 9", 2, "error: a lease of 9 hours is out of range: from 1 to 8"),
    ("start -y --hours lots", 2, "error: --hours 'lots' is not a number of hours"),
    ("start -y --wait --no-wait", 2, "error: --wait and --no-wait contradict each other"),
    ("start -y --timeout 5", 2, "error: --timeout applies only with --wait-for-capacity"),
])
def test_bad_input_is_one_line_and_launches_nothing(run_cli: Any, cloud: FakeProvider,
                                                    args: str, code: int, message: str) -> None:
    result = run_cli(args)
    assert result.exit_code == code, result.stderr
    assert result.stderr.splitlines()[0].startswith(message), result.stderr
    assert "Traceback" not in result.stderr
    assert launches(cloud) == []


def test_budget_refusal_is_one_line_with_the_way_out(run_cli: Any, cloud: FakeProvider,
                                                     soong_env: SoongEnv) -> None:
    write_config_file(soong_env.config_file, {**CONFIG, "budget": {"max_dollars": 1}})
    result = run_cli("start -y --hours 2")
    assert result.exit_code == 1
    lines = result.stderr.splitlines()
    assert lines[0].startswith("error: budget: $0.00 committed this month + $1.50 for this launch "
                               "would pass the $1.00 cap")
    assert "budget.max_dollars" in lines[1]
    assert launches(cloud) == []


def test_no_gpu_anywhere_says_how_to_set_one(run_cli: Any, cloud: FakeProvider,
                                             soong_env: SoongEnv) -> None:
    write_config_file(soong_env.config_file, {"defaults": {"provider": "fake"}})
    result = run_cli("start -y")
    assert result.exit_code == 2
    assert result.stderr.splitlines() == [
        "error: no GPU type given",
        "  pass --gpu TYPE or set one with `soong config set defaults.gpu TYPE`"]


def test_wait_for_capacity_then_launch_where_it_appeared(run_cli: Any, soong_env: SoongEnv,
                                                         register_plugin: Any) -> None:
    provider = FakeProvider(RealClock(), boot_seconds=0,
                            capacity={("gpu_1x_a10", "us-east-1"): 0})
    provider.add_ssh_key("soong", "ssh-ed25519 AAAAtest soong")
    register_plugin(FakeProviderPlugin(provider), "fake")
    write_config_file(soong_env.config_file, {"defaults": {"provider": "fake", "gpu": "gpu_1x_a10"}})
    result = run_cli("start -y --wait-for-capacity --timeout 1 --region us-west-1 --region us-east-1")
    assert result.exit_code == 0, result.stderr
    assert launches(provider)[0].regions == ("us-west-1",)


def test_ctrl_c_while_waiting_says_it_is_billing(run_cli: Any, soong_env: SoongEnv,
                                                 register_plugin: Any, monkeypatch: Any) -> None:
    from soong_core.api import Soong

    provider = FakeProvider(RealClock(), boot_seconds=3600)
    provider.add_ssh_key("soong", "ssh-ed25519 AAAAtest soong")
    register_plugin(FakeProviderPlugin(provider), "fake")
    write_config_file(soong_env.config_file, CONFIG)

    def interrupted(self: Any, *args: Any, **kwargs: Any) -> None:
        raise KeyboardInterrupt

    monkeypatch.setattr(Soong, "wait_until_ready", interrupted)
    result = run_cli("start -y")
    assert result.exit_code == 130
    assert result.stderr.splitlines()[-3:] == [
        "error: interrupted: fake-0001 is already launched and billing ($0.75/hr)",
        "  stop it: soong stop fake-0001", "  or follow it: soong status"]
