"""``soong start`` refuses to launch from a clock that is off (DESIGN, "Laptop clock"),
end to end: real processes against ``soong sim up --speed 60``.

The simulator's ``Date`` header carries its accelerated cloud time, and ``soong --sim``
reads the same clock from the ``clock`` section of the ``sim`` profile. Shifting that
section's ``sim_anchor`` puts the CLI's clock off the simulator's by exactly that much,
as a laptop with a wrong clock is off a real API's.

The unshifted case also fails if the simulator's ``Date`` goes back to wall time (at
speed 60 the CLI's clock would run away from it by a minute every wall second).
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any, Iterator

import pytest

from soong_core.config import read_config_file, write_config_file
from soong_core.testing import CliResult, SoongEnv, run_soong
from soong_plugins.lambda_labs.simulator.client import SimClient

pytestmark = pytest.mark.slow

SHIFT_S = 300.0


def soong(env: SoongEnv, *args: str) -> CliResult:
    return run_soong(*args, env=env, timeout=120)


@pytest.fixture
def sim_up(soong_env: SoongEnv) -> Iterator[dict[str, Any]]:
    """``soong sim up --speed 60`` (always stopped after), then ``soong --sim configure``."""
    up = soong(soong_env, "sim", "up", "--json", "--speed", "60")
    assert up.exit_code == 0, up.stderr
    try:
        sim: dict[str, Any] = json.loads(up.stdout)
        configured = soong(soong_env, "--sim", "configure", "-n", "--gpu", "gpu_1x_a10")
        assert configured.exit_code == 0, configured.stderr
        yield sim
    finally:
        soong(soong_env, "sim", "down")


def launched_ever(sim: dict[str, Any]) -> int:
    """How many instances the simulator ever launched (ended ones included)."""
    status = SimClient(sim["url"], sim["api_key"]).control("GET", "/status")
    total: int = status["instances"]["total"]
    return total


def shift_cli_clock(sim: dict[str, Any], seconds: float) -> None:
    """Move the clock of every ``soong --sim`` command by ``seconds`` of simulated time."""
    profile = Path(sim["profile"])
    document = read_config_file(profile)
    assert document is not None and document["clock"]["mode"] == "accelerated"
    assert document["clock"]["factor"] == 60
    document["clock"]["sim_anchor"] = float(document["clock"]["sim_anchor"]) + seconds
    write_config_file(profile, document)


def test_an_unshifted_clock_launches(soong_env: SoongEnv, sim_up: dict[str, Any]) -> None:
    started = soong(soong_env, "--sim", "start", "-y")
    assert started.exit_code == 0, started.stderr
    assert "is active at" in started.stdout
    assert "clock" not in started.stderr, started.stderr
    assert launched_ever(sim_up) == 1
    stopped = soong(soong_env, "--sim", "stop", "--all", "-y")
    assert stopped.exit_code == 0, stopped.stderr


@pytest.mark.parametrize(("shift", "side"), [(SHIFT_S, "ahead of"), (-SHIFT_S, "behind")])
def test_a_clock_off_by_five_minutes_is_refused_and_nothing_launches(
        soong_env: SoongEnv, sim_up: dict[str, Any], shift: float, side: str) -> None:
    shift_cli_clock(sim_up, shift)
    started = soong(soong_env, "--sim", "start", "-y")
    assert started.exit_code == 1, f"start launched from a clock 5 minutes off\n{started.stderr}"
    errors = [line for line in started.stderr.splitlines() if line.startswith("error:")]
    assert len(errors) == 1, started.stderr
    # 300 s of shift, plus under a few seconds of cloud time between the answer and the
    # check (the Date header has whole seconds; at speed 60 a wall ms is 60 cloud ms)
    assert re.search(rf"this machine's clock is (4m5\ds|5m0\ds) {side} ", errors[0]), errors[0]
    # the clock at fault is the simulated one the sim profile holds: NTP will not fix it
    assert "`soong sim down` then `soong sim up` writes it anew" in started.stderr
    assert "is active at" not in started.stdout
    assert launched_ever(sim_up) == 0
