"""The one clock: real, accelerated (shared by anchor and factor), manual."""

from __future__ import annotations

import subprocess
import sys
import time

import pytest

from soong_core.clock import (
    MAX_SKEW_S,
    AcceleratedClock,
    ManualClock,
    RealClock,
    check_skew,
    clock_from_config,
)
from soong_core.errors import SoongError


def test_accelerated_clock_follows_the_formula() -> None:
    clock = AcceleratedClock(60, sim_anchor=1_000_000.0, wall_anchor=time.time() - 10)
    assert clock.now() == pytest.approx(1_000_000 + 600, abs=1.0)
    assert clock.to_wall(120) == 2.0


def test_two_processes_with_the_same_anchor_agree() -> None:
    a = AcceleratedClock(100)
    b = clock_from_config(a.to_config())
    assert isinstance(b, AcceleratedClock)
    assert abs(a.now() - b.now()) < 100 * 0.05  # within 50 ms of wall time


def test_accelerated_sleep_takes_less_wall_time() -> None:
    clock = AcceleratedClock(1000)
    start_sim, start_wall = clock.now(), time.monotonic()
    clock.sleep(50)  # 50 simulated seconds = 50 ms
    assert clock.now() - start_sim >= 50 - 1
    assert time.monotonic() - start_wall < 1.0


def test_manual_clock_moves_only_when_told() -> None:
    clock = ManualClock(100.0)
    assert clock.now() == 100.0
    clock.sleep(5)
    clock.advance(1.5)
    assert clock.now() == 106.5
    clock.set(0)
    assert clock.now() == 0.0


def test_real_clock_and_config_round_trip() -> None:
    assert isinstance(clock_from_config(None), RealClock)
    assert isinstance(clock_from_config(RealClock().to_config()), RealClock)
    assert abs(RealClock().now() - time.time()) < 1


@pytest.mark.parametrize("bad", [{"mode": "warp"}, {"mode": "accelerated", "factor": 0,
                                                      "sim_anchor": 0, "wall_anchor": 0}])
def test_bad_clock_config(bad: dict[str, object]) -> None:
    with pytest.raises(ValueError):
        clock_from_config(bad)


# -- the laptop clock against the provider's (DESIGN, "Laptop clock") --------------------

NOW = 1_800_000_000.0


@pytest.mark.parametrize("skew", [0.0, 0.5, 59.9, 60.0, -60.0, -12.0])
def test_a_skew_within_the_limit_passes(skew: float) -> None:
    assert MAX_SKEW_S == 60.0
    check_skew(NOW + skew, NOW)  # exactly 60 s is still allowed


def test_no_server_time_means_nothing_to_compare() -> None:
    check_skew(NOW, None)
    check_skew(NOW + 10**6, None, limit_s=0)


@pytest.mark.parametrize(("local", "side", "amount"), [
    (NOW + 61, "ahead of", "1m01s"),
    (NOW - 61, "behind", "1m01s"),
    (NOW + 60.2, "ahead of", "1m01s"),  # rounded up: a refused skew never reads as 60 s
    (NOW + 125, "ahead of", "2m05s"),
    (NOW - 2 * 3600 - 180, "behind", "2h03m"),
])
def test_a_skew_past_the_limit_is_one_line_naming_it(local: float, side: str,
                                                     amount: str) -> None:
    with pytest.raises(SoongError) as caught:
        check_skew(local, NOW, service="Lambda Cloud")
    error = caught.value
    assert error.exit_code == 1
    assert "\n" not in error.message
    assert error.message.startswith(f"this machine's clock is {amount} {side} Lambda Cloud's "
                                    "clock (at most 60s allowed)")
    assert len(error.hints) == 1 and "timedatectl set-ntp true" in error.hints[0]
    assert "macOS" in error.hints[0]


def test_the_limit_and_the_service_can_be_given() -> None:
    check_skew(NOW + 5, NOW, limit_s=5)
    with pytest.raises(SoongError, match=r"6s ahead of the provider's clock \(at most 5s"):
        check_skew(NOW + 5.5, NOW, limit_s=5)


def test_the_clock_module_stays_light_to_import() -> None:
    """The agent carries clock.py: importing it must not pull the rest of soong in."""
    code = ("import sys, soong_core.clock; "
            "print(sorted(m for m in sys.modules if m.startswith('soong')))")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          check=True)
    assert done.stdout.strip() == "['soong_core', 'soong_core.clock']"
