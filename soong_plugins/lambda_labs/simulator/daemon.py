"""The background simulator behind ``soong sim up``, ``status`` and ``down``.

``start`` runs ``python -m soong_plugins.lambda_labs.simulator`` as a detached process
(its own session, stdin closed, output to ``sim.log``) and waits for the one line it
writes on a pipe once it listens, so ``sim up`` returns only when the simulator answers,
or fails with the simulator's own one-line reason (port in use...). The key never
appears in its arguments; it reads it from the state directory.

A running simulator holds a lock on its state directory (``sim.lock``, see
:mod:`.locks`) for as long as it runs: that, not the PID file, says whether one runs.
:func:`inspect` calls a simulator ``running`` when the lock is held and the holder
answers ``/_sim/status`` with its pid and run id, ``unresponsive`` when the lock is held
and it does not answer; a PID file with the lock free is stale, removed. A second
simulator on the same state is refused by the lock itself, however the two were started.

A simulator also holds a lock beside the profile it keeps (``<profile>.lock``), which
records its state directory: :func:`profile_owner` reads it, so ``sim up`` refuses a
profile a live simulator of another state keeps, and ``sim status``/``sim down`` find a
simulator by its profile.
"""

from __future__ import annotations

import contextlib
import json
import os
import select
import signal
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

from soong_core.files import FILE_MODE
from soong_plugins.lambda_labs.simulator import locks
from soong_plugins.lambda_labs.simulator.client import SimClient, SimUnreachable, UnexpectedReply
from soong_plugins.lambda_labs.simulator.options import StartOptions
from soong_plugins.lambda_labs.simulator.store import StateStore, profile_lock_path

MODULE = "soong_plugins.lambda_labs.simulator"
START_TIMEOUT = 30.0
STOP_TIMEOUT = 10.0
SECRET_ENV = ("LAMBDA_API_KEY", "SOONG_LAMBDA_API_KEY")
"""A real account's key has no business in the simulator's environment."""


class DaemonError(Exception):
    """One line for the user, with optional hints."""

    def __init__(self, message: str, hints: tuple[str, ...] = (), exit_code: int = 1) -> None:
        super().__init__(message)
        self.message = message
        self.hints = hints
        self.exit_code = exit_code


@dataclass(frozen=True)
class Found:
    """What the state directory's PID file leads to."""

    state: str
    """``running`` (answers), ``unresponsive`` (our process, not answering), ``stale``
    (the file names something else) or ``none`` (no file)."""
    record: dict[str, Any] | None = None
    status: dict[str, Any] | None = None

    @property
    def pid(self) -> int | None:
        return self.record.get("pid") if self.record else None


def inspect(store: StateStore) -> Found:
    lock = locks.probe(store.lock_path)
    record = store.read_pid_file()
    if not lock.held:  # nothing runs on this state, whatever the PID file says
        if record is None and not store.pid_path.exists():
            return Found("none")
        return Found("stale", record)
    holder = lock.record.get("pid")
    if not isinstance(holder, int) or isinstance(holder, bool):
        # A holder that wrote no record: the PID file's pid, if that is a simulator.
        pid = record.get("pid") if record else None
        holder = pid if pid is not None and alive(pid) and is_simulator_process(pid) else None
    if record is None or record.get("pid") != holder:
        # Starting (no PID file yet), or its PID file is gone: what the lock says.
        record = {key: lock.record[key] for key in ("url", "api_url", "state_dir", "run_id")
                  if key in lock.record}
        record["pid"] = holder
    status = ask_status(store, record) if holder is not None else None
    if status is not None and status.get("pid") == holder \
            and status.get("run_id") == record.get("run_id"):
        return Found("running", record, status)
    return Found("unresponsive", record)


def profile_owner(profile: Path) -> tuple[bool, str | None]:
    """``(live, state_dir)`` of the simulator that keeps ``profile``: whether one holds
    it now, and the state directory of that one (or of the last one that held it)."""
    found = locks.probe(profile_lock_path(profile))
    state_dir = found.record.get("state_dir")
    return found.held, state_dir if isinstance(state_dir, str) and state_dir else None


def refuse_if_taken(store: StateStore, profile: Path | None) -> None:
    """Refuse to start on a state a simulator runs on (exit 1), or to take a profile a
    live simulator of another state keeps (exit 2); a stale PID file is removed."""
    from soong_plugins.lambda_labs.simulator.app import ProfileTaken, StateTaken

    found = inspect(store)
    if found.state in ("running", "unresponsive"):
        taken = StateTaken.from_record(store.directory, found.record or {})
        raise DaemonError(taken.message, taken.hints)
    if found.state == "stale":
        store.remove_pid_file()
    if profile is None:
        return
    owner = locks.probe(profile_lock_path(profile))
    owner_dir = owner.record.get("state_dir")
    if owner.held and owner_dir != str(store.directory):
        refused = ProfileTaken.from_record(profile, owner.record)
        raise DaemonError(refused.message, refused.hints, exit_code=refused.exit_code)


def ask_status(store: StateStore, record: dict[str, Any], timeout: float = 2.0
               ) -> dict[str, Any] | None:
    url = record.get("url")
    if not isinstance(url, str) or not url.startswith("http://127.0.0.1:"):
        return None  # we only ever listen on the loopback address
    try:
        key = store.key_path.read_text(encoding="utf-8").strip()
        status = SimClient(url, key, timeout=timeout).control("GET", "/status")
    except (OSError, UnicodeDecodeError, SimUnreachable, UnexpectedReply):
        return None
    return status if isinstance(status, dict) else None


def alive(pid: int) -> bool:
    """The process exists and is not a zombie (a reaped-late child is gone for us)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return True  # no /proc (macOS): trust kill(0)
    return stat.rpartition(")")[2].split()[:1] != ["Z"]


def command_line(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode(
            "utf-8", "replace")
    except OSError:
        pass
    try:
        done = subprocess.run(["ps", "-o", "command=", "-p", str(pid)], capture_output=True,
                              text=True, timeout=5)
    except (OSError, subprocess.SubprocessError):
        return ""
    return done.stdout.strip()


def is_simulator_process(pid: int) -> bool:
    return MODULE in command_line(pid)


def _child_env() -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k not in SECRET_ENV}
    root = str(Path(__file__).resolve().parents[3])  # the directory holding soong_plugins
    env["PYTHONPATH"] = os.pathsep.join(p for p in (root, env.get("PYTHONPATH", "")) if p)
    return env


def start(store: StateStore, options: StartOptions, profile: Path | None,
          timeout: float = START_TIMEOUT) -> dict[str, Any]:
    """Start a background simulator; returns its ready message (pid, url, warnings...).

    What :func:`refuse_if_taken` refuses is refused here first; two ``sim up`` racing
    past that check are settled by the locks in the simulators themselves (the loser
    reports the same refusal)."""
    refuse_if_taken(store, profile)
    store.prepare()
    args = [sys.executable, "-m", MODULE, "--state-dir", str(store.directory),
            *options.to_args(), "--pid-file"]
    if profile is not None:
        args += ["--profile", str(profile)]
    read_end, write_end = os.pipe()
    log_fd = os.open(store.server_log_path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, FILE_MODE)
    try:
        process = subprocess.Popen(
            [*args, "--ready-fd", str(write_end)], stdin=subprocess.DEVNULL, stdout=log_fd,
            stderr=log_fd, pass_fds=(write_end,), start_new_session=True, env=_child_env(),
            cwd=str(store.directory))
    except OSError as exc:
        os.close(read_end)
        raise DaemonError(f"cannot start the simulator: {exc}") from None
    finally:
        os.close(write_end)
        os.close(log_fd)
    try:
        message = _read_ready(read_end, process, timeout)
    finally:
        os.close(read_end)
    if not message.get("ok"):
        if message.get("refused"):  # what refuse_if_taken would have said, a moment later
            raise DaemonError(str(message.get("error")), tuple(message.get("hints") or ()),
                              exit_code=int(message.get("exit_code") or 1))
        raise DaemonError(f"the simulator did not start: {message.get('error', 'unknown')}",
                          (f"its log: {store.server_log_path}",))
    return message


def _read_ready(fd: int, process: subprocess.Popen[bytes], timeout: float) -> dict[str, Any]:
    deadline = time.monotonic() + timeout
    data = b""
    while b"\n" not in data:
        left = deadline - time.monotonic()
        if left <= 0:
            with contextlib.suppress(OSError):
                process.kill()
            return {"ok": False, "error": f"no answer within {timeout:g} s"}
        ready, _, _ = select.select([fd], [], [], min(left, 0.5))
        if not ready:
            continue
        chunk = os.read(fd, 65536)
        if not chunk:
            break
        data += chunk
    line = data.split(b"\n", 1)[0]
    if line:
        try:
            message = json.loads(line)
            if isinstance(message, dict):
                return message
        except json.JSONDecodeError:
            pass
    code = process.wait(timeout=5) if process.poll() is None else process.returncode
    return {"ok": False, "error": f"it exited with code {code} before listening"}


def stop(store: StateStore, timeout: float = STOP_TIMEOUT) -> Found:
    """Stop the recorded simulator (SIGTERM, then SIGKILL after ``timeout``).

    Returns what was found: ``none`` and ``stale`` stop nothing (a stale PID file is
    removed); ``running`` and ``unresponsive`` are stopped.
    """
    found = inspect(store)
    if found.state in ("none", "stale"):
        store.remove_pid_file()
        return found
    pid = found.pid
    if pid is None:
        raise DaemonError(f"a process holds the simulator's lock {store.lock_path}, but "
                          "which one is unknown (it wrote no pid)",
                          (f"find it with `fuser {store.lock_path}`",))
    for sig, wait in ((signal.SIGTERM, timeout), (signal.SIGKILL, 5.0)):
        try:
            os.kill(pid, sig)
        except ProcessLookupError:
            break
        if _wait_gone(pid, wait):
            break
    else:
        raise DaemonError(f"the simulator (pid {pid}) did not stop")
    store.remove_pid_file(pid)
    return found


def _wait_gone(pid: int, timeout: float) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if not alive(pid):
            return True
        time.sleep(0.05)
    return not alive(pid)


def run_foreground(store: StateStore, options: StartOptions, profile: Path | None,
                   on_ready: Callable[[Any], None]) -> None:
    """Serve in this process until SIGINT/SIGTERM (``soong sim up --foreground``)."""
    from soong_plugins.lambda_labs.simulator.app import Simulator

    refuse_if_taken(store, profile)
    simulator = Simulator(store.directory, port=options.port, speed=options.speed,
                          boot_seconds=options.boot_seconds,
                          terminate_seconds=options.terminate_seconds,
                          terminate_ended=options.terminate_ended,
                          rate_limit=options.rate_limit,
                          rate_limit_body=options.rate_limit_body, capacity=options.capacity,
                          reset=options.reset, capture_path=options.capture_path,
                          pid_file=True, profile_path=profile)
    simulator.bind()
    previous = {sig: signal.getsignal(sig) for sig in (signal.SIGINT, signal.SIGTERM)}

    def handle(signum: int, frame: object) -> None:
        simulator.stop()

    for sig in previous:
        signal.signal(sig, handle)
    try:
        try:
            on_ready(simulator)
        except BaseException:
            simulator.close()
            raise
        simulator.serve_forever()
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
