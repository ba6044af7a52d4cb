"""One clock for the whole system: real, accelerated, or manual (tests).

Standard library only; the agent carries it. An accelerated clock derives simulated
time from the wall clock with no messages between processes::

    sim_time = sim_anchor + factor * (wall - wall_anchor)

so the simulator, the CLI and every agent that share an anchor and a factor agree on
"now". Only cloud time is accelerated (boot delays, billing, deadlines): rate limits
and HTTP timeouts use the wall clock directly.
"""

from __future__ import annotations

import threading
import time
from typing import Any, Mapping, Protocol, runtime_checkable


@runtime_checkable
class Clock(Protocol):
    def now(self) -> float:
        """Current (possibly simulated) time, seconds since the epoch."""

    def sleep(self, seconds: float) -> None:
        """Sleep ``seconds`` of this clock's time."""

    def to_wall(self, seconds: float) -> float:
        """How many wall-clock seconds ``seconds`` of this clock's time take."""


class RealClock:
    factor = 1.0

    def now(self) -> float:
        return time.time()

    def sleep(self, seconds: float) -> None:
        if seconds > 0:
            time.sleep(seconds)

    def to_wall(self, seconds: float) -> float:
        return seconds

    def to_config(self) -> dict[str, Any]:
        return {"mode": "real"}

    def __repr__(self) -> str:
        return "RealClock()"


class AcceleratedClock:
    """Simulated time running ``factor`` times faster than the wall clock from an anchor."""

    def __init__(self, factor: float, sim_anchor: float | None = None,
                 wall_anchor: float | None = None) -> None:
        if not factor > 0:
            raise ValueError(f"clock factor must be positive, got {factor!r}")
        wall = time.time()
        self.factor = float(factor)
        self.wall_anchor = wall if wall_anchor is None else float(wall_anchor)
        self.sim_anchor = self.wall_anchor if sim_anchor is None else float(sim_anchor)

    def now(self) -> float:
        return self.sim_anchor + self.factor * (time.time() - self.wall_anchor)

    def sleep(self, seconds: float) -> None:
        if seconds > 0:
            time.sleep(seconds / self.factor)

    def to_wall(self, seconds: float) -> float:
        return seconds / self.factor

    def to_config(self) -> dict[str, Any]:
        return {"mode": "accelerated", "factor": self.factor,
                "sim_anchor": self.sim_anchor, "wall_anchor": self.wall_anchor}

    def __repr__(self) -> str:
        return (f"AcceleratedClock(factor={self.factor}, sim_anchor={self.sim_anchor}, "
                f"wall_anchor={self.wall_anchor})")


class ManualClock:
    """A clock that moves only when told: ``sleep`` and ``advance`` move it, instantly.

    Thread-safe; ``sleep`` wakes nobody else, so tests drive time explicitly.
    """

    factor = 1.0

    def __init__(self, start: float = 1_800_000_000.0) -> None:
        self._now = float(start)
        self._lock = threading.Lock()

    def now(self) -> float:
        with self._lock:
            return self._now

    def advance(self, seconds: float) -> float:
        with self._lock:
            self._now += seconds
            return self._now

    def set(self, when: float) -> None:
        with self._lock:
            self._now = float(when)

    def sleep(self, seconds: float) -> None:
        if seconds > 0:
            self.advance(seconds)

    def to_wall(self, seconds: float) -> float:
        return 0.0

    def __repr__(self) -> str:
        return f"ManualClock({self._now})"


def clock_from_config(config: Mapping[str, Any] | None) -> RealClock | AcceleratedClock:
    """The clock described by ``to_config()`` output (as the simulator writes for agents)."""
    if not config or config.get("mode", "real") == "real":
        return RealClock()
    if config.get("mode") != "accelerated":
        raise ValueError(f"unknown clock mode {config.get('mode')!r} (real or accelerated)")
    return AcceleratedClock(float(config["factor"]), float(config["sim_anchor"]),
                            float(config["wall_anchor"]))
