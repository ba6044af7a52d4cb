"""``soong tunnel start|status|stop``: managed port forwards to an instance.

A tunnel is a process of its own (:mod:`.forward`) that outlives the command, keeps its
local ports listening on 127.0.0.1 and reconnects when the network drops; its state is
in ``$XDG_STATE_HOME/soong/tunnels/`` (:mod:`.tunnels`).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, ClassVar

from cleo.helpers import argument, option
from cleo.io.inputs.argument import Argument
from cleo.io.inputs.option import Option

from soong_core.cli.command import SoongCommand

if TYPE_CHECKING:
    from soong_plugins.fabric_tunnel.tunnels import TunnelState


class TunnelStartCommand(SoongCommand):
    name = "tunnel start"
    description = "Forward ports to an instance in a background process that reconnects."
    help = ("With no INSTANCE, the single running instance. Forwards the ports of "
            "<comment>tunnel.ports</comment> in the config and of each "
            "<comment>--port LOCAL:REMOTE</comment>, on 127.0.0.1 only, and the lease "
            "agent's port to a free local port (shown, and kept for the instance). The "
            "tunnel keeps running after this command returns; a dropped connection is "
            "re-established (with a growing pause, at most "
            "<comment>tunnel.reconnect_max_seconds</comment>) while the local ports keep "
            "listening. <comment>soong tunnel stop</comment> ends it, and so does stopping "
            "the instance.")
    needs_credential = True
    arguments: ClassVar[list[Argument]] = [
        argument("instance", description="The instance (id, unique prefix or name).",
                 optional=True),
    ]
    options: ClassVar[list[Option]] = [
        option("port", "p", description="LOCAL:REMOTE to forward (repeatable).", flag=False,
               multiple=True),
        option("no-config-ports", description="Forward only the --port ones, not tunnel.ports."),
    ]

    def handle(self) -> int:
        from soong_core.select import select_instance
        from soong_core.text import cleo_literal
        from soong_plugins.fabric_tunnel import tunnels
        from soong_plugins.fabric_tunnel.connect import check_login, wait_for_sshd
        from soong_plugins.fabric_tunnel.settings import target_for

        flags = [tunnels.parse_forward(text) for text in self.option("port") or []]
        config = self.soong.config
        section = config.get("tunnel") or {}
        configured = [] if self.option("no-config-ports") else \
            [tunnels.parse_forward(text) for text in section.get("ports") or []]
        given = {f.local_port for f in flags}
        forwards = flags + [f for f in configured if f.local_port not in given]
        roles = {f.local_port: "flag" for f in flags}
        roles.update({f.local_port: "config" for f in configured if f.local_port not in given})
        soong = self.soong
        instance = select_instance(soong.instances(), self.argument("instance"),
                                   ended=soong.ended_instances)
        target = target_for(instance, config.get("ssh") or {})

        def check() -> None:
            wait_for_sshd(target, 0)
            new = check_login(target)
            if new is not None:
                self.line_error(cleo_literal(f"trusting the host key of "
                                             f"{target.instance_id} on first use: {new}"))

        agent = (config.get("agent") or {}).get("port")
        state = tunnels.start(target, forwards, name=instance.name, account=soong.account,
                              check=check,
                              agent_port=agent if isinstance(agent, int) else None,
                              backoff_max=float(section.get("reconnect_max_seconds") or 30),
                              roles=roles)
        self.line(cleo_literal(f"tunnel to {instance.id} is up (pid {state.pid})"))
        for forward in state.forwards:
            label = "agent " if forward.get("role") == "agent" else ""
            self.line(cleo_literal(f"  {label}127.0.0.1:{forward['local']} -> "
                                   f"{forward['remote_host']}:{forward['remote']} on the "
                                   "instance"))
        self.line(cleo_literal(f"  stop it: {self.command_line('tunnel stop')} {instance.id}"))
        return 0


class TunnelStatusCommand(SoongCommand):
    name = "tunnel status"
    description = "Show each tunnel: its process, its forwards, reconnects, the last error."
    help = ("A tunnel whose process is gone is reported dead once and its state removed. "
            "<comment>--json</comment> prints a list of objects (instance_id, name, pid, "
            "alive, state, started, reconnects, last_error, forwards with local, remote, "
            "remote_host, role, listening).")
    options: ClassVar[list[Option]] = [
        option("json", description="Print JSON instead of a table."),
    ]

    def handle(self) -> int:
        import json

        from cleo.io.outputs.output import Type

        from soong_plugins.fabric_tunnel import tunnels

        found = [tunnels.probe(state) for state in tunnels.states()]
        for state in found:
            tunnels.clean(state)
        if self.option("json"):
            self.io.write(json.dumps([s.to_json() for s in found], indent=2) + "\n",
                          type=Type.RAW)
            return 0
        if not found:
            self.line("no tunnels")
            return 0
        self._table(found)
        return 0

    def _table(self, found: list[TunnelState]) -> None:
        from rich.table import Table

        from soong_core.cli.console import make_console
        from soong_core.text import rich_literal

        table = Table(box=None, pad_edge=False)
        for column in ("instance", "process", "state", "forward", "listening", "reconnects",
                       "last error"):
            table.add_column(column)
        for state in found:
            doc = state.to_json()
            process = f"pid {state.pid}" if state.alive else "dead (cleaned)"
            forwards = doc["forwards"] or [{}]
            for number, forward in enumerate(forwards):
                first = number == 0
                where = (f"127.0.0.1:{forward.get('local')} -> {forward.get('remote')}"
                         + (" (agent)" if forward.get("role") == "agent" else "")
                         if forward else "")
                table.add_row(
                    rich_literal(doc["name"] or state.instance_id) if first else "",
                    process if first else "", str(doc["state"]) if first else "",
                    rich_literal(where),
                    ("yes" if forward.get("listening") else "no") if forward else "",
                    str(doc["reconnects"]) if first else "",
                    rich_literal(doc["last_error"] or "") if first else "")
        make_console(self.io).print(table)


class TunnelStopCommand(SoongCommand):
    name = "tunnel stop"
    description = "Stop an instance's tunnel (or --all) and free its ports."
    help = ("With no INSTANCE, the single tunnel. INSTANCE is an id, a unique id prefix "
            "or the instance's name.")
    arguments: ClassVar[list[Argument]] = [
        argument("instance", description="The instance whose tunnel to stop.", optional=True),
    ]
    options: ClassVar[list[Option]] = [
        option("all", description="Stop every tunnel."),
    ]

    def handle(self) -> int:
        from soong_core.errors import SoongError, UsageError
        from soong_core.text import cleo_literal
        from soong_plugins.fabric_tunnel import tunnels

        ref = self.argument("instance")
        if ref and self.option("all"):
            raise UsageError("give an instance or --all, not both")
        found = tunnels.states()
        if not found and not ref:
            self.line("no tunnels: nothing to stop")
            return 0
        chosen = found if self.option("all") else [_select(found, ref)]
        for state in chosen:
            ports = [int(f["local"]) for f in state.forwards if isinstance(f.get("local"), int)]
            if tunnels.stop(state):
                left = [port for port in ports if tunnels.listening(port)]
                if left:
                    raise SoongError(f"the tunnel to {state.instance_id} stopped, but "
                                     f"127.0.0.1:{left[0]} is still listening",
                                     hints=["another process holds it now: "
                                            "`soong tunnel status`"])
                self.line(cleo_literal(f"stopped the tunnel to {state.instance_id} "
                                       f"(pid {state.pid}); ports freed: "
                                       f"{', '.join(map(str, ports)) or 'none'}"))
            else:
                self.line(cleo_literal(f"the tunnel to {state.instance_id} had already "
                                       "ended (its state is removed)"))
        return 0


def _select(found: list[TunnelState], ref: str | None) -> Any:
    """The tunnel ``ref`` names (as ``soong`` names instances), or the single one."""
    from soong_core.errors import SoongError
    from soong_core.models import Instance, InstanceState
    from soong_core.select import select_instance

    if not found:
        raise SoongError(f"no tunnel to {ref!r}", hints=["`soong tunnel status` lists them"])
    by_id = {state.instance_id: state for state in found}
    candidates = [Instance(state.instance_id, InstanceState.ACTIVE,
                           name=state.document.get("name") or None) for state in found]
    return by_id[select_instance(candidates, ref).id]
