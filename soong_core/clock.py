"""One clock for the whole system: real, accelerated, or manual (tests).

Standard library only; the agent carries it. An accelerated clock derives simulated
time from the wall clock with no messages between processes::

    sim_time = sim_anchor + factor * (wall - wall_anchor)

so the simulator, the CLI and every agent that share an anchor and a factor agree on
"now". Only cloud time is accelerated (boot delays, billing, deadlines): rate limits
and HTTP timeouts use the wall clock directly.

:func:`check_skew` compares this machine's clock with a provider's: deadlines written
into launch tags come from the launching machine, so ``start`` refuses to launch from a
clock that is off (DESIGN, "Laptop clock").
"""

from __future__ import annotations

import math
import threading
import time
from typing import Any, Mapping, Protocol, Sequence, runtime_checkable

MAX_SKEW_S = 60.0
"""How far this machine's clock may be from the provider's before ``start`` refuses."""


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


def check_skew(local_now: float, server_now: float | None, *, limit_s: float = MAX_SKEW_S,
               service: str = "the provider", hints: Sequence[str] | None = None) -> None:
    """Refuse to go on when this machine's clock and ``service``'s differ by more than
    ``limit_s`` seconds (exactly ``limit_s`` is allowed).

    ``local_now`` is this machine's (possibly simulated) time, ``server_now`` the
    provider's estimate of its own (``Provider.server_time()``); when that is ``None``
    (no answer yet, no ``Date`` header) there is nothing to compare and nothing happens.
    Raises :class:`~soong_core.errors.SoongError` (exit 1) with one line naming the
    skew and a hint on setting the clock (or ``hints``, when the caller knows better:
    a simulated clock is set by its profile, not by NTP).
    """
    if server_now is None:
        return
    skew = float(local_now) - float(server_now)
    if not abs(skew) > limit_s:  # also lets a NaN through: no comparison was possible
        return
    from soong_core.errors import SoongError

    side = "ahead of" if skew > 0 else "behind"
    raise SoongError(
        f"this machine's clock is {_format_skew(abs(skew))} {side} {service}'s clock "
        f"(at most {limit_s:g}s allowed): the deadlines in launch tags would be wrong",
        hints=list(hints) if hints is not None else [
            "synchronise this machine's clock, then try again: "
            "`sudo timedatectl set-ntp true` on Linux; on macOS, System Settings > "
            "General > Date & Time > Set time and date automatically"])


def _format_skew(seconds: float) -> str:
    """``"45s"``, ``"2m05s"``, ``"3h07m"``, ``"2d3h"``: to the second below an hour,
    where the limit lives. Rounded up, so a refused skew never reads as the limit
    (display.format_duration, every other duration's, truncates and drops the seconds:
    "1m" for 119 s)."""
    from soong_core.models import HOUR

    day = 24 * HOUR
    total = math.ceil(seconds)
    if total < 60:
        return f"{total}s"
    if total < HOUR:
        return f"{total // 60}m{total % 60:02d}s"
    if total < day:
        return f"{total // HOUR}h{total % HOUR // 60:02d}m"
    return f"{total // day}d{total % day // HOUR}h"
