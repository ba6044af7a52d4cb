"""When an instance ends by itself (its agent terminated it, no soong process running),
the next listing clears everything soong kept for it on this machine: the agent's
token, the ssh Host block, its known_hosts line and its tunnel."""

from __future__ import annotations

import json
import os
import signal
import time
from typing import Any

import pytest

from soong_core.testing import CliResult, SoongEnv, free_port, run_soong
from soong_plugins.fabric_tunnel import hostentries, tunnels
from soong_plugins.fabric_tunnel.hostkeys import HostKeys
from soong_plugins.fabric_tunnel.testing import EchoServer, SshServer, process_ended
from soong_plugins.lambda_labs.simulator.testing import SimHarness
from soong_plugins.lease_agent import tokens

pytestmark = pytest.mark.slow


@pytest.fixture
def extra_config(sshd: SshServer) -> dict[str, Any]:
    return {"ssh": {"user": "root", "key_path": str(sshd.client_key),
                    "connect_timeout_seconds": 5}}


def soong(env: SoongEnv, *args: str) -> CliResult:
    done = run_soong(*args, env=env, timeout=120)
    assert done.exit_code == 0, f"soong {' '.join(args)}: {done.stderr}"
    return done


def test_an_instance_that_ended_by_itself_leaves_nothing_behind(
        lambda_sim: SimHarness, sshd: SshServer, echo_service: EchoServer,
        soong_env: SoongEnv) -> None:
    soong(soong_env, "start", "-y", "--hours", "1", "--name", "done")
    [shown] = json.loads(soong(soong_env, "status", "--json").stdout)["instances"]
    instance_id = shown["id"]
    lambda_sim.control("POST", f"/instances/{instance_id}/network",
                       {"ip": sshd.host, "ssh_port": sshd.port})
    soong(soong_env, "ssh", instance_id, "--", "true")
    soong(soong_env, "tunnel", "start", instance_id, "--port",
          f"{free_port()}:{echo_service.port}")
    state = tunnels.read_state(tunnels.state_path(instance_id))
    assert state is not None and state.alive
    pid = state.document["pid"]
    assert tokens.read_token(instance_id)
    assert instance_id in {e.instance_id for e in hostentries.read_entries()}
    assert HostKeys().lookup(instance_id)

    # what the agent does at a deadline: terminate through the public API
    lambda_sim.api("POST", "/instance-operations/terminate", {"instance_ids": [instance_id]})
    soong(soong_env, "status")

    assert tokens.read_token(instance_id) is None
    assert instance_id not in {e.instance_id for e in hostentries.read_entries()}
    assert not HostKeys().lookup(instance_id)
    end = time.monotonic() + 20
    while tunnels.read_state(tunnels.state_path(instance_id)) is not None:
        if time.monotonic() > end:
            os.kill(pid, signal.SIGKILL)
            raise AssertionError("the tunnel of the ended instance is still there")
        time.sleep(0.1)
    assert process_ended(pid)
