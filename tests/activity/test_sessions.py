"""The ``sessions`` source against utmp files written with ``struct``: logins count,
port forwards and gone processes do not, every broken file says what is wrong."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from stubs import (BOOT_TIME, DEAD_PROCESS, LOGIN_PROCESS, UtmpRecord, pack_utmp, port_forward,
                   session, write_utmp)

from soong_core.models import ActivityState
from soong_plugins.activity import SOURCES
from soong_plugins.activity.sessions import (MAX_BYTES, SessionsSource, is_terminal,
                                             process_alive, record_size)

NOW = 1_700_000_000.0


@pytest.fixture
def utmp(tmp_path: Path) -> Path:
    return tmp_path / "run" / "utmp"


def look(path: Path, **kwargs: Any) -> Any:
    sample = SessionsSource({"utmp": str(path)}, **kwargs).sample(NOW)
    json.dumps(sample.health, allow_nan=False)
    assert "\n" not in sample.detail and sample.last_activity is None
    return sample


@pytest.fixture
def dead_pid() -> int:
    child = subprocess.Popen([sys.executable, "-c", ""])
    child.wait()
    return child.pid


def test_interactive_login_is_active(utmp: Path) -> None:
    write_utmp(utmp, [UtmpRecord(type=BOOT_TIME, user="reboot", line="~"), session()])
    sample = look(utmp)
    assert sample.state is ActivityState.ACTIVE
    assert sample.detail == "1 interactive session: root on pts/3 from 10.0.0.2"
    assert sample.health == {
        "sessions": [{"user": "root", "line": "pts/3", "host": "10.0.0.2", "pid": os.getpid()}],
        "ignored": {"no_terminal": 0, "process_gone": 0}}


def test_port_forward_only_connection_is_no_session(utmp: Path) -> None:
    write_utmp(utmp, [port_forward(), UtmpRecord(user="ubuntu", line="", pid=os.getpid())])
    sample = look(utmp)
    assert sample.state is ActivityState.IDLE
    assert sample.detail == "no interactive session (login records ignored: 2 no terminal)"
    assert sample.health["ignored"] == {"no_terminal": 2, "process_gone": 0}


def test_login_whose_process_is_gone_never_counts(utmp: Path, dead_pid: int) -> None:
    write_utmp(utmp, [session(pid=dead_pid), session(line="pts/4", pid=0)])
    sample = look(utmp)
    assert sample.state is ActivityState.IDLE
    assert sample.detail == "no interactive session (login records ignored: 2 process gone)"


def test_pid_check_is_injectable(utmp: Path) -> None:
    write_utmp(utmp, [session(pid=41), session("alice", "pts/5", pid=42)])
    asked: list[int] = []

    def alive(pid: int) -> bool:
        asked.append(pid)
        return pid == 42

    sample = look(utmp, pid_alive=alive)
    assert sample.detail == "1 interactive session: alice on pts/5 from 10.0.0.2"
    assert asked == [41, 42]


def test_other_record_types_are_not_sessions(utmp: Path) -> None:
    write_utmp(utmp, [UtmpRecord(type=LOGIN_PROCESS, user="LOGIN", line="tty1", pid=os.getpid()),
                      UtmpRecord(type=DEAD_PROCESS, line="pts/3", pid=os.getpid())])
    sample = look(utmp)
    assert sample.state is ActivityState.IDLE
    assert sample.detail == "no interactive session"


def test_empty_file_is_idle(utmp: Path) -> None:
    write_utmp(utmp, [])
    sample = look(utmp)
    assert sample.state is ActivityState.IDLE
    assert sample.health["sessions"] == []


def test_local_console_and_many_sessions(utmp: Path) -> None:
    records = [session("root", "tty1", "")] + [session(f"u{n}", f"pts/{n}") for n in range(24)]
    write_utmp(utmp, records)
    sample = look(utmp)
    assert sample.state is ActivityState.ACTIVE
    assert sample.detail == ("25 interactive sessions: root on tty1, u0 on pts/0 from 10.0.0.2, "
                             "u1 on pts/1 from 10.0.0.2 and 22 more")
    assert len(sample.health["sessions"]) == 20
    assert sample.health["sessions"][0]["host"] is None


def test_the_same_source_follows_the_file(utmp: Path) -> None:
    source = SessionsSource({"utmp": str(utmp)})
    states = []
    for records in ([session()], [port_forward()], [], [session()]):
        write_utmp(utmp, records)
        states.append(source.sample(NOW).state)
    assert states == [ActivityState.ACTIVE, ActivityState.IDLE, ActivityState.IDLE,
                      ActivityState.ACTIVE]


def test_odd_bytes_in_names_stay_on_one_line(utmp: Path) -> None:
    write_utmp(utmp, [UtmpRecord(user="ev\nil\x1b[2J", line="pts/1", host="h\rost",
                                 pid=os.getpid())])
    sample = look(utmp)
    assert sample.detail == "1 interactive session: ev?il?[2J on pts/1 from h?ost"


def test_missing_file_is_unavailable(utmp: Path) -> None:
    sample = look(utmp)
    assert sample.state is ActivityState.UNAVAILABLE
    assert sample.detail == f"no utmp file at {utmp}"
    assert look(utmp / "below").state is ActivityState.UNAVAILABLE


def test_partial_record_is_unhealthy(utmp: Path) -> None:
    write_utmp(utmp, [session(), session()])
    utmp.write_bytes(utmp.read_bytes()[:-100])
    sample = look(utmp, machine="x86_64")
    assert sample.state is ActivityState.UNHEALTHY
    assert sample.detail == f"{utmp} is 668 bytes, not a whole number of 384-byte utmp records"


def test_other_machine_layout_is_unhealthy_not_misread(utmp: Path) -> None:
    write_utmp(utmp, [session()], machine="x86_64")
    sample = look(utmp, machine="aarch64")
    assert sample.state is ActivityState.UNHEALTHY
    assert "not a whole number of 400-byte utmp records" in sample.detail


def test_aarch64_layout(utmp: Path) -> None:
    write_utmp(utmp, [port_forward(), session("ubuntu", "pts/0", "192.0.2.7")], machine="aarch64")
    assert utmp.stat().st_size == 800
    sample = look(utmp, machine="aarch64")
    assert sample.state is ActivityState.ACTIVE
    assert sample.detail == "1 interactive session: ubuntu on pts/0 from 192.0.2.7"


@pytest.mark.parametrize("machine,size", [
    ("x86_64", 384), ("aarch64", 400), ("arm64", 400), ("i686", 384), ("ppc64le", 384)])
def test_record_size(machine: str, size: int) -> None:
    assert record_size(machine) == size
    assert len(pack_utmp(UtmpRecord(), machine)) == size


def test_directory_and_fifo_are_unhealthy(tmp_path: Path) -> None:
    sample = look(tmp_path)
    assert sample.state is ActivityState.UNHEALTHY
    assert sample.detail == f"{tmp_path} is not a regular file"
    fifo = tmp_path / "fifo"
    os.mkfifo(fifo)
    sample = look(fifo)  # no writer: a blocking open would never return
    assert sample.state is ActivityState.UNHEALTHY
    assert sample.detail == f"{fifo} is not a regular file"


def test_unreadable_file_is_unhealthy(tmp_path: Path) -> None:
    loop = tmp_path / "loop"
    loop.symlink_to(loop)
    sample = look(loop)
    assert sample.state is ActivityState.UNHEALTHY
    assert sample.detail == f"cannot read {loop}: Too many levels of symbolic links"


def test_oversized_file_is_unhealthy(utmp: Path) -> None:
    utmp.parent.mkdir()
    utmp.write_bytes(pack_utmp(session()) * (MAX_BYTES // 384 + 1))
    sample = look(utmp)
    assert sample.state is ActivityState.UNHEALTHY
    assert sample.detail == f"{utmp} is larger than 4 MiB; not a utmp file"


@pytest.mark.parametrize("line,terminal", [
    ("pts/3", True), ("tty1", True), ("ttyS0", True), ("console", True), ("hvc0", True),
    ("/dev/pts/12", True), ("ssh:notty", False), ("", False), ("~", False), ("pts/", False),
    (":0", False), ("ssh:pts/3", False)])
def test_is_terminal(line: str, terminal: bool) -> None:
    assert is_terminal(line) is terminal


def test_process_alive(dead_pid: int) -> None:
    assert process_alive(os.getpid())
    assert not process_alive(dead_pid)
    assert not process_alive(0)  # signal 0 to pid 0 would reach our own process group
    assert not process_alive(-1)


def test_registered_factory_builds_it(utmp: Path) -> None:
    write_utmp(utmp, [session()])
    source = SOURCES["sessions"]({"utmp": str(utmp)})
    assert isinstance(source, SessionsSource) and source.name == "sessions"
    assert source.sample(NOW).state is ActivityState.ACTIVE
