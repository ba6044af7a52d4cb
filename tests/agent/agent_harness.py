"""Helpers of the agent's real-process tests: run ``python -I -m instance_agent`` in a
sandbox root, talk to its API, wait (boundedly) for what it does."""

from __future__ import annotations

import importlib.util
import json
import os
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any, Callable

import pytest

from soong_core.testing import free_port

REPO = Path(__file__).resolve().parents[2]
LAUNCHER = ("import runpy, sys; sys.path[:0] = %r; "
            "runpy.run_module('instance_agent', run_name='__main__', alter_sys=True)")
"""``python -I -m instance_agent`` from this checkout, whatever is installed: ``-I``
ignores PYTHONPATH, so the launcher puts the repository (and, for another interpreter,
a copy of pluggy alone) first itself."""
PYENV = Path("/root/.pyenv/versions")


def interpreters() -> list[str]:
    """This interpreter, and every pyenv one from 3.10 to 3.12 that answers ``-c pass``
    (the agent runs on the instance's python3)."""
    found = [sys.executable]
    for minor in (10, 11, 12):
        for candidate in sorted(PYENV.glob(f"3.{minor}.*/bin/python3")):
            try:
                ok = subprocess.run([str(candidate), "-c", "pass"], timeout=30).returncode == 0
            except (OSError, subprocess.SubprocessError):
                ok = False
            if ok and f"3.{minor}" != "%d.%d" % sys.version_info[:2]:
                found.append(str(candidate))
    return found


def pluggy_only(folder: Path) -> Path:
    """A folder holding a copy of pluggy and nothing else (for a bare interpreter)."""
    import shutil

    import pluggy

    target = folder / "pluggy-only"
    if not target.exists():
        shutil.copytree(Path(pluggy.__file__).parent, target / "pluggy")
    return target
ENDED = ("terminating", "terminated")
WAIT_LIMIT_S = 60.0
"""Wall seconds a real-process test waits for something before failing (a bound, not a
timed assertion: every wait ends as soon as its condition holds)."""


def require_component(module: str) -> None:
    """Skip (locally) when ``module`` of the agent is not there yet; under CI=true a
    missing component fails instead."""
    if importlib.util.find_spec(module) is None:
        reason = f"{module} is not written yet"
        if os.environ.get("CI", "").lower() == "true":
            pytest.fail(f"{reason} (CI=true: a missing component fails)")
        pytest.skip(reason)


def wait_for(condition: Callable[[], Any], what: str, limit: float = WAIT_LIMIT_S) -> Any:
    """Poll ``condition`` (every 50 ms of wall time) until it returns something truthy."""
    end = time.monotonic() + limit
    while True:
        value = condition()
        if value:
            return value
        if time.monotonic() > end:
            raise AssertionError(f"gave up after {limit:g} s waiting for {what}")
        time.sleep(0.05)


class AgentProcess:
    """One agent run as ``python -I -m instance_agent --config FILE`` in a sandbox root."""

    def __init__(self, root: Path, config: dict[str, Any],
                 override: dict[str, Any] | None = None, python: str | None = None,
                 zipapp: Path | None = None) -> None:
        self.python = python or sys.executable
        self.zipapp = zipapp
        """Run this built agent (``python -I agent.pyz``) instead of the checkout's."""
        self.root = root
        self.config_path = root / "etc" / "soong" / "agent.json"
        self.config_path.parent.mkdir(parents=True, exist_ok=True)
        self.config_path.write_text(json.dumps(config, indent=1))
        self.config_path.chmod(0o600)
        if override is not None:
            (self.config_path.parent / "agent.override.json").write_text(json.dumps(override))
        self.config = config
        self.token = config["api"]["token"]
        self.port = config["api"]["port"]
        self.stderr_path = root / "agent.stderr"
        self.process: subprocess.Popen[bytes] | None = None

    @property
    def log_path(self) -> Path:
        return self.root / "var" / "log" / "soong" / "agent.log"

    @property
    def state_path(self) -> Path:
        return self.root / "var" / "lib" / "soong" / "agent-state.json"

    def start(self) -> AgentProcess:
        env = {k: v for k, v in os.environ.items() if not k.startswith("PYTHON")}
        env["SOONG_ROOT"] = str(self.root)
        with open(self.stderr_path, "ab") as stderr:
            program = [str(self.zipapp)] if self.zipapp is not None else [
                "-c", LAUNCHER % self._path()]
            self.process = subprocess.Popen(
                [self.python, "-I", *program, "--config", str(self.config_path)],
                cwd=str(self.root), env=env, stdin=subprocess.DEVNULL,
                stdout=stderr, stderr=stderr)
        wait_for(lambda: self.alive_and_listening(), "the agent's API to answer")
        return self

    def _path(self) -> list[str]:
        if self.python == sys.executable:
            return [str(REPO)]
        return [str(REPO), str(pluggy_only(self.root.parent))]

    def alive_and_listening(self) -> bool:
        if self.process is not None and self.process.poll() is not None:
            raise AssertionError(f"the agent exited with {self.process.returncode}:\n"
                                 + self.output())
        try:
            return self.request("GET", "/health")[0] == 200
        except OSError:
            return False

    def request(self, method: str, path: str, body: Any = None, *,
                token: str | None = None) -> tuple[int, Any]:
        data = None if body is None else json.dumps(body).encode()
        headers = {"Authorization": f"Bearer {self.token if token is None else token}"}
        if data is not None:
            headers["Content-Type"] = "application/json"
        request = urllib.request.Request(f"http://127.0.0.1:{self.port}{path}", data=data,
                                         method=method, headers=headers)
        try:
            with urllib.request.urlopen(request, timeout=10) as answer:
                return answer.status, json.loads(answer.read())
        except urllib.error.HTTPError as refused:
            return refused.code, json.loads(refused.read() or b"null")

    def status(self) -> dict[str, Any]:
        code, body = self.request("GET", "/status")
        assert code == 200, body
        assert isinstance(body, dict)
        return body

    def wait_exit(self, limit: float = WAIT_LIMIT_S) -> int:
        assert self.process is not None
        try:
            return self.process.wait(timeout=limit)
        except subprocess.TimeoutExpired:
            raise AssertionError(f"the agent did not exit within {limit:g} s:\n"
                                 + self.output()) from None

    def kill(self, sig: int = signal.SIGKILL) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.send_signal(sig)
            self.process.wait(timeout=WAIT_LIMIT_S)

    def output(self) -> str:
        parts = []
        for path in (self.stderr_path, self.log_path):
            if path.exists():
                parts.append(f"--- {path.name}\n{path.read_text(errors='replace')}")
        return "\n".join(parts)

    def log_text(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""


# -- an instance on a simulator and its agent's config ---------------------------------


def launch(cloud: Any) -> tuple[str, str]:
    import uuid

    launch_id = f"agent-test-{uuid.uuid4().hex[:12]}"
    instance_id = cloud.launch(tags=[{"key": "soong:launch-id", "value": launch_id}])
    return instance_id, launch_id


def agent_config(cloud: Any, launch_id: str, *, lease_in: float, hard_in: float,
                 token: str, key: str | None = None) -> tuple[dict[str, Any], dict[str, Any]]:
    """The config ``soong start`` would write, and the override the simulator would."""
    now = cloud.clock.now()
    config = {
        "_comment": "written by the agent tests (tests/agent/agent_harness.py)",
        "schema_version": 1,
        "instance": {"launch_id": launch_id, "launched_at": now - 1,
                     "lease_deadline": now + lease_in, "hard_deadline": now + hard_in,
                     "idle_timeout_seconds": None, "warn_before_seconds": 30},
        "api": {"bind": "127.0.0.1", "port": free_port(), "token": token},
        "provider": {"api_url": cloud.api_url, "api_key": key or cloud.api_key,
                     "launch_id": launch_id, "request_timeout_seconds": 5,
                     "backoff_max_seconds": 1, "auth_retry_seconds": 1},
        "paths": {"wall": None, "systemctl": None},
    }
    override = {"_comment": "what the simulator owns", "clock": cloud.clock.to_config()}
    return config, override


def status_of(cloud: Any, instance_id: str) -> str:
    reply = cloud.api("GET", f"/instances/{instance_id}")
    if reply.status == 404:
        return "gone"
    return str(reply.data["status"])


def wait_ended(cloud: Any, instance_id: str) -> str:
    return str(wait_for(lambda: status_of(cloud, instance_id) in ENDED + ("gone",)
                        and status_of(cloud, instance_id), f"{instance_id} to end"))
