"""Built-in plugin ``fabric_tunnel``: the ``ssh`` and ``tunnel`` config sections, host
keys by instance id, ``soong ssh``, a ``Host soong-<name>`` entry per active instance
for any SSH client, managed port forwards (``soong tunnel``) and the tunnel backend
``fabric`` they run on."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Callable, Sequence

from soong_core.cli import lazy_command
from soong_core.hookspecs import hookimpl
from soong_core.models import HOUR

if TYPE_CHECKING:
    from cleo.commands.command import Command

    from soong_core.hookspecs import Config
    from soong_core.interfaces import TunnelBackend
    from soong_core.models import Event, Instance

COMMANDS = {
    "ssh": "soong_plugins.fabric_tunnel.ssh_command:SshCommand",
    "tunnel start": "soong_plugins.fabric_tunnel.tunnel_command:TunnelStartCommand",
    "tunnel status": "soong_plugins.fabric_tunnel.tunnel_command:TunnelStatusCommand",
    "tunnel stop": "soong_plugins.fabric_tunnel.tunnel_command:TunnelStopCommand",
}


@hookimpl
def soong_config_schema() -> dict[str, dict[str, Any]]:
    """Section ``ssh``: which key and user reach an instance. The name the provider
    knows the public key by is the core's ``defaults.ssh_key_name``: launch needs it
    whether or not this plugin is loaded."""
    return {
        "ssh": {
            "key_path": {
                "type": "string", "default": "~/.ssh/id_ed25519",
                "meta": {"help": "Private key used to reach instances."},
            },
            "user": {
                "type": "string", "default": "ubuntu",
                "regex": r"[A-Za-z_][A-Za-z0-9._-]{0,31}",
                "meta": {"help": "Login user on instances."},
            },
            "connect_timeout_seconds": {
                "type": "number", "min": 1, "max": 300, "default": 10,
                "meta": {"help": "How long one SSH connection attempt may take."},
            },
            "keepalive_seconds": {
                "type": "number", "min": 1, "max": HOUR, "default": 30,
                "meta": {"help": "Seconds between SSH keepalives (three missed: the "
                                  "connection is dropped)."},
            },
            "host_entries": {
                "type": "boolean", "default": True,
                "meta": {"help": "Keep a `Host soong-<name>` entry per active instance, "
                                  "included from ~/.ssh/config."},
            },
        },
        "tunnel": {
            "ports": {
                "type": "list", "default": [],
                "schema": {"type": "string", "regex": r"\d{1,5}(:\d{1,5})?"},
                "meta": {"help": "Ports `soong tunnel start` forwards, as LOCAL:REMOTE "
                                  "(\"8000:8000\"); the agent's port is always forwarded."},
            },
            "reconnect_max_seconds": {
                "type": "number", "min": 1, "max": 600, "default": 30,
                "meta": {"help": "Longest pause between attempts to re-establish a "
                                  "dropped tunnel (the pause doubles from 0.5 s)."},
            },
        },
    }


@hookimpl
def soong_register_commands(register: Callable[[str, Callable[[], Command]], None]) -> None:
    """``soong ssh`` (a shell or a command on an instance) and ``soong tunnel ...``."""
    for name, target in COMMANDS.items():
        register(name, lazy_command(target))


@hookimpl
def soong_register_tunnel_backends(
        register: Callable[[str, Callable[[Config], TunnelBackend]], None]) -> None:
    """``fabric``: port forwards in a process of their own, over paramiko."""
    def factory(config: Config) -> TunnelBackend:
        from soong_plugins.fabric_tunnel.tunnels import FabricTunnels

        return FabricTunnels(config)

    register("fabric", factory)


@hookimpl
def soong_lifecycle_event(event: Event, config: Config) -> None:
    """A terminated instance's tunnel is stopped (its ports freed)."""
    from soong_core.models import EventKind

    if event.kind is EventKind.TERMINATE:
        from soong_plugins.fabric_tunnel.tunnels import stop_for

        stop_for([event.instance_id])


@hookimpl
def soong_instances_seen(instances: Sequence[Instance], complete: bool, account: str,
                         config: Config) -> None:
    """Stop the tunnels of ended instances; keep the Host entries (and host keys) in
    step with the instances."""
    from soong_plugins.fabric_tunnel.tunnels import stop_ended

    stop_ended(instances, complete=complete, account=account)
    section = config.get("ssh") or {}
    if not section.get("host_entries", True):
        return
    from soong_plugins.fabric_tunnel.hostentries import sync

    sync(instances, complete=complete, account=account, section=section)
