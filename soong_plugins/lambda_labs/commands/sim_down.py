"""``soong sim down``: stop the simulator started by ``soong sim up``."""

from __future__ import annotations

from typing import ClassVar

from cleo.io.inputs.option import Option

from soong_core.cli.command import SoongCommand
from soong_plugins.lambda_labs.commands._common import (
    STATE_DIR_OPTION,
    daemon_error,
    profile_name,
    simulator_store,
)


class SimDownCommand(SoongCommand):
    name = "sim down"
    description = "Stop the local simulator (its state is kept for the next `sim up`)."
    help = ("Stops the simulator that runs on the state directory (it holds the "
            "directory's lock; a PID file without it is stale and only removed). Without "
            "<comment>--state-dir</comment>, the simulator that keeps the profile "
            "(<comment>sim</comment>, or the global <comment>--profile NAME</comment>). "
            "The cloud's state and the profile are kept: <comment>soong sim up</comment> "
            "brings the same cloud back.")
    options: ClassVar[list[Option]] = [STATE_DIR_OPTION]

    def handle(self) -> int:
        from soong_plugins.lambda_labs.simulator import daemon

        store = simulator_store(self)
        if store is None:
            self.line(f"simulator not running (none keeps the profile {profile_name(self)})")
            return 0
        try:
            found = daemon.stop(store)
        except daemon.DaemonError as exc:
            raise daemon_error(exc) from None
        if found.state == "none":
            self.line("simulator not running")
        elif found.state == "stale":
            pid = f" naming pid {found.pid}" if found.pid else ""
            self.line(f"simulator not running (removed a stale PID file{pid})")
        else:
            self.line(f"simulator stopped (pid {found.pid})")
        return 0
