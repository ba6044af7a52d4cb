"""Locks a running simulator holds for as long as it runs: one on its state directory
(``sim.lock``: one simulator per state), one beside the profile it keeps pointed at
itself (``<profile>.lock``: one simulator per profile).

Each is an ``fcntl.flock`` on a file that stays in place; the kernel drops it when the
process ends, however it ends, so a lock is never stale the way a PID file can be. The
holder writes a small JSON record into the file (its pid, state directory, URL), which
others read to say *who* holds it; the record outlives the holder, so it also says who
held it last. Opened files are not inherited by the agents the simulator starts
(Python opens them close-on-exec), so an orphaned agent never keeps a lock.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import time
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any

from soong_core.files import FILE_MODE

ACQUIRE_SECONDS = 0.5
"""How long :func:`hold` retries: a :func:`probe` holds a lock for an instant, and must
never make a simulator that starts at that moment fail."""


class LockTaken(Exception):
    """Another process holds the lock; ``record`` is what it wrote (may be empty)."""

    def __init__(self, path: Path, record: dict[str, Any]) -> None:
        super().__init__(f"{path} is locked by pid {record.get('pid', '?')}")
        self.path = path
        self.record = record


@dataclass(frozen=True)
class Probe:
    held: bool
    """Whether a live process holds the lock now."""
    record: dict[str, Any]
    """What the holder (or, when nobody holds it, the last holder) wrote; may be empty."""


class HeldLock:
    """A lock this process holds, with its record; :meth:`release` lets it go."""

    def __init__(self, path: Path, handle: IO[str]) -> None:
        self.path = path
        self._handle: IO[str] | None = handle

    @property
    def held(self) -> bool:
        return self._handle is not None

    def update(self, record: dict[str, Any]) -> None:
        """Rewrite the record (the lock stays held)."""
        if self._handle is None:
            return
        _write_record(self._handle, record)

    def release(self) -> None:
        """Let the lock go (the record stays: it says who held it last). Safe twice."""
        handle, self._handle = self._handle, None
        if handle is not None:
            handle.close()  # closing the file drops the flock


def hold(path: Path, record: dict[str, Any], *, wait: float = ACQUIRE_SECONDS) -> HeldLock:
    """Take the lock at ``path`` (creating the file 0600) and write ``record`` into it.

    Raises :class:`LockTaken` when another process holds it, ``OSError`` when the file
    cannot be opened.
    """
    fd = os.open(path, os.O_RDWR | os.O_CREAT, FILE_MODE)
    handle = os.fdopen(fd, "r+", encoding="utf-8")
    deadline = time.monotonic() + wait
    while True:
        try:
            fcntl.flock(handle.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
            break
        except BlockingIOError:
            if time.monotonic() >= deadline:
                found = _read_record(handle)
                handle.close()
                raise LockTaken(path, found) from None
            time.sleep(0.02)
        except BaseException:
            handle.close()
            raise
    try:
        _write_record(handle, record)
    except BaseException:
        handle.close()
        raise
    return HeldLock(path, handle)


def probe(path: Path) -> Probe:
    """Whether someone holds the lock at ``path``, and its record. Creates nothing."""
    try:
        handle = open(path, "r+", encoding="utf-8")  # noqa: SIM115 - closed below
    except FileNotFoundError:
        return Probe(False, {})
    except OSError:  # a directory in its place, unreadable: nobody can hold it either
        return Probe(False, {})
    with handle:
        record = _read_record(handle)
        try:
            fcntl.flock(handle.fileno(), fcntl.LOCK_SH | fcntl.LOCK_NB)
        except BlockingIOError:
            return Probe(True, record or _read_record(handle))
        fcntl.flock(handle.fileno(), fcntl.LOCK_UN)
        return Probe(False, record)


def _read_record(handle: IO[str]) -> dict[str, Any]:
    with contextlib.suppress(OSError, ValueError):
        handle.seek(0)
        data = json.loads(handle.read() or "{}")
        if isinstance(data, dict):
            return data
    return {}


def _write_record(handle: IO[str], record: dict[str, Any]) -> None:
    text = json.dumps(record, sort_keys=True) + "\n"
    handle.seek(0)
    handle.truncate()
    handle.write(text)
    handle.flush()
