"""The API's documented rate limits, on wall time (never the accelerated clock).

The spec: "Requests to the API are generally limited to one request per second.
Requests to the ``/instance-operations/launch`` endpoint are limited to one request per
12 seconds, or five requests per minute." Lambda enforces them at its Cloudflare edge,
which counts requests over a window (an over-limit request gets 429 and Cloudflare's
plain-text ``error code: 1015``), so a client may send two or three requests a few
milliseconds apart and stay within the average.

Modelled as two token buckets: every request takes a token from the general bucket
(refilled at 1 per second); a launch also takes one from a bucket of 5 refilled at 1
per 12 seconds (so five in a minute, one per 12 s after that). The general bucket's
size is the mode (:data:`MODES`): ``edge`` (default) holds 3, a short burst around
the 1/s average as the edge admits; ``strict`` holds 1, every request a full second
after the one before (soong's own pacing tests use it); ``off`` admits everything. A
refused request takes nothing; the answer carries ``Retry-After``.

The edge counts each client address apart: the laptop's requests share one pair of
buckets, and each instance's agent (a request's ``source``) has its own pair. Those are
on real monotonic time whatever clock the laptop's pair was given: a test may run the
laptop's pacing on virtual time, but an agent is a real process that waits real seconds.
"""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass
from typing import Callable


@dataclass(frozen=True)
class Limit:
    rate: float
    """Tokens per second."""
    burst: float
    """Bucket size: how many requests may come back to back."""

    def describe(self) -> str:
        if self.rate >= 1:
            rate = f"{self.rate:g} per second"
            return rate if self.burst <= 1 else f"{rate}, {self.burst:g} in a row"
        return f"1 per {1 / self.rate:g} s, {self.burst:g} in a row"


GENERAL = Limit(rate=1.0, burst=3)
"""Every request, as the edge counts them (mode ``edge``, the default)."""
STRICT = Limit(rate=1.0, burst=1)
"""Every request, one a second with no burst (mode ``strict``)."""
LAUNCH = Limit(rate=1 / 12, burst=5)
"""Launches, in every mode but ``off``."""

MODES = ("edge", "strict", "off")
"""``--rate-limit`` values: the general bucket is :data:`GENERAL`, :data:`STRICT`, none."""
BODIES = ("text", "json")
"""What a 429 carries: Cloudflare's plain text (the real API's) or the JSON envelope."""

GENERAL_BY_MODE = {"edge": GENERAL, "strict": STRICT}


def check_mode(value: object, name: str = "rate_limit_mode") -> str:
    if not isinstance(value, str) or value not in MODES:
        raise ValueError(f"{name} must be one of {', '.join(MODES)}, got {value!r}")
    return value


def check_body(value: object, name: str = "rate_limit_body") -> str:
    if not isinstance(value, str) or value not in BODIES:
        raise ValueError(f"{name} must be one of {', '.join(BODIES)}, got {value!r}")
    return value


class TokenBucket:
    def __init__(self, limit: Limit, now: Callable[[], float] = time.monotonic) -> None:
        self.limit = limit
        self._now = now
        self._tokens = float(limit.burst)
        self._updated = now()

    def _refill(self) -> None:
        now = self._now()
        elapsed = max(0.0, now - self._updated)
        self._tokens = min(float(self.limit.burst), self._tokens + elapsed * self.limit.rate)
        self._updated = now

    def wait_time(self) -> float:
        """Seconds until a token is there (0: one is there now)."""
        self._refill()
        if self._tokens >= 1:
            return 0.0
        return (1 - self._tokens) / self.limit.rate

    def take(self) -> None:
        self._tokens -= 1


class RateLimiter:
    """Admits or refuses requests; thread-safe.

    ``mode`` is one of :data:`MODES` (``enabled=False`` is ``off``, kept for callers
    that only switch the limits); ``general`` replaces the mode's general limit (tests
    that need shorter windows); ``body`` is one of :data:`BODIES`.
    """

    def __init__(self, *, mode: str = "edge", enabled: bool = True,
                 general: Limit | None = None, launch: Limit = LAUNCH, body: str = "text",
                 now: Callable[[], float] = time.monotonic) -> None:
        check_mode(mode, "mode")
        self.body = check_body(body, "body")
        self._now = now
        self._custom = general
        self._lock = threading.Lock()
        self._launch_limit = launch
        self._launch = TokenBucket(launch, now)
        self.enabled = enabled and mode != "off"
        self._on_mode = "edge" if mode == "off" else mode
        self._general = TokenBucket(self._general_limit(), now)
        self._sources: dict[str, tuple[TokenBucket, TokenBucket]] = {}

    def _general_limit(self) -> Limit:
        return self._custom or GENERAL_BY_MODE[self._on_mode]

    @property
    def mode(self) -> str:
        """``off`` while disabled, else the mode the limits are enforced in."""
        return self._on_mode if self.enabled else "off"

    @mode.setter
    def mode(self, value: str) -> None:
        check_mode(value, "mode")
        with self._lock:
            if value == "off":
                self.enabled = False
                return
            self.enabled = True
            if value != self._on_mode:
                self._on_mode = value
                self._general = TokenBucket(self._general_limit(), self._now)
                self._sources.clear()

    def _buckets_of(self, source: str | None) -> tuple[TokenBucket, TokenBucket]:
        if source is None:
            return self._general, self._launch
        pair = self._sources.get(source)
        if pair is None:
            pair = (TokenBucket(self._general_limit(), time.monotonic),
                    TokenBucket(self._launch_limit, time.monotonic))
            self._sources[source] = pair
        return pair

    def admit(self, is_launch: bool, source: str | None = None) -> tuple[float, str] | None:
        """``None`` when admitted (tokens taken); else (seconds to wait, which limit).
        ``source``: the instance whose agent asks (its own buckets); ``None``: the laptop."""
        if not self.enabled:
            return None
        with self._lock:
            general, launch = self._buckets_of(source)
            buckets = [("requests", general)]
            if is_launch:
                buckets.append(("launches", launch))
            waits = [(bucket.wait_time(), name, bucket) for name, bucket in buckets]
            longest = max(waits, key=lambda item: item[0])
            if longest[0] > 0:
                return longest[0], f"{longest[1]} are limited to {longest[2].limit.describe()}"
            for _, _, bucket in waits:
                bucket.take()
            return None
