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
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Mapping, Sequence

from soong_core.errors import SoongError
from soong_core.models import Instance
from soong_plugins.fabric_tunnel.hostkeys import ALIAS

DEFAULT_USER = "ubuntu"

HOST = re.compile(r"[A-Za-z0-9][A-Za-z0-9.:-]{0,252}\Z")
"""An address as a provider may give it (IPv4, IPv6, a host name): nothing that could
carry another option into an ssh command line or config file."""
USER = re.compile(r"[A-Za-z_][A-Za-z0-9._-]{0,31}\Z")


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

    def settings(self) -> list[tuple[str, str]]:
        """The OpenSSH settings (keyword, value as a config file writes it) of every
        connection to this instance: what :meth:`options` passes with ``-o`` and a Host
        entry (:meth:`host_block`) holds, so the two cannot drift apart."""
        return [
            ("HostName", self.host),
            ("User", self.user),
            ("Port", str(self.port)),
            ("IdentityFile", config_path(self.key_path)),
            ("IdentitiesOnly", "yes"),
            ("HostKeyAlias", self.instance_id),
            ("UserKnownHostsFile", config_path(self.known_hosts)),
            ("GlobalKnownHostsFile", "/dev/null"),
            ("StrictHostKeyChecking", "yes"),
            ("UpdateHostKeys", "no"),
            ("ConnectTimeout", str(max(1, round(self.connect_timeout)))),
            ("ServerAliveInterval", str(max(1, round(self.keepalive)))),
            ("ServerAliveCountMax", "3"),
        ]

    def options(self) -> list[str]:
        """Command-line options for the system ``ssh``: no config file of the user's,
        then :meth:`settings` as ``-o`` options (absolute paths)."""
        argv = ["-F", "/dev/null"]
        for keyword, value in self.settings():
            if keyword != "HostName":  # the destination names it
                argv += ["-o", f"{keyword}={value}"]
        return argv

    def host_block(self, name: str) -> str:
        """``Host name`` and :meth:`settings`, as a block of an ssh config file."""
        lines = [f"Host {name}"] + [f"    {keyword} {value}" for keyword, value in self.settings()]
        return "\n".join(lines) + "\n"

    def spec(self) -> dict[str, Any]:
        """What a connection from another process needs (JSON; paths, no secrets)."""
        return {"instance_id": self.instance_id, "host": self.host, "port": self.port,
                "user": self.user, "key_path": str(self.key_path),
                "known_hosts": str(self.known_hosts),
                "connect_timeout": self.connect_timeout, "keepalive": self.keepalive}

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


def config_path(path: Path) -> str:
    """``path`` as an OpenSSH setting's value: ``%`` doubled (ssh expands ``%h`` and
    the like in file names), and in double quotes when it has a space."""
    text = str(path).replace("%", "%%")
    if any(ch in text for ch in '"\n'):
        raise SoongError(f"{path} cannot be written in an ssh setting (it has a quote or a "
                         "line break)", hints=["choose a path without them"])
    return f'"{text}"' if any(ch.isspace() for ch in text) else text


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
    if not HOST.match(instance.ip):
        raise SoongError(f"{instance.id} has an address soong will not connect to: "
                         f"{instance.ip!r}", hints=["check the instance in the provider's "
                                                    "console"])
    if not ALIAS.match(instance.id):
        raise SoongError(f"{instance.id!r} cannot name a host key (an instance id has "
                         "letters, digits, '.', '_', ':' and '-' only)")
    port = instance.extra.get("ssh_port", 22)
    if isinstance(port, bool) or not isinstance(port, int) or not 1 <= port <= 65535:
        port = 22
    user = str(section.get("user") or DEFAULT_USER)
    if not USER.match(user):
        raise SoongError(f"ssh.user {user!r} is not a login name",
                         hints=["set another with `soong config set ssh.user NAME`"])
    return SshTarget(
        instance_id=instance.id, host=instance.ip, port=port,
        user=user, key_path=key_path(section),
        known_hosts=known_hosts_path(),
        connect_timeout=float(section.get("connect_timeout_seconds") or 10),
        keepalive=float(section.get("keepalive_seconds") or 30))
