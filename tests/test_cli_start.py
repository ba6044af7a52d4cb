"""`soong start` through the CLI, against the in-memory fake provider."""

from __future__ import annotations

from typing import Any

import pytest

from soong_core.clock import RealClock
from soong_core.config import write_config_file
from soong_core.fake import FakeProvider, FakeProviderPlugin
from soong_core.history import History, namespace_for
from soong_core.models import EventKind, InstanceState
from soong_core.testing import SoongEnv, live_fake_cloud

CONFIG = {"defaults": {"provider": "fake", "gpu": "gpu_1x_a10", "region": "us-east-1",
                       "lease_hours": 2}}


@pytest.fixture
def cloud(soong_env: SoongEnv, register_plugin: Any) -> FakeProvider:
    """A fake cloud on real time whose instances are active at once (the CLI waits in
    real time), and a config file pointing at it."""
    provider = live_fake_cloud(register_plugin)
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
    ("start -y --hours lots", 2, "error: --hours must be a number of hours, got 'lots'"),
    ("start -y --hours nan", 2, "error: --hours must be a number of hours, got 'nan'"),
    ("start -y --wait-for-capacity --timeout 0", 2,
     "error: --timeout must be a number of minutes greater than 0, got '0'"),
    ("start -y --wait-for-capacity --timeout soon", 2,
     "error: --timeout must be a number of minutes greater than 0, got 'soon'"),
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
        "  stop it: `soong stop fake-0001`", "  or follow it: `soong status`"]


def no_sleeping(monkeypatch: Any, then: Any = None) -> list[float]:
    """The core's waits in this process record what they would sleep instead (and call
    ``then`` after each): the CLI's ``Soong`` sleeps with ``time.sleep``."""
    import types

    import soong_core.api

    slept: list[float] = []

    def sleep(seconds: float) -> None:
        slept.append(seconds)
        if then is not None:
            then()

    monkeypatch.setattr(soong_core.api, "time", types.SimpleNamespace(sleep=sleep))
    return slept


@pytest.mark.parametrize("args", ["-q start -y", "-q start -y --no-wait", "start -q -y"])
def test_quiet_prints_only_the_instance_id(run_cli: Any, cloud: FakeProvider, args: str) -> None:
    result = run_cli(args)
    assert result.exit_code == 0, result.stderr
    assert (result.stdout, result.stderr) == ("fake-0001\n", "")  # id=$(soong -q start -y)


def test_waiting_for_capacity_counts_its_checks_in_words(run_cli: Any, soong_env: SoongEnv,
                                                         register_plugin: Any,
                                                         monkeypatch: Any) -> None:
    provider = FakeProvider(RealClock(), boot_seconds=0,
                            capacity={("gpu_1x_a10", "us-east-1"): 0,
                                      ("gpu_1x_a10", "us-west-1"): 0})
    provider.add_ssh_key("soong", "ssh-ed25519 AAAAtest soong")
    register_plugin(FakeProviderPlugin(provider), "fake")
    write_config_file(soong_env.config_file, CONFIG)

    def capacity_appears() -> None:
        provider.capacity["gpu_1x_a10", "us-east-1"] = 1

    slept = no_sleeping(monkeypatch, then=capacity_appears)
    result = run_cli("start -y --wait-for-capacity")
    assert result.exit_code == 0, result.stderr
    assert "waiting for capacity for gpu_1x_a10 (checked 1 time)...\n" in result.stderr
    assert "1 times" not in result.stderr
    assert slept == [10.0]


def test_wait_for_capacity_gives_up_at_the_timeout_and_says_how_long_it_waited(
        run_cli: Any, soong_env: SoongEnv, register_plugin: Any, monkeypatch: Any) -> None:
    provider = FakeProvider(RealClock(), capacity={("gpu_1x_a10", "us-east-1"): 0,
                                                   ("gpu_1x_a10", "us-west-1"): 0})
    register_plugin(FakeProviderPlugin(provider), "fake")
    write_config_file(soong_env.config_file, CONFIG)
    slept = no_sleeping(monkeypatch)
    result = run_cli("start -y --wait-for-capacity --timeout 0.05")  # minutes: 3 s
    assert result.exit_code == 1
    # never a whole 10 s check interval past the timeout: its last pause ends at it (the
    # checks' own time counts, so the pauses may add up to a hair under 3 s)
    assert max(slept) <= 3 and sum(slept) == pytest.approx(3, abs=0.5)
    assert "error: no capacity for gpu_1x_a10 after 3s" in result.stderr.splitlines()
    assert "(checked 2 times)" in result.stderr
    assert launches(provider) == []


def test_losing_the_api_while_it_boots_says_the_instance_may_be_billing(
        run_cli: Any, soong_env: SoongEnv, register_plugin: Any) -> None:
    from soong_core.errors import SoongError

    class Unreachable(FakeProvider):
        def get_instance(self, instance_id: str) -> Any:
            raise SoongError("cannot reach the fake API", hints=["is it running?"])

    provider = Unreachable(RealClock(), boot_seconds=3600)
    provider.add_ssh_key("soong", "ssh-ed25519 AAAAtest soong")
    register_plugin(FakeProviderPlugin(provider), "fake")
    write_config_file(soong_env.config_file, CONFIG)
    result = run_cli("start -y")
    assert result.exit_code == 1
    assert result.stderr.splitlines()[-3:] == [
        "error: instance fake-0001 is launched and may be billing, but waiting for it failed: "
        "cannot reach the fake API",
        "  is it running?",
        "  once the API answers: check it with `soong status`, or stop it with "
        "`soong stop fake-0001`"]
    assert len(launches(provider)) == 1


@pytest.mark.slow
def test_a_simulator_killed_while_the_instance_boots_leaves_the_way_to_stop_it(
        soong_env: SoongEnv) -> None:
    """A real ``soong sim up`` process, killed by the test while ``start`` waits."""
    import json
    import os
    import signal
    import subprocess
    import sys

    from soong_core.testing import run_soong

    up = run_soong("sim", "up", "--json", "--boot-seconds", "3600", env=soong_env)
    assert up.exit_code == 0, up.stderr
    sim = json.loads(up.stdout)
    try:
        key_path = soong_env.home / ".ssh" / "id_ed25519"
        configured = run_soong("--sim", "configure", "-n", "--key-name", "soong", "--key-path",
                               str(key_path), "--gpu", "gpu_1x_a10", "--region", "us-east-1",
                               env=soong_env, timeout=120)
        assert configured.exit_code == 0, configured.stderr
        environ = {k: v for k, v in os.environ.items() if not k.startswith(("SOONG_", "LAMBDA_"))}
        environ.update(soong_env.environ())
        start = subprocess.Popen([sys.executable, "-m", "soong_core", "--sim", "start", "-y"],
                                 stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                                 env=environ)
        try:
            assert start.stderr is not None
            seen = []
            for line in start.stderr:  # phases, one a line: kill it once it boots
                seen.append(line)
                if line.startswith("booting "):
                    break
            else:
                pytest.fail("start never reached booting:\n" + "".join(seen))
            instance_id = line.split()[1].rstrip(".")
            os.kill(sim["pid"], signal.SIGKILL)
            out, err = start.communicate(timeout=120)
        finally:
            if start.poll() is None:
                start.kill()
                start.wait()
        assert start.returncode == 1, err
        lines = err.splitlines()
        assert lines[0].startswith(f"error: instance {instance_id} (launch id ")
        assert "is launched and may be billing, but waiting for it failed: " in lines[0]
        assert lines[-1] == (f"  once the API answers: check it with `soong --sim status`, or "
                             f"stop it with `soong --sim stop {instance_id}`")
        assert sim["api_key"] not in out + err and "Traceback" not in err
    finally:
        run_soong("sim", "down", env=soong_env)


def test_the_report_names_commands_with_the_global_options_in_effect(
        run_cli: Any, cloud: FakeProvider, soong_env: SoongEnv) -> None:
    """Typed as shown, the follow-up commands act on the cloud this launch went to."""
    from soong_core.config import profile_path

    write_config_file(profile_path("work"), {"defaults": {"lease_hours": 3}})
    result = run_cli("--profile work start -y --no-wait")
    assert result.exit_code == 0, result.stderr
    assert "  watch it: soong --profile work status --instance-id fake-0001" in result.stdout
    assert "  see it:   soong --profile work status\n" in result.stdout
    assert "  stop it:  soong --profile work stop fake-0001" in result.stdout
