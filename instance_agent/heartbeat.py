"""Heartbeats: the agent telling the watchdog it is alive, and the last one why it stops.

``POST {watchdog.url}/heartbeat`` with ``Authorization: Bearer {watchdog.token}`` and the
JSON of DESIGN's Interfaces table, every ``watchdog.heartbeat_seconds`` (wall) from a
thread of its own, and once more at termination with ``final: true`` and the reason.
A heartbeat that fails or hangs (``watchdog.timeout_seconds`` at most) is logged when the
outcome changes and counted in ``/status``; it never holds up enforcement: the final one
goes out beside the termination, not before it.
"""

from __future__ import annotations

import json
import threading
import time
from typing import Any, Callable, Mapping

SCHEMA_VERSION = 1
FINAL_TRIES = 3


def post_json(url: str, token: str, body: Mapping[str, Any], timeout: float) -> int:
    """POST ``body``; the HTTP status (an error status is returned, not raised)."""
    import urllib.error
    import urllib.request

    from soong_core.urlopen import opener

    data = json.dumps(body, allow_nan=False).encode("utf-8")
    request = urllib.request.Request(url, data=data, method="POST", headers={
        "Authorization": f"Bearer {token}", "Content-Type": "application/json",
        "User-Agent": "soong-agent"})
    try:
        with opener(url).open(request, timeout=timeout) as answer:
            answer.read(65536)
            return int(answer.status)
    except urllib.error.HTTPError as refused:
        return int(refused.code)


class Heartbeat:
    """Sends what ``payload(final, reason)`` returns to the watchdog.

    :param settings: the config's ``watchdog`` section (``url`` set).
    :param post: ``post(url, token, body, timeout) -> status`` (tests pass a fake).
    """

    def __init__(self, settings: Mapping[str, Any],
                 payload: Callable[[bool, str | None], dict[str, Any]], *,
                 log: Callable[[str], None], now: Callable[[], float],
                 post: Callable[..., int] = post_json) -> None:
        self.url = str(settings["url"]).rstrip("/") + "/heartbeat"
        self._token = str(settings["token"])
        self.interval = float(settings["heartbeat_seconds"])
        self.timeout = float(settings["timeout_seconds"])
        self._payload = payload
        self._log = log
        self._now = now
        self._post = post
        self._lock = threading.Lock()
        self.sent = 0
        self.failures = 0
        self.consecutive_failures = 0
        self.last_ok_at: float | None = None
        self.last_error: str | None = None
        self.final_sent = False
        self._stop = threading.Event()

    def send(self, final: bool = False, reason: str | None = None) -> bool:
        """One heartbeat; True when the watchdog answered 2xx."""
        body = self._payload(final, reason)
        try:
            status = self._post(self.url, self._token, body, self.timeout)
            error = None if 200 <= status < 300 else f"the watchdog answered HTTP {status}"
        except Exception as exc:
            from instance_agent.terminate import network_note

            error = network_note(exc)
        with self._lock:
            self.sent += 1
            if error is None:
                if self.last_error is not None:
                    self._log(f"heartbeat: {self.url} answers again")
                self.last_ok_at, self.last_error, self.consecutive_failures = self._now(), None, 0
                self.final_sent = self.final_sent or final
                return True
            self.failures += 1
            self.consecutive_failures += 1
            if error != self.last_error:
                self._log(f"heartbeat to {self.url} failed: {error}")
            self.last_error = error
            return False

    def loop(self) -> None:
        """Every ``interval`` wall seconds until :meth:`stop` (or the final heartbeat)."""
        while not self._stop.is_set():
            self.send()
            self._stop.wait(self.interval)

    def final(self, reason: str) -> None:
        """The final heartbeat: a few tries within about ``FINAL_TRIES × timeout``."""
        self._stop.set()
        for attempt in range(FINAL_TRIES):
            if self.send(final=True, reason=reason):
                return
            time.sleep(min(1.0, self.timeout) * (attempt + 1))

    def stop(self) -> None:
        self._stop.set()

    def report(self) -> dict[str, Any]:
        with self._lock:
            return {"url": self.url, "interval_seconds": self.interval, "sent": self.sent,
                    "failures": self.failures,
                    "consecutive_failures": self.consecutive_failures,
                    "last_ok_at": self.last_ok_at, "last_error": self.last_error,
                    "final_sent": self.final_sent}

