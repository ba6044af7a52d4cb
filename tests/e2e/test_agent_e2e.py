"""The laptop may close right after the launch: every instance stops by itself.

Real processes only: ``soong sim up --speed 600`` (ten simulated minutes per wall
second), then ``soong start -y --no-wait`` and no soong process at all until the check.
The simulator runs each launch's user_data (the lease agent's installer, and the user's
own script after it) in a sandbox root and supervises the agent it installed; the
agents terminate their instances through the simulator's public API with their own
key, as on a real machine. The test only watches the simulator's API.
"""

from __future__ import annotations

import json
import time
import urllib.request
from pathlib import Path
from typing import Any

import pytest

from soong_core.testing import CliResult, SoongEnv, run_soong

pytestmark = pytest.mark.slow

SPEED = 600
LIMIT_S = 90.0
"""Wall seconds the test waits for an instance to end (a bound: it ends in seconds)."""


def soong(env: SoongEnv, *args: str) -> CliResult:
    done = run_soong(*args, env=env, timeout=120)
    assert done.exit_code == 0, f"soong {' '.join(args)}: {done.stderr}"
    return done


class Sim:
    def __init__(self, document: dict[str, Any]) -> None:
        self.api_url = document["api_url"].rstrip("/")
        self.url = document["url"].rstrip("/")
        self.key = document["api_key"]
        self.state_dir = Path(document["state_dir"])

    def get(self, path: str, *, control: bool = False) -> Any:
        base = self.url + "/_sim" if control else self.api_url
        request = urllib.request.Request(base + path,
                                         headers={"Authorization": f"Bearer {self.key}"})
        with urllib.request.urlopen(request, timeout=10) as answer:
            return json.loads(answer.read())["data"]

    def post(self, path: str, body: Any) -> Any:
        request = urllib.request.Request(
            self.url + "/_sim" + path, data=json.dumps(body).encode(), method="POST",
            headers={"Authorization": f"Bearer {self.key}", "Content-Type": "application/json"})
        with urllib.request.urlopen(request, timeout=10) as answer:
            return json.loads(answer.read())["data"]

    def status(self, instance_id: str) -> str:
        """Its status; ``gone`` once the API no longer lists it (404 after it ended)."""
        import urllib.error

        try:
            return str(self.get(f"/instances/{instance_id}")["status"])
        except urllib.error.HTTPError as error:
            if error.code == 404:
                return "gone"
            raise

    def wait(self, what: str, check: Any) -> Any:
        end = time.monotonic() + LIMIT_S
        while time.monotonic() < end:
            found = check()
            if found:
                return found
            time.sleep(0.2)
        raise AssertionError(f"gave up after {LIMIT_S:g} s waiting for {what}")


@pytest.fixture
def sim(soong_env: SoongEnv) -> Any:
    up = soong(soong_env, "sim", "up", "--json", "--speed", str(SPEED), "--no-rate-limit",
               "--boot-seconds", "60")
    try:
        key = soong_env.home / ".ssh" / "id_ed25519"
        soong(soong_env, "--sim", "configure", "-n", "--key-path", str(key), "--gpu",
              "gpu_1x_a10", "--region", "us-east-1")
        yield Sim(json.loads(up.stdout))
    finally:
        run_soong("sim", "down", env=soong_env, timeout=60)


def launch(env: SoongEnv, *args: str) -> str:
    return soong(env, "--sim", "-q", "start", "-y", "--no-wait", *args).stdout.strip()


def test_instances_stop_by_themselves_with_no_soong_process_running(
        sim: Sim, soong_env: SoongEnv, tmp_path: Path) -> None:
    mine = tmp_path / "mine.sh"
    mine.write_text('#!/bin/bash\nset -eu\necho "user part ran" > "${SOONG_ROOT:-}/user-part.txt"\n')
    soong(soong_env, "config", "set", "defaults.idle_timeout_minutes", "1")
    soong(soong_env, "config", "set", "defaults.idle_grace_minutes", "0")
    idle = launch(soong_env, "--hours", "8", "--name", "idle")
    soong(soong_env, "config", "set", "defaults.idle_timeout_minutes", "600")
    at_lease = launch(soong_env, "--hours", "2", "--name", "at-lease",
                      "--user-data", str(mine))
    killed = launch(soong_env, "--hours", "4", "--name", "killed")
    extended = launch(soong_env, "--hours", "1", "--name", "extended")
    sim.wait("the agent of the extended one", lambda: _alive(sim, extended))
    soong(soong_env, "--sim", "extend", "1", extended, "-y")  # through its agent: 2 h now
    soong(soong_env, "config", "set", "defaults.lease_hours", "2")
    soong(soong_env, "config", "set", "defaults.hard_timeout_hours", "3")
    to_max = launch(soong_env, "--hours", "2", "--name", "to-max")
    sim.wait("the agent of the one taken to its hard limit", lambda: _alive(sim, to_max))
    past = run_soong("--sim", "extend", "5", to_max, "-y", env=soong_env, timeout=120)
    assert past.exit_code == 1 and "would pass its hard limit" in past.stderr
    assert "at most 59m more" in past.stderr or "at most 1h more" in past.stderr
    soong(soong_env, "--sim", "extend", "5", to_max, "-y", "--to-max")
    # status asks its agent: idle since its launch (its 10 h idle timeout is far off),
    # and the lease now ends at the hard limit
    shown = json.loads(soong(soong_env, "--sim", "status", "--json").stdout)
    [maxed_view] = [i for i in shown["instances"] if i["id"] == to_max]
    agent_view = maxed_view["details"]["lease_agent"]
    assert agent_view["state"] == "answered" and agent_view["idle_timeout_s"] == 600 * 60
    assert maxed_view["idle_s"] is not None and maxed_view["idle_s"] >= 60
    assert maxed_view["lease_deadline"] == maxed_view["hard_deadline"]
    # from here on, no soong process until the check: only the simulator's API is watched
    agent = sim.wait("the agent of the killed one", lambda: _alive(sim, killed))
    sim.post(f"/instances/{killed}/fault", {"fault": "agent_kill"})
    restarted = sim.wait("its restart", lambda: _restarted(sim, killed))
    assert restarted["pid"] != agent["pid"]
    for instance_id in (idle, at_lease, killed, extended, to_max):
        sim.wait(f"{instance_id} to end", lambda: sim.status(instance_id) in
                 ("terminating", "terminated", "gone"))
    root = sim.state_dir / "agents" / at_lease / "root"  # the sandbox stays after the end
    assert (root / "user-part.txt").read_text() == "user part ran\n"  # merged, not dropped
    # the idle one stopped for idleness, long before its 8 h lease (its agent's own record)
    idle_root = sim.state_dir / "agents" / idle / "root"
    state = json.loads((idle_root / "var/lib/soong/agent-state.json").read_text())
    assert state["terminating"]["reason"] == "idle_timeout"
    # the extended one stopped at its new deadline, an hour after the one it launched with
    extended_root = sim.state_dir / "agents" / extended / "root"
    ended = json.loads((extended_root / "var/lib/soong/agent-state.json").read_text())
    assert ended["terminating"]["reason"] == "lease_expired"
    [extension] = ended["extensions"]
    assert extension["hours"] == 1 and extension["to"] == ended["lease_deadline"]
    assert ended["lease_deadline"] == pytest.approx(extension["from"] + 3600)
    assert ended["terminating"]["at"] >= ended["lease_deadline"] > extension["from"]
    # taken to its hard limit: its lease ended there, and it stopped at that moment
    maxed = json.loads((sim.state_dir / "agents" / to_max / "root" /
                        "var/lib/soong/agent-state.json").read_text())
    hard = maxed["lease_deadline"]
    assert "hard_timeout" in maxed["terminating"]["reasons"]
    assert hard <= maxed["terminating"]["at"] < hard + 60  # within a simulated minute
    # now soong again: history infers why each ended
    stopped = json.loads(soong(soong_env, "--sim", "status", "--stopped", "--json").stdout)
    reasons = {s["id"]: s["ended"] for s in stopped["instances"]}
    assert reasons[at_lease]["reason"] == "lease_expired"
    assert reasons[killed]["reason"] == "lease_expired"  # the restarted agent kept it
    assert reasons[extended]["reason"] == "lease_expired"
    assert reasons[to_max]["reason"] == "hard_timeout"  # the hard limit, at the same moment


def _alive(sim: Sim, instance_id: str) -> Any:
    try:
        found = sim.get(f"/instances/{instance_id}/agent", control=True)
    except OSError:
        return None
    return found if found.get("alive") and found.get("pid") else None


def _restarted(sim: Sim, instance_id: str) -> Any:
    found = _alive(sim, instance_id)
    return found if found and found.get("restarts", 0) >= 1 else None
