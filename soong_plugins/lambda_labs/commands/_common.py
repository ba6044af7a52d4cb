"""What the ``soong sim`` commands share: the ``--state-dir`` option and error mapping."""

from __future__ import annotations

from typing import TYPE_CHECKING

from cleo.helpers import option
from cleo.io.inputs.option import Option

from soong_core.errors import SoongError, UsageError

if TYPE_CHECKING:
    from soong_plugins.lambda_labs.simulator.store import StateStore

STATE_DIR_OPTION: Option = option(
    "state-dir", description="The simulator's state directory "
    "[default: $XDG_STATE_HOME/soong/sim].", flag=False, value_required=True)


def state_store(text: str | None) -> StateStore:
    """The store of ``--state-dir`` (or the default); a file in the way is a usage error."""
    from soong_plugins.lambda_labs.simulator.store import StateStore, default_state_dir

    if text is not None and not text.strip():
        raise UsageError("--state-dir must not be empty")
    store = StateStore(text if text else default_state_dir())
    if store.directory.exists() and not store.directory.is_dir():
        raise UsageError(f"--state-dir {store.directory} is not a directory")
    return store


def daemon_error(exc: Exception) -> SoongError:
    """A DaemonError or SimulatorError as soong's one-line error."""
    return SoongError(getattr(exc, "message", str(exc)), hints=getattr(exc, "hints", ()))


def duration(seconds: float) -> str:
    """``3h05m``, ``4m10s``, ``12s``."""
    seconds = int(max(0, seconds))
    hours, rest = divmod(seconds, 3600)
    minutes, secs = divmod(rest, 60)
    if hours:
        return f"{hours}h{minutes:02d}m"
    if minutes:
        return f"{minutes}m{secs:02d}s"
    return f"{secs}s"
