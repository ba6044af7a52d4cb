"""The ``sessions`` activity source: interactive terminal logins, read from utmp.

utmp (``/run/utmp``) holds one fixed-size glibc ``struct utmp`` record per login slot.
A session is a ``USER_PROCESS`` record whose ``ut_line`` names a terminal (``pts/3``,
``tty1``, ``console``...) and whose process still lives. sshd writes such a record only
for a connection that got a pseudo-terminal: a port-forward-only connection
(``ssh -N -L ...``) gets none, or one whose line is ``ssh:notty``, and never counts, so
a laptop that holds a tunnel open does not keep the instance alive.

``active`` with at least one session, ``idle`` when the file reads fine and holds none,
``unavailable`` when there is no utmp file, ``unhealthy`` when it cannot be read or is
not a whole number of records.
"""

from __future__ import annotations

import os
import platform
import re
import stat
import struct
from dataclasses import dataclass
from typing import Any, Callable, Mapping

from soong_core.interfaces import ActivitySource
from soong_core.models import ActivitySample, ActivityState, Timestamp

USER_PROCESS = 7
MAX_BYTES = 4 * 1024 * 1024
"""The most of the file read: utmp keeps one record per terminal slot, so a few KiB is
usual and more than this is not a utmp file."""
MAX_LISTED = 20
"""Sessions listed in ``health``."""

RECORD_SIZE_32BIT_TIME = 384
"""``sizeof(struct utmp)`` where glibc keeps ``ut_session`` and ``ut_tv`` 32-bit
(``__WORDSIZE_TIME64_COMPAT32``): x86_64 (checked with ``offsetof``), every 32-bit
machine, and ppc64, s390x, sparc64."""
RECORD_SIZE_64BIT_TIME = 400
"""``sizeof(struct utmp)`` where they are ``long`` and ``struct timeval`` (glibc's
aarch64 ``bits/wordsize.h`` sets ``__WORDSIZE_TIME64_COMPAT32`` to 0): 8 bytes of
``ut_session`` at 336, 16 of ``ut_tv`` at 344, the address at 360, 20 reserved bytes,
padded to a multiple of 8."""
MACHINES_64BIT_TIME = frozenset({"aarch64", "arm64", "aarch64_be", "riscv64", "loongarch64"})

HEAD = struct.Struct("=h2xi32s4s32s256s")
"""The fields read, at the same offsets in both layouts: ``ut_type`` (short) at 0,
``ut_pid`` (pid_t) at 4, ``ut_line[32]`` at 8, ``ut_id[4]`` at 40, ``ut_user[32]`` at 44,
``ut_host[256]`` at 76."""

_TERMINAL = re.compile(r"(?:pts/\d+|tty[0-9A-Za-z]*|console|hvc\d+)")
_CONTROL = re.compile(r"[\x00-\x1f\x7f]+")


def record_size(machine: str | None = None) -> int:
    """The utmp record size of ``machine`` (``platform.machine()`` by default)."""
    name = (machine if machine is not None else platform.machine()).lower()
    return RECORD_SIZE_64BIT_TIME if name in MACHINES_64BIT_TIME else RECORD_SIZE_32BIT_TIME


def process_alive(pid: int) -> bool:
    """Whether process ``pid`` exists (signal 0; one we may not signal exists too)."""
    if pid <= 0:
        return False
    try:
        os.kill(pid, 0)
    except PermissionError:
        return True
    except OSError:
        return False
    return True


def is_terminal(line: str) -> bool:
    """Whether a ``ut_line`` names a terminal: ``pts/N``, ``ttyX``, ``console``, ``hvcN``."""
    return bool(_TERMINAL.fullmatch(line.removeprefix("/dev/")))


@dataclass(frozen=True)
class Record:
    type: int
    pid: int
    line: str
    user: str
    host: str


def _field(raw: bytes) -> str:
    text = raw.split(b"\0", 1)[0].decode("utf-8", errors="replace")
    return _CONTROL.sub("?", text)


def parse_records(data: bytes, size: int) -> list[Record]:
    """Every record of ``data`` (a whole number of ``size``-byte records)."""
    records = []
    for offset in range(0, len(data) - size + 1, size):
        kind, pid, line, _id, user, host = HEAD.unpack_from(data, offset)
        records.append(Record(kind, pid, _field(line), _field(user), _field(host)))
    return records


class _NotRegular(Exception):
    pass


def _read(path: str) -> bytes:
    """The file's bytes, at most ``MAX_BYTES + 1``; never blocks on a FIFO or a device."""
    fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | getattr(os, "O_CLOEXEC", 0))
    try:
        if not stat.S_ISREG(os.fstat(fd).st_mode):
            raise _NotRegular
        chunks: list[bytes] = []
        left = MAX_BYTES + 1
        while left > 0:
            chunk = os.read(fd, min(left, 1 << 16))
            if not chunk:
                break
            chunks.append(chunk)
            left -= len(chunk)
        return b"".join(chunks)
    finally:
        os.close(fd)


def _describe(session: Mapping[str, Any]) -> str:
    said = f"{session['user'] or '?'} on {session['line']}"
    return said + (f" from {session['host']}" if session["host"] else "")


class SessionsSource(ActivitySource):
    """Interactive logins in utmp.

    :param settings: ``utmp``, the file's path (already under ``$SOONG_ROOT``).
    :param pid_alive: whether a record's process lives (tests); :func:`process_alive` by default.
    :param machine: the machine whose record layout to read (tests);
        ``platform.machine()`` by default.
    """

    name = "sessions"
    bounded = True  # every look ends by its own timeouts

    def __init__(self, settings: Mapping[str, Any], *,
                 pid_alive: Callable[[int], bool] | None = None,
                 machine: str | None = None) -> None:
        self.utmp = str(settings.get("utmp", "/run/utmp"))
        self._alive = pid_alive or process_alive
        self.record_size = record_size(machine)

    def sample(self, now: Timestamp) -> ActivitySample:
        path = self.utmp
        try:
            data = _read(path)
        except (FileNotFoundError, NotADirectoryError):
            return ActivitySample(ActivityState.UNAVAILABLE, f"no utmp file at {path}",
                                  {"sessions": []})
        except _NotRegular:
            return self._unhealthy(f"{path} is not a regular file")
        except OSError as exc:
            return self._unhealthy(f"cannot read {path}: {exc.strerror or exc}")
        if len(data) > MAX_BYTES:
            return self._unhealthy(f"{path} is larger than {MAX_BYTES // (1024 * 1024)} MiB; "
                                   "not a utmp file")
        if len(data) % self.record_size:
            return self._unhealthy(
                f"{path} is {len(data)} bytes, not a whole number of "
                f"{self.record_size}-byte utmp records")
        sessions: list[dict[str, Any]] = []
        ignored = {"no_terminal": 0, "process_gone": 0}
        for record in parse_records(data, self.record_size):
            if record.type != USER_PROCESS:
                continue
            if not is_terminal(record.line):
                ignored["no_terminal"] += 1
            elif not self._alive(record.pid):
                ignored["process_gone"] += 1
            else:
                sessions.append({"user": record.user, "line": record.line,
                                 "host": record.host or None, "pid": record.pid})
        health = {"sessions": sessions[:MAX_LISTED], "ignored": ignored}
        if not sessions:
            skipped = [f"{count} {why.replace('_', ' ')}"
                       for why, count in ignored.items() if count]
            detail = "no interactive session" + (
                f" (login records ignored: {', '.join(skipped)})" if skipped else "")
            return ActivitySample(ActivityState.IDLE, detail, health)
        noun = "session" if len(sessions) == 1 else "sessions"
        shown = ", ".join(_describe(session) for session in sessions[:3])
        more = f" and {len(sessions) - 3} more" if len(sessions) > 3 else ""
        detail = f"{len(sessions)} interactive {noun}: {shown}{more}"
        return ActivitySample(ActivityState.ACTIVE, detail[:280], health)

    @staticmethod
    def _unhealthy(detail: str) -> ActivitySample:
        return ActivitySample(ActivityState.UNHEALTHY, detail, {"sessions": []})
