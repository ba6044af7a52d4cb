"""Built-in plugin ``fabric_tunnel``: the ``ssh`` config section (which key and user
reach an instance), host keys by instance id, ``soong ssh`` and a ``Host soong-<name>``
entry per active instance for any SSH client. Managed port forwards are not built
yet: it registers no tunnel backend."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Callable, Sequence

from soong_core.cli import lazy_command
from soong_core.hookspecs import hookimpl
from soong_core.models import HOUR

if TYPE_CHECKING:
    from cleo.commands.command import Command

    from soong_core.hookspecs import Config
    from soong_core.models import Instance


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
    }


@hookimpl
def soong_register_commands(register: Callable[[str, Callable[[], Command]], None]) -> None:
    """``soong ssh``: a shell or a command on an instance."""
    register("ssh", lazy_command("soong_plugins.fabric_tunnel.ssh_command:SshCommand"))


@hookimpl
def soong_instances_seen(instances: Sequence[Instance], complete: bool, account: str,
                         config: Config) -> None:
    """Keep the Host entries (and host keys) in step with the instances."""
    section = config.get("ssh") or {}
    if not section.get("host_entries", True):
        return
    from soong_plugins.fabric_tunnel.hostentries import sync

    sync(instances, complete=complete, account=account, section=section)
