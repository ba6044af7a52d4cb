"""The ``api`` activity source: explicit ``POST /activity`` calls.

Whatever runs on the instance and knows it is busy (a training loop, a notebook hook,
a cron job) says so through the agent's API; the agent hands each call to
:meth:`ApiActivity.touch` and also counts it at once (no wait for the next look).
``sample`` then reports ``active`` when a call arrived since the previous look, ``idle``
otherwise, with the moment of the latest call as ``last_activity``.
"""

from __future__ import annotations

import threading
from typing import Any, Mapping

from soong_core.interfaces import ActivitySource
from soong_core.models import ActivitySample, ActivityState, Timestamp


class ApiActivity(ActivitySource):
    name = "api"
    bounded = True  # a look only reads a counter

    def __init__(self, settings: Mapping[str, Any] | None = None) -> None:
        self._lock = threading.Lock()
        self._last: Timestamp | None = None
        self._label: str | None = None
        self._calls = 0
        self._seen = 0

    def touch(self, now: Timestamp, label: str | None = None) -> None:
        """One ``POST /activity`` at ``now``; ``label`` is the caller's ``source`` field."""
        with self._lock:
            self._last = now if self._last is None else max(self._last, now)
            self._label = label
            self._calls += 1

    def sample(self, now: Timestamp) -> ActivitySample:
        with self._lock:
            fresh = self._calls > self._seen
            self._seen = self._calls
            last, label, calls = self._last, self._label, self._calls
        health = {"calls": calls}
        if last is None:
            return ActivitySample(ActivityState.IDLE, "no POST /activity yet", health)
        said = f" (from {label})" if label else ""
        if fresh:
            return ActivitySample(ActivityState.ACTIVE, f"POST /activity since the last look{said}",
                                  health, last_activity=last)
        return ActivitySample(ActivityState.IDLE, f"no POST /activity since the last look{said}",
                              health, last_activity=last)
