"""The README's first command works as written (after its install step) on the simulator."""

from __future__ import annotations

import os
import shlex
import subprocess
import sys
from pathlib import Path

from soong_core.testing import SoongEnv

ROOT = Path(__file__).resolve().parent.parent


def first_command() -> list[list[str]]:
    readme = (ROOT / "README.md").read_text()
    section = readme.split("## Set up", 1)[1].split("\n## ", 1)[0]
    line = next(line.strip() for line in section.splitlines() if line.startswith("    "))
    steps = [shlex.split(step) for step in line.split("&&")]
    assert steps[0][:4] == ["python", "-m", "pip", "install"], "the first step installs"
    return steps[1:]


def test_the_readme_main_job_runs_on_the_simulator(soong_env: SoongEnv) -> None:
    steps = first_command()
    assert all(step[0] == "soong" for step in steps)
    environ = {k: v for k, v in os.environ.items() if not k.startswith(("SOONG_", "LAMBDA_"))}
    environ.update(soong_env.environ())
    outputs = []
    try:
        for step in steps:
            done = subprocess.run([sys.executable, "-m", "soong_core", *step[1:]],
                                  capture_output=True, text=True, env=environ, timeout=120)
            assert done.returncode == 0, f"{shlex.join(step)} failed:\n{done.stderr}"
            outputs.append(done.stdout)
    finally:
        subprocess.run([sys.executable, "-m", "soong_core", "sim", "down"], env=environ,
                       capture_output=True, timeout=60)
    started, status, stopped = outputs[-3:]
    assert "is active at" in started
    instance_id = started.split(" is active at", 1)[0].split()[-1]
    [row] = [line.split() for line in status.splitlines() if line.startswith(instance_id[:8])]
    header = status.splitlines()[0].split()
    assert row[header.index("IDLE")] != "?", status  # the instance's agent was asked
    assert row[-1] in ("idle_timeout", "lease_expired"), status
    assert f"{instance_id} terminated" in stopped


def test_after_the_readme_set_up_the_main_files_budget_binds_the_simulator(
        soong_env: SoongEnv) -> None:
    """Settings land where they take effect: `configure` under --sim leaves the budget to
    the main file, so a cap set there refuses the next simulated launch."""
    steps = first_command()
    set_up = steps[:next(i for i, step in enumerate(steps) if step[1:3] == ["--sim", "start"])]
    assert [step[1:3] for step in set_up] == [["sim", "up"], ["--sim", "configure"]]
    environ = {k: v for k, v in os.environ.items() if not k.startswith(("SOONG_", "LAMBDA_"))}
    environ.update(soong_env.environ())

    def soong(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run([sys.executable, "-m", "soong_core", *args], capture_output=True,
                              text=True, env=environ, timeout=120)

    try:
        for step in set_up:
            done = soong(*step[1:])
            assert done.returncode == 0, f"{shlex.join(step)} failed:\n{done.stderr}"
        capped = soong("config", "set", "budget.max_dollars", "1")
        assert capped.returncode == 0, capped.stderr
        assert capped.stderr == ""  # no profile outranks the main file's cap
        refused = soong("--sim", "start", "-y")
        listed = soong("--sim", "status", "--json")
    finally:
        soong("sim", "down")
    assert refused.returncode != 0
    errors = [line for line in refused.stderr.splitlines() if line.startswith("error:")]
    assert len(errors) == 1 and "budget" in errors[0], refused.stderr
    assert "is active at" not in refused.stdout
    assert listed.returncode == 0, listed.stderr
    assert "gpu_1x_a10" not in listed.stdout  # nothing was launched
