"""The whole user flow as real processes against ``soong sim up`` (rate limits on):
configure, start, status, stop; every request checked against the spec, and the key
never in any output."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from soong_core.testing import CliResult, SoongEnv, run_soong
from soong_plugins.lambda_labs.simulator.requestlog import read_lines
from soong_plugins.lambda_labs.simulator.testing import (
    ConformanceChecker,
    request_problems,
)

pytestmark = pytest.mark.slow


def soong(env: SoongEnv, *args: str) -> CliResult:
    return run_soong(*args, env=env, timeout=120)


def test_configure_start_status_stop_against_sim_up(soong_env: SoongEnv, tmp_path: Path) -> None:
    capture = tmp_path / "bodies.jsonl"
    # strict limits (1/s, no burst): soong's own pacing must keep every process below them
    up = soong(soong_env, "sim", "up", "--json", "--speed", "100", "--rate-limit", "strict",
               "--capture-bodies", str(capture))
    assert up.exit_code == 0, up.stderr
    sim: dict[str, Any] = json.loads(up.stdout)
    runs: list[CliResult] = []
    try:
        key_path = soong_env.home / ".ssh" / "id_ed25519"
        runs.append(soong(soong_env, "--sim", "-vvv", "configure", "-n", "--key-name", "soong",
                          "--key-path", str(key_path), "--gpu", "gpu_1x_a10",
                          "--region", "us-east-1"))
        runs.append(soong(soong_env, "--sim", "-vvv", "start", "-y", "--gpu", "gpu_1x_a10",
                          "--hours", "2"))
        runs.append(soong(soong_env, "--sim", "-vvv", "status"))
        runs.append(soong(soong_env, "--sim", "-vvv", "stop", "--all", "-y"))
    finally:
        runs.append(soong(soong_env, "sim", "down"))
    for run in runs:
        assert run.exit_code == 0, run.stderr
    configured, started, status, stopped, _ = runs
    assert "registered SSH key soong" in configured.stdout
    assert "is active at 198.18." in started.stdout
    assert "active" in status.stdout and "gpu_1x_a10" in status.stdout
    assert "terminated" in stopped.stdout
    leaked = [r for r in runs if sim["api_key"] in r.stdout + r.stderr]
    assert leaked == []
    # the instance's lease agent lists once at its start on the same account, with no
    # share in the laptop's pacing file: a 429 may be its (it backs off and retries)
    assert request_problems(capture, allow_429=True) == []
    checker = ConformanceChecker()
    checker.check_capture(capture)
    assert checker.problems == [] and checker.checked > 0
    statuses = [e["status"] for e in read_lines(capture) if e.get("kind") == "api"]
    assert statuses
    # back-to-back soong processes share the account's pacing file: none met a 429 (each
    # logs every answer's status at -vvv)
    met = [r for r in runs if "-> 429" in r.stderr or "after HTTP 429" in r.stderr]
    assert met == []
