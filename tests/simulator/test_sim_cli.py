"""`soong sim up/status/down`: the background simulator as a user meets it."""

from __future__ import annotations

import base64
import json
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any, Callable

import pytest

from soong_core.config import profile_path
from soong_core.testing import CliResult, SoongEnv, run_soong
from soong_plugins.lambda_labs.simulator.store import StateStore, default_state_dir
from soong_plugins.lambda_labs.simulator.testing import DEFAULT_PUBLIC_KEY, ConformanceChecker

pytestmark = pytest.mark.slow


def soong(*args: str, env: SoongEnv, timeout: float = 60) -> CliResult:
    """The real `soong` in a fresh interpreter, with the test's HOME and XDG folders."""
    return run_soong(*args, env=env, timeout=timeout)


def call(url: str, key: str, method: str = "GET", body: Any = None, basic: bool = False
         ) -> tuple[int, Any]:
    """What `curl` would do: one request, JSON in and out."""
    request = urllib.request.Request(url, method=method,
                                     data=None if body is None else json.dumps(body).encode())
    if basic:  # curl -u KEY:
        request.add_header("Authorization",
                           "Basic " + base64.b64encode(f"{key}:".encode()).decode())
    else:
        request.add_header("Authorization", f"Bearer {key}")
    try:
        with urllib.request.urlopen(request, timeout=10) as response:
            return response.status, json.loads(response.read())
    except urllib.error.HTTPError as error:
        with error:
            return error.code, json.loads(error.read())


def up(env: SoongEnv, *flags: str) -> dict[str, Any]:
    result = soong("sim", "up", "--json", *flags, env=env)
    assert result.exit_code == 0, result.stderr
    return json.loads(result.stdout)


def test_up_then_curl_the_whole_lifecycle_then_restart_keeps_the_cloud(
        soong_env: SoongEnv, tmp_path: Path) -> None:
    capture = tmp_path / "bodies.jsonl"
    try:
        sim = up(soong_env, "--speed", "600", "--boot-seconds", "60", "--no-rate-limit",
                 "--capture-bodies", str(capture))
        api, key = sim["api_url"], sim["api_key"]
        assert api.startswith("http://127.0.0.1:") and api.endswith("/api/v1")
        assert sim["state_dir"] == str(default_state_dir())
        profile = profile_path("sim").read_text()
        assert api in profile and key in profile and "factor: 600" in profile

        status, types = call(f"{api}/instance-types", key, basic=True)
        assert status == 200 and "gpu_1x_a10" in types["data"]
        status, added = call(f"{api}/ssh-keys", key, "POST",
                             {"name": "laptop", "public_key": DEFAULT_PUBLIC_KEY})
        assert status == 200 and added["data"]["name"] == "laptop"
        status, launched = call(f"{api}/instance-operations/launch", key, "POST",
                                {"region_name": "us-west-1", "instance_type_name": "gpu_1x_a10",
                                 "ssh_key_names": ["laptop"], "name": "curl-box"})
        assert status == 200
        instance_id = launched["data"]["instance_ids"][0]
        deadline = time.monotonic() + 10  # 60 simulated seconds are 0.1 wall s at 600x
        while True:
            instance = call(f"{api}/instances/{instance_id}", key)[1]["data"]
            if instance["status"] == "active" or time.monotonic() > deadline:
                break
            time.sleep(0.05)
        assert instance["status"] == "active" and instance["ip"]
        status, ended = call(f"{api}/instance-operations/terminate", key, "POST",
                             {"instance_ids": [instance_id]})
        assert status == 200 and ended["data"]["terminated_instances"][0]["status"] == "terminating"
        bill = call(f"{sim['url']}/_sim/billing/{instance_id}", key)[1]["data"]
        assert bill["price_cents_per_hour"] == 75 and float(bill["cost_cents"]) > 0
        assert bill["billing_ended_at"] is not None

        shown = soong("sim", "status", env=soong_env)
        assert shown.exit_code == 0 and api in shown.stdout and "600x" in shown.stdout
        again = soong("sim", "up", env=soong_env)
        assert again.exit_code == 1 and again.stderr.startswith("error: a simulator is already")
        assert "Traceback" not in again.stderr

        down = soong("sim", "down", env=soong_env)
        assert down.stdout.strip() == f"simulator stopped (pid {sim['pid']})"
        assert "not running" in soong("sim", "status", env=soong_env).stdout
        with pytest.raises(urllib.error.URLError):
            call(f"{api}/instances", key)

        restarted = up(soong_env, "--capture-bodies", str(capture))
        assert restarted["api_key"] == key and restarted["pid"] != sim["pid"]
        api = restarted["api_url"]
        keys = call(f"{api}/ssh-keys", key)[1]["data"]
        assert [k["name"] for k in keys] == ["laptop"]
        billed = call(f"{restarted['url']}/_sim/billing", key)[1]["data"]["instances"]
        assert [b["id"] for b in billed] == [instance_id]
        assert call(f"{restarted['url']}/_sim/status", key)[1]["data"]["speed"] == 600
    finally:
        soong("sim", "down", env=soong_env)
    checker = ConformanceChecker()
    checker.check_capture(capture)  # everything that simulator served follows the spec
    assert checker.checked >= 8 and checker.problems == []


def test_up_takes_the_fidelity_knobs_and_status_shows_them(soong_env: SoongEnv) -> None:
    try:
        sim = up(soong_env, "--speed", "1", "--boot-seconds", "0", "--terminate-seconds", "0",
                 "--rate-limit", "strict", "--rate-limit-body", "json",
                 "--terminate-ended", "404")
        shown = soong("sim", "status", env=soong_env).stdout
        assert "rate limit: strict (1/s, no burst; 429 body: json)" in shown, shown
        assert "ended ids:  a terminate naming one answers 404" in shown, shown

        api, key = sim["api_url"], sim["api_key"]
        call(f"{api}/ssh-keys", key, "POST", {"name": "k", "public_key": DEFAULT_PUBLIC_KEY})
        time.sleep(1.1)  # strict: one request per second
        launched = call(f"{api}/instance-operations/launch", key, "POST",
                        {"region_name": "us-east-1", "instance_type_name": "gpu_1x_a10",
                         "ssh_key_names": ["k"]})[1]["data"]["instance_ids"]
        time.sleep(1.1)
        call(f"{api}/instance-operations/terminate", key, "POST", {"instance_ids": launched})
        time.sleep(1.1)  # terminated at once (--terminate-seconds 0), and still listed
        status, listed = call(f"{api}/instances/{launched[0]}", key)
        assert status == 200 and listed["data"]["status"] == "terminated"
        time.sleep(1.1)
        status, refused = call(f"{api}/instance-operations/terminate", key, "POST",
                               {"instance_ids": launched})
        assert status == 404 and refused["error"]["code"] == "global/object-does-not-exist"
    finally:
        soong("sim", "down", env=soong_env)


def test_foreground_serves_until_interrupted(soong_env: SoongEnv, tmp_path: Path) -> None:
    environ = {k: v for k, v in os.environ.items() if not k.startswith(("SOONG_", "LAMBDA_"))}
    environ.update(soong_env.environ())
    state = tmp_path / "fg"
    process = subprocess.Popen([sys.executable, "-m", "soong_core", "sim", "up", "--foreground",
                                "--state-dir", str(state)], stdout=subprocess.PIPE,
                               stderr=subprocess.PIPE, text=True, env=environ)
    try:
        assert process.stdout is not None
        first = process.stdout.readline()
        assert first.startswith("simulator running at http://127.0.0.1:")
        record = StateStore(state).read_pid_file()
        assert record is not None and record["pid"] == process.pid
        process.send_signal(signal.SIGINT)
        out, err = process.communicate(timeout=20)
    finally:
        if process.poll() is None:
            process.kill()
    assert process.returncode == 0, err
    assert out.rstrip().endswith("simulator stopped")
    assert StateStore(state).read_pid_file() is None


def test_a_stale_pid_file_is_reported_and_removed(run_cli: Callable[..., CliResult],
                                                  soong_env: SoongEnv) -> None:
    store = StateStore(default_state_dir())
    store.write_pid_file({"pid": os.getpid(), "port": 9, "url": "http://127.0.0.1:9",
                          "api_url": "http://127.0.0.1:9/api/v1", "run_id": "x"})
    shown = run_cli("sim status --json")
    assert json.loads(shown.stdout) == {"running": False, "state": "stale", "pid": os.getpid(),
                                        "state_dir": str(store.directory)}
    down = run_cli("sim down")
    assert down.stdout.strip() == f"simulator not running (removed a stale PID file naming " \
                                  f"pid {os.getpid()})"
    assert not store.pid_path.exists()  # and this test process is still alive
    assert run_cli("sim down").stdout.strip() == "simulator not running"


def test_status_when_nothing_ever_ran(run_cli: Callable[..., CliResult]) -> None:
    shown = run_cli("sim status")
    assert shown.exit_code == 0
    assert shown.stdout.splitlines()[0] == "simulator not running: run `soong sim up`"


@pytest.mark.parametrize("flags, message", [
    ("--port 70000", "--port must be an integer from 0 to 65535, got '70000'"),
    ("--port=-1", "--port must be an integer from 0 to 65535, got '-1'"),
    ("--speed 0", "--speed must be a number from 0.001 to 1e+06"),
    ("--speed fast", "--speed must be a number"),
    ("--boot-seconds=-3", "--boot-seconds must be a number of seconds >= 0, got '-3'"),
    ("--capacity gpu_1x_a10=3", "--capacity must look like TYPE:REGION=N"),
    ("--capacity gpu_1x_nope:us-east-1=3", "unknown instance type 'gpu_1x_nope'"),
    ("--capacity gpu_1x_a10:mars-1=3", "unknown region 'mars-1'"),
    ("--state-dir ''", "--state-dir must not be empty"),
    ("--terminate-ended 410", "--terminate-ended must be one of return, 404, got '410'"),
])
def test_bad_flags_are_one_line_usage_errors(run_cli: Callable[..., CliResult], flags: str,
                                             message: str) -> None:
    result = run_cli(f"sim up {flags}")
    assert result.exit_code == 2
    assert result.stderr.startswith("error: ") and message in result.stderr, result.stderr
    assert "Traceback" not in result.stderr and len(result.stderr.splitlines()) == 1


def test_a_port_in_use_is_one_line(run_cli: Callable[..., CliResult]) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        result = run_cli(f"sim up --port {port}")
    assert result.exit_code == 1
    lines = result.stderr.splitlines()
    assert lines[0] == (f"error: the simulator did not start: port {port} on 127.0.0.1 is "
                        "already in use")
    assert lines[1].strip().startswith("its log: ")
    assert not StateStore(default_state_dir()).pid_path.exists()


def test_a_hung_simulator_is_recognised_by_its_command_line_and_stopped(
        run_cli: Callable[..., CliResult]) -> None:
    # Stands in for a simulator that stopped answering: it holds the state's lock (and
    # wrote no record in it), and its command line names the module.
    store = StateStore(default_state_dir())
    store.prepare()
    hold = ("import fcntl, sys, time; f = open(sys.argv[1], 'a'); "
            "fcntl.flock(f, fcntl.LOCK_EX); print('locked', flush=True); time.sleep(60)")
    hung = subprocess.Popen([sys.executable, "-c", hold, str(store.lock_path),
                             "soong_plugins.lambda_labs.simulator"], stdout=subprocess.PIPE,
                            text=True)
    try:
        assert hung.stdout is not None and hung.stdout.readline() == "locked\n"
        store.write_pid_file({"pid": hung.pid, "port": 9, "url": "http://127.0.0.1:9",
                              "api_url": "http://127.0.0.1:9/api/v1", "run_id": "x"})
        shown = run_cli("sim status")
        assert shown.stdout.startswith(f"simulator process {hung.pid} is not answering")
        down = run_cli("sim down")
        assert down.stdout.strip() == f"simulator stopped (pid {hung.pid})"
        assert hung.wait(timeout=10) == -signal.SIGTERM
        assert not store.pid_path.exists()
    finally:
        if hung.poll() is None:
            hung.kill()
