"""HTTP for the Lambda Cloud client: one session per process, retries, pacing, deadline,
redaction.

* **One ``requests.Session`` per process** (:func:`shared`), so connections are reused
  by every provider object, and one :class:`~.pacing.Limiter` per account, whose
  buckets live in the account's pacing file: two ``Soong`` objects in one program, or
  two soong commands run at once, share the account's allowance instead of each
  spending all of it.
* **Retries** are this module's own loop (:meth:`Transport.request`): 429, 500, 502, 503
  and 504 answers, connection errors and read errors, with exponential backoff plus
  jitter (urllib3's ``Retry`` backoff, :func:`backoff`, which the launch loop of
  :mod:`.client` waits too), or the server's ``Retry-After`` when it sends one; after
  the wait each retry takes a token from the limiter like any request. Other 4xx
  answers come back at once.
  urllib3's own retries are off (``max_retries=0``), so every attempt, and the timeout
  it is given, is decided here.
* **Launch is never retried here.** ``POST /instance-operations/launch`` is sent once
  per call. A lost launch reply is the client's business: it reconciles by the launch's
  tag before trying again (:mod:`.client`).
* **Every attempt has a timeout** (connect, read), **and the API a deadline**
  (``--api-timeout``, :class:`ApiBudget`): the time spent on requests that got no
  answer yet, with their retries and their waits for the rate limit or ``Retry-After``,
  may not pass it. Each attempt's timeout is cut to what is left, and no wait goes past
  it; then :class:`~.errors.ApiDeadlineError` ends the command in one line. An answer
  (any HTTP reply) starts the count afresh, and time spent outside requests (polling
  intervals, a prompt) never counts, so ``--wait-for-capacity`` may wait for hours
  while a silent API still stops a command after the deadline.
* **The server's clock**: each reply's ``Date`` is remembered with the monotonic time
  it came, so :meth:`Transport.server_time` can say what time the API thinks it is
  (``start`` refuses to launch from a laptop whose clock is off).
* **Secrets**: the key travels only in the ``Authorization`` header, set per request by
  :class:`BearerAuth` (whose repr is masked); debug lines go to the ``soong.lambda``
  logger through its redacting filter and never include headers or bodies. The pacing
  file is named by a hash (:func:`~.pacing.account_hash`), never the key.

Imports requests and urllib3: only :mod:`.client` imports this module, and only the
provider factory imports the client, so ``soong --help`` never pays for them.
"""

from __future__ import annotations

import math
import threading
import time
from dataclasses import dataclass, field
from datetime import timezone
from email.utils import parsedate_to_datetime
from typing import Any, Callable, Iterator, Mapping

import requests
from requests.adapters import HTTPAdapter
from urllib3.util.retry import RequestHistory, Retry

from soong_plugins.lambda_labs import errors
from soong_plugins.lambda_labs.pacing import (
    Limiter,
    Timer,
    TooLong,
    WallTimer,
    account_hash,
    pacing_path,
)
from soong_plugins.lambda_labs.redact import MASK, get_logger, register_secret

log = get_logger()

LAUNCH_PATH = "/instance-operations/launch"
RETRY_STATUSES = frozenset({429, 500, 502, 503, 504})
"""Answers worth another attempt. Every other request this client sends is safe to
repeat, POSTs included (terminate, restart, rename; a repeated add-key or
create-filesystem is answered ``global/duplicate``, which the provider checks). Launch
never is."""
TOTAL_RETRIES = 6
CONNECT_RETRIES = 3
"""Retries after a connection that could not be made (none on loopback: nothing listens
there, the simulator is down, and waiting would only delay saying so)."""
READ_RETRIES = 3
"""Retries after a request that was sent but got no answer (reset, closed, timed out)."""
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
"""(connect, read) seconds for every attempt, at most (the deadline may cut them)."""
API_TIMEOUT = 60.0
"""Seconds the API may go without answering before a command gives up (the default of
``defaults.api_timeout_seconds``, ``--api-timeout``)."""
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


def backoff_config() -> Retry:
    """The backoff, as urllib3 configures it: ``Retry(backoff_factor, backoff_max,
    backoff_jitter)`` from :data:`BACKOFF_BASE`, :data:`BACKOFF_MAX` and :data:`JITTER`
    (read at each call, so a test that sets ``JITTER = 0`` sets it everywhere).

    urllib3 waits ``backoff_factor * 2 ** (n - 1)`` after ``n`` consecutive errors and
    nothing after the first; soong waits after the first too. :func:`backoff` therefore
    counts one failure more and the factor is halved: the waits are
    :data:`BACKOFF_BASE`, twice that, four times..., up to :data:`BACKOFF_MAX`.
    """
    return Retry(total=None, backoff_factor=BACKOFF_BASE / 2, backoff_max=BACKOFF_MAX,
                 backoff_jitter=JITTER)


_FAILED = RequestHistory(method=None, url=None, error=None, status=None,
                         redirect_location=None)


def backoff(failures: int) -> float:
    """The wait after ``failures`` consecutive failures, exponential plus jitter: the one
    backoff of every retry here and of the launch loop in :mod:`.client`
    (:func:`backoff_config`'s ``get_backoff_time``)."""
    history = (_FAILED,) * (max(1, failures) + 1)
    return backoff_config().new(history=history).get_backoff_time()


def retry_after(headers: Mapping[str, str], now: float | None = None) -> float | None:
    """The server's ``Retry-After`` in seconds (a number, or an HTTP date from ``now``,
    wall time), at most :data:`RETRY_AFTER_MAX`; ``None`` when absent or unreadable."""
    value = headers.get("Retry-After")
    if not value:
        return None
    try:
        seconds = float(value)
    except ValueError:
        date = parse_http_date(value)
        if date is None:
            return None
        seconds = date - (time.time() if now is None else now)
    if not math.isfinite(seconds):
        return None
    return min(RETRY_AFTER_MAX, max(0.0, seconds))


class ApiBudget:
    """How long the API may go without answering (``--api-timeout``), per thread.

    :meth:`charge` counts what a request spends: its attempts (real seconds) and its
    waits (seconds of the limiter's timer, so tests on a virtual clock count them
    without sleeping). :meth:`answered` starts afresh, as does raising the deadline
    error (:meth:`close`): what comes after it, in a program that goes on, is a new
    question. ``seconds=None``: no deadline.
    """

    def __init__(self, seconds: float | None = API_TIMEOUT) -> None:
        self.seconds = seconds
        self._local = threading.local()

    def __repr__(self) -> str:
        return f"ApiBudget({self.seconds!r})"

    @property
    def spent(self) -> float:
        return float(getattr(self._local, "spent", 0.0))

    def left(self) -> float:
        return math.inf if self.seconds is None else self.seconds - self.spent

    def charge(self, seconds: float) -> None:
        self._local.spent = self.spent + max(0.0, seconds)

    def fits(self, wait: float) -> bool:
        """Whether a wait of ``wait`` seconds still leaves time for a request after it."""
        return wait < self.left()

    def cap(self, timeout: tuple[float, float]) -> tuple[float, float]:
        """``(connect, read)`` cut to what is left."""
        left = self.left()
        return (min(timeout[0], left), min(timeout[1], left))

    def answered(self) -> None:
        self._local.spent = 0.0

    close = answered


@dataclass
class ProcessState:
    """What one process shares: the session and a limiter per account."""

    timer: Timer = field(default_factory=WallTimer)
    session: requests.Session | None = None
    limiters: dict[str, Limiter] = field(default_factory=dict)
    mounted: set[str] = field(default_factory=set)
    lock: threading.Lock = field(default_factory=threading.Lock)
    shared_pacing: bool = True
    """Keep each account's buckets in its pacing file, for every process to share;
    ``False``: this process paces alone (what soong did before; benchmarks compare)."""

    def limiter(self, account: str, *aliases: str) -> Limiter:
        """The limiter of ``account`` (an :func:`~.pacing.account_hash`), which
        ``aliases`` name too: in one process, a provider that knows its account's
        identity and one that knows only the endpoint and key share one limiter (the
        first one's file)."""
        with self.lock:
            names = (account, *aliases)
            found = next((self.limiters[n] for n in names if n in self.limiters), None)
            if found is None:
                path = (lambda: pacing_path(account)) if self.shared_pacing else None
                found = Limiter(self.timer, path=path)
            for name in names:
                self.limiters.setdefault(name, found)
            return found

    def session_for(self, endpoint: str) -> requests.Session:
        """The shared session, with this endpoint's adapter mounted (once)."""
        with self.lock:
            if self.session is None:
                self.session = requests.Session()
                self.session.headers["User-Agent"] = USER_AGENT
                self.session.headers["Accept"] = "application/json"
            if endpoint not in self.mounted:
                self.session.mount(endpoint + "/", HTTPAdapter(max_retries=0))
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


def reset(timer: Timer | None = None, *, shared_pacing: bool = True) -> ProcessState:
    """Start over with a fresh session and limiters (on ``timer``): for tests and for
    programs that fork. Returns the new state."""
    global _state
    _state.close()
    _state = ProcessState(timer=timer or WallTimer(), shared_pacing=shared_pacing)
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


API_PREFIX = "/api/v1"
"""Where Lambda Cloud's API (and the simulator's) lives below its host."""


class Transport:
    """Sends requests to one endpoint with one key; answers are :class:`Reply`,
    failures to get any answer are :class:`~.errors.ConnectionFailedError`.

    ``api_timeout``: seconds the API may go without answering (see :class:`ApiBudget`;
    ``None``: no deadline). ``identity``: the account, or a callable asked at the first
    request (the provider learns it from its config after building the transport);
    with one, the pacing is shared by every key and endpoint of that account.
    """

    def __init__(self, api_url: str, api_key: str | None, *,
                 state: ProcessState | None = None,
                 timeout: tuple[float, float] = TIMEOUT,
                 api_timeout: float | None = API_TIMEOUT,
                 identity: str | Callable[[], str | None] | None = None) -> None:
        self.api_url = api_url.rstrip("/")
        self._auth = BearerAuth(api_key) if api_key else None
        register_secret(api_key)
        self._state = state
        self.timeout = timeout
        self.budget = ApiBudget(api_timeout)
        self._identity = identity
        self._by_key = account_hash(self.api_url, api_key)
        self._server_clock: tuple[float, float] | None = None
        """(the latest usable ``Date`` as POSIX seconds, ``time.monotonic()`` when it came)."""

    def __repr__(self) -> str:
        return f"Transport({self.api_url!r})"

    @property
    def state(self) -> ProcessState:
        return self._state if self._state is not None else shared()

    @property
    def account(self) -> str:
        """The pacing account: a hash of the identity, else of the endpoint and key."""
        identity = self._identity() if callable(self._identity) else self._identity
        return account_hash(self.api_url, None, identity) if identity else self._by_key

    @property
    def limiter(self) -> Limiter:
        account = self.account
        return self.state.limiter(account, *({self._by_key} - {account}))

    def pause(self, seconds: float) -> bool:
        """Wait ``seconds`` (a backoff between launch attempts) if that leaves time for
        another request before the deadline; ``False``, without waiting, if not."""
        if not self.budget.fits(seconds):
            return False
        self.limiter.pause(seconds)
        self.budget.charge(seconds)
        return True

    def request(self, method: str, path: str, body: Any = None, *,
                launch: bool = False) -> Reply:
        """``method`` on ``path`` (below the API URL), paced, retried (never a launch),
        each attempt timed out, all of it within the deadline."""
        if self._auth is None:
            raise errors.MissingApiKeyError()
        url = self.api_url + path
        session = self.state.session_for(self.api_url)
        limiter = self.limiter
        connect_limit = 0 if errors.is_loopback(self.api_url) else CONNECT_RETRIES
        retries = connects = reads = statuses = 0
        while True:
            waited = self._paced(limiter, launch, url, retry=retries > 0)
            log.debug("%s %s%s", method, url, f" (paced {waited:.2f}s)" if waited else "")
            timeout = self.budget.cap(self.timeout)
            started = time.monotonic()
            try:
                response = session.request(method, url, json=body, auth=self._auth,
                                           timeout=timeout, allow_redirects=False)
            except requests.exceptions.RequestException as exc:
                self.budget.charge(time.monotonic() - started)
                error = self._no_answer(exc, url, timeout)
                log.debug("%s %s: %s", method, url, error.message)
                connect = not error.maybe_sent
                retryable = (not launch and retries < TOTAL_RETRIES
                             and not isinstance(error, errors.ApiDeadlineError)
                             and (connects < connect_limit if connect else reads < READ_RETRIES))
                if not retryable:
                    raise error from exc
                delay = backoff(retries + 1)
                if not self._wait(delay):
                    raise self._deadline(url, error.maybe_sent, cause=error.message) from exc
                retries += 1
                connects, reads = connects + connect, reads + (not connect)
                log.debug("retry %d: %s %s after %s, waited %.2fs", retries, method, url,
                          _short(exc), delay)
                continue
            self.budget.charge(time.monotonic() - started)
            self._note_date(response.headers.get("Date"))
            status = response.status_code
            if (status in RETRY_STATUSES and not launch and retries < TOTAL_RETRIES
                    and statuses < STATUS_RETRIES):
                asked = retry_after(response.headers)
                delay = backoff(retries + 1) if asked is None else asked
                if self._wait(delay, before=response):
                    retries += 1
                    statuses += 1
                    log.debug("retry %d: %s %s after HTTP %d, waited %.2fs", retries, method,
                              url, status, delay)
                    continue
                log.debug("%s %s: no retry after HTTP %d: waiting %.2fs would pass the "
                          "deadline", method, url, status, delay)
            self.budget.answered()
            return self._reply(response, method, url, started, retries)

    def simulator_control(self, path: str) -> Reply:
        """``GET /_sim{path}`` on the simulator this transport talks to: beside the API's
        own ``/api/v1``, never rate limited there, so neither paced nor retried here; one
        attempt within the deadline (:class:`~.errors.LambdaError` when unanswered)."""
        if self._auth is None:
            raise errors.MissingApiKeyError()
        root = self.api_url[:-len(API_PREFIX)] if self.api_url.endswith(API_PREFIX) \
            else self.api_url
        url = f"{root}/_sim{path}"
        timeout = self.budget.cap(self.timeout)
        started = time.monotonic()
        try:
            response = self.state.session_for(self.api_url).request(
                "GET", url, auth=self._auth, timeout=timeout, allow_redirects=False)
        except requests.exceptions.RequestException as exc:
            self.budget.charge(time.monotonic() - started)
            raise self._no_answer(exc, url, timeout) from exc
        self.budget.charge(time.monotonic() - started)
        return self._reply(response, "GET", url, started, 0)

    # -- the pieces of a request ---------------------------------------------------------------

    def _paced(self, limiter: Limiter, launch: bool, url: str, *, retry: bool) -> float:
        """Wait for a send slot within the deadline; the seconds waited. A retry that
        cannot have one in time ends as the API's silence it retries; a first attempt, as
        the rate limit's queue."""
        left = self.budget.left()
        if left <= 0:
            raise self._deadline(url, False)
        try:
            waited = limiter.acquire(launch=launch,
                                     within=None if math.isinf(left) else left)
        except TooLong as exc:
            if retry:
                raise self._deadline(url, False) from None
            self.budget.close()
            assert self.budget.seconds is not None  # a finite deadline cut the wait
            raise errors.deadline_error(url, self.budget.seconds, queued=exc.wait) from None
        self.budget.charge(waited)
        return waited

    def _wait(self, delay: float, before: requests.Response | None = None) -> bool:
        """Wait ``delay`` before a retry if that leaves time for it; a reply that will be
        retried is read first (so its connection goes back to the pool)."""
        if not self.budget.fits(delay):
            return False
        if before is not None:
            before.content  # reading it frees the connection
            before.close()
        self.limiter.pause(delay)
        self.budget.charge(delay)
        return True

    def _deadline(self, url: str, maybe_sent: bool,
                  cause: str | None = None) -> errors.ApiDeadlineError:
        self.budget.close()
        assert self.budget.seconds is not None  # only a finite deadline runs out
        error = errors.deadline_error(url, self.budget.seconds, cause=cause)
        error.maybe_sent = maybe_sent
        return error

    def _no_answer(self, exc: requests.exceptions.RequestException, url: str,
                   timeout: tuple[float, float]) -> errors.ConnectionFailedError:
        """The error for an attempt that got no answer: the deadline's when the attempt
        timed out on a timeout the deadline had cut."""
        never_sent = _never_sent(exc)
        if _timed_out(exc):
            phase = 0 if never_sent else 1
            if timeout[phase] < self.timeout[phase]:
                return self._deadline(url, not never_sent, cause="timed out")
            error: errors.ConnectionFailedError = errors.connection_error(
                url, "timed out", refused=False, timeout=True, seconds=timeout[phase])
        else:
            error = errors.connection_error(url, _reason(exc), refused=_refused(exc))
        error.maybe_sent = not never_sent
        return error

    def _reply(self, response: requests.Response, method: str, url: str, started: float,
               retries: int) -> Reply:
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


def _short(error: BaseException) -> str:
    return type(error).__name__


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
    from urllib3.exceptions import ConnectTimeoutError, NewConnectionError

    return any(isinstance(e, (ConnectTimeoutError, NewConnectionError,
                              requests.exceptions.ConnectTimeout, ConnectionRefusedError))
               for e in _chain(exc))


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
