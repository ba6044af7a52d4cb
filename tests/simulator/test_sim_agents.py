"""The simulator boots agents from user_data (issue 17): real scripts, real processes.

A hand-written user_data script installs a unit whose ExecStart is a tiny stand-in agent
(an HTTP server on the override's port that shows what it was started with); one test
boots the real zipapp and watches it terminate its instance at its lease."""

from __future__ import annotations

import json
import os
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any, Callable

import pytest

from soong_plugins.lambda_labs.simulator import agents
from soong_plugins.lambda_labs.simulator.testing import SimHarness

LIMIT_S = 60.0
"""Wall seconds a wait may take before the test fails (a bound: each wait ends as soon
as its condition holds)."""

STANDIN = r'''
import json, os, sys
from http.server import BaseHTTPRequestHandler, HTTPServer

root = os.environ["SOONG_ROOT"]
with open(os.path.join(root, "etc/soong/agent.override.json")) as handle:
    override = json.load(handle)


class Handler(BaseHTTPRequestHandler):
    def do_GET(self):
        body = json.dumps({"pid": os.getpid(), "override": override,
                           "argv": sys.argv[1:]}).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args):
        pass


HTTPServer(("127.0.0.1", override["api"]["port"]), Handler).serve_forever()
'''

INSTALL = """#!/bin/bash
set -euo pipefail
umask 077
ROOT="${SOONG_ROOT:-}"
mkdir -p "$ROOT/opt/soong" "$ROOT/etc/systemd/system"
cat > "$ROOT/opt/soong/standin.py" <<'SOONG_EOF'
""" + STANDIN + """SOONG_EOF
cat > "$ROOT/etc/systemd/system/soong-agent.service" <<SOONG_EOF
[Unit]
Description=stand-in agent
[Service]
Environment=SOONG_ROOT=$ROOT
ExecStart=/usr/bin/python3 -I $ROOT/opt/soong/standin.py --config $ROOT/etc/soong/agent.json
Restart=always
RestartSec=0.2
[Install]
WantedBy=multi-user.target
SOONG_EOF
echo 00 >> "$ROOT/order"
systemctl daemon-reload
systemctl enable --now soong-agent.service
"""


def mime(*parts: tuple[str, str, str]) -> str:
    """A multipart/mixed user_data of ``(content type, filename, text)`` parts."""
    boundary = "==soong-test-boundary=="
    lines = ["Content-Type: multipart/mixed; boundary=\"%s\"" % boundary, "MIME-Version: 1.0",
             ""]
    for kind, name, text in parts:
        lines += [f"--{boundary}", f'Content-Type: {kind}; charset="utf-8"',
                  "MIME-Version: 1.0", "Content-Transfer-Encoding: 7bit",
                  f'Content-Disposition: attachment; filename="{name}"', "", text]
    lines.append(f"--{boundary}--")
    return "\n".join(lines) + "\n"


def wait_for(condition: Callable[[], Any], what: str) -> Any:
    end = time.monotonic() + LIMIT_S
    while True:
        value = condition()
        if value:
            return value
        if time.monotonic() > end:
            raise AssertionError(f"gave up after {LIMIT_S:g} s waiting for {what}")
        time.sleep(0.05)


def agent_of(sim: SimHarness, instance_id: str) -> Any:
    return sim.client.request("GET", f"/_sim/instances/{instance_id}/agent")


def wait_alive(sim: SimHarness, instance_id: str, restarts: int = 0) -> dict[str, Any]:
    def check() -> Any:
        reply = agent_of(sim, instance_id)
        if reply.status != 200:
            return None
        info = reply.data
        if info["alive"] and info["restarts"] >= restarts and ask(info["port"]):
            return info
        return None
    info: dict[str, Any] = wait_for(check, f"the agent of {instance_id} to answer")
    return info


def ask(port: int) -> dict[str, Any] | None:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/", timeout=5) as answer:
            data: dict[str, Any] = json.loads(answer.read())
            return data
    except OSError:
        return None


def gone(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return True
    return Path(f"/proc/{pid}/status").read_text().find("State:\tZ") >= 0


def fault(sim: SimHarness, instance_id: str, name: str) -> Any:
    return sim.client.request("POST", f"/_sim/instances/{instance_id}/fault", {"fault": name})


def test_a_plain_script_boots_its_agent(sim: SimHarness) -> None:
    instance_id = sim.launch(user_data=INSTALL)
    info = wait_alive(sim, instance_id)
    root = Path(info["root"])
    assert root == sim.simulator.store.directory / "agents" / instance_id / "root"
    assert info["restarts"] == 0 and "error" not in info and info["pid"] > 0
    extras = sim.control("GET", f"/instances/{instance_id}")
    assert extras["agent_url"] == f"http://127.0.0.1:{info['port']}"
    answer = ask(info["port"])
    assert answer is not None and answer["pid"] == info["pid"]
    override = answer["override"]
    assert override["api"] == {"port": info["port"]}
    # the API as this instance reaches it: counted apart by the rate limits
    assert override["provider"] == {"api_url": sim.simulator.api_url_from(instance_id)}
    assert override["provider"]["api_url"] == \
        f"{sim.url}/_from/{instance_id}/api/v1"
    assert override["clock"]["mode"] == "accelerated"
    assert override["clock"]["sim_anchor"] == pytest.approx(sim.clock.now(), abs=1)
    assert answer["argv"] == ["--config", f"{root}/etc/soong/agent.json"]
    assert (root / agents.OVERRIDE_PATH).stat().st_mode & 0o777 == 0o600
    systemctl = (root / agents.SYSTEMCTL_LOG).read_text().splitlines()
    assert systemctl == ["daemon-reload", "enable --now soong-agent.service"]
    assert "running part-001" in (root / agents.SCRIPT_LOG).read_text()
    assert (root / agents.AGENT_STDOUT).exists()


def test_mime_runs_shell_parts_in_filename_order_and_ignores_the_rest(sim: SimHarness
                                                                       ) -> None:
    user_part = '#!/bin/bash\necho 01 >> "$SOONG_ROOT/order"\n'
    ignored = '#!/bin/bash\ntouch "$SOONG_ROOT/ran-ignored"\n'
    user_data = mime(("text/x-shellscript", "01-user.sh", user_part),
                     ("text/cloud-config", "02-config.txt", "#cloud-config\n" + ignored),
                     ("text/plain", "03-notes.sh", ignored),
                     ("text/x-shellscript", "00-soong-agent.sh", INSTALL))
    instance_id = sim.launch(user_data=user_data)
    info = wait_alive(sim, instance_id)
    root = Path(info["root"])
    assert (root / "order").read_text().split() == ["00", "01"]
    assert not (root / "ran-ignored").exists()
    assert list((root / agents.SCRIPTS_DIR).iterdir()) == []  # user_data is not kept
    log = (root / agents.SCRIPT_LOG).read_text()
    assert "running 00-soong-agent.sh" in log and "running 01-user.sh" in log
    assert "error" not in info


def test_agent_kill_restarts_it_and_agent_dead_keeps_it_dead(sim: SimHarness) -> None:
    killed = sim.launch(user_data=INSTALL)
    dead = sim.launch(user_data=INSTALL)
    first = wait_alive(sim, killed)
    doomed = wait_alive(sim, dead)
    reply = fault(sim, dead, "agent_dead")
    assert reply.status == 200 and reply.data["alive"] is False
    assert reply.data["state"] == "dead"
    assert fault(sim, killed, "agent_kill").status == 200
    again = wait_alive(sim, killed, restarts=1)
    assert again["restarts"] == 1 and again["pid"] != first["pid"]
    assert again["port"] == first["port"]  # the same agent_url
    # the supervision has restarted the other one since: this one it left dead
    after = agent_of(sim, dead).data
    assert after["alive"] is False and after["restarts"] == 0 and after["state"] == "dead"
    assert gone(doomed["pid"])
    # still its address, where nothing answers now, as on a machine whose agent died
    url = sim.control("GET", f"/instances/{dead}")["agent_url"]
    assert url == f"http://127.0.0.1:{after['port']}"
    with pytest.raises(OSError):
        urllib.request.urlopen(url + "/health", timeout=2)
    refused = fault(sim, dead, "agent_kill")
    assert refused.status == 400 and "dead" in refused.body["error"]["message"]


def test_terminating_an_instance_stops_its_agent(sim: SimHarness) -> None:
    instance_id = sim.launch(user_data=INSTALL)
    info = wait_alive(sim, instance_id)
    assert sim.api("POST", "/instance-operations/terminate",
                   {"instance_ids": [instance_id]}).status == 200
    wait_for(lambda: gone(info["pid"]), "the agent to stop")
    after = wait_for(lambda: agent_of(sim, instance_id).data["state"] == "stopped"
                     and agent_of(sim, instance_id).data, "the agent to be stopped")
    assert after["alive"] is False and after["restarts"] == 0
    assert sim.control("GET", f"/instances/{instance_id}")["agent_url"] is None


def test_preemption_stops_its_agent(sim: SimHarness) -> None:
    instance_id = sim.launch(user_data=INSTALL)
    info = wait_alive(sim, instance_id)
    assert fault(sim, instance_id, "preempted").status == 200
    wait_for(lambda: gone(info["pid"]), "the agent to stop")


def test_stopping_the_simulator_stops_agents_and_a_new_one_restarts_them(
        sim_factory: Callable[..., SimHarness], tmp_path: Path) -> None:
    first = sim_factory(state_dir=tmp_path / "cloud")
    live = first.launch(user_data=INSTALL)
    ended = first.launch(user_data=INSTALL)
    before = wait_alive(first, live)
    ended_info = wait_alive(first, ended)
    first.api("POST", "/instance-operations/terminate", {"instance_ids": [ended]})
    wait_for(lambda: gone(ended_info["pid"]), "the ended instance's agent to stop")
    first.stop()
    assert gone(before["pid"])

    second = sim_factory(state_dir=tmp_path / "cloud")
    after = wait_alive(second, live)
    assert after["pid"] != before["pid"] and after["restarts"] == 0
    answer = ask(after["port"])
    assert answer is not None
    assert answer["override"]["provider"]["api_url"] == second.simulator.api_url_from(live)
    assert answer["override"]["api"]["port"] == after["port"]
    assert agent_of(second, ended).status == 404  # ended: not started again
    second.stop()
    assert gone(after["pid"])


def test_a_new_speed_restarts_agents_on_the_new_clock(
        sim_factory: Callable[..., SimHarness]) -> None:
    from soong_core.clock import AcceleratedClock

    sim = sim_factory(clock=AcceleratedClock(1.0))
    instance_id = sim.launch(user_data=INSTALL)
    before = wait_alive(sim, instance_id)
    sim.control("PATCH", "/knobs", {"speed": 50})

    def on_new_clock() -> Any:
        info = agent_of(sim, instance_id).data
        answer = ask(info["port"]) if info["alive"] else None
        return answer if answer and answer["override"]["clock"]["factor"] == 50 else None
    answer = wait_for(on_new_clock, "the agent to run on the new clock")
    assert answer["pid"] != before["pid"]
    assert answer["override"]["clock"] == sim.simulator.agent_clock()
    assert answer["override"]["api"]["port"] == before["port"]


def test_a_failing_part_is_reported(sim: SimHarness) -> None:
    instance_id = sim.launch(user_data="#!/bin/bash\necho installing\nexit 3\n")
    info = wait_for(lambda: agent_of(sim, instance_id).data.get("error")
                    and agent_of(sim, instance_id).data, "the failure to be reported")
    assert "part-001 exited with 3" in info["error"]
    assert "installed no etc/systemd/system/soong-agent.service" in info["error"]
    assert info["alive"] is False and info["pid"] is None and info["state"] == "none"
    assert "installing" in (Path(info["root"]) / agents.SCRIPT_LOG).read_text()
    assert sim.control("GET", f"/instances/{instance_id}")["agent_url"] is None


def test_a_part_that_runs_too_long_is_killed(sim: SimHarness,
                                              monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(agents, "SCRIPT_TIMEOUT_S", 0.5)
    instance_id = sim.launch(user_data="#!/bin/bash\nsleep 600\n")
    info = wait_for(lambda: agent_of(sim, instance_id).data.get("error")
                    and agent_of(sim, instance_id).data, "the timeout to be reported")
    assert "ran over 0.5 s and was killed" in info["error"]


@pytest.mark.parametrize("user_data", ["just text, no script", "#cloud-config\nruncmd: []\n"])
def test_user_data_that_is_no_script_boots_nothing(sim: SimHarness, user_data: str) -> None:
    instance_id = sim.launch(user_data=user_data)
    reply = agent_of(sim, instance_id)
    assert reply.status == 404 and "has no agent" in reply.body["error"]["message"]
    assert not (sim.simulator.store.directory / "agents" / instance_id).exists()
    assert fault(sim, instance_id, "agent_kill").status == 404
    assert agent_of(sim, "0" * 32).status == 404  # an unknown instance


def test_unit_parsing() -> None:
    unit = agents.parse_unit("[Unit]\nExecStart=/bin/false\n[Service]\n"
                             "Environment=A=1 \"B=two words\"\nEnvironment=C=3\n"
                             "ExecStart=-/usr/bin/python3 -I /x.pyz\nRestartSec=500ms\n")
    assert unit.argv == ["/usr/bin/python3", "-I", "/x.pyz"]
    assert unit.environment == {"A": "1", "B": "two words", "C": "3"}
    assert unit.restart_seconds == pytest.approx(0.5)
    assert agents.parse_unit("[Service]\nExecStart=a\nRestartSec=2\n").restart_seconds == 2
    with pytest.raises(agents.UnitError, match="no ExecStart"):
        agents.parse_unit("[Service]\nRestart=always\n")
    with pytest.raises(agents.UnitError, match="not a time span"):
        agents.parse_unit("[Service]\nExecStart=a\nRestartSec=soon!\n")


# -- the real agent ---------------------------------------------------------------------


def agent_user_data(zipapp: bytes, config: dict[str, Any]) -> str:
    """A user_data script as the issue-17 contract (C1) has it."""
    import base64

    encoded = base64.b64encode(zipapp).decode()
    lines = [encoded[i:i + 76] for i in range(0, len(encoded), 76)]
    return "\n".join([
        "#!/bin/bash", "set -euo pipefail", "umask 077", 'ROOT="${SOONG_ROOT:-}"',
        'mkdir -p "$ROOT/opt/soong" "$ROOT/etc/soong" "$ROOT/etc/systemd/system"',
        "base64 -d > \"$ROOT/opt/soong/agent.pyz\" <<'SOONG_EOF'", *lines, "SOONG_EOF",
        'chmod 0644 "$ROOT/opt/soong/agent.pyz"',
        "cat > \"$ROOT/etc/soong/agent.json\" <<'SOONG_EOF'", json.dumps(config, indent=1),
        "SOONG_EOF", 'chmod 0600 "$ROOT/etc/soong/agent.json"',
        'cat > "$ROOT/etc/systemd/system/soong-agent.service" <<SOONG_EOF',
        "[Unit]", "Description=soong lease agent", "[Service]", "Environment=SOONG_ROOT=$ROOT",
        "ExecStart=/usr/bin/python3 -I $ROOT/opt/soong/agent.pyz --config "
        "$ROOT/etc/soong/agent.json", "Restart=always", "RestartSec=2", "[Install]",
        "WantedBy=multi-user.target", "SOONG_EOF",
        "systemctl daemon-reload", "systemctl enable --now soong-agent.service", ""])


def test_the_real_agent_terminates_its_instance_at_its_lease(
        sim_factory: Callable[..., SimHarness]) -> None:
    from soong_core.clock import AcceleratedClock
    from soong_plugins.lease_agent.bundle import zipapp_bytes

    sim = sim_factory(clock=AcceleratedClock(20.0))
    now = sim.clock.now()
    launch_id = "sim-agent-test"
    config = {
        "schema_version": 1,
        "instance": {"launch_id": launch_id, "launched_at": now,
                     "lease_deadline": now + 60, "hard_deadline": now + 3600,
                     "idle_timeout_seconds": None, "warn_before_seconds": 10},
        "api": {"port": 1, "token": "t" * 32},
        "provider": {"api_url": "http://127.0.0.1:9/the-override-sets-it",
                     "api_key": sim.api_key, "launch_id": launch_id,
                     "request_timeout_seconds": 5, "backoff_max_seconds": 1,
                     "auth_retry_seconds": 1},
        "paths": {"wall": None, "systemctl": None},
    }
    zipapp, _ = zipapp_bytes()
    instance_id = sim.launch(user_data=agent_user_data(zipapp, config),
                             tags=[{"key": "soong:launch-id", "value": launch_id}])

    def ended() -> bool:
        return str(sim.instance(instance_id)["status"]) in ("terminating", "terminated")

    info = wait_for(lambda: ended() or agent_of(sim, instance_id).data.get("error"),
                    "the agent to terminate its instance")
    assert info is True, info
    root = sim.simulator.store.directory / "agents" / instance_id / "root"
    assert (root / "etc/soong/agent.json").stat().st_mode & 0o777 == 0o600
    record = sim.cloud.state.instances[instance_id]
    assert record.terminate_requested_at is not None
    assert record.terminate_requested_at >= now + 60  # at its lease, not before
    final = wait_for(lambda: not agent_of(sim, instance_id).data["alive"]
                     and agent_of(sim, instance_id).data, "the agent to be stopped")
    assert final["restarts"] == 0 and "error" not in final


def test_a_restart_asked_of_systemctl_after_the_boot_starts_the_agent_again(
        sim: SimHarness) -> None:
    instance_id = sim.launch(user_data=INSTALL)
    first = wait_alive(sim, instance_id)
    assert fault(sim, instance_id, "agent_dead").status == 200
    root = Path(first["root"])
    with open(root / agents.SYSTEMCTL_LOG, "a") as log:  # the installer, run again
        log.write("daemon-reload\nenable soong-agent.service\nrestart soong-agent.service\n")
    again = wait_alive(sim, instance_id)
    assert again["pid"] != first["pid"] and again["state"] == "running"
    assert again["port"] == first["port"] and gone(first["pid"])
    with open(root / agents.SYSTEMCTL_LOG, "a") as log:  # asked nothing of the unit
        log.write("daemon-reload\nstatus soong-agent.service\n")
    time.sleep(5 * agents.POLL_S)
    assert agent_of(sim, instance_id).data["pid"] == again["pid"]


def test_an_instances_own_requests_are_limited_apart_and_logged_with_its_id(
        sim_factory: Callable[..., SimHarness]) -> None:
    from soong_plugins.lambda_labs.simulator.requestlog import read_lines

    frozen = [0.0]
    cloud = sim_factory(rate_limit="strict", wall=lambda: frozen[0])

    def get(path: str) -> int:
        request = urllib.request.Request(cloud.url + path, headers={
            "Authorization": f"Bearer {cloud.api_key}"})
        try:
            with urllib.request.urlopen(request, timeout=5) as answer:
                return int(answer.status)
        except urllib.error.HTTPError as refused:
            return int(refused.code)

    # The laptop's one token (strict: no burst, and its clock does not move) ...
    assert [get("/api/v1/instances"), get("/api/v1/instances")] == [200, 429]
    # ... is not the instances': each has its own, on real time.
    assert get("/_from/i-one/api/v1/instances") == 200
    assert get("/_from/i-two/api/v1/instances") == 200
    assert get("/_from/i-one/api/v1/instances") == 429
    assert get("/_from/i-one/api/v1/no-such-thing") == 404  # routed as usual
    entries = [e for e in read_lines(cloud.simulator.store.request_log_path)
               if e["kind"] != "control"]
    assert [(e["path"], e.get("source"), e["status"]) for e in entries] == [
        ("/api/v1/instances", None, 200), ("/api/v1/instances", None, 429),
        ("/api/v1/instances", "i-one", 200), ("/api/v1/instances", "i-two", 200),
        ("/api/v1/instances", "i-one", 429), ("/api/v1/no-such-thing", "i-one", 404)]
