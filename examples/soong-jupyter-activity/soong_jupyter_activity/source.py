"""The ``jupyter`` activity source: the kernels of a Jupyter server on the instance.

Each look GETs ``{url}/api/kernels`` (the Jupyter Server REST API) once, with a timeout
and a capped body, and reads the JSON list of kernels it answers, each like::

    {"id": "0d6c...", "name": "python3", "last_activity": "2026-12-03T11:39:00.822405Z",
     "execution_state": "busy", "connections": 1}

``active`` when any kernel's ``execution_state`` is ``busy`` (a cell is running), or,
unless ``busy_only``, when the newest ``last_activity`` is at most ``recent_seconds``
before the host's wall clock (``time.time()``: Jupyter stamps real time, whatever clock
the agent runs on); ``idle`` when the server answers and neither holds (a forgotten
notebook: its kernel idle, its last activity old). ``unavailable`` while the server has
never answered (Jupyter not running, or not yet) and for the first failures after it
did; ``unhealthy`` once it answered before and then failed :data:`UNHEALTHY_AFTER`
times in a row. Neither of those two is ever activity.

The settings (``activity.sources.jupyter`` of the agent config) are this plugin's own:
the agent does not know them, so :class:`JupyterSource` checks them itself. The token
(``token_file``) goes only into the ``Authorization`` header, never into a detail.
"""

from __future__ import annotations

import json
import math
import os
import re
import time
from datetime import datetime, timedelta, timezone
from typing import TYPE_CHECKING, Any, Callable, Mapping

from soong_core.interfaces import ActivitySource
from soong_core.models import ActivitySample, ActivityState, Timestamp

if TYPE_CHECKING:
    import urllib.request

WHERE = "activity.sources.jupyter"
DEFAULTS: Mapping[str, Any] = {
    "url": "http://127.0.0.1:8888", "token_file": None, "busy_only": False,
    "timeout_seconds": 5, "recent_seconds": 120,
}
IGNORED = frozenset({"enabled", "_comment"})
"""Keys of the section that are the agent's, not this source's."""
MAX_TIMEOUT_S = 60
UNHEALTHY_AFTER = 3
"""Failed looks in a row, after the server answered once, that make the source unhealthy."""
MAX_BODY = 1024 * 1024
"""Bytes of the answer read; a kernel takes about 200."""
MAX_TOKEN = 4096
KERNELS_PATH = "/api/kernels"

Fetch = Callable[[str, Mapping[str, str], float], bytes]
"""``fetch(url, headers, timeout_s) -> body`` of a 200 answer; raises :class:`FetchError`
(another status, an answer too large or too slow) or :class:`OSError` (no connection)."""

_TIME = re.compile(r"(\d{4})-(\d{2})-(\d{2})[T ](\d{2}):(\d{2}):(\d{2})(?:[.,](\d+))?"
                   r"\s*(Z|[+-]\d{2}:?\d{2})?", re.IGNORECASE)
_CONTROL = re.compile(r"[\x00-\x1f\x7f]+")


class FetchError(Exception):
    """The server answered, but not with kernels; the message is one line, no secrets."""


class JupyterSource(ActivitySource):
    """A Jupyter server's kernels, through its REST API.

    :param settings: ``url``, ``token_file``, ``busy_only``, ``timeout_seconds``,
        ``recent_seconds`` (see :data:`DEFAULTS`); checked here, :class:`ValueError`
        with one line naming every bad key.
    :param fetch: how the answer is fetched (tests); :func:`http_get` by default.
    :param wall: the host's wall clock that ``last_activity`` is compared with.
    :param environ: where ``SOONG_ROOT`` is read; ``token_file`` lies under it, as
        every path the agent reads does.
    """

    name = "jupyter"

    def __init__(self, settings: Mapping[str, Any] | None = None, *,
                 fetch: Fetch | None = None, wall: Callable[[], float] = time.time,
                 environ: Mapping[str, str] | None = None) -> None:
        given = dict(settings or {})
        problems = [f"{WHERE}.{key}: unknown key"
                    for key in sorted(set(given) - set(DEFAULTS) - IGNORED, key=str)]
        merged = {key: given.get(key, default) for key, default in DEFAULTS.items()}
        url, wrong = _check_url(merged["url"])
        if wrong:
            problems.append(f"{WHERE}.url: {wrong}")
        token_file = merged["token_file"]
        if token_file is not None and not (isinstance(token_file, str)
                                           and token_file.startswith("/")
                                           and "\x00" not in token_file):
            problems.append(f"{WHERE}.token_file: must be null or an absolute path, "
                            f"got {_describe(token_file)}")
        if not isinstance(merged["busy_only"], bool):
            problems.append(f"{WHERE}.busy_only: must be true or false, "
                            f"got {_describe(merged['busy_only'])}")
        timeout = merged["timeout_seconds"]
        if not (_is_number(timeout) and 0 < timeout <= MAX_TIMEOUT_S):
            problems.append(f"{WHERE}.timeout_seconds: must be a number above 0 and at most "
                            f"{MAX_TIMEOUT_S}, got {_describe(timeout)}")
        recent = merged["recent_seconds"]
        if not (_is_number(recent) and recent >= 0):
            problems.append(f"{WHERE}.recent_seconds: must be a number of at least 0, "
                            f"got {_describe(recent)}")
        if problems:
            raise ValueError("; ".join(problems))
        self.url: str = url
        self.kernels_url = url + KERNELS_PATH
        root = (os.environ if environ is None else environ).get("SOONG_ROOT", "")
        self.token_file: str | None = None if token_file is None else root + token_file
        self.busy_only: bool = merged["busy_only"]
        self.timeout_s = float(timeout)
        self.recent_s = float(recent)
        self._fetch: Fetch = fetch or http_get
        self._wall = wall
        self._answered = False
        self._failures = 0

    def sample(self, now: Timestamp) -> ActivitySample:
        try:
            headers = {"Accept": "application/json"}
            token = self._token()
            if token is not None:
                headers["Authorization"] = "token " + token
            kernels = parse_kernels(self._fetch(self.kernels_url, headers, self.timeout_s))
        except (FetchError, OSError) as exc:
            return self._failed(_reason(exc))
        except Exception as exc:  # a source should not raise: say what went wrong
            return self._failed(f"{type(exc).__name__}: {_reason(exc)}")
        self._answered, self._failures = True, 0
        return self._judge(kernels)

    def _judge(self, kernels: list[Mapping[str, Any]]) -> ActivitySample:
        busy = sum(1 for kernel in kernels if kernel.get("execution_state") == "busy")
        health = {"kernels": len(kernels), "busy": busy, "url": self.url}
        if busy:
            return ActivitySample(ActivityState.ACTIVE,
                                  f"{busy} of {_kernels(len(kernels))} busy", health)
        if not kernels:
            return ActivitySample(ActivityState.IDLE, "no kernels", health)
        idle = f"{_kernels(len(kernels))}, none busy"
        if self.busy_only:
            return ActivitySample(ActivityState.IDLE, idle, health)
        stamps = [stamp for stamp in map(parse_time, (k.get("last_activity") for k in kernels))
                  if stamp is not None]
        if not stamps:
            return ActivitySample(ActivityState.IDLE, idle + ", no last_activity", health)
        age = self._wall() - max(stamps)
        ago = f"last active {max(0.0, age):.0f} s ago by the wall clock"
        if age <= self.recent_s:
            return ActivitySample(ActivityState.ACTIVE,
                                  f"{ago} (recent_seconds {self.recent_s:g})", health)
        return ActivitySample(ActivityState.IDLE, f"{idle}, {ago}", health)

    def _failed(self, reason: str) -> ActivitySample:
        self._failures += 1
        health = {"kernels": None, "busy": None, "url": self.url}
        if not self._answered:
            return ActivitySample(ActivityState.UNAVAILABLE,
                                  _one_line(f"no answer from {self.url}: {reason}"), health)
        if self._failures >= UNHEALTHY_AFTER:
            return ActivitySample(ActivityState.UNHEALTHY, _one_line(
                f"{self.url} failed {self._failures} times in a row: {reason}"), health)
        return ActivitySample(ActivityState.UNAVAILABLE, _one_line(
            f"{self.url} failed ({self._failures} of {UNHEALTHY_AFTER} before unhealthy): "
            f"{reason}"), health)

    def _token(self) -> str | None:
        """The token, read at every look (Jupyter may write it after the agent starts)."""
        path = self.token_file
        if path is None:
            return None
        try:
            with open(path, "rb") as file:
                data = file.read(MAX_TOKEN + 1)
        except OSError as exc:
            raise FetchError(f"cannot read token_file {path}: "
                             f"{exc.strerror or type(exc).__name__}") from None
        if len(data) > MAX_TOKEN:
            raise FetchError(f"token_file {path} holds more than {MAX_TOKEN} bytes")
        token = data.decode("utf-8", errors="replace").strip()
        if not token:
            raise FetchError(f"token_file {path} is empty")
        if not all(char.isprintable() and not char.isspace() for char in token):
            raise FetchError(f"token_file {path} must hold one word (the token)")
        return token


def http_get(url: str, headers: Mapping[str, str], timeout_s: float) -> bytes:
    """GET ``url`` without proxies or redirects; at most :data:`MAX_BODY` bytes, and the
    body within ``timeout_s`` of the answer's start (each wait on the socket too)."""
    import urllib.error
    import urllib.request

    request = urllib.request.Request(url, method="GET")
    for key, value in headers.items():
        request.add_unredirected_header(key, value)
    deadline = time.monotonic() + timeout_s
    try:
        with _opener().open(request, timeout=timeout_s) as answer:
            read = getattr(answer, "read1", answer.read)
            body = bytearray()
            while True:
                chunk = read(min(64 * 1024, MAX_BODY + 1 - len(body)))
                if not chunk:
                    return bytes(body)
                body += chunk
                if len(body) > MAX_BODY:
                    raise FetchError(f"the answer is larger than {MAX_BODY} bytes")
                if time.monotonic() > deadline:
                    raise FetchError(f"no whole answer within {timeout_s:g} s")
    except urllib.error.HTTPError as exc:
        exc.close()
        hint = " (is token_file right?)" if exc.code in (401, 403) else ""
        raise FetchError(f"HTTP {exc.code} {_one_line(str(exc.reason))}{hint}") from None
    except urllib.error.URLError as exc:
        raise OSError(_reason(exc.reason)) from None


def _opener() -> urllib.request.OpenerDirector:
    import urllib.request

    class NoRedirect(urllib.request.HTTPRedirectHandler):
        """A redirect is an error: it would be a login page, never the kernels."""

        def redirect_request(self, *args: Any, **kwargs: Any) -> None:
            return None

    return urllib.request.build_opener(urllib.request.ProxyHandler({}), NoRedirect())


def parse_kernels(body: bytes) -> list[Mapping[str, Any]]:
    """The kernels of an ``/api/kernels`` answer; :class:`FetchError` for another shape."""
    try:
        data = json.loads(body.decode("utf-8"))
    except (UnicodeDecodeError, ValueError, RecursionError):
        raise FetchError("the answer is not JSON (is this a Jupyter server?)") from None
    if not isinstance(data, list) or not all(isinstance(kernel, dict) for kernel in data):
        raise FetchError("the answer is not a list of kernels (is this a Jupyter server?)")
    return data


def parse_time(value: object) -> float | None:
    """An ISO 8601 moment as a Unix timestamp (UTC when it names no offset), or None.

    Jupyter writes ``2026-12-03T11:39:00.822405Z``; any number of fraction digits, a
    ``Z`` or a ``+hh:mm`` offset are read the same on every Python from 3.10.
    """
    if not isinstance(value, str):
        return None
    match = _TIME.fullmatch(value.strip())
    if not match:
        return None
    year, month, day, hour, minute, second, fraction, offset = match.groups()
    try:
        zone = timezone.utc
        if offset and offset.upper() != "Z":
            digits = offset[1:].replace(":", "")
            shift = timedelta(hours=int(digits[:2]), minutes=int(digits[2:]))
            zone = timezone(-shift if offset[0] == "-" else shift)
        moment = datetime(int(year), int(month), int(day), int(hour), int(minute),
                          int(second), tzinfo=zone)
        stamp = moment.timestamp() + (float("0." + fraction) if fraction else 0.0)
    except (ValueError, OverflowError):
        return None
    return stamp if math.isfinite(stamp) else None


def _check_url(value: object) -> tuple[str, str | None]:
    """``value`` without its trailing slash, and what is wrong with it (None: nothing)."""
    if not isinstance(value, str) or not value or _CONTROL.search(value) or " " in value:
        return "", f"must be an http:// or https:// URL, got {_describe(value)}"
    from urllib.parse import urlsplit

    try:
        parts = urlsplit(value)
        port_ok = parts.port is None or parts.port > 0
    except ValueError:
        return "", f"must be an http:// or https:// URL with a valid port, got {_describe(value)}"
    if parts.scheme not in ("http", "https") or not parts.hostname or not port_ok:
        return "", f"must be an http:// or https:// URL, got {_describe(value)}"
    if parts.username is not None or parts.password is not None:
        return "", "must not hold credentials (put the token in token_file)"
    if parts.query or parts.fragment or value.endswith(("?", "#")):
        return "", "must not hold a query or fragment (put the token in token_file)"
    return value.rstrip("/"), None


def _is_number(value: object) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) \
        and math.isfinite(value)


def _describe(value: object) -> str:
    text = json.dumps(value) if isinstance(value, (str, int, float, bool, type(None))) \
        else type(value).__name__
    return text if len(text) <= 80 else text[:77] + "..."


def _kernels(count: int) -> str:
    return "1 kernel" if count == 1 else f"{count} kernels"


def _reason(exc: object) -> str:
    if isinstance(exc, OSError) and exc.strerror and not isinstance(exc, FetchError):
        return exc.strerror
    return _one_line(str(exc)) or type(exc).__name__


def _one_line(text: str, limit: int = 240) -> str:
    flat = " ".join(_CONTROL.sub(" ", text).split())
    return flat if len(flat) <= limit else flat[:limit - 3] + "..."
