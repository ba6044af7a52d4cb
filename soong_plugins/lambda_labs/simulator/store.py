"""Where a simulator keeps its files, and how they are written.

One state directory per simulated cloud (default ``$XDG_STATE_HOME/soong/sim/``)::

    state.json      the cloud (instances, keys, filesystems, settings, clock anchors)
    api-key         the primary key this cloud accepts (0600; never in state.json)
    api-keys.json   keys minted since, as digests (see :mod:`.apikeys`)
    account-id      the simulated account's id (history and budget are kept per account)
    sim.lock        held by the running simulator (see :mod:`.locks`): one per state
    sim.pid         the running simulator: pid, port, URL (JSON)
    requests.jsonl  the request log (append-only)
    sim.log         what a background simulator printed

Every file is written atomically (temp file in the same directory, ``fsync``,
``os.replace``) with mode 0600, so a crash never leaves half a state and separate
processes never read one. A state file that cannot be read is moved aside, never
deleted, like soong's history.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import secrets
import time
from pathlib import Path
from typing import Any

from soong_core.files import private_dir, soong_dir
from soong_core.files import write_private as write_private_file
from soong_plugins.lambda_labs.simulator.state import CloudState, StateError

log = logging.getLogger("soong.sim")


STATE_FILE = "state.json"
KEY_FILE = "api-key"
ACCOUNT_FILE = "account-id"
LOCK_FILE = "sim.lock"
PID_FILE = "sim.pid"
REQUEST_LOG = "requests.jsonl"
SERVER_LOG = "sim.log"


class StoreError(Exception):
    """A file of the state directory cannot be used (one line, for the user)."""


def default_state_dir(environ: dict[str, str] | None = None) -> Path:
    """``$XDG_STATE_HOME/soong/sim`` (``~/.local/state/soong/sim`` without it).

    A relative ``XDG_STATE_HOME`` is ignored, as the XDG specification says.
    """
    return soong_dir("state", environ) / "sim"


def profile_lock_path(profile: Path) -> Path:
    """The lock a simulator holds beside the profile it keeps pointed at itself."""
    return profile.with_name(profile.name + ".lock")


def make_private_dir(directory: Path) -> None:
    try:
        private_dir(directory)
    except NotADirectoryError:
        raise StoreError(f"state directory {directory} exists and is not a directory") from None
    except OSError as exc:
        raise StoreError(f"cannot create state directory {directory}: "
                         f"{exc.strerror or exc}") from None


def write_private(path: Path, text: str) -> None:
    """Write ``text`` to ``path`` atomically, mode 0600 (see :mod:`soong_core.files`)."""
    make_private_dir(path.parent)
    write_private_file(path, text)


def move_aside(path: Path, now: float | None = None) -> Path:
    """Rename ``path`` to a free ``<name>.corrupt-YYYYmmddTHHMMSSZ[-N]``; returns the new path."""
    stamp = time.strftime("%Y%m%dT%H%M%SZ", time.gmtime(time.time() if now is None else now))
    target = path.with_name(f"{path.name}.corrupt-{stamp}")
    counter = 1
    while target.exists():
        counter += 1
        target = path.with_name(f"{path.name}.corrupt-{stamp}-{counter}")
    os.replace(path, target)
    return target


class StateStore:
    """The files of one state directory."""

    def __init__(self, directory: str | os.PathLike[str]) -> None:
        self.directory = Path(directory).expanduser().absolute()

    @property
    def state_path(self) -> Path:
        return self.directory / STATE_FILE

    @property
    def key_path(self) -> Path:
        return self.directory / KEY_FILE

    @property
    def account_path(self) -> Path:
        return self.directory / ACCOUNT_FILE

    @property
    def lock_path(self) -> Path:
        return self.directory / LOCK_FILE

    @property
    def pid_path(self) -> Path:
        return self.directory / PID_FILE

    @property
    def request_log_path(self) -> Path:
        return self.directory / REQUEST_LOG

    @property
    def server_log_path(self) -> Path:
        return self.directory / SERVER_LOG

    def prepare(self) -> None:
        make_private_dir(self.directory)

    # -- the cloud --------------------------------------------------------------------

    def load(self) -> tuple[CloudState, list[str]]:
        """The stored state (a fresh one when there is none) and warnings to show.

        An unreadable state (bad JSON, wrong version, wrong shapes) is moved aside and
        replaced by a fresh one, with a warning naming both files.
        """
        path = self.state_path
        try:
            raw = path.read_bytes()
        except FileNotFoundError:
            return CloudState(), []
        except IsADirectoryError:
            return self._recover(path, "it is a directory")
        except OSError as exc:
            raise StoreError(f"cannot read {path}: {exc.strerror or exc}") from None
        try:
            return CloudState.from_json(json.loads(raw.decode("utf-8"))), []
        except (UnicodeDecodeError, json.JSONDecodeError) as exc:
            return self._recover(path, f"not valid JSON ({exc})")
        except StateError as exc:
            return self._recover(path, str(exc))

    def _recover(self, path: Path, problem: str) -> tuple[CloudState, list[str]]:
        moved = move_aside(path)
        warning = (f"simulator state {path} was unreadable ({problem}): moved aside to "
                   f"{moved.name}; starting with an empty cloud")
        log.warning("%s", warning)
        return CloudState(), [warning]

    def save(self, state: CloudState) -> None:
        write_private(self.state_path, json.dumps(state.to_json(), separators=(",", ":")))

    def reset(self) -> None:
        """Forget the cloud (state and request log); the API key and the account stay,
        as a real account keeps its key and its history when its instances are gone."""
        for path in (self.state_path, self.request_log_path):
            with contextlib.suppress(FileNotFoundError):
                path.unlink()

    # -- the key ----------------------------------------------------------------------

    def api_key(self) -> str:
        """The key this cloud accepts, generated (and stored 0600) on first use."""
        path = self.key_path
        try:
            key = path.read_text(encoding="utf-8").strip()
        except FileNotFoundError:
            key = ""
        except (OSError, UnicodeDecodeError) as exc:
            raise StoreError(f"cannot read the simulator's API key {path}: {exc}") from None
        if key:
            return key
        key = "soong-sim-" + secrets.token_urlsafe(32)
        write_private(path, key + "\n")
        return key

    def account_id(self) -> str:
        """The simulated account's id, generated (and stored) once per state directory:
        kept across restarts, ports and ``--reset``, so soong's history and budget for
        this cloud stay one."""
        path = self.account_path
        try:
            account = path.read_text(encoding="utf-8").strip()
        except FileNotFoundError:
            account = ""
        except (OSError, UnicodeDecodeError) as exc:
            raise StoreError(f"cannot read the simulator's account id {path}: {exc}") from None
        if account and account.isprintable() and " " not in account:
            return account
        if account:
            log.warning("simulator account id in %s is malformed: a new one replaces it", path)
        account = "sim-" + secrets.token_hex(8)
        write_private(path, account + "\n")
        return account

    # -- the pid file -------------------------------------------------------------------

    def read_pid_file(self) -> dict[str, Any] | None:
        """The running simulator's record, or ``None`` (no file, or an unreadable one)."""
        try:
            data = json.loads(self.pid_path.read_text(encoding="utf-8"))
        except (OSError, UnicodeDecodeError, json.JSONDecodeError):
            return None
        if not isinstance(data, dict) or not isinstance(data.get("pid"), int):
            return None
        return data

    def write_pid_file(self, record: dict[str, Any]) -> None:
        write_private(self.pid_path, json.dumps(record, indent=2) + "\n")

    def remove_pid_file(self, pid: int | None = None) -> None:
        """Remove the pid file; with ``pid``, only if it still names that process."""
        if pid is not None:
            record = self.read_pid_file()
            if record is not None and record.get("pid") != pid:
                return
        with contextlib.suppress(FileNotFoundError):
            self.pid_path.unlink()
