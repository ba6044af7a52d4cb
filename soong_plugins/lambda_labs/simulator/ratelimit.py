"""The API's documented rate limits, on wall time (never the accelerated clock).

The spec: "Requests to the API are generally limited to one request per second.
Requests to the ``/instance-operations/launch`` endpoint are limited to one request per
12 seconds, or five requests per minute." Modelled as two token buckets: every request
takes a token from a bucket of 1 refilled at 1 per second; a launch also takes one from
a bucket of 5 refilled at 1 per 12 seconds (so five in a minute, one per 12 s after
that). A refused request takes nothing; the answer carries ``Retry-After``.
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
            return f"{self.rate:g} per second"
        return f"1 per {1 / self.rate:g} s, {self.burst:g} in a row"


GENERAL = Limit(rate=1.0, burst=1)
LAUNCH = Limit(rate=1 / 12, burst=5)


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
    """Admits or refuses requests; thread-safe. ``enabled=False`` admits everything."""

    def __init__(self, *, enabled: bool = True, general: Limit = GENERAL,
                 launch: Limit = LAUNCH, now: Callable[[], float] = time.monotonic) -> None:
        self.enabled = enabled
        self._general = TokenBucket(general, now)
        self._launch = TokenBucket(launch, now)
        self._lock = threading.Lock()

    def admit(self, is_launch: bool) -> tuple[float, str] | None:
        """``None`` when admitted (tokens taken); else (seconds to wait, which limit)."""
        if not self.enabled:
            return None
        with self._lock:
            buckets = [("requests", self._general)]
            if is_launch:
                buckets.append(("launches", self._launch))
            waits = [(bucket.wait_time(), name, bucket) for name, bucket in buckets]
            longest = max(waits, key=lambda item: item[0])
            if longest[0] > 0:
                return longest[0], f"{longest[1]} are limited to {longest[2].limit.describe()}"
            for _, _, bucket in waits:
                bucket.take()
            return None
