"""Connection settings in one place: what every SSH connection soong makes uses.

:func:`target_for` turns an instance and the ``ssh`` config section into an
:class:`SshTarget`: address, port (``Instance.extra["ssh_port"]``, 22 on a real
instance), user (``ssh.user``, ``ubuntu`` by default), key (``ssh.key_path``, made
absolute: OpenSSH takes home from passwd, not ``$HOME``), connect timeout, keepalive and
soong's own known_hosts with the instance id as ``HostKeyAlias``. :meth:`SshTarget.
ssh_argv` is the system ``ssh`` command line with exactly those settings, strict host
key checking and no config file of the user's (``-F /dev/null``: their ``Host *``
would change what soong connects to).
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Mapping, Sequence

from soong_core.errors import SoongError
from soong_core.models import Instance

DEFAULT_USER = "ubuntu"


@dataclass(frozen=True)
class SshTarget:
    instance_id: str
    host: str
    port: int
    user: str
    key_path: Path
    known_hosts: Path
    connect_timeout: float
    keepalive: float

    def options(self) -> list[str]:
        """``-o`` options (absolute paths) shared by every ``ssh`` soong runs."""
        return [
            "-F", "/dev/null", "-i", str(self.key_path), "-p", str(self.port),
            "-o", "IdentitiesOnly=yes",
            "-o", f"UserKnownHostsFile={self.known_hosts}",
            "-o", "GlobalKnownHostsFile=/dev/null",
            "-o", f"HostKeyAlias={self.instance_id}",
            "-o", "StrictHostKeyChecking=yes",
            "-o", "UpdateHostKeys=no",
            "-o", f"ConnectTimeout={max(1, round(self.connect_timeout))}",
            "-o", f"ServerAliveInterval={max(1, round(self.keepalive))}",
            "-o", "ServerAliveCountMax=3",
        ]

    def ssh_argv(self, command: Sequence[str] = (), *, tty: bool | None = None) -> list[str]:
        argv = ["ssh", *self.options()]
        if tty is True:
            argv.append("-t")
        elif tty is False:
            argv.append("-T")
        argv.append(f"{self.user}@{self.host}")
        if command:
            argv += ["--", remote_command(command)]
        return argv


def remote_command(words: Sequence[str]) -> str:
    """What the instance's shell runs: one word as it is (a shell line: ``'nvidia-smi |
    head'``); several words quoted each, so they arrive as the arguments they were
    (``sh -c 'exit 7'`` exits 7), where plain ``ssh`` would join them with spaces."""
    import shlex

    return words[0] if len(words) == 1 else shlex.join(words)


def key_path(section: Mapping[str, Any]) -> Path:
    """``ssh.key_path`` as an absolute path (``~`` from ``$HOME``)."""
    raw = section.get("key_path") or "~/.ssh/id_ed25519"
    return Path(os.path.abspath(os.path.expanduser(str(raw))))


def target_for(instance: Instance, section: Mapping[str, Any]) -> SshTarget:
    """Where and how to reach ``instance``; SoongError when it has no address yet."""
    from soong_plugins.fabric_tunnel.hostkeys import known_hosts_path

    if not instance.ip:
        raise SoongError(f"{instance.id} has no IP address yet ({instance.state.value})",
                         hints=["wait until it is active: `soong status`"])
    port = instance.extra.get("ssh_port", 22)
    if isinstance(port, bool) or not isinstance(port, int) or not 1 <= port <= 65535:
        port = 22
    return SshTarget(
        instance_id=instance.id, host=instance.ip, port=port,
        user=str(section.get("user") or DEFAULT_USER), key_path=key_path(section),
        known_hosts=known_hosts_path(),
        connect_timeout=float(section.get("connect_timeout_seconds") or 10),
        keepalive=float(section.get("keepalive_seconds") or 30))
