"""``soong tunnel`` as a user runs it, against the real test sshd: the tunnel process
outlives the command, carries bytes both ways, reconnects, and stops cleanly."""

from __future__ import annotations

import json
import os
import signal
import socket
import time
from typing import Any

import pytest

from soong_core.errors import UsageError
from soong_core.testing import CliResult, SoongEnv, run_soong
from soong_plugins.fabric_tunnel import tunnels
from soong_plugins.fabric_tunnel.testing import EchoServer, SshServer, echo_through, process_ended

pytestmark = pytest.mark.slow


def soong(env: SoongEnv, *args: str) -> CliResult:
    return run_soong(*args, env=env, timeout=120)


def status(env: SoongEnv) -> list[dict[str, Any]]:
    done = soong(env, "tunnel", "status", "--json")
    assert done.exit_code == 0, done.stderr
    found: list[dict[str, Any]] = json.loads(done.stdout)
    return found


def wait_for(check: Any, limit: float = 20.0) -> Any:
    end = time.monotonic() + limit
    while time.monotonic() < end:
        found = check()
        if found:
            return found
        time.sleep(0.1)
    raise AssertionError("not within the limit")


@pytest.fixture
def tunnel(instance: str, echo_service: EchoServer, soong_env: SoongEnv) -> Any:
    """A started tunnel forwarding a free local port to the echo service."""
    from soong_core.testing import free_port

    local = free_port()
    started = soong(soong_env, "tunnel", "start", instance, "--port",
                    f"{local}:{echo_service.port}")
    assert started.exit_code == 0, started.stderr
    [state] = status(soong_env)
    yield local, state, started
    if state["pid"] and not process_ended(state["pid"]):
        os.kill(state["pid"], signal.SIGKILL)


def test_bytes_flow_both_ways_and_status_reports_the_forwards(
        tunnel: Any, instance: str, soong_env: SoongEnv, echo_service: EchoServer) -> None:
    local, state, started = tunnel
    assert f"tunnel to {instance} is up (pid {state['pid']})" in started.stdout
    assert f"127.0.0.1:{local} -> 127.0.0.1:{echo_service.port} on the instance" \
        in started.stdout
    payload = os.urandom(3 * 2**20)
    assert echo_through(local, payload) == payload  # the command has long returned
    assert state["alive"] and state["state"] == "up" and state["reconnects"] == 0
    by_role = {f["role"]: f for f in state["forwards"]}
    assert by_role["flag"]["local"] == local and by_role["flag"]["listening"]
    agent = by_role["agent"]  # the agent's port, to a free local port
    assert agent["remote"] == 8765 and agent["local"] not in (local, 8765)
    assert agent["listening"]
    assert state["last_error"] is None  # status looked without connecting to the ports
    table = soong(soong_env, "tunnel", "status")
    assert f"127.0.0.1:{local} -> {echo_service.port}" in table.stdout
    assert f"pid {state['pid']}" in table.stdout and "trainer" in table.stdout


def test_a_dropped_connection_is_re_established(tunnel: Any, sshd: SshServer,
                                                soong_env: SoongEnv) -> None:
    local, state, _ = tunnel
    sshd.stop(drop_sessions=True)  # the network drops, and the first attempts fail...
    wait_for(lambda: status(soong_env)[0]["state"] == "reconnecting")
    refused = echo_through(local, b"while down")  # the port listens, the connection ends
    assert refused == b""
    sshd.start()  # ...and it comes back, with the same host key
    back = wait_for(lambda: [s for s in status(soong_env) if s["reconnects"] == 1
                             and s["state"] == "up"], limit=10)
    assert back[0]["pid"] == state["pid"]  # the same process, its ports kept
    assert echo_through(local, b"after the drop") == b"after the drop"


def test_stop_leaves_no_process_and_no_listening_port(tunnel: Any, soong_env: SoongEnv,
                                                      instance: str) -> None:
    local, state, _ = tunnel
    agent = next(f["local"] for f in state["forwards"] if f["role"] == "agent")
    stopped = soong(soong_env, "tunnel", "stop", "trainer")  # by the instance's name
    assert stopped.exit_code == 0, stopped.stderr
    assert f"stopped the tunnel to {instance} (pid {state['pid']})" in stopped.stdout
    assert wait_for(lambda: process_ended(state["pid"]), limit=5)
    assert not tunnels.listening(local) and not tunnels.listening(agent)
    assert not tunnels.state_path(instance).exists()
    assert status(soong_env) == []
    again = soong(soong_env, "tunnel", "stop")
    assert (again.exit_code, again.stdout) == (0, "no tunnels: nothing to stop\n")


def test_stopping_the_instance_stops_its_tunnel(tunnel: Any, soong_env: SoongEnv,
                                               instance: str) -> None:
    local, state, _ = tunnel
    stopped = soong(soong_env, "stop", instance, "-y", "--no-wait")
    assert stopped.exit_code == 0, stopped.stderr
    assert wait_for(lambda: process_ended(state["pid"]), limit=5)
    assert not tunnels.listening(local) and status(soong_env) == []


def test_a_killed_tunnel_process_is_reported_dead_and_cleaned(
        tunnel: Any, soong_env: SoongEnv) -> None:
    _, state, _ = tunnel
    os.kill(state["pid"], signal.SIGKILL)
    wait_for(lambda: process_ended(state["pid"]), limit=5)
    table = soong(soong_env, "tunnel", "status")
    assert "dead (cleaned)" in table.stdout
    assert status(soong_env) == []  # cleaned: reported once


def test_a_busy_port_is_refused_naming_its_holder(instance: str, soong_env: SoongEnv,
                                                  echo_service: EchoServer) -> None:
    holder = socket.socket()
    holder.bind(("127.0.0.1", 0))
    holder.listen(1)
    port = holder.getsockname()[1]
    try:
        done = soong(soong_env, "tunnel", "start", instance, "--port",
                     f"{port}:{echo_service.port}")
    finally:
        holder.close()
    assert done.exit_code == 1
    lines = done.stderr.splitlines()
    assert lines[0] == f"error: local port {port} is in use by pid {os.getpid()} " \
        f"({open('/proc/self/comm').read().strip()})", done.stderr
    assert "--port" in lines[1] and "Traceback" not in done.stderr
    assert status(soong_env) == [] and not tunnels.state_path(instance).exists()


def test_a_second_start_is_refused_while_one_runs(tunnel: Any, instance: str,
                                                  soong_env: SoongEnv) -> None:
    again = soong(soong_env, "tunnel", "start", instance, "--port", "1:1")
    assert again.exit_code == 1 and "is already running" in again.stderr


@pytest.mark.parametrize("text", ["", "80:", ":80", "0:80", "80:70000", "a:b", "1:2:3"])
def test_bad_forwards_are_one_line(text: str) -> None:
    with pytest.raises(UsageError, match="a port forward is LOCAL:REMOTE"):
        tunnels.parse_forward(text)


def test_forwards_parse() -> None:
    assert tunnels.parse_forward("8000:9000").local_port == 8000
    assert tunnels.parse_forward("8888").remote_port == 8888


def _recorded(instance_id: str, account: str) -> None:
    from soong_core.files import write_private

    write_private(tunnels.state_path(instance_id), json.dumps(
        {"pid": 2**22 + 1, "instance_id": instance_id, "account": account, "forwards": []}))


def test_tunnels_of_ended_instances_are_stopped_by_what_the_core_sees(
        soong_env: SoongEnv) -> None:
    from soong_core.models import Instance, InstanceState

    for instance_id, account in (("ends", "acct"), ("absent", "acct"), ("other", "second"),
                                 ("lives", "acct")):
        _recorded(instance_id, account)
    seen = [Instance("ends", InstanceState.TERMINATED), Instance("lives", InstanceState.ACTIVE)]
    stopped = tunnels.stop_ended(seen, complete=True, account="acct")
    assert sorted(stopped) == ["absent", "ends"]
    assert sorted(s.instance_id for s in tunnels.states()) == ["lives", "other"]
    # a look at one instance concludes nothing about the others
    assert tunnels.stop_ended([], complete=False, account="acct") == []


def test_tunnel_ports_in_the_config_are_validated(soong_env: SoongEnv) -> None:
    from soong_core import Soong
    from soong_core.errors import SoongError

    with pytest.raises(SoongError, match="tunnel.ports"):
        Soong({"tunnel": {"ports": ["8000:8000", "lots"]}})
    config = Soong({"tunnel": {"ports": ["8000:8000"]}}).config
    assert config["tunnel"]["reconnect_max_seconds"] == 30


def test_the_fabric_backend_opens_lists_and_closes(sshd: SshServer, soong_env: SoongEnv,
                                                   echo_service: EchoServer) -> None:
    """What a program embedding the core gets from the registry."""
    from soong_core import Soong
    from soong_core.models import Instance, InstanceState, PortForward
    from soong_core.testing import free_port

    soong = Soong({"ssh": {"user": "root", "key_path": str(sshd.client_key)}})
    backend = soong.plugins.tunnel_backends().create("fabric", soong.config)
    box = Instance("embed-1", InstanceState.ACTIVE, name="box", ip=sshd.host,
                   extra={"ssh_port": sshd.port})
    local = free_port()
    opened = backend.open(box, [PortForward(local, echo_service.port)])  # trusts on first use
    try:
        assert opened.pid and PortForward(local, echo_service.port) in opened.forwards
        assert echo_through(local, b"embedded") == b"embedded"
        assert [t.instance_id for t in backend.list()] == ["embed-1"]
    finally:
        backend.close(opened)
    assert backend.list() == [] and not tunnels.listening(local)
