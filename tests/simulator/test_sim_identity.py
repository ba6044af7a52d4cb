"""One simulated cloud, one history: the simulator's account id (kept across restarts,
ports and ``--reset``), history and budget keyed by it, a second simulator under a
second profile, one simulator per state directory (a lock), and time that never runs
back on ``--reset``. Real ``soong`` processes where the point is about processes."""

from __future__ import annotations

import json
import socket
import subprocess
import sys
import time
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest
import yaml

from soong_core.clock import AcceleratedClock, ManualClock, clock_from_config
from soong_core.config import profile_path
from soong_core.history import History, namespace_for
from soong_core.models import Event, EventKind, Reason
from soong_core.testing import CliResult, SoongEnv, run_soong
from soong_plugins.lambda_labs.provider import LambdaProvider
from soong_plugins.lambda_labs.simulator.app import ProfileTaken, Simulator, StateTaken
from soong_plugins.lambda_labs.simulator.client import SimClient
from soong_plugins.lambda_labs.simulator.state import CloudState, SshKeyRecord
from soong_plugins.lambda_labs.simulator.store import StateStore, default_state_dir
from soong_plugins.lambda_labs.simulator.testing import SimHarness


def soong(env: SoongEnv, *args: str) -> CliResult:
    return run_soong(*args, env=env, timeout=90)


def up(env: SoongEnv, *flags: str) -> dict[str, Any]:
    """``soong sim up --json --no-rate-limit FLAGS``: started, or the test fails."""
    result = soong(env, "sim", "up", "--json", "--no-rate-limit", *flags)
    assert result.exit_code == 0, result.stderr
    started: dict[str, Any] = json.loads(result.stdout)
    return started


def profile(name: str = "sim") -> dict[str, Any]:
    document: dict[str, Any] = yaml.safe_load(profile_path(name).read_text())
    return document


def sim_now(started: dict[str, Any]) -> float:
    now: float = SimClient(started["url"], started["api_key"]).control("GET", "/clock")["now"]
    return now


def ended(instance_id: str, cost: str, at: float) -> Event:
    return Event(kind=EventKind.TERMINATE, instance_id=instance_id, at=at, provider="lambda",
                 reason=Reason.MANUAL, cost=Decimal(cost))


# -- the account ----------------------------------------------------------------------


def test_the_provider_takes_its_identity_from_the_account_id() -> None:
    assert LambdaProvider.profile_keys == ("lambda.api_url", "lambda.api_key",
                                           "lambda.account_id")
    simulated = LambdaProvider.from_config({"lambda": {"api_url": "http://127.0.0.1:9/api/v1",
                                                       "api_key": "k",
                                                       "account_id": "sim-42"}})
    assert simulated.identity == "sim-42"
    for real in ({"lambda": {"api_key": "k"}}, {"lambda": {"api_key": "k", "account_id": None}},
                 {"lambda": {"api_key": "k", "account_id": "  "}}):
        assert LambdaProvider.from_config(real).identity is None  # the endpoint is the key


def test_the_account_id_is_a_documented_config_key() -> None:
    from soong_core.config import load_config
    from soong_core.plugins import make_plugins

    profile_path("acct").parent.mkdir(parents=True, exist_ok=True)
    profile_path("acct").write_text("lambda:\n  account_id: sim-42\n  api_key: k\n")
    config = load_config(plugins=make_plugins(entry_points=False), profile="acct")
    assert config["lambda"]["account_id"] == "sim-42"
    assert load_config(plugins=make_plugins(entry_points=False))["lambda"]["account_id"] is None


def test_the_account_is_made_once_per_state_and_survives_restart_and_reset(
        tmp_path: Path) -> None:
    path = tmp_path / "profiles" / "sim.yaml"
    with Simulator(tmp_path / "state", clock=ManualClock(), profile_path=path) as first:
        account = first.account_id
        assert account.startswith("sim-") and first.status()["account_id"] == account
        assert yaml.safe_load(path.read_text())["lambda"]["account_id"] == account
    with Simulator(tmp_path / "state", clock=ManualClock(), reset=True) as again:
        assert again.account_id == account  # a reset forgets the cloud, not the account
    with Simulator(tmp_path / "other", clock=ManualClock()) as other:
        assert other.account_id != account  # another state, another account


@pytest.mark.slow
def test_history_and_budget_follow_the_account_when_the_port_moves(
        soong_env: SoongEnv) -> None:
    first = up(soong_env)
    try:
        account = profile()["lambda"]["account_id"]
        assert account == first["account_id"] and account.startswith("sim-")
        at = clock_from_config(profile()["clock"]).now() - 60
        # a row an older soong wrote under the endpoint, and one written under the account
        with History.open(namespace=namespace_for("lambda", first["api_url"])) as old:
            old.record(ended("i-before", "1.50", at))
        with History.open(namespace=namespace_for("lambda", identity=account)) as kept:
            kept.record(ended("i-kept", "2.25", at + 1))
        listed = soong(soong_env, "--sim", "status", "--history", "--json")
        assert listed.exit_code == 0, listed.stderr
        assert {e["instance_id"] for e in json.loads(listed.stdout)["events"]} == \
            {"i-before", "i-kept"}
        assert soong(soong_env, "sim", "down").exit_code == 0
        with socket.socket() as taken:  # the old port is busy: it comes back elsewhere
            taken.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # past TIME_WAIT
            taken.bind(("127.0.0.1", first["port"]))
            taken.listen()
            second = up(soong_env)
        assert second["port"] != first["port"] and second["account_id"] == account
        listed = soong(soong_env, "--sim", "status", "--history", "--json")
        assert listed.exit_code == 0, listed.stderr
        events = json.loads(listed.stdout)["events"]
        assert sorted(e["instance_id"] for e in events) == ["i-before", "i-kept"]
        with History.open(namespace=namespace_for("lambda", identity=account)) as history:
            assert history.ended_cost() == Decimal("3.75")  # committed spend did not reset
        with History.open(namespace=namespace_for("lambda", first["api_url"])) as old:
            assert old.events() == []  # moved, not copied
    finally:
        soong(soong_env, "sim", "down")


# -- a second simulator, a second profile -----------------------------------------------


@pytest.mark.slow
def test_a_second_simulator_needs_its_own_profile(soong_env: SoongEnv, tmp_path: Path) -> None:
    second_state = tmp_path / "second"
    first = up(soong_env)
    try:
        before = profile_path("sim").read_text()
        taken = soong(soong_env, "sim", "up", "--state-dir", str(second_state))
        assert taken.exit_code == 2, taken.stderr
        [line] = taken.stderr.splitlines()
        assert line.startswith("error: profile sim belongs to the simulator running at "
                               f"{first['api_url']} (pid {first['pid']}) on the state "
                               f"directory {default_state_dir()}")
        assert "--profile NAME" in line and "soong sim down --state-dir" in line
        assert profile_path("sim").read_text() == before  # not taken over
        assert not StateStore(second_state).pid_path.exists()

        started = soong(soong_env, "--profile", "sim2", "sim", "up", "--state-dir",
                        str(second_state))
        assert started.exit_code == 0, started.stderr
        lines = started.stdout.splitlines()
        assert lines[3] == (f"profile: {profile_path('sim2')}: run `soong --profile sim2 "
                            "COMMAND` to use it")
        second = json.loads(soong(soong_env, "--profile", "sim2", "sim", "status",
                                  "--json").stdout)
        assert second["state_dir"] == str(second_state) and second["profile"] == \
            str(profile_path("sim2"))
        assert lines[0] == f"simulator running at {second['api_url']} (pid {second['pid']})"
        assert profile("sim2")["lambda"]["api_url"] == second["api_url"] != first["api_url"]
        shown = soong(soong_env, "--profile", "sim2", "sim", "status").stdout
        assert f"account:    {profile('sim2')['lambda']['account_id']}\n" in shown
        assert f"profile:    {profile_path('sim2')}\n" in shown
        assert profile("sim2")["lambda"]["account_id"] != profile("sim")["lambda"]["account_id"]
        assert profile("sim")["lambda"]["api_url"] == first["api_url"]

        def status(*flags: str) -> dict[str, Any]:
            shown = soong(soong_env, *flags, "sim", "status", "--json")
            assert shown.exit_code == 0, shown.stderr
            found: dict[str, Any] = json.loads(shown.stdout)
            return found

        assert status("--profile", "sim2")["state_dir"] == str(second_state)
        assert status()["state_dir"] == status("--sim")["state_dir"] == str(default_state_dir())
        assert status("--profile", "never")["state_dir"] is None

        again = soong(soong_env, "--profile", "sim2", "sim", "up", "--state-dir",
                      str(second_state))
        assert again.exit_code == 1 and "already running" in again.stderr.splitlines()[0]
        down = soong(soong_env, "--profile", "sim2", "sim", "down")
        assert down.stdout.strip() == f"simulator stopped (pid {second['pid']})"
        assert status()["running"] is True  # the first one runs on
        after = status("--profile", "sim2")  # the last simulator that kept it
        assert (after["running"], after["state_dir"]) == (False, str(second_state))
    finally:
        soong(soong_env, "--profile", "sim2", "sim", "down")
        soong(soong_env, "sim", "down")


def test_a_profile_a_live_simulator_keeps_is_refused_in_process(tmp_path: Path) -> None:
    path = tmp_path / "profiles" / "sim.yaml"
    with Simulator(tmp_path / "one", clock=ManualClock(), profile_path=path) as one:
        with pytest.raises(ProfileTaken) as refused:
            Simulator(tmp_path / "two", clock=ManualClock(), profile_path=path, reset=True)
        assert refused.value.exit_code == 2
        assert str(tmp_path / "one") in refused.value.message and one.api_url in \
            refused.value.message
        assert yaml.safe_load(path.read_text())["lambda"]["api_url"] == one.api_url
    # The refused one let go of its own state's lock (``refused`` still holds the object).
    with Simulator(tmp_path / "two", clock=ManualClock(), profile_path=path) as two:
        assert yaml.safe_load(path.read_text())["lambda"]["api_url"] == two.api_url


# -- one simulator per state directory ----------------------------------------------------


def test_a_second_simulator_on_the_same_state_is_refused_before_it_changes_anything(
        tmp_path: Path) -> None:
    with Simulator(tmp_path, clock=ManualClock(), rate_limit=False) as running:
        instance_id = SimHarness(running).launch()
        with pytest.raises(StateTaken, match="already running at .* on the state directory"):
            Simulator(tmp_path, clock=ManualClock(), reset=True)
        assert instance_id in (tmp_path / "state.json").read_text()  # the reset did nothing
    with Simulator(tmp_path, clock=ManualClock()) as after:  # released with the first one
        assert instance_id in after.cloud.state.instances


@pytest.mark.slow
def test_sim_up_sees_a_running_simulator_by_its_lock_not_its_pid_file(
        soong_env: SoongEnv) -> None:
    state = default_state_dir()
    with Simulator(state, clock=ManualClock(), rate_limit=False) as running:
        assert not StateStore(state).pid_path.exists()  # an in-process one writes none
        refused = soong(soong_env, "sim", "up")
        assert refused.exit_code == 1
        assert refused.stderr.startswith(f"error: a simulator is already running at "
                                         f"{running.api_url} (pid ")
        shown = json.loads(soong(soong_env, "sim", "status", "--json").stdout)
        assert shown["running"] is True and shown["api_url"] == running.api_url
        direct = subprocess.run([sys.executable, "-m", "soong_plugins.lambda_labs.simulator",
                                 "--state-dir", str(state)], capture_output=True, text=True,
                                timeout=60)
        assert direct.returncode == 1 and "already running" in direct.stderr


@pytest.mark.slow
def test_two_sim_ups_at_once_start_one_simulator(soong_env: SoongEnv) -> None:
    import os

    environ = {k: v for k, v in os.environ.items() if not k.startswith(("SOONG_", "LAMBDA_"))}
    environ.update(soong_env.environ())
    racers = [subprocess.Popen([sys.executable, "-m", "soong_core", "sim", "up", "--json",
                                "--no-rate-limit"], stdout=subprocess.PIPE,
                               stderr=subprocess.PIPE, text=True, env=environ)
              for _ in range(2)]
    try:
        results = [racer.communicate(timeout=60) for racer in racers]
        codes = sorted(racer.returncode for racer in racers)
        assert codes == [0, 1], results
        winner = next(json.loads(out) for out, _ in results if out.strip())
        loser = next(err for out, err in results if not out.strip())
        assert "already running" in loser.splitlines()[0]
        shown = json.loads(soong(soong_env, "sim", "status", "--json").stdout)
        assert shown["running"] is True and shown["pid"] == winner["pid"]
    finally:
        for racer in racers:
            if racer.poll() is None:
                racer.kill()
        soong(soong_env, "sim", "down")


# -- time never runs back -------------------------------------------------------------------


def test_reset_keeps_simulated_time_monotonic(tmp_path: Path) -> None:
    wall = time.time()
    ahead = wall + 10_000_000  # the old cloud ran fast: months ahead of the wall clock
    store = StateStore(tmp_path / "state")
    store.prepare()
    old = CloudState(clock=AcceleratedClock(1.0, sim_anchor=ahead, wall_anchor=wall).to_config())
    store.save(old)
    path = tmp_path / "profiles" / "sim.yaml"
    with Simulator(store.directory, reset=True, profile_path=path) as reset:
        assert reset.cloud.state.instances == {}  # the cloud is forgotten...
        assert reset.clock.now() >= ahead  # ...its time is not
        assert clock_from_config(yaml.safe_load(path.read_text())["clock"]).now() >= ahead


def test_a_fresh_clock_starts_no_earlier_than_the_profiles(tmp_path: Path) -> None:
    from soong_core.config import write_config_file

    wall = time.time()
    ahead = wall + 20_000_000  # history under this profile is dated up to here
    path = tmp_path / "profiles" / "sim.yaml"
    write_config_file(path, {"clock": AcceleratedClock(1.0, sim_anchor=ahead,
                                                       wall_anchor=wall).to_config()})
    with Simulator(tmp_path / "state", reset=True, profile_path=path) as fresh:
        assert fresh.clock.now() >= ahead


def test_reset_goes_on_from_the_latest_time_the_old_cloud_recorded(tmp_path: Path) -> None:
    future = time.time() + 5_000_000  # a key created then, in a state that lost its clock
    store = StateStore(tmp_path)
    store.prepare()
    store.save(CloudState(ssh_keys={"k": SshKeyRecord(id="k", name="k", public_key="x",
                                                      created_at=future)}))
    with Simulator(tmp_path, reset=True) as reset:
        assert reset.cloud.state.ssh_keys == {} and reset.clock.now() >= future


@pytest.mark.slow
def test_sim_up_reset_never_moves_the_cloud_back_in_time(soong_env: SoongEnv) -> None:
    first = up(soong_env, "--speed", "1000000")  # a simulated day per 0.09 wall seconds
    try:
        reached = sim_now(first)
        assert reached > time.time() + 3600
        assert soong(soong_env, "sim", "down").exit_code == 0
        second = up(soong_env, "--reset")
        assert second["account_id"] == first["account_id"]
        assert sim_now(second) >= reached
        assert clock_from_config(profile()["clock"]).now() >= reached  # what the CLI uses
    finally:
        soong(soong_env, "sim", "down")


def test_sim_up_drops_what_an_old_configure_copied_into_the_profile(soong_env: SoongEnv
                                                                    ) -> None:
    """A profile an older ``configure -n`` filled with every setting shadowed the main
    file; the next ``sim up`` (a write to the profile) removes the copies, says so in
    one line, and keeps what differs and the simulator's own keys."""
    from soong_core.config import write_config_file

    write_config_file(soong_env.config_file, {"budget": {"max_dollars": 20}})
    write_config_file(profile_path("sim"), {
        "defaults": {"provider": "lambda", "lease_hours": 4, "gpu": "gpu_1x_a10",
                     "fallback_regions": []},
        "budget": {"max_dollars": 20, "period": "month"}})
    first = soong(soong_env, "sim", "up", "--json", "--no-rate-limit")
    assert first.exit_code == 0, first.stderr
    started = json.loads(first.stdout)
    try:
        [warning] = [line for line in first.stderr.splitlines() if "removed" in line]
        assert "defaults.provider" in warning and "budget.max_dollars" in warning
        assert str(profile_path("sim")) in warning
        document = profile()
        assert document["defaults"] == {"gpu": "gpu_1x_a10"}  # differs from the main file
        assert "budget" not in document
        assert document["lambda"]["account_id"] and document["lambda"]["api_url"] == \
            started["api_url"]
        shown = soong(soong_env, "--sim", "config", "show", "--json")
        assert json.loads(shown.stdout)["budget"]["max_dollars"] == 20
        again = soong(soong_env, "sim", "up", "--no-rate-limit")
        assert "removed" not in again.stderr  # nothing left to drop: no second warning
    finally:
        soong(soong_env, "sim", "down")
