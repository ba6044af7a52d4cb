"""What the ``soong sim`` commands share: the ``--state-dir`` option, which profile and
which simulator a command means, and error mapping.

The profile is the global ``--profile NAME`` (``--sim`` is ``--profile sim``), ``sim`` by
default: the one ``sim up`` keeps pointed at its simulator. ``sim status`` and ``sim
down`` act on ``--state-dir`` when given, else on the simulator that keeps the profile
(the live one, else the last one that did), else, for ``sim``, on the default state.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

from cleo.helpers import option
from cleo.io.inputs.option import Option

from soong_core.errors import SoongError, UsageError

if TYPE_CHECKING:
    from soong_core.cli.command import SoongCommand
    from soong_plugins.lambda_labs.simulator.store import StateStore

DEFAULT_PROFILE = "sim"

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


def profile_name(command: SoongCommand) -> str:
    """The profile this run names (``--profile NAME``, ``--sim``), else ``sim``."""
    return command.app.profile or DEFAULT_PROFILE


def profile_file(name: str) -> Path:
    """The file of profile ``name``; an invalid name is a usage error naming the rule."""
    from soong_core.config import profile_path

    return profile_path(name)


def simulator_store(command: SoongCommand) -> StateStore | None:
    """The state of the simulator ``sim status``/``sim down`` act on (see the module
    docstring); ``None`` when a profile other than ``sim`` was never kept by one."""
    from soong_plugins.lambda_labs.simulator import daemon

    text = command.option("state-dir")
    if text is not None:
        return state_store(text)
    name = profile_name(command)
    _, owner = daemon.profile_owner(profile_file(name))
    if owner is not None:
        return state_store(owner)
    return state_store(None) if name == DEFAULT_PROFILE else None


def daemon_error(exc: Exception) -> SoongError:
    """A DaemonError or SimulatorError as soong's one-line error, with its exit code."""
    return SoongError(getattr(exc, "message", str(exc)), hints=getattr(exc, "hints", ()),
                      exit_code=getattr(exc, "exit_code", None))
