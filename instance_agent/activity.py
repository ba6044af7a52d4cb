"""The agent's activity sources at work, looked at from sampling threads.

A :class:`SourceRunner` wraps one :class:`~soong_core.interfaces.ActivitySource`: it
keeps what the latest look said for ``/status`` and the heartbeat, and hands what counts
as activity to the agent. :func:`look_in_turn` looks every interval (wall seconds) from
a thread that is never the enforcement loop's; :func:`threads_for` puts the bounded
sources (the built-in ones) in one such thread and any other in a thread of its own, so
a look that hangs delays nobody else. A source that raises is ``unhealthy`` with the
error as its detail: a source that cannot look is never activity.
"""

from __future__ import annotations

import json
import math
import threading
import time
from typing import TYPE_CHECKING, Any, Callable, Sequence

from soong_core.models import ActivitySample, ActivityState

if TYPE_CHECKING:
    from soong_core.interfaces import ActivitySource

MIN_INTERVAL_S = 0.2
"""The shortest interval between two looks of one source (wall seconds)."""
MAX_DETAIL = 300
FLIP_LOG_S = 300.0
"""Wall seconds between two log lines of one source flipping between active and idle."""
USABLE = frozenset({ActivityState.ACTIVE, ActivityState.IDLE})


class SourceRunner:
    """One source and its latest look (:func:`look_in_turn` looks every interval).

    :param record: ``record(name, sample, looked_at)``, called after every look (the
        agent counts an ``active`` one as activity at ``looked_at``).
    :param now: the agent's clock.
    :param log: one line each time the source's state changes.
    """

    def __init__(self, name: str, source: ActivitySource, *, now: Callable[[], float],
                 record: Callable[[str, ActivitySample, float], None],
                 log: Callable[[str], None]) -> None:
        self.name = name
        self.source = source
        self._now = now
        self._record = record
        self._log = log
        self._lock = threading.Lock()
        self.latest: ActivitySample | None = None
        self.looked_at: float | None = None
        self.last_active_at: float | None = None
        self.took_s: float | None = None
        self.looks = 0
        self._flip_logged: float | None = None
        self.cpu_s = 0.0
        """Thread CPU seconds the looks took (their subprocesses are the process's
        children, counted by the OS, not here)."""

    def look(self, wait_s: float | None = None) -> ActivitySample | None:
        """Sample the source once (None when another look held it past ``wait_s``)."""
        if not self._lock.acquire(timeout=-1 if wait_s is None else max(0.0, wait_s)):
            return None
        try:
            started = time.monotonic()
            cpu = time.thread_time()
            now = self._now()
            try:
                sample = self.source.sample(now)
                if not isinstance(sample, ActivitySample):
                    raise TypeError(f"sample() returned {type(sample).__name__}, "
                                    "not an ActivitySample")
                sample = _clean(sample)
            except Exception as exc:
                sample = ActivitySample(ActivityState.UNHEALTHY,
                                        f"the source failed: {type(exc).__name__}: "
                                        f"{_one_line(exc)}")
            self.took_s = time.monotonic() - started
            self.cpu_s += time.thread_time() - cpu
            previous = self.latest
            self.latest, self.looked_at = sample, now
            self.looks += 1
            if sample.is_activity:
                self.last_active_at = now if sample.last_activity is None \
                    else min(now, sample.last_activity)
            if self._worth_logging(previous, sample):
                self._log(f"activity source {self.name}: {sample.state.value}"
                          + (f" ({sample.detail})" if sample.detail else ""))
        finally:
            self._lock.release()
        self._record(self.name, sample, now)
        return sample

    def _worth_logging(self, previous: ActivitySample | None, sample: ActivitySample) -> bool:
        """A change of state, but flips between active and idle (a busy machine makes
        them every few looks) at most once per FLIP_LOG_S."""
        if previous is not None and previous.state is sample.state:
            return False
        flip = previous is not None and {previous.state, sample.state} <= USABLE
        if flip:
            moment = time.monotonic()
            if self._flip_logged is not None and moment - self._flip_logged < FLIP_LOG_S:
                return False
            self._flip_logged = moment
        return True

    def report(self) -> dict[str, Any]:
        """What ``/status`` shows of this source."""
        sample = self.latest
        return {
            "state": None if sample is None else sample.state.value,
            "detail": "not looked at yet" if sample is None else sample.detail,
            "looked_at": self.looked_at,
            "last_active_at": self.last_active_at,
            "looks": self.looks,
            "took_seconds": None if self.took_s is None else round(self.took_s, 4),
            "cpu_seconds": round(self.cpu_s, 4),
            "health": {} if sample is None else dict(sample.health),
        }


def look_in_turn(runners: Sequence[SourceRunner], interval: Callable[[], float],
                 stop: threading.Event) -> None:
    """Each of ``runners`` once, one after the other, then wait ``interval()`` wall
    seconds; until ``stop`` is set."""
    while not stop.is_set():
        for runner in runners:
            if stop.is_set():
                return
            runner.look()
        stop.wait(max(MIN_INTERVAL_S, interval()))


def threads_for(runners: Sequence[SourceRunner]) -> list[list[SourceRunner]]:
    """Which runners share a thread: every source that declares ``bounded`` (each look
    ends by its own timeouts: the built-in ones) in one, any other in one of its own,
    so that a plugin's look that hangs holds up nobody else. A thread costs memory (a
    malloc arena each, about 0.3 MiB on glibc), so sharing is the default where safe."""
    shared = [r for r in runners if getattr(r.source, "bounded", False) is True]
    alone = [[r] for r in runners if r not in shared]
    return ([shared] if shared else []) + alone


def _clean(sample: ActivitySample) -> ActivitySample:
    """``sample`` with a one-line detail and health that JSON can carry (a third-party
    source's mistakes are cut down here, not in every reader)."""
    detail = _one_line(sample.detail)[:MAX_DETAIL]
    state = sample.state if isinstance(sample.state, ActivityState) \
        else ActivityState(sample.state)
    health: Any = sample.health
    try:
        health = json.loads(json.dumps(dict(health), allow_nan=False, default=str))
    except (TypeError, ValueError):
        health = {"error": "the source's health could not be shown as JSON"}
    last = sample.last_activity
    if last is not None and (not isinstance(last, (int, float)) or isinstance(last, bool)
                             or not math.isfinite(last)):
        last = None
    return ActivitySample(state, detail, health, last)


def _one_line(value: object) -> str:
    return " ".join(str(value).split())
