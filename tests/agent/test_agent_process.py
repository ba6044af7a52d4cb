"""The agent as a real process against a real (in-process, spec-checked) simulator.

Each test launches an instance on the simulator tagged ``soong:launch-id``, writes an
agent config whose deadlines lie a few simulated seconds ahead, on the simulator's
accelerated clock (written as ``agent.override.json``, as the simulator does), starts
``python -I -m instance_agent --config ...`` and watches the instance end.
"""

from __future__ import annotations

import json
import secrets
import signal
import socket
import threading
from pathlib import Path
from typing import Any, Callable

import pytest

from soong_core.clock import AcceleratedClock

from agent_harness import (ENDED, AgentProcess, agent_config, interpreters, launch,
                           require_component, status_of, wait_ended, wait_for)

pytestmark = pytest.mark.slow

FACTOR = 20.0
"""Simulated seconds per wall second: a 100 s simulated lease lasts 5 wall seconds."""


@pytest.fixture(autouse=True)
def _components() -> None:
    for module in ("instance_agent.daemon", "instance_agent.server",
                   "instance_agent.terminate", "instance_agent.__main__"):
        require_component(module)


@pytest.fixture
def cloud(sim_factory: Callable[..., Any]) -> Any:
    return sim_factory(clock=AcceleratedClock(FACTOR), boot_seconds=0, terminate_seconds=5)


def extended_once(cloud: Any, agent_process: Any, root: Path, *, lease_in: float,
                  hard_in: float, hours: float
                  ) -> tuple[str, dict[str, Any], dict[str, Any], AgentProcess, Any]:
    """An agent in ``root`` for a fresh instance, its lease extended once by ``hours``:
    (instance id, config, override, the agent, the extension's answer)."""
    instance_id, launch_id = launch(cloud)
    config, override = agent_config(cloud, launch_id, lease_in=lease_in, hard_in=hard_in,
                                    token=secrets.token_urlsafe(24))
    agent: AgentProcess = agent_process(config, override, root=root)
    lease = agent.status()["lease_deadline"]
    code, body = agent.request("POST", "/extend", {"hours": hours, "expected_deadline": lease})
    assert code == 200, body
    return instance_id, config, override, agent, body


@pytest.mark.parametrize("python", interpreters(), ids=lambda path: Path(path).parts[-3])
def test_lease_end_terminates_and_logs_lease_expired(cloud: Any, agent_process: Any,
                                                     python: str) -> None:
    instance_id, launch_id = launch(cloud)
    token = secrets.token_urlsafe(24)
    config, override = agent_config(cloud, launch_id, lease_in=120, hard_in=600, token=token)
    agent: AgentProcess = agent_process(config, override, python=python)

    status = agent.status()
    assert token not in json.dumps(status) and cloud.api_key not in json.dumps(status)
    assert status["next_stop"]["reason"] == "lease_expired"
    assert status["lease_deadline"] == config["instance"]["lease_deadline"]
    assert status_of(cloud, instance_id) == "active"

    assert agent.wait_exit() == 0
    assert status_of(cloud, instance_id) in ENDED
    log = agent.log_text()
    assert "lease_expired" in log
    assert token not in log + agent.output()
    assert cloud.api_key not in log + agent.output()


def test_extensions_stop_at_the_hard_deadline_and_never_double(cloud: Any,
                                                               agent_process: Any) -> None:
    instance_id, launch_id = launch(cloud)
    config, override = agent_config(cloud, launch_id, lease_in=100, hard_in=136,
                                    token=secrets.token_urlsafe(24))
    agent: AgentProcess = agent_process(config, override)
    lease = agent.status()["lease_deadline"]

    code, body = agent.request("POST", "/extend", {"hours": 0.01, "expected_deadline": lease})
    assert code == 200, body
    extended = body["lease_deadline"]
    assert extended == pytest.approx(lease + 36)
    # The same request again (a client retrying after a lost answer) must not double it.
    code, body = agent.request("POST", "/extend", {"hours": 0.01, "expected_deadline": lease})
    assert code == 409, body
    assert agent.status()["lease_deadline"] == extended
    # Past the hard deadline: refused, naming the largest extension (none left).
    code, body = agent.request("POST", "/extend",
                               {"hours": 0.01, "expected_deadline": extended})
    assert code == 409, body
    assert body["error"]["max_hours"] == 0
    assert body["error"]["code"] == "past_hard_deadline"

    assert agent.wait_exit() == 0
    assert status_of(cloud, instance_id) in ENDED
    assert "hard_timeout" in agent.log_text()


def test_sigkill_and_restart_keep_the_extended_deadline(cloud: Any, agent_process: Any,
                                                        tmp_path: Path) -> None:
    root = tmp_path / "restarted"
    instance_id, config, override, first, body = extended_once(
        cloud, agent_process, root, lease_in=120, hard_in=600, hours=0.01)
    first.kill(signal.SIGKILL)

    second: AgentProcess = agent_process(config, override, root=root)
    status = second.status()
    assert status["lease_deadline"] == body["lease_deadline"]
    assert len(status["extensions"]) == 1
    assert second.wait_exit() == 0
    assert status_of(cloud, instance_id) in ENDED
    assert "lease_expired" in second.log_text()


def test_termination_goes_through_503s_and_429s(cloud: Any, agent_process: Any) -> None:
    instance_id, launch_id = launch(cloud)
    config, override = agent_config(cloud, launch_id, lease_in=40, hard_in=600,
                                    token=secrets.token_urlsafe(24))
    # Every API call fails from before the agent starts: it cannot even find its
    # instance, and the lease ends (2 wall seconds) while the agent retries.
    cloud.control("PATCH", "/knobs", {"error_rate": 1.0, "error_status": 503})
    agent: AgentProcess = agent_process(config, override)
    wait_for(lambda: agent.log_text().count(" 503 ") >= 2 and "lease_expired" in agent.log_text(),
             "the lease to end and two refused attempts in the log")
    # Then the edge's rate limit, strict (1/s, no burst), while another client of the
    # account spends every slot: the agent meets 429s (plain-text body) and goes on.
    cloud.control("PATCH", "/knobs", {"error_rate": 0.0, "rate_limit": True,
                                      "rate_limit_mode": "strict"})
    stop = threading.Event()

    def other_client() -> None:
        while not stop.is_set() and " 429" not in agent.log_text():
            cloud.api("GET", "/instance-types")
            stop.wait(0.05)

    hammer = threading.Thread(target=other_client, daemon=True)
    hammer.start()
    try:
        assert agent.wait_exit() == 0
    finally:
        stop.set()
        hammer.join()
    cloud.control("PATCH", "/knobs", {"rate_limit": False})
    assert status_of(cloud, instance_id) in ENDED
    log = agent.log_text()
    assert "lease_expired" in log
    assert " 429" in log
    statuses = [entry.get("status") for entry in
                cloud.control("GET", "/requests?limit=1000")["entries"]
                if entry.get("kind") == "api"]
    assert 503 in statuses



def raw_exchange(port: int, data: bytes, *, read: bool = True) -> bytes:
    """Send ``data`` on a fresh connection; what came back (until close or timeout)."""
    with socket.create_connection(("127.0.0.1", port), timeout=10) as connection:
        try:
            connection.sendall(data)
        except OSError:
            return b""
        if not read:
            return b""
        answer = b""
        try:
            while chunk := connection.recv(65536):
                answer += chunk
        except OSError:
            pass
        return answer


def test_malformed_slow_and_oversized_requests_leave_it_alive_and_enforcing(
        cloud: Any, agent_process: Any) -> None:
    instance_id, launch_id = launch(cloud)
    token = secrets.token_urlsafe(24)
    config, override = agent_config(cloud, launch_id, lease_in=160, hard_in=600, token=token)
    config["api"]["request_timeout_seconds"] = 2
    agent: AgentProcess = agent_process(config, override)
    auth = f"Authorization: Bearer {token}\r\n".encode()
    # Half-open clients: connected, silent. They hold a thread each, nobody else waits.
    silent = [socket.create_connection(("127.0.0.1", agent.port)) for _ in range(5)]
    try:
        # A slow client: half a request line, then nothing.
        slow = socket.create_connection(("127.0.0.1", agent.port))
        slow.sendall(b"GET /sta")
        cases = [
            b"\x00\xff garbage\r\n\r\n",
            b"GET /status HTTP/1.1\r\n" + b"X: " + b"a" * 70000 + b"\r\n\r\n",
            b"POST /extend HTTP/1.1\r\n" + auth + b"Content-Length: 1000000000\r\n\r\n",
            b"POST /extend HTTP/1.1\r\n" + auth + b"Content-Length: 9\r\n\r\n{\"hours\":",
            b"POST /extend HTTP/1.1\r\n" + auth + b"Content-Length: 40\r\n\r\n"
            + b'{"hours": NaN, "expected_deadline": 1}'.ljust(40),
            b"POST /extend HTTP/1.1\r\n" + auth + b"Content-Length: 41\r\n\r\n"
            + b'{"hours": true, "expected_deadline": 1} '.ljust(41),
            b"POST /extend HTTP/1.1\r\n" + auth + b"Transfer-Encoding: chunked\r\n\r\n"
            + b"5\r\nhello\r\n0\r\n\r\n",
            b"BREW /status HTTP/1.1\r\n" + auth + b"\r\n",
            b"GET /../../etc/passwd HTTP/1.1\r\n" + auth + b"\r\n",
            b"GET /status HTTP/1.1\r\nAuthorization: Bearer wrong\r\n\r\n",
            b"GET /status HTTP/1.1\r\nAuthorization: Basic " + token.encode() + b"\r\n\r\n",
        ]
        for case in cases:
            answer = raw_exchange(agent.port, case)
            if answer.startswith(b"{"):  # a request line without a version: HTTP/0.9
                assert b'"error"' in answer, (case[:60], answer)
            elif answer:
                head = answer.split(b"\r\n", 1)[0]
                assert head.split()[1][:1] in (b"4", b"5"), (case[:60], head)
                assert token.encode() not in answer
            assert agent.request("GET", "/health")[0] == 200
        assert raw_exchange(agent.port, cases[2]).split()[1] == b"413"
        slow.close()
    finally:
        for connection in silent:
            connection.close()
    status = agent.status()
    assert status["lease_deadline"] == config["instance"]["lease_deadline"]
    assert status["extensions"] == []
    # Still enforcing: the lease ends and the instance with it.
    assert agent.wait_exit() == 0
    assert status_of(cloud, instance_id) in ENDED
    assert "lease_expired" in agent.log_text()
    assert token not in agent.output()


def test_sigterm_saves_the_state_and_exits_keeping_the_instance(cloud: Any, agent_process: Any,
                                                                 tmp_path: Path) -> None:
    root = tmp_path / "stopped"
    instance_id, config, override, agent, body = extended_once(
        cloud, agent_process, root, lease_in=3000, hard_in=6000, hours=0.1)
    agent.kill(signal.SIGTERM)
    assert agent.process is not None and agent.process.returncode == 0
    assert status_of(cloud, instance_id) == "active"
    # A service restart (or a reboot) comes back with the extended deadline.
    again: AgentProcess = agent_process(config, override, root=root)
    assert again.status()["lease_deadline"] == body["lease_deadline"]


def test_sigterm_during_poweroff_terminates_the_instance_first(cloud: Any, agent_process: Any,
                                                                tmp_path: Path) -> None:
    instance_id, launch_id = launch(cloud)
    config, override = agent_config(cloud, launch_id, lease_in=3000, hard_in=6000,
                                    token=secrets.token_urlsafe(24))
    # A systemctl whose job list has a poweroff queued, at /usr/bin/systemctl under the
    # agent's $SOONG_ROOT (every path in its config is).
    agent_root = tmp_path / "poweroff"
    systemctl = agent_root / "usr" / "bin" / "systemctl"
    systemctl.parent.mkdir(parents=True)
    systemctl.write_text("#!/bin/sh\n"
                         "echo '412 poweroff.target start waiting'\n"
                         "echo '413 systemd-poweroff.service start waiting'\n")
    systemctl.chmod(0o755)
    config["paths"]["systemctl"] = "/usr/bin/systemctl"
    agent: AgentProcess = agent_process(config, override, root=agent_root)
    assert agent.process is not None
    agent.process.send_signal(signal.SIGTERM)
    assert agent.wait_exit() == 0
    assert status_of(cloud, instance_id) in ENDED
    log = agent.log_text()
    assert "manual" in log and "powering off" in log


class SimUp:
    """``soong sim up`` as a separate process, seen the way the tests above see an
    in-process simulator (``clock``, ``api_url``, ``api_key``, ``api``, ``launch``)."""

    def __init__(self, env: Any, state_dir: Path) -> None:
        from soong_core.testing import run_soong

        self._run, self._env, self.state_dir = run_soong, env, state_dir
        started = run_soong("sim", "up", "--json", "--speed", str(FACTOR), "--boot-seconds",
                            "0", "--terminate-seconds", "5", "--state-dir", str(state_dir),
                            env=env, timeout=60)
        assert started.exit_code == 0, started.stderr
        up = json.loads(started.stdout)
        self.api_url, self.api_key = up["api_url"], up["api_key"]
        from soong_core.clock import clock_from_config
        from soong_plugins.lambda_labs.simulator.client import SimClient
        from soong_plugins.lambda_labs.simulator.testing import DEFAULT_PUBLIC_KEY

        self.client = SimClient(up["url"], self.api_key)
        self.clock = clock_from_config(self.client.control("GET", "/clock")["config"])
        self.client.api("POST", "/ssh-keys", {"name": "k", "public_key": DEFAULT_PUBLIC_KEY})

    def api(self, method: str, path: str, body: Any = None) -> Any:
        return self.client.api(method, path, body)

    def launch(self, tags: list[dict[str, str]]) -> str:
        reply = self.api("POST", "/instance-operations/launch",
                         {"region_name": "us-east-1", "instance_type_name": "gpu_1x_a10",
                          "ssh_key_names": ["k"], "tags": tags})
        assert reply.status == 200, reply.body
        return str(reply.data["instance_ids"][0])

    def down(self) -> None:
        self._run("sim", "down", "--state-dir", str(self.state_dir), env=self._env, timeout=60)


def test_against_soong_sim_up_the_lease_ends_in_a_terminate(soong_env: Any, tmp_path: Path,
                                                            agent_process: Any) -> None:
    """The same promise against the simulator a user starts, in its own process, with
    its default (edge) rate limits: the agent shares its accelerated clock through the
    anchors alone."""
    cloud = SimUp(soong_env, tmp_path / "sim-state")
    try:
        instance_id, launch_id = launch(cloud)
        config, override = agent_config(cloud, launch_id, lease_in=120, hard_in=600,
                                         token=secrets.token_urlsafe(24))
        agent: AgentProcess = agent_process(config, override)
        assert agent.status()["next_stop"]["reason"] == "lease_expired"
        assert agent.wait_exit() == 0
        assert wait_ended(cloud, instance_id) in ENDED + ("gone",)
        assert "lease_expired" in agent.log_text()
    finally:
        cloud.down()
