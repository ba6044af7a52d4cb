"""``soong sim status``: is the simulator running, where, since when, with what."""

from __future__ import annotations

import json
import shlex
from typing import Any, ClassVar

from cleo.formatters.formatter import Formatter
from cleo.helpers import option
from cleo.io.inputs.option import Option
from cleo.io.outputs.output import Type

from soong_core.cli.command import SoongCommand
from soong_plugins.lambda_labs.commands._common import (
    STATE_DIR_OPTION,
    profile_name,
    simulator_store,
)

SHOWN_STATES = ("booting", "active", "unhealthy", "terminating", "terminated", "preempted")


class SimStatusCommand(SoongCommand):
    name = "sim status"
    description = "Show whether the simulator runs: URL, pid, uptime, speed, instances."
    help = ("Asks the simulator that runs on the state directory (without "
            "<comment>--state-dir</comment>: the one that keeps the profile, "
            "<comment>sim</comment> or the global <comment>--profile NAME</comment>). Exit "
            "code 0 whether it runs or not; <comment>--json</comment> says which "
            "(<comment>running</comment>).")
    options: ClassVar[list[Option]] = [
        option("json", description="Print the status as JSON."),
        STATE_DIR_OPTION,
    ]

    def handle(self) -> int:
        from soong_plugins.lambda_labs.simulator import daemon

        escape = Formatter.escape
        store = simulator_store(self)
        if store is None:
            name = profile_name(self)
            if self.option("json"):
                self.io.write_line(json.dumps({"running": False, "state": "none", "pid": None,
                                               "state_dir": None}), type=Type.RAW)
                return 0
            self.line(f"simulator not running: no simulator has kept the profile "
                      f"{escape(name)}; run `soong sim up --profile {escape(name)}`")
            return 0
        found = daemon.inspect(store)
        if self.option("json"):
            self.io.write_line(json.dumps(self._json(found, str(store.directory))), type=Type.RAW)
            return 0
        if found.state == "running":
            assert found.status is not None
            self._show(found.status)
        elif found.state == "unresponsive":
            assert found.record is not None
            self.line(f"simulator process {found.pid} is not answering at "
                      f"{escape(str(found.record.get('api_url')))}")
            self.line(f"  stop it with `soong sim down --state-dir "
                      f"{escape(shlex.quote(str(store.directory)))}`, then start it again")
        else:
            from soong_plugins.lambda_labs.simulator.store import default_state_dir

            note = " (its PID file is stale)" if found.state == "stale" else ""
            where = "" if store.directory == default_state_dir().absolute() else \
                f" --state-dir {shlex.quote(str(store.directory))}"
            self.line(f"simulator not running{note}: run `soong sim up{escape(where)}`")
            self.line(f"state: {escape(str(store.directory))}")
        return 0

    @staticmethod
    def _json(found: Any, state_dir: str) -> dict[str, Any]:
        if found.state == "running":
            return {"running": True, **found.status}
        return {"running": False, "state": found.state, "pid": found.pid, "state_dir": state_dir}

    @staticmethod
    def _rate_limit(status: dict[str, Any]) -> str:
        """``edge (burst of 3 around 1/s; 429 body: text)``, ``strict (...)`` or ``off``."""
        if not status.get("rate_limit"):
            return "off"
        mode = status.get("rate_limit_mode") or "on"
        shape = {"edge": "a burst of 3 around 1/s", "strict": "1/s, no burst"}.get(mode)
        body = status.get("rate_limit_body")
        details = "; ".join(part for part in (shape, body and f"429 body: {body}") if part)
        return f"{mode} ({details})" if details else mode

    def _show(self, status: dict[str, Any]) -> None:
        from soong_core.display import format_duration
        from soong_core.models import format_timestamp

        escape = Formatter.escape
        counts = status.get("instances", {})
        live = ", ".join(f"{counts[s]} {s}" for s in SHOWN_STATES if counts.get(s)) or "none"
        speed = status.get("speed")
        self.line(f"simulator running at <info>{escape(status['api_url'])}</info>")
        self.line(f"pid:        {status['pid']}")
        self.line(f"uptime:     {format_duration(max(0, status.get('uptime_seconds', 0)))}")
        self.line(f"speed:      {'manual clock' if speed is None else f'{speed:g}x'}")
        self.line(f"cloud time: {format_timestamp(status['sim_time'])}")
        self.line(f"boot delay: {status['boot_seconds']:g} s (simulated)")
        self.line(f"rate limit: {self._rate_limit(status)}")
        if status.get("terminate_ended"):
            self.line(f"ended ids:  a terminate naming one answers "
                      f"{'404' if status['terminate_ended'] == '404' else 'it unchanged'}")
        self.line(f"instances:  {live} ({counts.get('total', 0)} launched in all)")
        self.line(f"account:    {escape(str(status.get('account_id') or '-'))}")
        self.line(f"profile:    {escape(str(status.get('profile') or '-'))}")
        self.line(f"state:      {escape(status['state_dir'])}")
