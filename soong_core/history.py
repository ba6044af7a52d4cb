"""The local history store: every launch, extension, warning and termination, in SQLite.

History answers two questions nothing else can: *why* did an instance stop (shown by
``soong status --history``), and how much did the instances that already ended cost
(the budget's committed spend, DESIGN "Budget is admission control"). The provider
forgets terminated instances, so this file is the only record.

Only the laptop writes it: the CLI records what it did itself, what the watchdog
reports and what it infers (DESIGN "The agent never writes the laptop's history").
Several of those processes may run at once (a ``soong start`` while ``soong status``
reconciles, or a watchdog loops), so the store uses WAL journaling, a busy timeout and
one short ``BEGIN IMMEDIATE`` transaction per write (a batch of events is one too:
:meth:`History.record_many`).

What every command reads costs as much with 100,000 events as with 100: what is still
open (launch intents, launches not ended) comes from a small ``open_launches`` table
that each write keeps true, and questions about the instances a provider lists are
indexed and batched, one query for all of them.

Rows are separated by *namespace*, one per provider account when the provider names
one, else per endpoint (:func:`namespace_for`), so instances of the local simulator never
mix with real ones in history or budget, and a simulator back on another port keeps its
history. A :class:`History` is bound to one namespace and never sees another's rows; it
may *adopt* another namespace's rows (those written before its provider named an
account), moving them into its own once, in one transaction.

A file that is not a usable database is moved aside (never truncated or deleted) and a
fresh one started, with one warning; a database written by a newer soong is refused
untouched. Standard library only, no provider-specific code.
"""

from __future__ import annotations

import contextlib
import json
import logging
import math
import os
import sqlite3
import threading
import time
from decimal import Decimal
from pathlib import Path
from types import TracebackType
from typing import TYPE_CHECKING, Any, Iterable, Iterator, Mapping
from urllib.parse import quote, urlsplit

from soong_core.errors import SoongError
from soong_core.files import private_dir
from soong_core.models import Event, EventKind, Timestamp

if TYPE_CHECKING:
    from soong_core.clock import Clock

__all__ = [
    "BUSY_TIMEOUT_S",
    "ACCOUNT_PREFIX",
    "DEFAULT_NAMESPACE",
    "SCHEMA_VERSION",
    "History",
    "default_history_path",
    "namespace_for",
]

log = logging.getLogger("soong.history")

SCHEMA_VERSION = 3
"""Stored in ``PRAGMA user_version``; a file with a larger number is from a newer soong.
Version 2 added the ``sightings`` table; version 3 the ``launch_id`` column (indexed) and
the ``open_launches`` table. An older file gains what it lacks when first opened, in
place, its events kept."""

BUSY_TIMEOUT_S = 10.0
"""How long a write waits for another process's write to finish before failing."""

DEFAULT_NAMESPACE = "default"
ACCOUNT_PREFIX = "account:"
"""What follows ``provider@`` in an account's namespace (an endpoint's has a URL there;
``account:x`` is no absolute URL, so the two never collide)."""
FILE_NAME = "history.sqlite3"
_SIDECARS = ("-wal", "-shm")
_DEFAULT_PORTS = {"http": 80, "https": 443}

_SCHEMA = (
    """
    CREATE TABLE IF NOT EXISTS events (
        id          INTEGER PRIMARY KEY AUTOINCREMENT,
        namespace   TEXT    NOT NULL,
        kind        TEXT    NOT NULL,
        instance_id TEXT    NOT NULL,
        at          REAL    NOT NULL,
        provider    TEXT    NOT NULL DEFAULT '',
        reason      TEXT,
        inferred    INTEGER NOT NULL DEFAULT 0,
        type_name   TEXT,
        region      TEXT,
        cost        TEXT,
        detail      TEXT    NOT NULL DEFAULT '{}',
        launch_id   TEXT
    )
    """,
    # events(since, until): the namespace's timeline.
    "CREATE INDEX IF NOT EXISTS events_by_time ON events (namespace, at)",
    # latest_events, lease_deadlines, has_terminated, open table upkeep.
    "CREATE INDEX IF NOT EXISTS events_by_instance ON events (namespace, instance_id, kind, at)",
    # ended_cost (bounded to the budget period by `at`) and events(kinds=...).
    "CREATE INDEX IF NOT EXISTS events_by_kind ON events (namespace, kind, at)",
    # When each instance was last seen billing: bounds the cost of an unseen ending.
    """
    CREATE TABLE IF NOT EXISTS sightings (
        namespace    TEXT NOT NULL,
        instance_id  TEXT NOT NULL,
        last_billing REAL NOT NULL,
        PRIMARY KEY (namespace, instance_id)
    )
    """,
    # What is still open, maintained on every write: launch intents no launch or
    # failure completes, launches no termination ends. What reconciliation and the
    # budget read on every command, so their cost follows what is open, not history.
    """
    CREATE TABLE IF NOT EXISTS open_launches (
        event_id    INTEGER PRIMARY KEY,
        namespace   TEXT NOT NULL,
        kind        TEXT NOT NULL,
        instance_id TEXT NOT NULL,
        launch_id   TEXT
    )
    """,
    "CREATE INDEX IF NOT EXISTS open_by_namespace ON open_launches (namespace, kind)",
)
_LAUNCH_ID_INDEX = ("CREATE INDEX IF NOT EXISTS events_by_launch_id "
                    "ON events (namespace, launch_id)")
"""A launch's completion found by its launch id (created after the column exists)."""
_COLUMNS = frozenset({"id", "namespace", "kind", "instance_id", "at", "provider", "reason",
                      "inferred", "type_name", "region", "cost", "detail"})
"""The columns every version has (version 3 adds ``launch_id``, filled on upgrade)."""
_CHUNK = 500
"""Instance ids per ``IN (...)`` of a batched read (SQLite limits bound parameters)."""
_SELECT = ("SELECT id, kind, instance_id, at, provider, reason, inferred, type_name, region, "
           "cost, detail FROM events")

# SQLite result codes that mean "this file is not a database we can use" (as opposed to
# "busy", "read-only", "disk full"...: those are real errors, not corruption).
_SQLITE_CORRUPT = 11
_SQLITE_NOTADB = 26


def default_history_path() -> Path:
    """``$XDG_DATA_HOME/soong/history.sqlite3`` (``~/.local/share/soong/`` by default).

    Read at call time, not import time, so tests and embedding programs that change
    the environment get the path they set.
    """
    from soong_core.files import soong_dir

    return soong_dir("data") / FILE_NAME


def namespace_for(provider_name: str, endpoint: str | None = None, *,
                  identity: str | None = None) -> str:
    """The history namespace of one provider account or endpoint.

    With ``identity`` (the provider's :attr:`~soong_core.interfaces.Provider.identity`,
    an account that stays the same when its endpoint moves) it is
    ``"lambda@account:<identity>"`` and the endpoint is not used:

    >>> namespace_for("lambda", "http://127.0.0.1:8123/api/v1", identity="sim-4f2a")
    'lambda@account:sim-4f2a'

    Otherwise it is the endpoint's: ``"lambda@https://host/api/v1"``.

    The endpoint is normalised so that spellings of the same URL share a namespace:
    scheme and host lower-cased, user name and password dropped (they must never be
    stored), the port kept only when it is not the scheme's default, query and fragment
    dropped, no trailing slash. Without an endpoint the namespace is the provider name.

    >>> namespace_for("lambda", "HTTPS://key@Cloud.Lambda.ai:443/api/v1/")
    'lambda@https://cloud.lambda.ai/api/v1'
    """
    provider = provider_name.strip()
    if not provider or "@" in provider:
        raise ValueError(f"provider name {provider_name!r} must be non-empty and contain no '@'")
    if identity is not None:
        account = identity.strip()
        if not account or not account.isprintable():
            raise ValueError(f"identity {identity!r} must be non-empty printable text")
        return f"{provider}@{ACCOUNT_PREFIX}{account}"
    if endpoint is None:
        return provider
    parts = urlsplit(endpoint.strip())
    scheme = parts.scheme.lower()
    host = parts.hostname  # lower-cased, credentials and brackets removed
    if not scheme or not host:
        raise ValueError(f"endpoint {endpoint!r} must be an absolute URL like https://host/path")
    try:
        port = parts.port
    except ValueError as exc:
        raise ValueError(f"endpoint {endpoint!r}: {exc}") from None
    if ":" in host:  # IPv6 literal
        host = f"[{host}]"
    netloc = host if port is None or port == _DEFAULT_PORTS.get(scheme) else f"{host}:{port}"
    return f"{provider}@{scheme}://{netloc}{parts.path.rstrip('/')}"


class HistoryError(SoongError):
    """History could not be read or written (locked by another process, disk full...).

    Exit code 1. Callers that must not go on without a record (a launch) let it
    propagate; the message names the database and what happened.
    """


class _Unusable(Exception):
    """The file at the history path cannot be used as our database (internal)."""


class History:
    """The history of one namespace in one SQLite file.

    Open with :meth:`open`; use as a context manager or call :meth:`close`. One
    object may be shared by threads (calls are serialised); processes each open their
    own. Every query sees only this object's namespace.

    Time windows are half-open: ``since`` is inclusive, ``until`` exclusive, so
    consecutive windows never count an event twice.
    """

    def __init__(self, connection: sqlite3.Connection, path: Path, namespace: str) -> None:
        """Wrap an already prepared connection; callers use :meth:`open` instead."""
        self._db = connection
        self._lock = threading.RLock()
        self.path = path
        self.namespace = namespace
        self._warned: set[Any] = set()
        """Malformed rows already warned about: one warning each, not one per read."""

    # -- opening ------------------------------------------------------------------

    @classmethod
    def open(cls, path: str | os.PathLike[str] | None = None,
             namespace: str = DEFAULT_NAMESPACE, *, clock: Clock | None = None,
             adopt: Iterable[str] = ()) -> History:
        """Open (creating if needed) the history at ``path`` for ``namespace``.

        ``adopt`` names namespaces whose rows belong to this one (the endpoint's
        namespace of a provider that now names its account): they are moved into it
        by :meth:`adopt`, so nothing recorded under the old key is orphaned.

        ``path`` defaults to :func:`default_history_path`; missing directories are
        created with mode 0700 and a new file with mode 0600. An unusable file is moved
        aside to ``<name>.corrupt-YYYYmmddTHHMMSSZ`` with one warning on the
        ``soong.history`` logger; ``clock`` only dates that name (wall time by default).

        Raises :class:`~soong_core.errors.SoongError` when the file was written by a
        newer soong (left untouched) or cannot be opened at all.
        """
        if not namespace:
            raise ValueError("namespace must be non-empty")
        target = Path(path) if path is not None else default_history_path()
        target = target.expanduser().absolute()
        try:
            private_dir(target.parent)  # history is private: 0700, parents included
        except OSError as exc:
            raise SoongError(f"cannot open the history database {target}: "
                             f"{exc.strerror or exc}") from None
        try:
            connection = _open_prepared(target)
        except _Unusable as problem:
            connection = _recover(target, str(problem), clock)
        history = cls(connection, target, namespace)
        try:
            history.adopt(*adopt)
        except BaseException:
            history.close()
            raise
        return history

    def close(self) -> None:
        """Close the connection; safe to call twice."""
        with self._lock:
            self._db.close()

    def __enter__(self) -> History:
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"History({str(self.path)!r}, namespace={self.namespace!r})"

    # -- writing ------------------------------------------------------------------

    def record(self, event: Event) -> None:
        """Append ``event`` to this namespace's history, durably, in its own transaction.

        ``cost`` must be a :class:`~decimal.Decimal` (or int): it is stored as text so
        that ``Decimal("0.10")`` comes back as exactly that. ``detail`` must be
        JSON-serialisable; it comes back as parsed JSON (tuples become lists).
        Bad values raise ``TypeError``/``ValueError`` before anything is written.
        """
        row = self._row(event)
        with self._lock, self._write() as db:
            _insert(db, row)

    def record_many(self, events: Iterable[Event]) -> None:
        """Append ``events``, in order, in one transaction: all of them or none.

        What one command that ends many instances writes (a ``stop`` of a fleet): one
        commit, not one per instance. Every event is checked as :meth:`record` checks
        it before anything is written.
        """
        rows = [self._row(event) for event in events]
        if not rows:
            return
        with self._lock, self._write() as db:
            for row in rows:
                _insert(db, row)

    def record_unless(self, event: Event, *, kinds: Iterable[EventKind | str],
                      instance_id: str | None = None, launch_id: str | None = None) -> bool:
        """Record ``event`` unless this namespace already holds an event of one of
        ``kinds`` for ``instance_id`` (default: the event's) or, with ``launch_id``, one
        whose ``detail["launch_id"]`` is that launch id. Check and write happen in one
        transaction, so two processes reconciling at once record it once. Returns
        whether it was recorded.
        """
        row = self._row(event)
        values = sorted({EventKind(kind).value for kind in kinds})
        target = event.instance_id if instance_id is None else instance_id
        with self._lock, self._write() as db:
            marks = ",".join("?" * len(values))
            found = db.execute(
                f"SELECT 1 FROM events WHERE namespace = ? AND instance_id = ? "
                f"AND kind IN ({marks}) LIMIT 1", (self.namespace, target, *values)).fetchone()
            if found is None and launch_id is not None:
                found = db.execute(
                    f"SELECT 1 FROM events WHERE namespace = ? AND launch_id = ? "
                    f"AND kind IN ({marks}) LIMIT 1",
                    (self.namespace, launch_id, *values)).fetchone()
            if found is not None:
                return False
            _insert(db, row)
        return True

    def note_billing(self, instance_ids: Iterable[str], at: Timestamp) -> None:
        """Remember that ``instance_ids`` were seen billing at ``at`` (kept: the latest).

        An instance that later vanishes unseen ended between its last sighting and the
        moment soong noticed: what its ending costs is that range, not a guess.
        """
        ids = sorted(set(instance_ids))
        if not ids:
            return
        when = float(at)
        with self._lock, self._write() as db:
            db.executemany(
                "INSERT INTO sightings (namespace, instance_id, last_billing) VALUES (?,?,?) "
                "ON CONFLICT (namespace, instance_id) DO UPDATE SET "
                "last_billing = max(last_billing, excluded.last_billing)",
                [(self.namespace, instance_id, when) for instance_id in ids])

    def adopt(self, *namespaces: str) -> int:
        """Move every row of ``namespaces`` (events and billing sightings) into this
        namespace; returns how many events moved.

        One ``BEGIN IMMEDIATE`` transaction, so two processes adopting at once move each
        row once (the second finds nothing left), and a crash leaves all rows where they
        were or all where they belong. Events keep their ids and order; a sighting of
        an instance both namespaces saw keeps the later time. Opening with nothing to
        adopt costs one read and takes no write lock.
        """
        others = sorted({n for n in namespaces if n and n != self.namespace})
        if not others:
            return 0
        marks = ",".join("?" * len(others))
        pending = self._query(
            f"SELECT 1 FROM events WHERE namespace IN ({marks}) UNION ALL "
            f"SELECT 1 FROM sightings WHERE namespace IN ({marks}) LIMIT 1", (*others, *others))
        if not pending:
            return 0
        with self._lock, self._write() as db:
            moved = db.execute(f"UPDATE events SET namespace = ? WHERE namespace IN ({marks})",
                               (self.namespace, *others)).rowcount
            db.execute(
                "INSERT INTO sightings (namespace, instance_id, last_billing) "
                f"SELECT ?, instance_id, last_billing FROM sightings WHERE namespace IN ({marks}) "
                "ON CONFLICT (namespace, instance_id) DO UPDATE SET "
                "last_billing = max(last_billing, excluded.last_billing)",
                (self.namespace, *others))
            seen = db.execute(f"DELETE FROM sightings WHERE namespace IN ({marks})",
                              others).rowcount
            # Launches of one namespace may be ended or completed by the other's rows.
            db.execute(f"DELETE FROM open_launches WHERE namespace IN (?, {marks})",
                       (self.namespace, *others))
            db.execute(_OPEN_ROWS.format(where="e.namespace = ?"), (self.namespace,))
        if moved or seen:
            log.info("history %s: moved %d events and %d sightings of %s into %s", self.path,
                     moved, seen, ", ".join(others), self.namespace)
        return moved

    def last_seen_billing(self, instance_id: str) -> Timestamp | None:
        """When :meth:`note_billing` last saw the instance billing, or ``None``."""
        rows = self._query("SELECT last_billing FROM sightings WHERE namespace = ? "
                           "AND instance_id = ?", (self.namespace, instance_id))
        return float(rows[0][0]) if rows else None

    def open_intents(self) -> list[Event]:
        """Launch intents that no ``launch`` or ``launch_failed`` event completes yet,
        oldest first: launches whose outcome this history does not know.

        An intent is completed by a ``launch`` or ``launch_failed`` whose
        ``detail["launch_id"]`` is its instance id or launch id, or by a
        ``launch_failed`` of that id. Read from the ``open_launches`` table, kept on
        every write: the cost follows the intents still open, not all history.
        """
        return self._open(EventKind.LAUNCH_INTENT)

    def open_launches(self) -> list[Event]:
        """``launch`` events of instances no ``terminate`` event ends, oldest first:
        the instances this history believes may still bill. Read, like
        :meth:`open_intents`, from the table of what is open."""
        return self._open(EventKind.LAUNCH)

    def _open(self, kind: EventKind) -> list[Event]:
        # Sorted here, not by SQL: an ORDER BY tempts the planner to walk a time index
        # over all history instead of looking the few open rows up by id.
        rows = self._query(
            f"{_SELECT} WHERE id IN (SELECT event_id FROM open_launches "
            "WHERE namespace = ? AND kind = ?) AND +namespace = ?",
            (self.namespace, kind.value, self.namespace))
        return self._events(sorted(rows, key=_by_time))

    def latest_events(self, kind: EventKind | str,
                      instance_ids: Iterable[str]) -> dict[str, Event]:
        """The latest event of ``kind`` of each of ``instance_ids`` that has one: one
        indexed read for many instances (what ``status`` asks of every listed one)."""
        value = EventKind(kind).value
        latest: dict[str, Event] = {}
        for chunk in _chunks(instance_ids):
            rows = self._query(  # by instance, then sorted here (see _open)
                f"{_SELECT} WHERE namespace = ? AND instance_id IN "
                f"({','.join('?' * len(chunk))}) AND kind = ?", (self.namespace, *chunk, value))
            for event in self._events(sorted(rows, key=_by_time)):
                latest[event.instance_id] = event  # oldest first: the last one wins
        return latest

    def lease_deadlines(self, instance_ids: Iterable[str]) -> dict[str, Timestamp]:
        """:meth:`current_lease_deadline` of each of ``instance_ids`` that was ever
        extended, in one indexed read; instances never extended are left out."""
        found: dict[str, Timestamp] = {}
        for chunk in _chunks(instance_ids):
            rows = self._query(  # by instance, then sorted here (see _open)
                f"SELECT id, instance_id, detail, at FROM events WHERE namespace = ? "
                f"AND instance_id IN ({','.join('?' * len(chunk))}) AND kind = ?",
                (self.namespace, *chunk, EventKind.EXTEND.value))
            for row_id, instance_id, detail, _ in sorted(
                    rows, key=lambda r: _time_key(r[3], r[0]), reverse=True):
                if instance_id in found:
                    continue  # newest first: its latest usable extension is already in
                try:
                    deadline = json.loads(detail).get("lease_deadline")
                except (ValueError, TypeError, AttributeError) as exc:
                    self._warn_malformed(row_id, exc)
                    continue
                if isinstance(deadline, (int, float)) and not isinstance(deadline, bool) \
                        and math.isfinite(deadline):
                    found[instance_id] = float(deadline)
        return found

    def _row(self, event: Event) -> tuple[Any, ...]:
        kind = EventKind(event.kind)
        if not event.instance_id:
            raise ValueError("event has no instance_id")
        at = float(event.at)
        if not math.isfinite(at):
            raise ValueError(f"event time must be finite, got {event.at!r}")
        cost: str | None = None
        if event.cost is not None:
            if isinstance(event.cost, bool) or not isinstance(event.cost, (Decimal, int)):
                raise TypeError(
                    f"event cost must be a Decimal (floats are not exact), got {event.cost!r}")
            value = Decimal(event.cost)
            if not value.is_finite():
                raise ValueError(f"event cost must be finite, got {event.cost!r}")
            cost = str(value)
        try:
            detail = json.dumps(dict(event.detail), sort_keys=True, allow_nan=False)
        except (TypeError, ValueError) as exc:
            raise TypeError(f"event detail must be JSON-serialisable: {exc}") from None
        return (self.namespace, kind.value, event.instance_id, at, event.provider or "",
                event.reason, int(bool(event.inferred)), event.type_name, event.region,
                cost, detail, _launch_id_of(event.detail))

    @contextlib.contextmanager
    def _write(self) -> Iterator[sqlite3.Connection]:
        """One ``BEGIN IMMEDIATE`` transaction: takes the write lock up front.

        A deferred transaction that reads first and then writes can fail at once with
        "database is locked" in WAL mode (its snapshot is stale); IMMEDIATE waits on
        the busy timeout instead.
        """
        try:
            self._db.execute("BEGIN IMMEDIATE")
        except sqlite3.Error as exc:
            raise self._failure("write to", exc) from None
        try:
            yield self._db
        except sqlite3.Error as exc:
            with contextlib.suppress(sqlite3.Error):
                self._db.execute("ROLLBACK")
            raise self._failure("write to", exc) from None
        except BaseException:
            with contextlib.suppress(sqlite3.Error):
                self._db.execute("ROLLBACK")
            raise
        try:
            self._db.execute("COMMIT")
        except sqlite3.Error as exc:
            with contextlib.suppress(sqlite3.Error):
                self._db.execute("ROLLBACK")
            raise self._failure("write to", exc) from None

    def _failure(self, action: str, exc: sqlite3.Error) -> HistoryError:
        """One line naming the database and what SQLite said, with what to do."""
        text = " ".join(str(exc).split()) or type(exc).__name__
        if "locked" in text.lower() or "busy" in text.lower():
            text += f" (another process has held it for more than {BUSY_TIMEOUT_S:g}s)"
            hints = ["wait for the other soong command (or whatever holds the file) to "
                     "finish, then try again"]
        else:
            hints = ["check the disk and the file's permissions, then try again"]
        return HistoryError(f"cannot {action} the history database {self.path}: {text}",
                            hints=hints)

    def _query(self, sql: str, params: Iterable[Any] = ()) -> list[tuple[Any, ...]]:
        """Run a read; SQLite's errors become :class:`HistoryError`."""
        with self._lock:
            try:
                return self._db.execute(sql, tuple(params)).fetchall()
            except sqlite3.ProgrammingError:
                raise  # a closed history, a bad statement: soong's bug, not the file's
            except sqlite3.Error as exc:
                raise self._failure("read", exc) from None

    def _events(self, rows: Iterable[tuple[Any, ...]]) -> list[Event]:
        """Rows as events; a malformed row is skipped with one warning."""
        events = []
        for row in rows:
            try:
                events.append(_event(row[1:]))
            except (ValueError, TypeError, ArithmeticError) as exc:
                self._warn_malformed(row[0], exc)
        return events

    def _warn_malformed(self, row_id: Any, exc: BaseException) -> None:
        if row_id in self._warned:
            return
        self._warned.add(row_id)
        log.warning("history %s: event row %s is malformed (%s): skipped", self.path, row_id,
                    " ".join(f"{type(exc).__name__}: {exc}".split()))

    # -- reading ------------------------------------------------------------------

    def events(self, since: Timestamp | None = None, until: Timestamp | None = None,
               instance_id: str | None = None,
               kinds: Iterable[EventKind | str] | None = None,
               limit: int | None = None) -> list[Event]:
        """Events of this namespace with ``since <= at < until``, oldest first.

        ``None`` leaves a bound open. ``kinds`` restricts to those kinds (an empty
        collection matches nothing). ``limit`` keeps the *latest* ``limit`` matching
        events, still returned oldest first: what a "recent history" view wants.
        Events at the same time come back in the order they were recorded.
        """
        where: list[str] = ["namespace = ?"]
        params: list[Any] = [self.namespace]
        if since is not None:
            where.append("at >= ?")
            params.append(float(since))
        if until is not None:
            where.append("at < ?")
            params.append(float(until))
        if instance_id is not None:
            where.append("instance_id = ?")
            params.append(instance_id)
        if kinds is not None:
            values = sorted({EventKind(kind).value for kind in kinds})
            if not values:
                return []
            where.append(f"kind IN ({','.join('?' * len(values))})")
            params.extend(values)
        sql = f"{_SELECT} WHERE {' AND '.join(where)} ORDER BY at DESC, id DESC"
        if limit is not None:
            if limit < 0:
                raise ValueError(f"limit must be >= 0, got {limit}")
            sql += f" LIMIT {int(limit)}"
        rows = self._query(sql, params)
        return self._events(reversed(rows))

    def current_lease_deadline(self, instance_id: str) -> Timestamp | None:
        """The lease deadline set by the instance's latest extension, or ``None``.

        Extensions store their new deadline in ``detail["lease_deadline"]``; ``None``
        means the instance was never extended, so its launch tag still holds. For many
        instances at once: :meth:`lease_deadlines`.
        """
        return self.lease_deadlines([instance_id]).get(instance_id)

    def has_terminated(self, instance_id: str) -> bool:
        """Whether a termination of this instance is already recorded."""
        rows = self._query(
            "SELECT 1 FROM events WHERE namespace = ? AND instance_id = ? AND kind = ? "
            "LIMIT 1", (self.namespace, instance_id, EventKind.TERMINATE.value))
        return bool(rows)

    def ended_cost(self, since: Timestamp | None = None) -> Decimal:
        """What the instances that ended at or after ``since`` cost (``None``: ever).

        The budget's committed spend for ended instances. An instance counts once even
        if its termination was recorded twice (an inferred reason, then the watchdog's
        report): its latest termination that carries a cost is the one that counts,
        when that termination lies in the window. Summed as exact decimals.
        """
        sql = (
            "SELECT e.id, e.cost FROM events AS e WHERE e.namespace = ? AND e.kind = ? "
            "AND e.cost IS NOT NULL AND e.id = ("
            " SELECT l.id FROM events AS l WHERE l.namespace = e.namespace"
            " AND l.instance_id = e.instance_id AND l.kind = e.kind AND l.cost IS NOT NULL"
            " ORDER BY l.at DESC, l.id DESC LIMIT 1)"
        )
        params: list[Any] = [self.namespace, EventKind.TERMINATE.value]
        if since is not None:
            sql += " AND e.at >= ?"
            params.append(float(since))
        total = Decimal(0)
        for row_id, cost in self._query(sql, params):
            try:
                total += _cost(cost)
            except (ValueError, TypeError, ArithmeticError) as exc:
                self._warn_malformed(row_id, exc)
        return total


_INSERT = ("INSERT INTO events (namespace, kind, instance_id, at, provider, reason, inferred, "
           "type_name, region, cost, detail, launch_id) VALUES (?,?,?,?,?,?,?,?,?,?,?,?)")

_LAUNCH = EventKind.LAUNCH.value
_INTENT = EventKind.LAUNCH_INTENT.value
_FAILED = EventKind.LAUNCH_FAILED.value
_TERMINATE = EventKind.TERMINATE.value

_OPEN_ROWS = (
    "INSERT INTO open_launches (event_id, namespace, kind, instance_id, launch_id) "
    "SELECT e.id, e.namespace, e.kind, e.instance_id, e.launch_id FROM events AS e "
    "WHERE {where} AND ("
    f" (e.kind = '{_LAUNCH}' AND NOT EXISTS (SELECT 1 FROM events AS t"
    "   WHERE t.namespace = e.namespace AND t.instance_id = e.instance_id"
    f"  AND t.kind = '{_TERMINATE}'))"
    f" OR (e.kind = '{_INTENT}' AND NOT EXISTS (SELECT 1 FROM events AS c"
    f"   WHERE c.namespace = e.namespace AND c.kind IN ('{_LAUNCH}', '{_FAILED}')"
    "   AND c.launch_id IN (e.instance_id, e.launch_id))"
    "  AND NOT EXISTS (SELECT 1 FROM events AS f WHERE f.namespace = e.namespace"
    f"   AND f.kind = '{_FAILED}' AND f.instance_id IN (e.instance_id, e.launch_id))))"
)
"""The open launches and intents of the rows ``{where}`` selects, computed from all
their events: what an upgrade and an adoption start from (writes keep it after)."""


def _insert(db: sqlite3.Connection, row: tuple[Any, ...]) -> None:
    """Insert one event row and keep ``open_launches`` true, in the caller's transaction.

    A termination closes the instance's launches; a launch opens unless its instance
    already ended, and closes the intents it completes; a failure closes its intents;
    an intent opens unless something already completed it (rows may arrive in any
    order: an adoption merges two namespaces).
    """
    event_id = db.execute(_INSERT, row).lastrowid
    namespace, kind, instance_id, launch_id = row[0], row[1], row[2], row[-1]
    opened = False
    if kind == _TERMINATE:
        db.execute("DELETE FROM open_launches WHERE namespace = ? AND kind = ? "
                   "AND instance_id = ?", (namespace, _LAUNCH, instance_id))
    elif kind == _LAUNCH:
        opened = db.execute(
            "SELECT 1 FROM events WHERE namespace = ? AND instance_id = ? AND kind = ? LIMIT 1",
            (namespace, instance_id, _TERMINATE)).fetchone() is None
        _close_intents(db, namespace, [launch_id])
    elif kind == _FAILED:
        _close_intents(db, namespace, [launch_id, instance_id])
    elif kind == _INTENT:
        keys = (instance_id, launch_id if launch_id is not None else instance_id)
        opened = db.execute(
            f"SELECT 1 FROM events WHERE namespace = ? AND kind IN ('{_LAUNCH}', '{_FAILED}') "
            "AND launch_id IN (?, ?) UNION ALL "
            f"SELECT 1 FROM events WHERE namespace = ? AND kind = '{_FAILED}' "
            "AND instance_id IN (?, ?) LIMIT 1", (namespace, *keys, namespace, *keys)
        ).fetchone() is None
    if opened:
        db.execute("INSERT INTO open_launches (event_id, namespace, kind, instance_id, "
                   "launch_id) VALUES (?, ?, ?, ?, ?)",
                   (event_id, namespace, kind, instance_id, launch_id))


def _close_intents(db: sqlite3.Connection, namespace: str, keys: Iterable[str | None]) -> None:
    """Close the open intents whose instance id or launch id is one of ``keys``."""
    wanted = sorted({key for key in keys if key is not None})
    if not wanted:
        return
    marks = ",".join("?" * len(wanted))
    db.execute(f"DELETE FROM open_launches WHERE namespace = ? AND kind = ? "
               f"AND (instance_id IN ({marks}) OR launch_id IN ({marks}))",
               (namespace, _INTENT, *wanted, *wanted))


def _by_time(row: tuple[Any, ...]) -> tuple[float, int]:
    """A row of ``_SELECT`` in history's order: by time, then as recorded (a malformed
    time sorts last; reading the row skips it)."""
    return _time_key(row[3], row[0])


def _time_key(at: Any, row_id: Any) -> tuple[float, int]:
    number = isinstance(at, (int, float)) and not isinstance(at, bool)
    return (float(at) if number else math.inf, int(row_id))


def _launch_id_of(detail: Any) -> str | None:
    """``detail["launch_id"]`` when it is text: the launch an event belongs to."""
    value = detail.get("launch_id") if isinstance(detail, Mapping) else None
    return value if isinstance(value, str) else None


def _chunks(ids: Iterable[str]) -> Iterator[list[str]]:
    """Distinct ``ids`` in lists of at most :data:`_CHUNK`, for ``IN (...)`` reads."""
    distinct = list(dict.fromkeys(ids))
    for start in range(0, len(distinct), _CHUNK):
        yield distinct[start:start + _CHUNK]


def _event(row: tuple[Any, ...]) -> Event:
    """An event from its columns; ``ValueError``/``TypeError`` for a malformed row."""
    kind, instance_id, at, provider, reason, inferred, type_name, region, cost, detail = row
    when = float(at)
    if not math.isfinite(when):
        raise ValueError(f"time {at!r} is not finite")
    if not isinstance(instance_id, str) or not instance_id:
        raise ValueError("no instance id")
    return Event(
        kind=EventKind(kind),
        instance_id=instance_id,
        at=when,
        provider=provider if isinstance(provider, str) else "",
        reason=reason if reason is None else str(reason),
        inferred=bool(inferred),
        type_name=type_name,
        region=region,
        cost=None if cost is None else _cost(cost),
        detail=_detail(detail, strict=True),
    )


def _cost(text: Any) -> Decimal:
    """A stored cost: decimal text, finite and not negative."""
    if not isinstance(text, (str, int)) or isinstance(text, bool):
        raise TypeError(f"cost {text!r} is not decimal text")
    try:
        value = Decimal(text)
    except ArithmeticError:
        raise ValueError(f"cost {text!r} is not a number") from None
    if not value.is_finite() or value < 0:
        raise ValueError(f"cost {text!r} is not a finite amount of 0 or more")
    return value


def _detail(text: Any, *, strict: bool = False) -> dict[str, Any]:
    """A stored ``detail``: a JSON object. Malformed: ``ValueError`` when ``strict``,
    else an empty mapping (for lookups that only want one key)."""
    try:
        value = json.loads(text)
        if not isinstance(value, dict):
            raise ValueError(f"detail is a JSON {type(value).__name__}, not an object")
    except (ValueError, TypeError) as exc:
        if strict:
            raise ValueError(f"detail is not a JSON object: {exc}") from None
        return {}
    return value


# -- opening, schema and recovery -------------------------------------------------------


def _is_corruption(exc: sqlite3.DatabaseError) -> bool:
    code = getattr(exc, "sqlite_errorcode", None)  # Python 3.11+
    if code is not None:
        return code & 0xFF in (_SQLITE_CORRUPT, _SQLITE_NOTADB)
    text = str(exc).lower()
    return "not a database" in text or "malformed" in text


def _open_prepared(path: Path) -> sqlite3.Connection:
    """Connect, check the version, switch to WAL and create the schema if missing.

    Raises :class:`_Unusable` for a file we should move aside, ``SoongError`` for
    anything else (a newer schema, an unreadable file).
    """
    if path.is_dir():
        raise _Unusable("a directory is in its place")
    try:
        existing = path.stat().st_size > 0
    except FileNotFoundError:
        existing = False
    if existing:
        _probe_read_only(path)
    else:
        # Created 0600 before SQLite sees it: the -wal and -shm files copy its mode.
        with contextlib.suppress(FileExistsError):
            os.close(os.open(path, os.O_RDWR | os.O_CREAT | os.O_EXCL, 0o600))
    try:
        db = sqlite3.connect(path, timeout=BUSY_TIMEOUT_S, isolation_level=None,
                             check_same_thread=False)
    except sqlite3.Error as exc:
        raise SoongError(f"cannot open the history database {path}: {exc}") from exc
    try:
        _prepare(db, path)
    except BaseException as exc:
        db.close()
        if isinstance(exc, sqlite3.DatabaseError):
            if _is_corruption(exc):
                raise _Unusable(f"not a usable SQLite database: {exc}") from exc
            raise SoongError(f"cannot open the history database {path}: {exc}") from exc
        raise
    return db


def _probe_read_only(path: Path) -> None:
    """Judge an existing file through a read-only connection before writing to it.

    A read-write connection to a file that is not a database deletes the -wal and -shm
    files beside it when it closes, and those must be kept with the rest; a newer
    soong's file must not even be switched to WAL. Errors that are not about the
    file's content are left for the read-write connection to report.
    """
    uri = "file:" + quote(str(path.absolute())) + "?mode=ro"
    try:
        db = sqlite3.connect(uri, uri=True, timeout=BUSY_TIMEOUT_S, isolation_level=None)
    except sqlite3.Error:
        return
    try:
        version = _check_version(db, path)
        if not _check_columns(db) and version >= 1:
            raise _Unusable("it has no events table")
    except sqlite3.DatabaseError as exc:
        if _is_corruption(exc):
            raise _Unusable(f"not a usable SQLite database: {exc}") from exc
    finally:
        db.close()


def _prepare(db: sqlite3.Connection, path: Path) -> None:
    db.execute(f"PRAGMA busy_timeout = {int(BUSY_TIMEOUT_S * 1000)}")
    version = _check_version(db, path)
    if version >= 1 and not _check_columns(db):
        raise _Unusable("it has no events table")
    _enable_wal(db)
    if version < SCHEMA_VERSION:
        _create_schema(db, path)
    if not _check_columns(db):
        raise _Unusable("it has no events table")


def _check_version(db: sqlite3.Connection, path: Path) -> int:
    """The file's schema version; a newer one is refused, a negative one is unusable."""
    version = _user_version(db)
    if version > SCHEMA_VERSION:
        raise _newer(path, version)
    if version < 0:
        raise _Unusable(f"unknown schema version {version}")
    return version


def _newer(path: Path, version: int) -> SoongError:
    return SoongError(
        f"the history database {path} was written by a newer soong "
        f"(schema {version}; this soong knows up to {SCHEMA_VERSION})",
        hints=["upgrade soong (pip install -U soong)"],
    )


def _check_columns(db: sqlite3.Connection) -> bool:
    """Whether an events table exists; raise :class:`_Unusable` if it is not ours."""
    columns = {row[1] for row in db.execute("PRAGMA table_info(events)")}
    if columns and not _COLUMNS <= columns:
        missing = ", ".join(sorted(_COLUMNS - columns))
        raise _Unusable(f"its events table lacks columns {missing}")
    return bool(columns)


def _user_version(db: sqlite3.Connection) -> int:
    return int(db.execute("PRAGMA user_version").fetchone()[0])


def _enable_wal(db: sqlite3.Connection) -> None:
    """Switch to WAL (persistent: a no-op once the file is in WAL mode).

    Changing the journal mode needs an exclusive lock, and SQLite may answer "locked"
    without consulting the busy handler when another process holds the file, so this
    retries until the busy timeout.
    """
    deadline = time.monotonic() + BUSY_TIMEOUT_S
    while True:
        try:
            mode = db.execute("PRAGMA journal_mode").fetchone()[0]
            if str(mode).lower() != "wal":
                db.execute("PRAGMA journal_mode = WAL")
            return
        except sqlite3.OperationalError as exc:
            if "locked" not in str(exc).lower() or time.monotonic() > deadline:
                raise
            time.sleep(0.01)


def _create_schema(db: sqlite3.Connection, path: Path) -> None:
    """Create tables and indexes; safe when several processes do it at the same time.

    The version is read again inside the write transaction, so a process that waited
    for another one's creation sees it done and creates nothing.
    """
    db.execute("BEGIN IMMEDIATE")
    try:
        version = _check_version(db, path)  # again: another process may have won
        if version < SCHEMA_VERSION:
            _check_columns(db)  # someone else's "events" table: not ours to extend
            for statement in _SCHEMA:
                db.execute(statement)
            if version < 3:
                _upgrade_to_3(db)
            db.execute(f"PRAGMA user_version = {SCHEMA_VERSION}")
    except BaseException:
        db.execute("ROLLBACK")
        raise
    db.execute("COMMIT")


def _upgrade_to_3(db: sqlite3.Connection) -> None:
    """Give an older file the ``launch_id`` column (filled from each row's detail) and
    its index, and compute ``open_launches`` from the events: once, in place, inside
    the schema transaction. A fresh file does the same over no rows."""
    columns = {row[1] for row in db.execute("PRAGMA table_info(events)")}
    if "launch_id" not in columns:
        db.execute("ALTER TABLE events ADD COLUMN launch_id TEXT")
        updates = []
        for row_id, detail in db.execute(
                "SELECT id, detail FROM events WHERE detail LIKE '%launch_id%'").fetchall():
            launch_id = _launch_id_of(_detail(detail))
            if launch_id is not None:
                updates.append((launch_id, row_id))
        db.executemany("UPDATE events SET launch_id = ? WHERE id = ?", updates)
    db.execute(_LAUNCH_ID_INDEX)
    db.execute("DELETE FROM open_launches")
    db.execute(_OPEN_ROWS.format(where="1"))


def _recovery_lock(path: Path) -> contextlib.AbstractContextManager[None]:
    """Serialise recoveries between processes.

    Without it, a process that found the old file unusable could move aside the fresh
    database another process has just created in its place.
    """
    from soong_core.files import locked

    return locked(path.with_name(path.name + ".lock"))


def _recover(path: Path, problem: str, clock: Clock | None) -> sqlite3.Connection:
    with _recovery_lock(path):
        try:
            return _open_prepared(path)  # another process may have recovered already
        except _Unusable as again:
            problem = str(again)
        moved = _move_aside(path, clock.now() if clock is not None else time.time())
        log.warning("history database %s is unusable (%s): moved it to %s and started a "
                    "fresh one", path, problem, moved)
        try:
            return _open_prepared(path)
        except _Unusable as still:
            raise SoongError(f"cannot create a fresh history database at {path}: {still}",
                             hints=[f"the unusable one was moved to {moved}"]) from None


def _move_aside(path: Path, now: float) -> Path:
    """Rename the file (or directory) and its -wal/-shm to a free ``.corrupt-`` name.

    The sidecars keep their suffix after the new name, so SQLite still pairs them if
    someone opens the moved file to rescue it. They move first: a stale -wal left next
    to a fresh database would be replayed into it.
    """
    stamp = time.strftime("%Y%m%dT%H%M%SZ", time.gmtime(now))
    base = f"{path.name}.corrupt-{stamp}"
    counter = 1
    target = path.with_name(base)
    while any(target.with_name(target.name + s).exists() or target.with_name(
            target.name + s).is_symlink() for s in ("", *_SIDECARS)):
        counter += 1
        target = path.with_name(f"{base}.{counter}")
    for suffix in (*_SIDECARS, ""):
        source = path.with_name(path.name + suffix)
        with contextlib.suppress(FileNotFoundError):
            os.rename(source, target.with_name(target.name + suffix))
    return target
