"""The agent's log: one line per event, to stderr and a size-capped file, never a secret.

Each line starts with the wall time (UTC, to the millisecond). A line that would take
the file past ``max_bytes`` first moves it to ``<name>.1`` (one generation kept). Every
line is scrubbed of the secrets the log was given (the instance token, the Lambda key),
whatever the code that wrote it meant to say, and folded to one line.
"""

from __future__ import annotations

import os
import sys
import threading
import time
from pathlib import Path
from typing import TextIO

MASK = "[redacted]"


class AgentLog:
    def __init__(self, path: Path | None, *, max_bytes: int = 1048576,
                 secrets: tuple[str, ...] = (), stream: TextIO | None = None) -> None:
        self.path = path
        self.max_bytes = max_bytes
        self._secrets = tuple(sorted((s for s in secrets if s), key=len, reverse=True))
        self._stream = stream
        self._lock = threading.Lock()
        self.file_problem: str | None = None
        """Why the file cannot be written (said once on stderr, shown in /status)."""

    def scrub(self, text: str) -> str:
        for secret in self._secrets:
            text = text.replace(secret, MASK)
        return " ".join(text.split())

    def __call__(self, message: str) -> None:
        self.write(message)

    def write(self, message: str) -> None:
        """Log one line; never raises (a full disk must not stop enforcement)."""
        now = time.time()
        stamp = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(now)) + f".{int(now % 1 * 1000):03d}Z"
        line = f"{stamp} soong-agent: {self.scrub(message)}\n"
        with self._lock:
            stream = self._stream or sys.stderr
            try:
                stream.write(line)
                stream.flush()
            except (OSError, ValueError):
                pass
            if self.path is not None:
                self._append(line)

    def _append(self, line: str) -> None:
        assert self.path is not None
        data = line.encode("utf-8", "replace")
        try:
            try:
                size = self.path.stat().st_size
            except FileNotFoundError:
                size = 0
                self.path.parent.mkdir(parents=True, exist_ok=True)
            if size and size + len(data) > self.max_bytes:
                os.replace(self.path, self.path.with_name(self.path.name + ".1"))
            fd = os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)
            try:
                os.write(fd, data)
            finally:
                os.close(fd)
            self.file_problem = None
        except OSError as exc:
            problem = f"cannot write the log file {self.path}: {exc.strerror or exc}"
            if problem != self.file_problem:
                self.file_problem = problem
                try:
                    (self._stream or sys.stderr).write(f"soong-agent: {problem}\n")
                except (OSError, ValueError):
                    pass
