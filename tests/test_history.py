from __future__ import annotations

import logging
import os
import sqlite3
import stat
import subprocess
import sys
import textwrap
import threading
from contextlib import closing
from decimal import Decimal
from pathlib import Path
from typing import Callable

import pytest

from soong_core.clock import ManualClock
from soong_core.errors import SoongError
from soong_core.history import (
    SCHEMA_VERSION,
    History,
    default_history_path,
    namespace_for,
)
from soong_core.models import Event, EventKind, Reason

REAL = namespace_for("lambda", "https://cloud.lambda.ai/api/v1")
SIM = namespace_for("lambda", "http://127.0.0.1:8123/api/v1")
T0 = 1_800_000_000.0
# 2027-01-15T08:00:00Z: the name a corrupt file gets when the clock says T0.
STAMP = "20270115T080000Z"


def ev(kind: EventKind | str, instance_id: str = "i-1", at: float = T0, **fields) -> Event:
    return Event(kind=EventKind(kind), instance_id=instance_id, at=at, **fields)


@pytest.fixture
def db_path(tmp_path: Path) -> Path:
    return tmp_path / "history.sqlite3"


@pytest.fixture
def history(db_path: Path):
    with History.open(db_path, REAL) as opened:
        yield opened


def raw_db(path: Path) -> closing[sqlite3.Connection]:
    """A plain autocommit connection, closed at the end of the ``with`` block."""
    return closing(sqlite3.connect(path, isolation_level=None))


def corrupt_names(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.iterdir() if ".corrupt-" in p.name)


# -- round trip ---------------------------------------------------------------------------


def test_every_field_round_trips_exactly(history: History, db_path: Path) -> None:
    event = Event(
        kind=EventKind.TERMINATE,
        instance_id="0920582c7ff041399e34823a0be62549",
        at=T0 + 0.125,
        provider="lambda",
        reason=Reason.LEASE_EXPIRED,  # a str enum is stored as its plain value
        inferred=True,
        type_name="gpu_1x_h100_pcie",
        region="us-east-1",
        cost=Decimal("12.3456789012345678901234567890"),
        detail={"lease_deadline": T0, "note": "ünïcode", "nested": {"list": [1, "two", None]},
                "flag": False},
    )
    history.record(event)
    assert history.events() == [event]
    # Stored as text, not REAL: a float could not hold 30 significant digits.
    with raw_db(db_path) as raw:
        assert raw.execute("SELECT cost, typeof(cost), reason FROM events").fetchone() == (
            "12.3456789012345678901234567890", "text", "lease_expired")


def test_defaults_round_trip_and_trailing_zeros_are_kept(history: History) -> None:
    bare = ev("launch")
    cents = ev("terminate", at=T0 + 1, cost=Decimal("0.10"))
    history.record(bare)
    history.record(cents)
    got = history.events()
    assert got == [bare, cents]
    assert got[0].cost is None and got[0].detail == {} and got[0].reason is None
    assert str(got[1].cost) == "0.10"


def test_kind_given_as_a_string_is_stored_as_the_enum(history: History) -> None:
    history.record(Event(kind="extend", instance_id="i-1", at=T0))  # type: ignore[arg-type]
    assert history.events()[0].kind is EventKind.EXTEND


@pytest.mark.parametrize("event, error", [
    (ev("terminate", cost=0.1), TypeError),  # type: ignore[arg-type]
    (ev("terminate", cost=Decimal("NaN")), ValueError),
    (ev("launch", detail={"price": Decimal("1.10")}), TypeError),
    (ev("launch", detail={"x": float("inf")}), TypeError),
    (ev("launch", at=float("nan")), ValueError),
    (ev("launch", instance_id=""), ValueError),
    (Event(kind="reboot", instance_id="i-1", at=T0), ValueError),  # type: ignore[arg-type]
])
def test_bad_events_are_refused_before_anything_is_written(
        history: History, event: Event, error: type[Exception]) -> None:
    with pytest.raises(error):
        history.record(event)
    assert history.events() == []


# -- queries ------------------------------------------------------------------------------


def test_window_includes_since_and_excludes_until(history: History) -> None:
    for at in (T0, T0 + 100, T0 + 200):
        history.record(ev("warning", at=at))

    def times(since: float | None = None, until: float | None = None) -> list[float]:
        return [e.at - T0 for e in history.events(since=since, until=until)]

    assert times() == [0, 100, 200]
    assert times(since=T0 + 100) == [100, 200]
    assert times(until=T0 + 200) == [0, 100]
    assert times(since=T0 + 100, until=T0 + 200) == [100]
    assert times(since=T0 + 100, until=T0 + 100) == []
    # Adjacent windows partition the events: none counted twice, none missed.
    assert times(until=T0 + 100) + times(since=T0 + 100) == [0, 100, 200]


def test_events_are_ordered_by_time_then_by_recording(history: History) -> None:
    history.record(ev("warning", at=T0 + 50, detail={"n": 1}))
    history.record(ev("launch", at=T0, detail={"n": 2}))
    history.record(ev("warning", at=T0 + 50, detail={"n": 3}))
    assert [e.detail["n"] for e in history.events()] == [2, 1, 3]


def test_filter_by_instance_and_kind(history: History) -> None:
    history.record(ev("launch", "a", T0))
    history.record(ev("launch", "b", T0 + 1))
    history.record(ev("extend", "a", T0 + 2))
    history.record(ev("terminate", "a", T0 + 3))
    history.record(ev("warning", "b", T0 + 4))

    def key(events: list[Event]) -> list[tuple[str, str]]:
        return [(e.instance_id, e.kind.value) for e in events]

    assert key(history.events(instance_id="a")) == [("a", "launch"), ("a", "extend"),
                                                 ("a", "terminate")]
    assert key(history.events(kinds=[EventKind.LAUNCH])) == [("a", "launch"), ("b", "launch")]
    assert key(history.events(kinds={"terminate", "warning"})) == [("a", "terminate"),
                                                                   ("b", "warning")]
    assert key(history.events(instance_id="b", kinds=["warning"])) == [("b", "warning")]
    assert history.events(kinds=[]) == []
    assert history.events(instance_id="nobody") == []
    with pytest.raises(ValueError):
        history.events(kinds=["reboot"])


def test_limit_keeps_the_latest_events_oldest_first(history: History) -> None:
    for n in range(5):
        history.record(ev("warning", at=T0 + n))
    assert [e.at - T0 for e in history.events(limit=2)] == [3, 4]
    assert [e.at - T0 for e in history.events(until=T0 + 3, limit=2)] == [1, 2]
    assert history.events(limit=0) == []
    assert len(history.events(limit=50)) == 5
    with pytest.raises(ValueError):
        history.events(limit=-1)


def test_current_lease_deadline_follows_the_latest_extension(history: History) -> None:
    history.record(ev("launch", at=T0, detail={"lease_deadline": T0 + 3600}))
    assert history.current_lease_deadline("i-1") is None  # never extended: the tag holds
    history.record(ev("extend", at=T0 + 100, detail={"lease_deadline": T0 + 7200}))
    assert history.current_lease_deadline("i-1") == T0 + 7200
    # Recorded late but happened last: time decides, not the order of recording.
    history.record(ev("extend", at=T0 + 300, detail={"lease_deadline": T0 + 14400}))
    history.record(ev("extend", at=T0 + 200, detail={"lease_deadline": T0 + 10800}))
    assert history.current_lease_deadline("i-1") == T0 + 14400
    # An extension event without a deadline does not hide the one before it.
    history.record(ev("extend", at=T0 + 400, detail={"note": "no deadline"}))
    assert history.current_lease_deadline("i-1") == T0 + 14400
    assert history.current_lease_deadline("i-2") is None


def test_ended_cost_sums_terminations_at_or_after_since(history: History) -> None:
    history.record(ev("launch", "a", T0, cost=Decimal("100")))  # not an ended cost
    history.record(ev("extend", "a", T0 + 1, cost=Decimal("100")))
    history.record(ev("terminate", "a", T0 + 10, cost=Decimal("0.1")))
    history.record(ev("terminate", "b", T0 + 20, cost=Decimal("0.2")))
    history.record(ev("terminate", "c", T0 + 30))  # cost unknown
    history.record(ev("terminate", "d", T0 + 40, cost=Decimal("1.05")))
    assert history.ended_cost() == Decimal("1.35")
    assert history.ended_cost(None) == Decimal("1.35")
    assert history.ended_cost(T0 + 20) == Decimal("1.25")  # since is inclusive
    assert history.ended_cost(T0 + 20.5) == Decimal("1.05")
    assert history.ended_cost(T0 + 41) == Decimal(0)
    assert history.ended_cost(T0 + 10) - history.ended_cost(T0 + 20) == Decimal("0.1")


def test_an_instance_terminated_twice_is_paid_for_once(history: History) -> None:
    history.record(ev("terminate", "a", T0, reason="lease_expired", inferred=True,
                      cost=Decimal("4.00")))
    history.record(ev("terminate", "a", T0 + 60, reason="watchdog", cost=Decimal("4.10")))
    history.record(ev("terminate", "b", T0 + 5, cost=Decimal("1")))
    assert history.ended_cost() == Decimal("5.10")
    assert history.ended_cost(T0 + 30) == Decimal("4.10")


def test_has_terminated(history: History) -> None:
    history.record(ev("launch", "a"))
    history.record(ev("warning", "a", T0 + 1))
    assert not history.has_terminated("a")
    history.record(ev("terminate", "a", T0 + 2, reason="manual"))
    assert history.has_terminated("a")
    assert not history.has_terminated("b")


# -- namespaces ---------------------------------------------------------------------------


def test_namespaces_never_see_each_other(db_path: Path) -> None:
    with History.open(db_path, REAL) as real, History.open(db_path, SIM) as sim:
        real.record(ev("launch", "same-id", T0))
        real.record(ev("extend", "same-id", T0 + 1, detail={"lease_deadline": T0 + 99}))
        real.record(ev("terminate", "same-id", T0 + 2, cost=Decimal("7")))
        sim.record(ev("launch", "same-id", T0 + 3, provider="sim"))

        assert [e.kind for e in real.events(instance_id="same-id")] == [
            EventKind.LAUNCH, EventKind.EXTEND, EventKind.TERMINATE]
        assert [e.provider for e in sim.events()] == ["sim"]
        assert sim.events(instance_id="same-id") == sim.events()
        assert real.has_terminated("same-id") and not sim.has_terminated("same-id")
        assert real.current_lease_deadline("same-id") == T0 + 99
        assert sim.current_lease_deadline("same-id") is None
        assert real.ended_cost() == Decimal(7) and sim.ended_cost() == Decimal(0)
    with History.open(db_path) as default:
        assert default.namespace == "default" and default.events() == []


@pytest.mark.parametrize("endpoint, expected", [
    ("https://cloud.lambda.ai/api/v1", "lambda@https://cloud.lambda.ai/api/v1"),
    ("HTTPS://Cloud.Lambda.AI/api/v1/", "lambda@https://cloud.lambda.ai/api/v1"),
    ("https://cloud.lambda.ai:443/api/v1", "lambda@https://cloud.lambda.ai/api/v1"),
    ("https://secret-key:pw@cloud.lambda.ai/api/v1?x=1#frag",
     "lambda@https://cloud.lambda.ai/api/v1"),
    ("http://127.0.0.1:8123/api/v1", "lambda@http://127.0.0.1:8123/api/v1"),
    ("http://127.0.0.1:80/api/v1", "lambda@http://127.0.0.1/api/v1"),
    ("https://localhost:80/", "lambda@https://localhost:80"),
    ("http://[::1]:9000/api/v1//", "lambda@http://[::1]:9000/api/v1"),
    ("  https://cloud.lambda.ai  ", "lambda@https://cloud.lambda.ai"),
])
def test_namespace_for_normalises_the_endpoint(endpoint: str, expected: str) -> None:
    assert namespace_for("lambda", endpoint) == expected


def test_namespace_for_separates_simulator_and_cloud_and_refuses_nonsense() -> None:
    assert namespace_for("lambda") == "lambda"
    assert len({REAL, SIM, namespace_for("lambda", "http://127.0.0.1:8124/api/v1"),
                namespace_for("other", "https://cloud.lambda.ai/api/v1")}) == 4
    for endpoint in ("cloud.lambda.ai/api", "/api/v1", "https://", "http://h:99999/"):
        with pytest.raises(ValueError):
            namespace_for("lambda", endpoint)
    for name in ("", "  ", "a@b"):
        with pytest.raises(ValueError):
            namespace_for(name, "https://cloud.lambda.ai")


# -- where and how it is stored -----------------------------------------------------------


def test_default_path_follows_xdg_at_call_time(monkeypatch: pytest.MonkeyPatch,
                                               tmp_path: Path) -> None:
    monkeypatch.setenv("XDG_DATA_HOME", str(tmp_path / "a"))
    assert default_history_path() == tmp_path / "a" / "soong" / "history.sqlite3"
    monkeypatch.setenv("XDG_DATA_HOME", str(tmp_path / "b"))
    assert default_history_path() == tmp_path / "b" / "soong" / "history.sqlite3"
    monkeypatch.delenv("XDG_DATA_HOME")
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    assert default_history_path() == tmp_path / "home/.local/share/soong/history.sqlite3"
    monkeypatch.setenv("XDG_DATA_HOME", "relative/path")  # invalid per XDG: ignored
    assert default_history_path() == tmp_path / "home/.local/share/soong/history.sqlite3"


def test_open_creates_a_private_directory_and_file(monkeypatch: pytest.MonkeyPatch,
                                                   tmp_path: Path) -> None:
    monkeypatch.setenv("XDG_DATA_HOME", str(tmp_path / "fresh" / "data"))
    old_umask = os.umask(0o022)
    try:
        with History.open() as history:
            history.record(ev("launch"))
            path = history.path
    finally:
        os.umask(old_umask)
    assert path == tmp_path / "fresh" / "data" / "soong" / "history.sqlite3"
    for folder in (path.parent, path.parent.parent):
        assert stat.S_IMODE(folder.stat().st_mode) == 0o700
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    with History.open() as again:
        assert len(again.events()) == 1


def test_database_uses_wal_and_a_versioned_schema(history: History, db_path: Path) -> None:
    history.record(ev("launch"))
    with raw_db(db_path) as raw:
        assert raw.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
        assert raw.execute("PRAGMA user_version").fetchone()[0] == SCHEMA_VERSION
        indexes = {row[0] for row in raw.execute(
            "SELECT name FROM sqlite_master WHERE type = 'index' AND tbl_name = 'events'")}
    assert {"events_by_time", "events_by_instance", "events_by_kind"} <= indexes


def test_close_is_idempotent_and_the_context_manager_closes(db_path: Path) -> None:
    with History.open(db_path) as history:
        history.record(ev("launch"))
    with pytest.raises(sqlite3.ProgrammingError):
        history.events()
    history.close()


# -- corruption ---------------------------------------------------------------------------


def test_garbage_file_is_moved_aside_intact_and_a_fresh_one_started(
        db_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    garbage = os.urandom(4096)
    db_path.write_bytes(garbage)
    caplog.set_level(logging.DEBUG, logger="soong.history")
    with History.open(db_path, REAL, clock=ManualClock(T0)) as history:
        history.record(ev("launch"))
        assert len(history.events()) == 1
    moved = db_path.with_name(f"history.sqlite3.corrupt-{STAMP}")
    assert moved.read_bytes() == garbage
    assert corrupt_names(db_path.parent) == [moved.name]
    [record] = caplog.records
    assert record.levelno == logging.WARNING and record.name == "soong.history"
    message = record.getMessage()
    assert "\n" not in message
    assert str(db_path) in message and str(moved) in message and "not a" in message
    # The fresh database is a normal one: reopening neither warns nor moves anything.
    caplog.clear()
    with History.open(db_path, REAL) as again:
        assert len(again.events()) == 1
    assert caplog.records == [] and corrupt_names(db_path.parent) == [moved.name]


def test_directory_in_place_of_the_file_is_moved_aside(
        db_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    db_path.mkdir()
    (db_path / "keep.txt").write_text("precious")
    caplog.set_level(logging.WARNING, logger="soong.history")
    with History.open(db_path, clock=ManualClock(T0)) as history:
        history.record(ev("launch"))
    moved = db_path.with_name(f"history.sqlite3.corrupt-{STAMP}")
    assert (moved / "keep.txt").read_text() == "precious"
    assert db_path.is_file()
    assert len(caplog.records) == 1 and "directory" in caplog.records[0].getMessage()


def test_wal_and_shm_siblings_move_with_the_file_and_keep_their_suffix(
        db_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    db_path.write_bytes(b"not a database at all" * 10)
    wal = db_path.with_name("history.sqlite3-wal")
    shm = db_path.with_name("history.sqlite3-shm")
    wal.write_bytes(b"wal bytes")
    shm.write_bytes(b"shm bytes")
    with History.open(db_path, clock=ManualClock(T0)) as history:
        history.record(ev("launch"))
        assert len(history.events()) == 1
    moved = f"history.sqlite3.corrupt-{STAMP}"
    assert corrupt_names(db_path.parent) == [moved, f"{moved}-shm", f"{moved}-wal"]
    # The -wal holds data and is kept byte for byte; the -shm is only an index that
    # SQLite rewrites on opening (even read-only) and rebuilds from the -wal.
    assert db_path.with_name(f"{moved}-wal").read_bytes() == b"wal bytes"
    assert len(caplog.records) == 1


def test_a_taken_corrupt_name_gets_a_counter(db_path: Path) -> None:
    clock = ManualClock(T0)
    first = db_path.with_name(f"history.sqlite3.corrupt-{STAMP}")
    first.write_bytes(b"earlier rescue")
    db_path.write_bytes(b"x" * 500)
    History.open(db_path, clock=clock).close()
    second = db_path.with_name(f"history.sqlite3.corrupt-{STAMP}.2")
    assert first.read_bytes() == b"earlier rescue"
    assert second.read_bytes() == b"x" * 500
    # Only a sibling of a name is taken: the counter skips it too.
    db_path.unlink()
    db_path.write_bytes(b"y" * 500)
    db_path.with_name(f"history.sqlite3.corrupt-{STAMP}.3-wal").write_bytes(b"w")
    History.open(db_path, clock=clock).close()
    assert db_path.with_name(f"history.sqlite3.corrupt-{STAMP}.4").read_bytes() == b"y" * 500


def test_data_still_in_the_wal_moves_with_its_database(db_path: Path) -> None:
    source = db_path.with_name("elsewhere.sqlite3")
    writer = sqlite3.connect(source, isolation_level=None)
    writer.execute("PRAGMA journal_mode = WAL")
    writer.execute("PRAGMA wal_autocheckpoint = 0")
    writer.execute("CREATE TABLE other (x)")
    writer.execute("INSERT INTO other VALUES ('only in the wal')")
    writer.execute("PRAGMA user_version = 1")  # claims our schema, has no events table
    db_path.write_bytes(source.read_bytes())  # a snapshot taken before any checkpoint
    db_path.with_name("history.sqlite3-wal").write_bytes(
        source.with_name("elsewhere.sqlite3-wal").read_bytes())
    writer.close()
    History.open(db_path, clock=ManualClock(T0)).close()
    with raw_db(db_path.with_name(f"history.sqlite3.corrupt-{STAMP}")) as moved:
        assert moved.execute("SELECT x FROM other").fetchall() == [("only in the wal",)]


def test_processes_recovering_at_once_move_the_file_aside_once(
        db_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    db_path.write_bytes(b"garbage" * 100)
    caplog.set_level(logging.WARNING, logger="soong.history")
    start, errors = threading.Barrier(4), []

    def open_and_write(n: int) -> None:
        try:
            start.wait()
            with History.open(db_path, clock=ManualClock(T0)) as history:
                history.record(ev("launch", f"i-{n}"))
        except BaseException as exc:  # reported below: a thread's exception is lost
            errors.append(exc)

    threads = [threading.Thread(target=open_and_write, args=(n,)) for n in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=30)
    assert errors == []
    assert corrupt_names(db_path.parent) == [f"history.sqlite3.corrupt-{STAMP}"]
    assert len(caplog.records) == 1
    with History.open(db_path) as history:  # nobody wrote into a file that moved away
        assert len(history.events()) == 4


@pytest.mark.parametrize("setup", [
    "PRAGMA user_version = 1",  # claims our schema, has no table
    "CREATE TABLE events (id INTEGER PRIMARY KEY, what TEXT)",  # someone else's table
], ids=["no-table", "foreign-table"])
def test_unusable_schema_is_moved_aside(db_path: Path, setup: str,
                                        caplog: pytest.LogCaptureFixture) -> None:
    with raw_db(db_path) as raw:
        raw.execute("CREATE TABLE other (x)")
        raw.execute("INSERT INTO other VALUES ('kept')")
        raw.execute(setup)
    with History.open(db_path, clock=ManualClock(T0)) as history:
        history.record(ev("launch"))
    moved = db_path.with_name(f"history.sqlite3.corrupt-{STAMP}")
    with raw_db(moved) as raw:
        assert raw.execute("SELECT x FROM other").fetchall() == [("kept",)]
    assert len(caplog.records) == 1 and caplog.records[0].levelno == logging.WARNING


def test_newer_schema_is_refused_and_left_untouched(
        db_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    with raw_db(db_path) as raw:
        raw.execute("CREATE TABLE events (everything TEXT)")
        raw.execute(f"PRAGMA user_version = {SCHEMA_VERSION + 1}")
    before = db_path.read_bytes()
    with pytest.raises(SoongError) as error:
        History.open(db_path, clock=ManualClock(T0))
    assert "newer soong" in error.value.message
    assert any("upgrade soong" in hint for hint in error.value.hints)
    assert db_path.read_bytes() == before
    assert sorted(p.name for p in db_path.parent.iterdir()) == ["history.sqlite3"]
    assert caplog.records == []


# -- concurrency --------------------------------------------------------------------------

WRITER = textwrap.dedent("""
    import sys
    from decimal import Decimal
    from soong_core.history import History
    from soong_core.models import Event, EventKind

    path, name, count = sys.argv[1], sys.argv[2], int(sys.argv[3])
    print("ready", flush=True)
    sys.stdin.readline()  # everyone starts together, schema creation included
    with History.open(path, "ns") as history:
        for n in range(count):
            history.record(Event(EventKind.TERMINATE, f"{name}-{n}", 1e9 + n,
                                 cost=Decimal("0.01")))
    print("done", flush=True)
""")


@pytest.mark.slow
def test_two_processes_write_at_once_and_lose_nothing(db_path: Path) -> None:
    count = 300
    writers = [subprocess.Popen([sys.executable, "-c", WRITER, str(db_path), name, str(count)],
                                stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                stderr=subprocess.PIPE, text=True)
               for name in ("p1", "p2")]
    try:
        for writer in writers:
            assert writer.stdout is not None and writer.stdout.readline() == "ready\n"
        for writer in writers:  # the database does not exist yet: both create it at once
            assert writer.stdin is not None
            writer.stdin.write("go\n")
            writer.stdin.flush()
        results = [writer.communicate(timeout=60) for writer in writers]
    finally:
        for writer in writers:
            if writer.poll() is None:
                writer.kill()
    for writer, (out, err) in zip(writers, results, strict=True):
        assert writer.returncode == 0, err
        assert out == "done\n" and "locked" not in err
    with History.open(db_path, "ns") as history:
        ids = [e.instance_id for e in history.events()]
        assert history.ended_cost() == Decimal("0.01") * 2 * count
    assert len(ids) == 2 * count
    assert set(ids) == {f"{p}-{n}" for p in ("p1", "p2") for n in range(count)}


def test_threads_share_or_own_connections_and_lose_nothing(db_path: Path) -> None:
    count, errors = 100, []
    shared = History.open(db_path, "ns")
    start = threading.Barrier(4)

    def write(name: str, own: bool) -> None:
        try:
            history = History.open(db_path, "ns") if own else shared
            start.wait()
            for n in range(count):
                history.record(ev("warning", f"{name}-{n}", T0 + n))
            if own:
                history.close()
        except BaseException as exc:  # reported below: a thread's exception is lost
            errors.append(exc)

    threads = [threading.Thread(target=write, args=(f"t{k}", k % 2 == 0)) for k in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=30)
    try:
        assert errors == []
        assert len({e.instance_id for e in shared.events()}) == 4 * count
    finally:
        shared.close()


# -- sightings, intents, atomic checks, and failing loudly (schema 2) -------------------------


V1_EVENTS = """
CREATE TABLE events (
    id INTEGER PRIMARY KEY AUTOINCREMENT, namespace TEXT NOT NULL, kind TEXT NOT NULL,
    instance_id TEXT NOT NULL, at REAL NOT NULL, provider TEXT NOT NULL DEFAULT '',
    reason TEXT, inferred INTEGER NOT NULL DEFAULT 0, type_name TEXT, region TEXT,
    cost TEXT, detail TEXT NOT NULL DEFAULT '{}')
"""


def test_a_version_1_file_gains_the_sightings_table_and_keeps_its_events(db_path: Path) -> None:
    with raw_db(db_path) as raw:
        raw.execute(V1_EVENTS)
        raw.execute("INSERT INTO events (namespace, kind, instance_id, at, cost) "
                    f"VALUES ('{REAL}', 'terminate', 'i-old', {T0}, '1.25')")
        raw.execute("PRAGMA user_version = 1")
    with History.open(db_path, REAL) as history:
        assert [e.instance_id for e in history.events()] == ["i-old"]
        assert history.ended_cost() == Decimal("1.25")
        history.note_billing(["i-new"], T0)
        assert history.last_seen_billing("i-new") == T0
    with raw_db(db_path) as raw:
        assert raw.execute("PRAGMA user_version").fetchone()[0] == SCHEMA_VERSION == 3


def test_sightings_keep_the_latest_time_per_instance_and_namespace(db_path: Path) -> None:
    with History.open(db_path, REAL) as real, History.open(db_path, SIM) as sim:
        real.note_billing(["i-1", "i-2"], T0 + 10)
        real.note_billing(["i-1"], T0 + 5)  # an older sighting never moves it back
        real.note_billing([], T0 + 99)
        sim.note_billing(["i-1"], T0 + 50)
        assert (real.last_seen_billing("i-1"), real.last_seen_billing("i-2")) == (T0 + 10,
                                                                                  T0 + 10)
        assert sim.last_seen_billing("i-1") == T0 + 50
        assert real.last_seen_billing("i-3") is None


def test_open_intents_are_those_no_launch_or_failure_completes(history: History) -> None:
    for launch_id in ("a", "b", "c"):
        history.record(ev("launch_intent", launch_id, detail={"launch_id": launch_id}))
    history.record(ev("launch", "i-1", detail={"launch_id": "a"}))
    history.record(ev("launch_failed", "b", detail={"launch_id": "b"}))
    assert [e.instance_id for e in history.open_intents()] == ["c"]


def test_record_unless_checks_and_writes_in_one_step(history: History) -> None:
    end = ev("terminate", "i-1", reason="external")
    assert history.record_unless(end, kinds=["terminate"]) is True
    assert history.record_unless(end, kinds=["terminate"]) is False
    adopted = ev("launch", "i-9", detail={"launch_id": "L"})
    assert history.record_unless(adopted, kinds=["launch"], launch_id="L") is True
    again = ev("launch", "i-10", detail={"launch_id": "L"})  # another id, same launch
    assert history.record_unless(again, kinds=["launch"], launch_id="L") is False
    assert [e.instance_id for e in history.events()] == ["i-1", "i-9"]


def test_malformed_rows_are_skipped_with_one_warning_each(
        history: History, db_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    history.record(ev("launch", "i-good", cost=Decimal("2")))
    history.record(ev("terminate", "i-good", cost=Decimal("1.5")))
    with raw_db(db_path) as raw:
        for kind, detail, cost in (("extend", "{not json", None), ("terminate", "{}", "lots"),
                                   ("terminate", "[1, 2]", None), ("nonsense", "{}", None),
                                   ("terminate", "{}", "-3")):
            raw.execute("INSERT INTO events (namespace, kind, instance_id, at, detail, cost) "
                        "VALUES (?, ?, 'i-bad', ?, ?, ?)", (REAL, kind, T0, detail, cost))
    with caplog.at_level(logging.WARNING, logger="soong.history"):
        for _ in range(3):
            assert [e.instance_id for e in history.events()] == ["i-good", "i-good"]
            assert history.ended_cost() == Decimal("1.5")
            assert history.current_lease_deadline("i-bad") is None
    warnings = [r.getMessage() for r in caplog.records]
    assert len(warnings) == 5 and all("is malformed" in w for w in warnings)


LOCK_HOLDER = textwrap.dedent("""
    import sqlite3, sys
    db = sqlite3.connect(sys.argv[1], isolation_level=None, timeout=30)
    db.execute("BEGIN IMMEDIATE")
    print("locked", flush=True)
    sys.stdin.readline()
""")


def test_a_write_held_off_by_another_process_is_a_history_error_naming_the_file(
        history: History, db_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from soong_core import history as module
    from soong_core.history import HistoryError

    monkeypatch.setattr(module, "BUSY_TIMEOUT_S", 0.5)
    history._db.execute("PRAGMA busy_timeout = 500")
    holder = subprocess.Popen([sys.executable, "-c", LOCK_HOLDER, str(db_path)], text=True,
                              stdin=subprocess.PIPE, stdout=subprocess.PIPE)
    try:
        assert holder.stdout is not None and holder.stdout.readline().strip() == "locked"
        with pytest.raises(HistoryError) as caught:
            history.record(ev("launch"))
        assert caught.value.exit_code == 1
        assert caught.value.message == (f"cannot write to the history database {db_path}: "
                                        "database is locked (another process has held it "
                                        "for more than 0.5s)")
        assert history.events() == []  # reading still works: WAL readers are not blocked
    finally:
        holder.kill()
        holder.wait(timeout=10)
    history.record(ev("launch"))  # and the connection is usable afterwards
    assert len(history.events()) == 1


# -- what is open, and what a read costs ------------------------------------------------


def reference_open(history: History) -> tuple[list[int], list[str]]:
    """Open intents and launches computed from every event, the slow way: what the
    ``open_launches`` table must always agree with."""
    events = history.events()
    done: set[str] = set()
    for event in events:
        if event.kind in (EventKind.LAUNCH, EventKind.LAUNCH_FAILED):
            if isinstance(event.detail.get("launch_id"), str):
                done.add(event.detail["launch_id"])
            if event.kind is EventKind.LAUNCH_FAILED:
                done.add(event.instance_id)
    intents = [e.detail["n"] for e in events if e.kind is EventKind.LAUNCH_INTENT
               and e.instance_id not in done and e.detail.get("launch_id") not in done]
    ended = {e.instance_id for e in events if e.kind is EventKind.TERMINATE}
    launches = [e.instance_id for e in events if e.kind is EventKind.LAUNCH
                and e.instance_id not in ended]
    return intents, launches


def opened(history: History) -> tuple[list[int], list[str]]:
    return ([e.detail["n"] for e in history.open_intents()],
            [e.instance_id for e in history.open_launches()])


def test_open_launches_are_those_no_termination_ends(history: History) -> None:
    history.record(ev("launch", "a", T0))
    history.record(ev("launch", "b", T0 + 1))
    history.record(ev("extend", "a", T0 + 2))
    assert [e.instance_id for e in history.open_launches()] == ["a", "b"]
    history.record(ev("terminate", "a", T0 + 3, reason="manual"))
    assert [e.instance_id for e in history.open_launches()] == ["b"]
    history.record(ev("launch", "a", T0 + 4))  # recorded after its end: it ended
    assert [e.instance_id for e in history.open_launches()] == ["b"]


def test_a_completion_recorded_before_its_intent_still_closes_it(history: History) -> None:
    history.record(ev("launch", "i-1", T0, detail={"launch_id": "L1"}))
    history.record(ev("launch_failed", "L2", T0, detail={}))  # a failure by instance id
    history.record(ev("launch_intent", "L1", T0 - 1, detail={"launch_id": "L1", "n": 1}))
    history.record(ev("launch_intent", "L2", T0 - 1, detail={"launch_id": "L2", "n": 2}))
    history.record(ev("launch_intent", "L3", T0 - 1, detail={"launch_id": "L3", "n": 3}))
    assert opened(history) == ([3], ["i-1"])


def test_the_open_table_always_agrees_with_all_of_history(history: History) -> None:
    import random

    chance = random.Random(20270115)
    ids = [f"i-{n}" for n in range(6)]
    launch_ids = [f"L{n}" for n in range(6)]
    for n in range(400):
        kind = chance.choice(["launch_intent", "launch", "launch_failed", "terminate",
                              "extend"])
        detail: dict[str, object] = {"n": n}
        if chance.random() < 0.8:
            detail["launch_id"] = chance.choice(launch_ids)
        instance = chance.choice(launch_ids if kind in ("launch_intent", "launch_failed")
                                 and chance.random() < 0.5 else ids)
        event = ev(kind, instance, T0 + chance.randrange(50), detail=detail)
        if chance.random() < 0.5:
            history.record(event)
        else:
            history.record_unless(event, kinds=[kind], launch_id=detail.get("launch_id"))
        assert opened(history) == reference_open(history), n


def test_record_many_writes_all_in_one_transaction_or_nothing(history: History) -> None:
    statements: list[str] = []
    history._db.set_trace_callback(statements.append)
    history.record_many([ev("terminate", f"i-{n}", T0, reason="manual") for n in range(20)])
    history._db.set_trace_callback(None)
    assert statements.count("BEGIN IMMEDIATE") == 1 and statements.count("COMMIT") == 1
    assert len(history.events()) == 20
    with pytest.raises(TypeError):  # the bad one is found before anything is written
        history.record_many([ev("terminate", "i-ok", T0), ev("terminate", "i-bad", cost=0.5)])
    assert len(history.events()) == 20
    history.record_many([])
    assert len(history.events()) == 20


def test_batched_reads_answer_for_many_instances_at_once(history: History) -> None:
    history.record_many([
        ev("launch", "a", T0, detail={"n": 1}), ev("launch", "a", T0 + 5, detail={"n": 2}),
        ev("launch", "b", T0, detail={"n": 3}),
        ev("extend", "a", T0 + 10, detail={"lease_deadline": T0 + 7200}),
        ev("extend", "a", T0 + 20, detail={"note": "no deadline"}),
        ev("extend", "c", T0 + 10, detail={"lease_deadline": T0 + 3600})])
    many = [f"x-{n}" for n in range(1200)] + ["a", "b", "c", "a"]  # more than one chunk
    assert {k: e.detail["n"] for k, e in history.latest_events("launch", many).items()} == {
        "a": 2, "b": 3}
    assert history.lease_deadlines(many) == {"a": T0 + 7200, "c": T0 + 3600}
    assert history.latest_events(EventKind.TERMINATE, many) == {}
    assert history.lease_deadlines([]) == {} and history.latest_events("launch", []) == {}


def vm_steps(history: History, read: Callable[[], object]) -> int:
    """How many SQLite virtual-machine steps ``read`` takes: a measure of the rows it
    visits that does not depend on the machine's speed."""
    steps = [0]

    def count() -> int:
        steps[0] += 1
        return 0

    history._db.set_progress_handler(count, 1)
    try:
        read()
    finally:
        history._db.set_progress_handler(None, 1)
    return steps[0]


def ended_instances(history: History, first: int, count: int) -> None:
    """``count`` instances launched and ended long ago, as a busy history holds."""
    events = []
    for n in range(first, first + count):
        launch_id = f"L-{n}"
        events += [ev("launch_intent", launch_id, T0 + n, detail={"launch_id": launch_id}),
                   ev("launch", f"old-{n}", T0 + n, detail={"launch_id": launch_id}),
                   ev("extend", f"old-{n}", T0 + n + 1, detail={"lease_deadline": T0 + n}),
                   ev("terminate", f"old-{n}", T0 + n + 2, cost=Decimal("1.5"))]
    history.record_many(events)


def test_what_status_reads_does_not_grow_with_ended_history(history: History) -> None:
    now = T0 + 10_000_000
    history.record(ev("launch_intent", "L-open", now, detail={"launch_id": "L-open"}))
    history.record(ev("launch", "i-open", now, detail={"launch_id": "L-other"}))
    listed = ["i-open", "i-gone"]

    def reads() -> None:
        assert len(history.open_intents()) == 1 and len(history.open_launches()) == 1
        history.latest_events("launch", listed)
        history.latest_events("terminate", listed)
        history.lease_deadlines(listed)
        history.ended_cost(since=now)  # the budget, in a period where nothing ended

    ended_instances(history, 0, 50)
    small = vm_steps(history, reads)
    ended_instances(history, 50, 2000)
    assert vm_steps(history, reads) == small


def test_a_version_2_file_is_upgraded_in_place_with_what_is_open(db_path: Path) -> None:
    with raw_db(db_path) as raw:
        raw.execute(V1_EVENTS)
        raw.execute("CREATE TABLE sightings (namespace TEXT NOT NULL, instance_id TEXT NOT "
                    "NULL, last_billing REAL NOT NULL, PRIMARY KEY (namespace, instance_id))")
        for kind, instance, detail in (
                ("launch_intent", "L1", '{"launch_id": "L1"}'),
                ("launch", "i-1", '{"launch_id": "L1"}'),
                ("terminate", "i-1", "{}"),
                ("launch_intent", "L2", '{"launch_id": "L2"}'),
                ("launch", "i-2", '{"launch_id": "L2"}'),
                ("launch_intent", "L3", '{"launch_id": "L3"}'),
                ("launch_intent", "L4", '{"launch_id": "L4"}'),
                ("launch_failed", "L4", '{"launch_id": "L4"}'),
                ("extend", "i-2", "{not json")):
            raw.execute("INSERT INTO events (namespace, kind, instance_id, at, detail) "
                        "VALUES (?, ?, ?, ?, ?)", (REAL, kind, instance, T0, detail))
        raw.execute("PRAGMA user_version = 2")
    with History.open(db_path, REAL) as history:
        assert [e.instance_id for e in history.open_intents()] == ["L3"]
        assert [e.instance_id for e in history.open_launches()] == ["i-2"]
        assert len(history.events()) == 8  # all kept (the malformed one skipped, not lost)
        # the launch id read from old rows' detail finds an adopted launch by it
        again = ev("launch", "i-other", detail={"launch_id": "L2"})
        assert history.record_unless(again, kinds=["launch"], launch_id="L2") is False
    with raw_db(db_path) as raw:
        assert raw.execute("PRAGMA user_version").fetchone()[0] == SCHEMA_VERSION == 3
        assert raw.execute("SELECT count(*) FROM events").fetchone()[0] == 9
        assert raw.execute("SELECT launch_id FROM events WHERE kind = 'launch' ORDER BY id"
                           ).fetchall() == [("L1",), ("L2",)]


def test_adopting_a_namespace_merges_what_is_open(db_path: Path) -> None:
    with History.open(db_path, SIM) as old:
        old.record(ev("launch_intent", "L1", T0, detail={"launch_id": "L1", "n": 1}))
        old.record(ev("launch", "i-1", T0, detail={"launch_id": "L0"}))
        old.record(ev("launch", "i-2", T0))
    with History.open(db_path, REAL) as new:
        new.record(ev("launch", "i-1", T0 + 1, detail={"launch_id": "L1"}))  # completes L1
        new.record(ev("terminate", "i-2", T0 + 2))  # ends the old namespace's i-2
        assert opened(new) == ([], ["i-1"])
        assert new.adopt(SIM) == 3
        assert opened(new) == reference_open(new) == ([], ["i-1", "i-1"])
    with History.open(db_path, SIM) as old:
        assert opened(old) == ([], [])
