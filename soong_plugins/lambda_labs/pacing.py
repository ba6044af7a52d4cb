"""The client-side rate limiter: stay under Lambda Cloud's limits instead of hitting them.

The API allows one request per second, and launches one per 12 seconds or five per
minute. The simulator models that as two token buckets (a bucket of 1 refilled at
1/s for every request; a bucket of 5 refilled at 1 per 12 s for launches) and so does
this limiter, a little slower than the server (:data:`MARGIN`), so that network jitter
between two requests sent exactly one second apart cannot make the server see them
closer together. Every request waits for its tokens here first, retries included
(:mod:`.transport` acquires a token before each attempt), so a batch never provokes a
storm of 429s.

**Shared by the processes of one account** (DESIGN, "Rate limits as the edge enforces
them"): the edge counts an account's requests whoever sends them, so a ``status`` run
while a ``start`` waits must queue behind it. A :class:`Limiter` given a ``path`` keeps
the buckets in that file (``$XDG_CACHE_HOME/soong/pacing-<account hash>.json``, see
:func:`pacing_path`): each acquire locks it (``fcntl.flock``, exclusive), reads the
levels, books the first free send slot, writes the levels back and unlocks, and only
then sleeps until its slot. Nobody sleeps holding the lock, so processes queue in the
order they asked, one slot each. Levels are stamped with wall time (``time.time()``,
the one clock every process shares); a clock that went back since the file was written
moves the stamps back with it, so a corrected clock never stalls a command.

A file that cannot be used (the cache folder is not writable, the lock is refused) is
one warning, then this process paces on its own; a file whose content is not ours is
rebuilt as if a request had just gone out (one second of caution, never a 429).

Time is read through a :class:`Timer`; tests inject a :class:`VirtualTimer`, whose
``sleep`` moves its clock instantly, to check the pacing without waiting for it.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import math
import os
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Iterator, Protocol, TextIO

from soong_plugins.lambda_labs.redact import get_logger

try:  # POSIX only; soong's CLI supports Linux and macOS.
    import fcntl
except ImportError:  # pragma: no cover - Windows
    fcntl = None  # type: ignore[assignment]

log = get_logger()

VERSION = 1
MAX_AHEAD = 3600.0
"""A file booking a slot further ahead than this (an hour of queue) is not believed:
it is rebuilt rather than stalling every command of the account."""


class Timer(Protocol):
    def time(self) -> float:
        """Wall seconds since the epoch: the clock every process on this machine shares."""

    def monotonic(self) -> float:
        """Seconds on a clock that never goes back."""

    def sleep(self, seconds: float) -> None:
        """Wait ``seconds`` of this clock."""


class WallTimer:
    """The real thing: :func:`time.time`, :func:`time.monotonic` and :func:`time.sleep`."""

    def time(self) -> float:
        return time.time()

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
    same clock, so client and server agree on what "one second later" means. Its wall
    time and its monotonic time are the same number.
    """

    def __init__(self, start: float = 1000.0) -> None:
        self._now = float(start)
        self._lock = threading.Lock()
        self.sleeps: list[float] = []

    def time(self) -> float:
        with self._lock:
            return self._now

    def monotonic(self) -> float:
        with self._lock:
            return self._now

    def sleep(self, seconds: float) -> None:
        if seconds > 0:
            with self._lock:
                self._now += seconds
                self.sleeps.append(seconds)

    def set(self, now: float) -> None:
        """Put the clock at ``now`` (back, too: a wall clock can be corrected)."""
        with self._lock:
            self._now = float(now)

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
    keeps the client's count at or below the server's. ``updated`` may lie in the
    future: the send time of the latest reservation, after which the next one queues.
    """

    def __init__(self, limit: Limit, tokens: float, updated: float) -> None:
        self.limit = limit
        self.tokens = tokens
        self.updated = updated

    @classmethod
    def full(cls, limit: Limit, now: float) -> TokenBucket:
        return cls(limit, float(limit.burst), now)

    def _level(self, at: float) -> float:
        return min(float(self.limit.burst),
                   self.tokens + max(0.0, at - self.updated) * self.limit.rate)

    def ready_at(self, now: float) -> float:
        """The earliest moment from ``now`` at which a token is there."""
        start = max(now, self.updated)
        missing = 1.0 - self._level(start)
        return start if missing <= 0 else start + missing / self.limit.rate

    def take(self, at: float) -> None:
        """Spend a token at ``at`` (not before :meth:`ready_at`)."""
        self.tokens = self._level(at) - 1.0
        self.updated = max(at, self.updated)

    def shift(self, seconds: float) -> None:
        """Move the stamps by ``seconds`` (the wall clock was set back that much)."""
        self.updated += seconds

    def to_json(self) -> dict[str, float]:
        return {"tokens": self.tokens, "updated": self.updated}

    @classmethod
    def from_json(cls, limit: Limit, data: Any) -> TokenBucket:
        """Raises ``ValueError`` for anything but what :meth:`to_json` writes."""
        if not isinstance(data, dict):
            raise ValueError("a bucket is not an object")
        return cls(limit, min(float(limit.burst), _number(data.get("tokens"))),
                   _number(data.get("updated")))


def _number(value: Any) -> float:
    """A finite JSON number, else ``ValueError``."""
    if isinstance(value, bool) or not isinstance(value, (int, float)) \
            or not math.isfinite(value):
        raise ValueError(f"{value!r} is not a finite number")
    return float(value)


class TooLong(Exception):
    """The first free send slot is further away than the caller may wait."""

    def __init__(self, wait: float) -> None:
        super().__init__(f"the next free send slot is {wait:.1f}s away")
        self.wait = wait


def account_hash(endpoint: str, api_key: str | None, identity: str | None = None) -> str:
    """What names an account's pacing file: its ``identity`` when the provider knows one
    (the same account on another endpoint shares its allowance), else the endpoint and
    the key. A salted SHA-256, 16 hex digits: never the key, nor anything to learn it by."""
    if identity:
        material = b"soong-pacing\0identity\0" + identity.encode("utf-8")
    else:
        material = (b"soong-pacing\0endpoint\0" + endpoint.rstrip("/").encode("utf-8")
                    + b"\0" + (api_key or "").encode("utf-8"))
    return hashlib.sha256(material).hexdigest()[:16]


def pacing_path(account: str, environ: dict[str, str] | None = None) -> Path:
    """``$XDG_CACHE_HOME/soong/pacing-<account>.json`` (``~/.cache/soong/...``)."""
    from soong_core.files import soong_dir

    return soong_dir("cache", environ) / f"pacing-{account}.json"


class Limiter:
    """Paces the requests of one account; thread-safe, and process-safe with a ``path``.

    :meth:`acquire` finds the first moment at which every bucket the request needs (a
    launch needs both) has a token, spends them at that moment, and sleeps until it.
    Concurrent callers queue one behind the other: threads of this process through a
    lock, other processes through the file at ``path`` (a callable is asked at each
    acquire, so a test that moves ``$XDG_CACHE_HOME`` is followed). Without a path the
    buckets live in this process only.
    """

    def __init__(self, timer: Timer | None = None, *, general: Limit = GENERAL,
                 launch: Limit = LAUNCH, path: Path | Callable[[], Path] | None = None) -> None:
        self.timer: Timer = timer or WallTimer()
        now = self.timer.time()
        self._limits = (general, launch)
        self._general = TokenBucket.full(general, now)
        self._launch = TokenBucket.full(launch, now)
        self._seen = now
        """The wall time of the latest acquire: a later one that reads less saw the clock
        set back."""
        self._path = path
        self._shared = path is not None
        self._lock = threading.Lock()
        self.waited = 0.0
        """Total seconds callers spent waiting here (benchmarks report it)."""

    @property
    def path(self) -> Path | None:
        """The pacing file, or ``None`` when this process paces alone."""
        if not self._shared or self._path is None:
            return None
        return self._path() if callable(self._path) else self._path

    def acquire(self, *, launch: bool = False, within: float | None = None) -> float:
        """Wait until a request (a launch, if ``launch``) may go; returns the seconds waited.

        :raises TooLong: the slot is more than ``within`` seconds away; nothing is
            booked then.
        """
        with self._lock:
            with self._state() as (general, launch_bucket, now):
                buckets = (general, launch_bucket) if launch else (general,)
                at = max(bucket.ready_at(now) for bucket in buckets)
                wait = at - now
                if within is not None and wait > within:
                    raise TooLong(wait)
                for bucket in buckets:
                    bucket.take(at)
            self.waited += wait
        if wait > 0:
            self.timer.sleep(wait)
        return wait

    def pause(self, seconds: float) -> None:
        """Wait ``seconds`` on this limiter's timer (backoff, ``Retry-After``)."""
        self.timer.sleep(seconds)

    # -- the state, in this process or in the shared file ----------------------------------

    @contextlib.contextmanager
    def _state(self) -> Iterator[tuple[TokenBucket, TokenBucket, float]]:
        """The buckets and the time now, to change in place; written back unless the
        block raised. Called with ``_lock`` held."""
        path = self.path
        handle = None
        if path is not None:
            try:
                handle = _open_locked(path)
                now = self.timer.time()
                general, launch = self._read(handle, path, now)
            except OSError as exc:  # no folder, no lock, not a file: this process alone
                if handle is not None:
                    handle.close()
                handle = None
                self._go_alone(path, exc)
        if handle is None:
            yield self._general, self._launch, self._now_in_process()
            return
        assert path is not None
        with handle:
            yield general, launch, now
            self._general, self._launch, self._seen = general, launch, now
            try:
                _rewrite(handle, {"version": VERSION, "written_at": now,
                                  "general": general.to_json(), "launch": launch.to_json()})
            except OSError as exc:
                self._go_alone(path, exc)

    def _now_in_process(self) -> float:
        now = self.timer.time()
        if now < self._seen:  # the wall clock was set back
            for bucket in (self._general, self._launch):
                bucket.shift(now - self._seen)
        self._seen = now
        return now

    def _read(self, handle: TextIO, path: Path, now: float) -> tuple[TokenBucket, TokenBucket]:
        general_limit, launch_limit = self._limits
        try:
            text = handle.read()
            if not text.strip():  # a new file: nobody has sent anything yet
                return (TokenBucket.full(general_limit, now),
                        TokenBucket.full(launch_limit, now))
            document = json.loads(text)
            if not isinstance(document, dict) or document.get("version") != VERSION:
                raise ValueError("not a soong pacing file of this version")
            written = _number(document.get("written_at"))
            general = TokenBucket.from_json(general_limit, document.get("general"))
            launch = TokenBucket.from_json(launch_limit, document.get("launch"))
            if max(general.updated, launch.updated) > written + MAX_AHEAD:
                raise ValueError("a slot is booked implausibly far ahead")
        except ValueError as exc:
            log.warning("the pacing file %s was unreadable (%s): rebuilt it", path, exc)
            # As if a request had just gone out: one slot of caution, never a 429.
            return TokenBucket(general_limit, 0.0, now), TokenBucket.full(launch_limit, now)
        if written > now:  # written before the wall clock was set back
            for bucket in (general, launch):
                bucket.shift(now - written)
        return general, launch

    def _go_alone(self, path: Path, exc: OSError) -> None:
        log.warning("cannot share the rate limit with other soong processes through %s "
                    "(%s): pacing this process alone", path, exc.strerror or exc)
        self._shared = False


def _open_locked(path: Path) -> TextIO:
    """``path`` opened for reading and writing (created 0600 in a 0700 folder), under
    an exclusive ``flock`` that closing it releases."""
    from soong_core.files import FILE_MODE, private_dir

    if fcntl is None:  # pragma: no cover - Windows
        raise OSError("file locks are not available on this platform")
    try:
        private_dir(path.parent)
    except FileExistsError:  # another process made it between the check and the mkdir
        if not path.parent.is_dir():
            raise
    fd = os.open(path, os.O_RDWR | os.O_CREAT, FILE_MODE)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        return os.fdopen(fd, "r+", encoding="utf-8")
    except BaseException:
        os.close(fd)
        raise


def _rewrite(handle: TextIO, document: dict[str, Any]) -> None:
    """Replace the locked file's content in place (renaming a new file over it would
    leave the lock on the old one). A reader holds the lock, so it never sees half of
    it; a crash midway leaves content that :meth:`Limiter._read` rebuilds."""
    handle.seek(0)
    handle.truncate()
    handle.write(json.dumps(document, separators=(",", ":")) + "\n")
    handle.flush()
