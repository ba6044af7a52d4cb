"""``soong agent install``: the installer a launch carries, run again over a real SSH
connection, brings back an agent that died for good, with a new token and the
instance's own deadlines. The simulator's instance is pointed at the test sshd, whose
sessions run in that instance's sandbox (``SOONG_ROOT``), where the simulator's systemd
stand-in starts the unit it was asked to restart."""

from __future__ import annotations

import json
import stat
from typing import Any, Callable

import pytest

from soong_core.models import TAG_HARD_DEADLINE, TAG_LEASE_DEADLINE, parse_timestamp
from soong_plugins.fabric_tunnel.testing import SshServer
from soong_plugins.lambda_labs.simulator.testing import SimHarness
from soong_plugins.lease_agent import tokens


@pytest.fixture
def extra_config(sshd: SshServer) -> dict[str, Any]:
    return {"ssh": {"user": "root", "key_path": str(sshd.client_key),
                    "connect_timeout_seconds": 5}}


@pytest.fixture
def cloud(lambda_sim: SimHarness) -> SimHarness:
    return lambda_sim


def agent_info(cloud: SimHarness, instance_id: str) -> dict[str, Any]:
    answer: dict[str, Any] = cloud.control("GET", f"/instances/{instance_id}/agent")
    return answer


def test_install_brings_back_a_dead_agent_with_a_new_token(
        cloud: SimHarness, sshd: SshServer, run_cli: Callable[..., Any]) -> None:
    started = run_cli("start -y --hours 2")
    assert started.exit_code == 0, started.stderr
    [shown] = json.loads(run_cli("status --json").stdout)["instances"]
    instance_id = shown["id"]
    old_token = tokens.read_token(instance_id)
    assert old_token
    cloud.control("POST", f"/instances/{instance_id}/fault", {"fault": "agent_dead"})
    dead = run_cli(f"agent status {instance_id}")
    assert dead.exit_code == 1 and "Traceback" not in dead.stderr

    root = cloud.simulator.store.directory / "agents" / instance_id / "root"
    sshd.environment = {"SOONG_ROOT": str(root),
                        "PATH": f"{root.parent.parent / 'bin'}:/usr/bin:/bin"}
    sshd.restart()
    cloud.control("POST", f"/instances/{instance_id}/network",
                  {"ip": sshd.host, "ssh_port": sshd.port})
    installed = run_cli(f"agent install {instance_id}")
    assert installed.exit_code == 0, installed.stderr
    assert f"the lease agent of {instance_id} answers" in installed.stdout
    assert "trusting the host key" in installed.stderr

    new_token = tokens.read_token(instance_id)
    assert new_token and new_token != old_token
    config_file = root / "etc" / "soong" / "agent.json"
    assert stat.S_IMODE(config_file.stat().st_mode) == 0o600
    written = json.loads(config_file.read_text())
    assert written["api"]["token"] == new_token
    assert agent_info(cloud, instance_id)["state"] == "running"
    status = run_cli(f"agent status {instance_id} --json")
    assert status.exit_code == 0, status.stderr
    answer = json.loads(status.stdout)
    instance = cloud.instance(instance_id)
    tags = {tag["key"]: tag["value"] for tag in instance.get("tags") or []}
    assert answer["lease_deadline"] == written["instance"]["lease_deadline"] == \
        pytest.approx(parse_timestamp(tags[TAG_LEASE_DEADLINE]))
    assert answer["hard_deadline"] == pytest.approx(parse_timestamp(tags[TAG_HARD_DEADLINE]))
    assert str(root) not in installed.stdout + installed.stderr  # nothing of the sandbox


def test_install_refuses_what_soong_did_not_launch_and_a_failed_installer(
        cloud: SimHarness, sshd: SshServer, run_cli: Callable[..., Any]) -> None:
    foreign = cloud.launch(name="foreign")
    refused = run_cli(f"agent install {foreign}")
    assert refused.exit_code == 1
    assert refused.stderr.splitlines()[0] == (
        f"error: {foreign} was not launched by soong: it carries no lease or hard limit for "
        "an agent to enforce")

    started = run_cli("start -y --hours 1 --name mine")
    assert started.exit_code == 0, started.stderr
    [mine] = [i["id"] for i in json.loads(run_cli("status --json").stdout)["instances"]
              if i["name"] == "mine"]
    old_token = tokens.read_token(mine)
    sshd.environment = {"SOONG_ROOT": "/nonexistent/soong-test-root", "PATH": "/nonexistent"}
    sshd.restart()
    cloud.control("POST", f"/instances/{mine}/network", {"ip": sshd.host, "ssh_port": sshd.port})
    failed = run_cli(f"agent install {mine}")
    assert failed.exit_code == 1
    [first] = [line for line in failed.stderr.splitlines() if line.startswith("error:")]
    assert first.startswith(f"error: the lease agent's installer failed on {mine} (exit ")
    assert "its limits are NOT enforced on the instance" in first
    assert tokens.read_token(mine) == old_token  # the running agent's token is kept
