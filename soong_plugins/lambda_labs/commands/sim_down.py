"""``soong sim down``: stop the simulator started by ``soong sim up``."""

from __future__ import annotations

from typing import ClassVar

from cleo.io.inputs.option import Option

from soong_core.cli.command import SoongCommand
from soong_plugins.lambda_labs.commands._common import STATE_DIR_OPTION, daemon_error, state_store


class SimDownCommand(SoongCommand):
    name = "sim down"
    description = "Stop the local simulator (its state is kept for the next `sim up`)."
    help = ("Stops the simulator recorded in the state directory's PID file, after "
            "checking that the PID really is that simulator (a stale PID file is only "
            "removed). The cloud's state and the <comment>sim</comment> profile are "
            "kept: <comment>soong sim up</comment> brings the same cloud back.")
    options: ClassVar[list[Option]] = [STATE_DIR_OPTION]

    def handle(self) -> int:
        from soong_plugins.lambda_labs.simulator import daemon

        store = state_store(self.option("state-dir"))
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
