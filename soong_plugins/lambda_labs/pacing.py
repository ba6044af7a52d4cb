"""The client-side rate limiter: stay under Lambda Cloud's limits instead of hitting them.

The API allows one request per second, and launches one per 12 seconds or five per
minute. The simulator models that as two token buckets (a bucket of 1 refilled at
1/s for every request; a bucket of 5 refilled at 1 per 12 s for launches) and so does
this limiter, a little slower than the server (:data:`MARGIN`), so that network jitter
between two requests sent exactly one second apart cannot make the server see them
closer together. Every request waits for its tokens here first, retries included
(the urllib3 ``Retry`` of :mod:`.transport` acquires a token before each attempt), so a
batch never provokes a storm of 429s.

Time is wall time (DESIGN: rate limits are never accelerated) read through a
:class:`Timer`; tests inject a :class:`VirtualTimer`, whose ``sleep`` moves its clock
instantly, to check the pacing without waiting for it.
"""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass
from typing import Protocol


class Timer(Protocol):
    def monotonic(self) -> float:
        """Seconds on a clock that never goes back."""

    def sleep(self, seconds: float) -> None:
        """Wait ``seconds`` of this clock."""


class WallTimer:
    """The real thing: :func:`time.monotonic` and :func:`time.sleep`."""

    def monotonic(self) -> float:
        return time.monotonic()

    def sleep(self, seconds: float) -> None:
        if seconds > 0:
            time.sleep(seconds)

    def __repr__(self) -> str:
        return "WallTimer()"


class VirtualTimer:
    """A clock that moves only when someone sleeps on it (tests, never production).

    ``sleeps`` records every wait, so a test can assert on the pacing it never waited
    for; a simulator built with ``wall=timer.monotonic`` enforces its rate limits on the
    same clock, so client and server agree on what "one second later" means.
    """

    def __init__(self, start: float = 1000.0) -> None:
        self._now = float(start)
        self._lock = threading.Lock()
        self.sleeps: list[float] = []

    def monotonic(self) -> float:
        with self._lock:
            return self._now

    def sleep(self, seconds: float) -> None:
        if seconds > 0:
            with self._lock:
                self._now += seconds
                self.sleeps.append(seconds)

    @property
    def slept(self) -> float:
        with self._lock:
            return sum(self.sleeps)

    def __repr__(self) -> str:
        return f"VirtualTimer({self._now:.3f})"


@dataclass(frozen=True)
class Limit:
    rate: float
    """Tokens per second."""
    burst: int
    """How many may go back to back after a quiet spell."""


MARGIN = 1.1
"""Our buckets refill this much slower than the server's (10 %), so that requests sent
at the limit are not seen by the server a hair early: with 5 %, the soak benchmark
(two client threads and the simulator in one process, so scheduling jitter between
sending and arriving) still met one 429 in 185 requests."""
GENERAL = Limit(rate=1.0 / MARGIN, burst=1)
"""The documented "one request per second", for every request."""
LAUNCH = Limit(rate=1.0 / (12.0 * MARGIN), burst=5)
"""The documented "one per 12 seconds, or five per minute", for launches."""


class TokenBucket:
    """A bucket whose tokens are spent at the moment the request will go out.

    The server's buckets stop filling while full, so a client that counted a token as
    spent before its request actually left (say, while it still waited for the other
    bucket) would believe in refills the server never granted; spending at the send time
    keeps the client's count at or below the server's. ``_updated`` may lie in the
    future: the send time of the latest reservation, after which the next one queues.
    """

    def __init__(self, limit: Limit, timer: Timer) -> None:
        self.limit = limit
        self._tokens = float(limit.burst)
        self._updated = timer.monotonic()

    def _level(self, at: float) -> float:
        return min(float(self.limit.burst),
                   self._tokens + max(0.0, at - self._updated) * self.limit.rate)

    def ready_at(self, now: float) -> float:
        """The earliest moment from ``now`` at which a token is there."""
        start = max(now, self._updated)
        missing = 1.0 - self._level(start)
        return start if missing <= 0 else start + missing / self.limit.rate

    def take(self, at: float) -> None:
        """Spend a token at ``at`` (not before :meth:`ready_at`)."""
        self._tokens = self._level(at) - 1.0
        self._updated = max(at, self._updated)


class Limiter:
    """Paces requests to one API endpoint (one account); thread-safe.

    :meth:`acquire` finds the first moment at which every bucket the request needs (a
    launch needs both) has a token, spends them at that moment, and sleeps until it.
    Concurrent callers queue one behind the other.
    """

    def __init__(self, timer: Timer | None = None, *, general: Limit = GENERAL,
                 launch: Limit = LAUNCH) -> None:
        self.timer: Timer = timer or WallTimer()
        self._general = TokenBucket(general, self.timer)
        self._launch = TokenBucket(launch, self.timer)
        self._lock = threading.Lock()
        self.waited = 0.0
        """Total seconds callers spent waiting here (benchmarks report it)."""

    def acquire(self, *, launch: bool = False) -> float:
        """Wait until a request (a launch, if ``launch``) may go; returns the seconds waited."""
        buckets = (self._general, self._launch) if launch else (self._general,)
        with self._lock:
            now = self.timer.monotonic()
            at = max(bucket.ready_at(now) for bucket in buckets)
            for bucket in buckets:
                bucket.take(at)
            wait = at - now
            self.waited += wait
        if wait > 0:
            self.timer.sleep(wait)
        return wait

    def pause(self, seconds: float) -> None:
        """Wait ``seconds`` on this limiter's timer (backoff, ``Retry-After``)."""
        self.timer.sleep(seconds)
