"""HTTP for the Lambda Cloud client: one session per process, retries, pacing, redaction.

* **One ``requests.Session`` per process** (:func:`shared`), so connections are reused
  by every provider object, and one :class:`~.pacing.Limiter` per endpoint, so two
  ``Soong`` objects in one program share the account's allowance instead of each
  spending all of it.
* **Retries** are urllib3's (:class:`LimitedRetry`): 429, 500, 502, 503 and 504 answers,
  connection errors and read errors, with exponential backoff plus jitter, or the
  server's ``Retry-After`` when it sends one; after the wait each retry takes a token
  from the limiter like any request. Other 4xx answers come back at once.
* **Launch is never retried here.** ``POST /instance-operations/launch`` has its own
  adapter with no retries at all (mounted on its URL: requests picks the adapter with
  the longest matching prefix). A lost launch reply is the client's business: it
  reconciles by the launch's tag before trying again (:mod:`.client`).
* **Every call has a timeout** (connect, read).
* **The server's clock**: each reply's ``Date`` is remembered with the monotonic time
  it came, so :meth:`Transport.server_time` can say what time the API thinks it is
  (``start`` refuses to launch from a laptop whose clock is off).
* **Secrets**: the key travels only in the ``Authorization`` header, set per request by
  :class:`BearerAuth` (whose repr is masked); debug lines go to the ``soong.lambda``
  logger through its redacting filter and never include headers or bodies.

Imports requests and urllib3: only :mod:`.client` imports this module, and only the
provider factory imports the client, so ``soong --help`` never pays for them.
"""

from __future__ import annotations

import random
import threading
import time
from dataclasses import dataclass, field
from datetime import timezone
from email.utils import parsedate_to_datetime
from typing import Any, Iterator, Mapping

import requests
from requests.adapters import HTTPAdapter
from urllib3.util.retry import Retry

from soong_plugins.lambda_labs import errors
from soong_plugins.lambda_labs.pacing import Limiter, Timer, WallTimer
from soong_plugins.lambda_labs.redact import MASK, get_logger, register_secret

log = get_logger()

LAUNCH_PATH = "/instance-operations/launch"
RETRY_STATUSES = frozenset({429, 500, 502, 503, 504})
RETRY_METHODS = frozenset({"GET", "HEAD", "OPTIONS", "PUT", "DELETE", "POST"})
"""POST is here because every POST this client sends through the general adapter is
safe to repeat (terminate, restart, rename; a repeated add-key or create-filesystem is
answered ``global/duplicate``, which the provider checks). Launch never reaches it."""
TOTAL_RETRIES = 6
CONNECT_RETRIES = 3
READ_RETRIES = 3
STATUS_RETRIES = 5
BACKOFF_BASE = 0.5
"""The first retry waits about this long, each next one twice as long..."""
BACKOFF_MAX = 20.0
"""...up to this."""
JITTER = 0.5
"""Plus a random fraction of this, so clients that failed together do not return together."""
RETRY_AFTER_MAX = 60.0
"""A longer ``Retry-After`` is cut to this: the user is waiting."""
TIMEOUT = (5.0, 30.0)
"""(connect, read) seconds for every call."""
USER_AGENT = "soong (Lambda Cloud provider)"


class MaskedHeader(str):
    """A header value that sends as itself but shows as ``****`` in any ``repr``: the
    header dicts that requests and urllib3 pass down their call stack then print masked
    in tracebacks that show locals (pytest's, rich's, error trackers')."""

    def __repr__(self) -> str:
        return repr(MASK)


class BearerAuth(requests.auth.AuthBase):
    """Puts the key in the ``Authorization`` header of each request, and nowhere else."""

    def __init__(self, key: str) -> None:
        self._key = MaskedHeader(key)

    def __call__(self, request: requests.PreparedRequest) -> requests.PreparedRequest:
        request.headers["Authorization"] = MaskedHeader(f"Bearer {self._key}")
        return request

    def __repr__(self) -> str:
        return f"BearerAuth({MASK})"


class LimitedRetry(Retry):
    """urllib3's Retry whose waits go through the limiter: the backoff (or the server's
    ``Retry-After``) on the limiter's timer, then a token, as for any request.

    urllib3 copies a Retry at each attempt through :meth:`new`, which is extended here
    to carry the limiter along.
    """

    limiter: Limiter | None = None

    def new(self, **kw: Any) -> LimitedRetry:
        retry = super().new(**kw)
        retry.limiter = self.limiter
        return retry

    def backoff(self) -> float:
        """Exponential in the consecutive failures so far, plus jitter."""
        failures = max(1, len(self.history))
        return float(min(BACKOFF_MAX, BACKOFF_BASE * 2.0 ** (failures - 1))
                     + random.uniform(0, JITTER))

    def sleep(self, response: Any = None) -> None:
        delay = None
        if self.respect_retry_after_header and response is not None:
            delay = self.get_retry_after(response)
        delay = min(RETRY_AFTER_MAX, delay) if delay is not None else self.backoff()
        last = self.history[-1] if self.history else None
        if last is not None:
            cause = f"HTTP {last.status}" if last.status else _short(last.error)
            log.debug("retry %d: %s %s after %s, in %.2fs", len(self.history), last.method,
                      last.url, cause, delay)
        if self.limiter is None:
            time.sleep(delay)
            return
        self.limiter.pause(delay)
        self.limiter.acquire()


def _short(error: Any) -> str:
    return type(error).__name__ if error is not None else "an error"


def make_retry(limiter: Limiter, *, loopback: bool) -> LimitedRetry:
    """The general adapter's policy. A refused connection on loopback is not retried:
    nothing listens there (the simulator is down), and waiting would only delay saying so."""
    retry = LimitedRetry(
        total=TOTAL_RETRIES, connect=0 if loopback else CONNECT_RETRIES, read=READ_RETRIES,
        status=STATUS_RETRIES, other=0, redirect=0, allowed_methods=RETRY_METHODS,
        status_forcelist=RETRY_STATUSES, raise_on_status=False, raise_on_redirect=False,
        respect_retry_after_header=True)
    retry.limiter = limiter
    return retry


@dataclass
class ProcessState:
    """What one process shares: the session and a limiter per endpoint."""

    timer: Timer = field(default_factory=WallTimer)
    session: requests.Session | None = None
    limiters: dict[str, Limiter] = field(default_factory=dict)
    mounted: set[str] = field(default_factory=set)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def limiter(self, endpoint: str) -> Limiter:
        with self.lock:
            if endpoint not in self.limiters:
                self.limiters[endpoint] = Limiter(self.timer)
            return self.limiters[endpoint]

    def session_for(self, endpoint: str) -> requests.Session:
        """The shared session, with this endpoint's adapters mounted (once)."""
        limiter = self.limiter(endpoint)
        with self.lock:
            if self.session is None:
                self.session = requests.Session()
                self.session.headers["User-Agent"] = USER_AGENT
                self.session.headers["Accept"] = "application/json"
            if endpoint not in self.mounted:
                general = HTTPAdapter(max_retries=make_retry(
                    limiter, loopback=errors.is_loopback(endpoint)))
                self.session.mount(endpoint + "/", general)
                self.session.mount(endpoint + LAUNCH_PATH, HTTPAdapter(max_retries=0))
                self.mounted.add(endpoint)
            return self.session

    def close(self) -> None:
        with self.lock:
            if self.session is not None:
                self.session.close()
            self.session = None
            self.mounted.clear()


_state = ProcessState()


def shared() -> ProcessState:
    return _state


def reset(timer: Timer | None = None) -> ProcessState:
    """Start over with a fresh session and limiters (on ``timer``): for tests and for
    programs that fork. Returns the new state."""
    global _state
    _state.close()
    _state = ProcessState(timer=timer or WallTimer())
    return _state


@dataclass(frozen=True)
class Reply:
    status: int
    body: Any
    """Parsed JSON, or ``None`` when the reply was not JSON (see ``text``)."""
    headers: Mapping[str, str]
    retries: int = 0
    text: str = ""

    @property
    def ok(self) -> bool:
        return 200 <= self.status < 300

    @property
    def data(self) -> Any:
        return self.body.get("data") if isinstance(self.body, dict) else None


class Transport:
    """Sends requests to one endpoint with one key; answers are :class:`Reply`,
    failures to get any answer are :class:`~.errors.ConnectionFailedError`."""

    def __init__(self, api_url: str, api_key: str | None, *,
                 state: ProcessState | None = None,
                 timeout: tuple[float, float] = TIMEOUT) -> None:
        self.api_url = api_url.rstrip("/")
        self._auth = BearerAuth(api_key) if api_key else None
        register_secret(api_key)
        self._state = state
        self.timeout = timeout
        self._server_clock: tuple[float, float] | None = None
        """(the latest usable ``Date`` as POSIX seconds, ``time.monotonic()`` when it came)."""

    def __repr__(self) -> str:
        return f"Transport({self.api_url!r})"

    @property
    def state(self) -> ProcessState:
        return self._state if self._state is not None else shared()

    @property
    def limiter(self) -> Limiter:
        return self.state.limiter(self.api_url)

    def request(self, method: str, path: str, body: Any = None, *,
                launch: bool = False) -> Reply:
        """``method`` on ``path`` (below the API URL), paced, retried, timed out."""
        if self._auth is None:
            raise errors.MissingApiKeyError()
        url = self.api_url + path
        session = self.state.session_for(self.api_url)
        waited = self.limiter.acquire(launch=launch)
        log.debug("%s %s%s", method, url, f" (paced {waited:.2f}s)" if waited else "")
        started = time.monotonic()
        try:
            response = session.request(method, url, json=body, auth=self._auth,
                                       timeout=self.timeout, allow_redirects=False)
        except requests.exceptions.RequestException as exc:
            if _timed_out(exc):
                error = errors.connection_error(url, "timed out", refused=False, timeout=True,
                                                seconds=self.timeout[1])
            else:
                error = errors.connection_error(url, _reason(exc), refused=_refused(exc))
            error.maybe_sent = not _never_sent(exc)
            log.debug("%s %s: %s", method, url, error.message)
            raise error from exc
        self._note_date(response.headers.get("Date"))
        retries = len(getattr(getattr(response.raw, "retries", None), "history", ()) or ())
        try:
            parsed = response.json() if response.content else None
            text = ""
        except ValueError:
            parsed, text = None, response.text[:200]
        log.debug("%s %s -> %d in %.0f ms%s", method, url, response.status_code,
                  (time.monotonic() - started) * 1000,
                  f" after {retries} retries" if retries else "")
        return Reply(response.status_code, parsed, dict(response.headers), retries, text)

    def server_time(self, rate: float = 1.0) -> float | None:
        """The server's clock now (POSIX seconds): the ``Date`` of the latest reply that
        had a usable one, plus the monotonic time elapsed since it came, times ``rate``
        (the server's seconds per wall second: more than 1 for a simulator running
        faster); ``None`` before any. Good to about a second (``Date`` has whole
        seconds). Makes no request."""
        reading = self._server_clock
        if reading is None:
            return None
        date, received = reading
        return date + rate * (time.monotonic() - received)

    def _note_date(self, value: str | None) -> None:
        """Remember a reply's ``Date``; a missing or malformed one leaves the last reading."""
        received = time.monotonic()
        date = parse_http_date(value)
        if date is None:
            if value is not None:
                log.debug("ignoring a malformed Date header from %s", self.api_url)
            return
        self._server_clock = (date, received)  # one assignment: threads see old or new


def parse_http_date(value: str | None) -> float | None:
    """An HTTP ``Date`` (RFC 9110's IMF-fixdate, or the obsolete forms the email module
    reads) as POSIX seconds; ``None`` when missing or malformed. A date with no zone
    (``-0000``) is taken as UTC, which HTTP dates always are."""
    if not value:
        return None
    try:
        moment = parsedate_to_datetime(value)
    except (TypeError, ValueError, IndexError, OverflowError):
        return None
    if moment is None:
        return None
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=timezone.utc)
    try:
        return moment.timestamp()
    except (OverflowError, OSError, ValueError):
        return None


def _chain(exc: BaseException) -> Iterator[BaseException]:
    """``exc`` and everything it wraps: args, ``reason``, causes, contexts."""
    seen: set[int] = set()
    todo: list[Any] = [exc]
    while todo:
        item = todo.pop()
        if not isinstance(item, BaseException) or id(item) in seen:
            continue
        seen.add(id(item))
        yield item
        todo.extend(item.args)
        todo.extend([getattr(item, "reason", None), item.__cause__, item.__context__])


def _refused(exc: BaseException) -> bool:
    return any(isinstance(e, ConnectionRefusedError) or "connection refused" in str(e).lower()
               for e in _chain(exc))


def _timed_out(exc: BaseException) -> bool:
    """A read or connect timeout, however wrapped (requests turns a read timeout that
    outlived the retries into a ConnectionError around urllib3's MaxRetryError)."""
    from urllib3.exceptions import NewConnectionError
    from urllib3.exceptions import TimeoutError as Urllib3Timeout

    return any(isinstance(e, (requests.exceptions.Timeout, Urllib3Timeout, TimeoutError))
               and not isinstance(e, NewConnectionError) for e in _chain(exc))


def _never_sent(exc: BaseException) -> bool:
    """True when the request surely did not reach the server (no connection was made:
    refused, unresolvable, or the connect itself timed out)."""
    from urllib3.exceptions import ConnectTimeoutError

    return any(isinstance(e, (ConnectTimeoutError, requests.exceptions.ConnectTimeout,
                              ConnectionRefusedError)) for e in _chain(exc))


def _reason(exc: BaseException) -> str:
    """A short human reason: refused, unknown host, reset, closed, timed out."""
    chain = list(_chain(exc))
    text = " ".join(str(e) for e in chain).lower()
    if any(isinstance(e, ConnectionRefusedError) for e in chain) or "connection refused" in text:
        return "connection refused"
    if any(s in text for s in ("name or service not known", "nodename nor servname",
                               "temporary failure in name resolution", "getaddrinfo failed",
                               "failed to resolve")):
        return "the host name does not resolve"
    if any(isinstance(e, ConnectionResetError) for e in chain) or "reset by peer" in text:
        return "the connection was reset"
    if "remote end closed" in text or "remotedisconnected" in text or "aborted" in text:
        return "the server closed the connection without answering"
    if "timed out" in text or "timeout" in text:
        return "timed out"
    if "ssl" in text or "certificate" in text:
        return "TLS failed (certificate or proxy problem)"
    return "no answer"
