"""History keyed by the provider's account (``Provider.identity``), and the rows written
per endpoint before it adopted into the account's namespace, on a real SQLite file."""

from __future__ import annotations

import sqlite3
import subprocess
import sys
import textwrap
from contextlib import closing
from decimal import Decimal
from pathlib import Path

import pytest

from soong_core.api import Soong
from soong_core.clock import ManualClock
from soong_core.fake import FakeProvider
from soong_core.history import History, default_history_path, namespace_for
from soong_core.models import Event, EventKind, Reason
from soong_core.plugins import Plugins

T0 = 1_800_000_000.0
OLD = namespace_for("lambda", "http://127.0.0.1:8123/api/v1")
ACCOUNT = namespace_for("lambda", identity="sim-0123456789abcdef")


def ended(instance_id: str, cost: str, at: float = T0) -> Event:
    return Event(kind=EventKind.TERMINATE, instance_id=instance_id, at=at, provider="lambda",
                 reason=Reason.MANUAL, cost=Decimal(cost))


@pytest.fixture
def db_path(tmp_path: Path) -> Path:
    return tmp_path / "history.sqlite3"


def rows(path: Path, table: str) -> list[tuple[object, ...]]:
    with closing(sqlite3.connect(path)) as raw:
        if table == "events":
            return raw.execute("SELECT namespace, instance_id FROM events ORDER BY id").fetchall()
        return raw.execute("SELECT namespace, instance_id, last_billing FROM sightings "
                           "ORDER BY namespace, instance_id").fetchall()


def test_an_account_namespace_ignores_the_endpoint_and_refuses_nonsense() -> None:
    assert ACCOUNT == "lambda@account:sim-0123456789abcdef"
    assert namespace_for("lambda", "http://127.0.0.1:9/api/v1", identity=" sim-x ") == \
        "lambda@account:sim-x"
    assert namespace_for("lambda", identity="sim-x") != namespace_for("lambda", "http://x/")
    for bad in ("", "  ", "a\nb", "\x1b[2J"):
        with pytest.raises(ValueError, match="identity"):
            namespace_for("lambda", identity=bad)


def test_opening_with_adopt_moves_events_and_sightings_once(db_path: Path) -> None:
    with History.open(db_path, OLD) as old:
        old.record(ended("i-1", "1.25"))
        old.note_billing(["i-1", "i-2"], T0 - 60)
    with History.open(db_path, "lambda@https://cloud.lambda.ai/api/v1") as real:
        real.record(ended("i-real", "9.00"))  # another namespace: never touched
    with History.open(db_path, ACCOUNT, adopt=[OLD]) as account:
        assert [e.instance_id for e in account.events()] == ["i-1"]
        assert account.ended_cost() == Decimal("1.25")  # what the budget counts
        assert account.last_seen_billing("i-2") == T0 - 60
        assert account.adopt(OLD) == 0  # nothing left: a second adoption moves nothing
    with History.open(db_path, OLD) as old:
        assert old.events() == [] and old.last_seen_billing("i-1") is None
    assert rows(db_path, "events") == [(ACCOUNT, "i-1"),
                                       ("lambda@https://cloud.lambda.ai/api/v1", "i-real")]


def test_a_sighting_both_namespaces_hold_keeps_the_later_time(db_path: Path) -> None:
    with History.open(db_path, ACCOUNT) as account:
        account.note_billing(["i-1", "i-3"], T0)
    with History.open(db_path, OLD) as old:
        old.note_billing(["i-1"], T0 + 30)
        old.note_billing(["i-3"], T0 - 30)
    with History.open(db_path, ACCOUNT, adopt=[OLD]) as account:
        assert account.last_seen_billing("i-1") == T0 + 30
        assert account.last_seen_billing("i-3") == T0
    assert rows(db_path, "sightings") == [(ACCOUNT, "i-1", T0 + 30), (ACCOUNT, "i-3", T0)]


def test_nothing_to_adopt_takes_no_write_lock(db_path: Path) -> None:
    History.open(db_path, ACCOUNT).close()
    with closing(sqlite3.connect(db_path, isolation_level=None, timeout=0)) as other:
        other.execute("BEGIN IMMEDIATE")  # another process is writing right now
        try:
            with History.open(db_path, ACCOUNT, adopt=[OLD]) as account:
                assert account.events() == []  # opened at once, did not wait for the writer
        finally:
            other.execute("ROLLBACK")


ADOPTER = textwrap.dedent("""
    import sys
    from soong_core.history import History
    path, namespace, old = sys.argv[1:4]
    print("ready", flush=True)
    sys.stdin.readline()
    with History.open(path, namespace) as history:  # adopt() itself: it says how many
        print(history.adopt(old), flush=True)
""")


@pytest.mark.slow
def test_two_processes_adopting_at_once_move_each_row_once(db_path: Path) -> None:
    count = 200
    with History.open(db_path, OLD) as old:
        for n in range(count):
            old.record(ended(f"i-{n}", "0.01", T0 + n))
        old.note_billing([f"i-{n}" for n in range(count)], T0)
    adopters = [subprocess.Popen([sys.executable, "-c", ADOPTER, str(db_path), ACCOUNT, OLD],
                                 stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                 stderr=subprocess.PIPE, text=True) for _ in range(2)]
    try:
        for adopter in adopters:
            assert adopter.stdout is not None and adopter.stdout.readline() == "ready\n"
        for adopter in adopters:
            assert adopter.stdin is not None
            adopter.stdin.write("go\n")
            adopter.stdin.flush()
        results = [adopter.communicate(timeout=60) for adopter in adopters]
    finally:
        for adopter in adopters:
            if adopter.poll() is None:
                adopter.kill()
    for adopter, (_, err) in zip(adopters, results, strict=True):
        assert adopter.returncode == 0, err
    assert sum(int(out) for out, _ in results) == count  # between them, each row once
    with History.open(db_path, ACCOUNT) as account:
        assert len(account.events()) == count
        assert account.ended_cost() == Decimal("0.01") * count
    assert {namespace for namespace, _ in rows(db_path, "events")} == {ACCOUNT}
    assert len(rows(db_path, "sightings")) == count


ENDPOINT = "http://127.0.0.1:8123/api/v1"


def test_the_core_keys_history_by_the_providers_identity_and_adopts_the_endpoints(
        fake_provider: FakeProvider, plugins: Plugins, clock: ManualClock) -> None:
    fake_provider.endpoint = ENDPOINT
    with History.open(namespace=namespace_for("fake", ENDPOINT)) as before:  # soong, before
        before.record(ended("i-old", "2.50"))
    fake_provider.identity = "acct-1"
    with Soong({"defaults": {"provider": "fake"}}, plugins=plugins, clock=clock) as soong:
        assert soong.history.namespace == "fake@account:acct-1"
        assert soong.history.path == default_history_path()
        assert [e.instance_id for e in soong.history.events()] == ["i-old"]
        assert soong.history.ended_cost() == Decimal("2.50")  # the budget's committed spend
    fake_provider.endpoint = "http://127.0.0.1:9999/api/v1"  # the same account, moved
    with Soong({"defaults": {"provider": "fake"}}, plugins=plugins, clock=clock) as soong:
        assert [e.instance_id for e in soong.history.events()] == ["i-old"]


def test_without_an_identity_history_stays_keyed_by_endpoint(
        fake_provider: FakeProvider, plugins: Plugins, clock: ManualClock) -> None:
    fake_provider.endpoint = ENDPOINT
    with Soong({"defaults": {"provider": "fake"}}, plugins=plugins, clock=clock) as soong:
        assert soong.history.namespace == "fake@http://127.0.0.1:8123/api/v1"
