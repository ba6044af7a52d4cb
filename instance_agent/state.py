"""The agent's state on disk: what must survive a restart (DESIGN Interfaces, "agent state").

``${SOONG_ROOT}/var/lib/soong/agent-state.json``, versioned, written atomically (a
temporary file, fsync, rename, fsync of the folder) on every change of a deadline or
an extension. The lease deadline in the state wins over the config's (extensions live
here); the launch time and the hard deadline always come from the config, so no state
file can move them. A state file that cannot be read, or belongs to another launch, is
moved aside and the config's deadlines apply: never "no limit".
"""

from __future__ import annotations

import json
import math
import os
from dataclasses import asdict, dataclass, field
from typing import Any

STATE_VERSION = 1


@dataclass
class AgentState:
    launch_id: str
    lease_deadline: float
    extensions: list[dict[str, Any]] = field(default_factory=list)
    """Each ``{"at", "hours", "from", "to"}`` in clock time, oldest first."""
    last_activity_at: float | None = None
    last_activity_source: str | None = None
    warned: list[float] = field(default_factory=list)
    """Deadlines a ``wall`` warning was sent for (once each)."""
    terminating: dict[str, Any] | None = None
    """``{"reason", "at"}`` once the agent decided to terminate: a restart resumes it."""

    def to_json(self) -> dict[str, Any]:
        data = asdict(self)
        data["schema_version"] = STATE_VERSION
        return data


class StateError(Exception):
    """Why a state file could not be used (one line)."""


def _number(data: dict[str, Any], key: str, *, nullable: bool = False) -> Any:
    value = data.get(key)
    if value is None and nullable:
        return None
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        raise StateError(f"{key} is not a number")
    return float(value)


def parse(raw: bytes, launch_id: str) -> AgentState:
    """The state in ``raw``; StateError when it is not a usable state of ``launch_id``."""
    try:
        data = json.loads(raw.decode("utf-8"), parse_constant=lambda name: None)
    except (UnicodeDecodeError, ValueError) as exc:
        raise StateError(f"not valid JSON ({' '.join(str(exc).split())})") from None
    if not isinstance(data, dict):
        raise StateError("not a JSON object")
    if data.get("schema_version") != STATE_VERSION:
        raise StateError(f"schema_version {data.get('schema_version')!r}, expected "
                         f"{STATE_VERSION}")
    if data.get("launch_id") != launch_id:
        raise StateError("it belongs to another launch")
    extensions = data.get("extensions", [])
    if not isinstance(extensions, list) or not all(isinstance(e, dict) for e in extensions):
        raise StateError("extensions is not a list of objects")
    warned = data.get("warned", [])
    if not isinstance(warned, list):
        raise StateError("warned is not a list")
    terminating = data.get("terminating")
    if terminating is not None and not (isinstance(terminating, dict)
                                        and isinstance(terminating.get("reason"), str)):
        raise StateError("terminating is not an object with a reason")
    source = data.get("last_activity_source")
    return AgentState(
        launch_id=launch_id,
        lease_deadline=_number(data, "lease_deadline"),
        extensions=list(extensions),
        last_activity_at=_number(data, "last_activity_at", nullable=True),
        last_activity_source=source if isinstance(source, str) else None,
        warned=[float(w) for w in warned if isinstance(w, (int, float))
                and not isinstance(w, bool) and math.isfinite(w)],
        terminating=terminating)


class StateFile:
    """Reads and writes one state file; never raises on a bad file (see :meth:`load`)."""

    def __init__(self, path: str) -> None:
        self.path = path

    def load(self, launch_id: str, now: float) -> tuple[AgentState | None, str | None]:
        """The saved state (``None`` when there is none or it is unusable) and, for an
        unusable one, the one-line problem; the bad file is moved aside."""
        try:
            with open(self.path, "rb") as handle:
                raw = handle.read(16 * 1024 * 1024)
        except FileNotFoundError:
            return None, None
        except OSError as exc:
            problem = f"cannot read {exc.strerror or exc}"
        else:
            try:
                return parse(raw, launch_id), None
            except StateError as exc:
                problem = str(exc)
        aside = f"{self.path}.bad-{int(now)}"
        try:
            os.replace(self.path, aside)
            where = f"moved to {aside}"
        except OSError as exc:
            where = f"could not be moved aside: {exc.strerror or exc}"
        return None, (f"state file {self.path} unusable ({problem}); {where}; the "
                      "config's deadlines apply")

    def save(self, state: AgentState) -> None:
        """Write ``state`` atomically. Raises OSError when it could not be written."""
        folder = os.path.dirname(self.path) or "."
        os.makedirs(folder, mode=0o700, exist_ok=True)
        temporary = f"{self.path}.tmp-{os.getpid()}"
        data = json.dumps(state.to_json(), indent=1, sort_keys=True).encode()
        descriptor = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        try:
            with os.fdopen(descriptor, "wb") as handle:
                handle.write(data)
                handle.flush()
                os.fsync(handle.fileno())
            os.replace(temporary, self.path)
        except BaseException:
            try:
                os.unlink(temporary)
            except OSError:
                pass
            raise
        try:
            directory = os.open(folder, os.O_RDONLY)
        except OSError:
            return
        try:
            os.fsync(directory)
        except OSError:
            pass
        finally:
            os.close(directory)
