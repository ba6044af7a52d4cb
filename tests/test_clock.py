"""The one clock: real, accelerated (shared by anchor and factor), manual."""

from __future__ import annotations

import time

import pytest

from soong_core.clock import AcceleratedClock, ManualClock, RealClock, clock_from_config


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
