"""Host keys by instance, not by IP (DESIGN): soong's own known_hosts, trust on first use.

Clouds reuse addresses, so soong keys what it trusts by instance id: the file
``$XDG_DATA_HOME/soong/ssh/known_hosts`` holds OpenSSH lines whose host field is the
instance id, which the system ``ssh`` matches through ``HostKeyAlias=<id>``. The first
contact with an instance records the key it presents (:meth:`HostKeys.trust_first`,
its fingerprint to be shown once); every later connection must present that key, and a
different one is refused (:class:`HostKeyChanged`, with both fingerprints and how to
forget the old one after checking). Nothing here ever accepts a key it was not told to:
no ``AutoAddPolicy``, no ``StrictHostKeyChecking=no``.

paramiko is imported only by what connects (:func:`fetch_host_key`, :class:`AliasPolicy`).
"""

from __future__ import annotations

import base64
import hashlib
import re
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from soong_core.errors import SoongError
from soong_core.files import soong_dir, write_private

if TYPE_CHECKING:
    import paramiko

ALIAS = re.compile(r"[A-Za-z0-9][A-Za-z0-9._:-]{0,199}\Z")
"""What an instance id may look like as a known_hosts host field (no spaces, commas,
wildcards or hashing markers)."""


def known_hosts_path() -> Path:
    return soong_dir("data") / "ssh" / "known_hosts"


def fingerprint(key_type: str, key_base64: str) -> str:
    """``SHA256:...`` as OpenSSH prints it (unpadded base64 of the key blob's digest)."""
    digest = hashlib.sha256(base64.b64decode(key_base64)).digest()
    return "SHA256:" + base64.b64encode(digest).decode("ascii").rstrip("=")


@dataclass(frozen=True)
class HostKey:
    key_type: str
    """``ssh-ed25519``, ``ecdsa-sha2-nistp256``, ``ssh-rsa``..."""
    key_base64: str

    @property
    def fingerprint(self) -> str:
        return fingerprint(self.key_type, self.key_base64)

    @classmethod
    def of(cls, key: paramiko.PKey) -> HostKey:
        return cls(key.get_name(), key.get_base64())


class HostKeyChanged(SoongError):
    """The instance presents another key than the one recorded for it."""


class HostKeyUnknown(SoongError):
    """Strict mode, and nothing is recorded for the instance."""


class HostKeys:
    """soong's known_hosts: ``alias key_type key_base64`` lines, one alias per instance.

    Lines soong did not write (comments, other hosts) are kept as they are.
    """

    def __init__(self, path: Path | None = None) -> None:
        self.path = path or known_hosts_path()

    def _lines(self) -> list[str]:
        try:
            return self.path.read_text(encoding="utf-8", errors="replace").splitlines()
        except FileNotFoundError:
            return []
        except OSError as exc:
            raise SoongError(f"cannot read soong's known_hosts {self.path}: "
                             f"{exc.strerror or exc}") from None

    def lookup(self, alias: str) -> list[HostKey]:
        """The keys recorded for ``alias`` (usually one)."""
        found = []
        for line in self._lines():
            fields = line.split()
            if len(fields) >= 3 and not line.startswith("#") and alias in fields[0].split(","):
                found.append(HostKey(fields[1], fields[2]))
        return found

    def add(self, alias: str, key: HostKey) -> None:
        _check_alias(alias)
        lines = self._lines()
        lines.append(f"{alias} {key.key_type} {key.key_base64}")
        write_private(self.path, "\n".join(lines) + "\n")

    def forget(self, *aliases: str) -> int:
        """Remove every key recorded for each of ``aliases``; how many lines went (the
        file is rewritten once, and only when one did)."""
        lines = self._lines()
        drop = set(aliases)
        kept = [line for line in lines
                if line.startswith("#") or not line.split()
                or not drop.intersection(line.split()[0].split(","))]
        removed = len(lines) - len(kept)
        if removed:
            write_private(self.path, "\n".join(kept) + ("\n" if kept else ""))
        return removed

    def check(self, alias: str, presented: HostKey) -> bool:
        """True when ``presented`` is recorded for ``alias``; False when nothing is
        recorded; :class:`HostKeyChanged` when another key is."""
        recorded = self.lookup(alias)
        if not recorded:
            return False
        if any(k.key_type == presented.key_type and k.key_base64 == presented.key_base64
               for k in recorded):
            return True
        old = ", ".join(sorted({k.fingerprint for k in recorded}))
        raise HostKeyChanged(
            f"the host key of {alias} has changed: recorded {old}, presented "
            f"{presented.fingerprint}; refusing to connect (someone may be in the way, or "
            "the machine was reinstalled)",
            hints=[f"check the new key out of band, then run `soong ssh --forget-host "
                   f"{alias}` and connect again"])

    def trust_first(self, alias: str, presented: HostKey) -> bool:
        """Trust on first use: True when ``presented`` was recorded just now (show its
        fingerprint once), False when it was already; HostKeyChanged otherwise."""
        if self.check(alias, presented):
            return False
        self.add(alias, presented)
        return True


def _check_alias(alias: str) -> None:
    if not ALIAS.match(alias):
        raise SoongError(f"{alias!r} cannot name a host key (an instance id has letters, "
                         "digits, '.', '_', ':' and '-' only)")


def fetch_host_key(host: str, port: int, *, timeout: float = 10.0) -> HostKey:
    """The key ``host:port`` presents, read with an SSH handshake that authenticates
    nothing (so it can be recorded or compared before any login)."""
    import socket

    import paramiko

    with socket.create_connection((host, port), timeout=timeout) as sock:
        transport = paramiko.Transport(sock)
        try:
            transport.banner_timeout = timeout
            transport.start_client(timeout=timeout)
            return HostKey.of(transport.get_remote_server_key())
        finally:
            transport.close()


def strict_client(keys: HostKeys, alias: str, host: str, port: int) -> Any:
    """A paramiko SSHClient for ``host:port`` that accepts only the keys recorded for
    ``alias``. They are given to paramiko under the name it looks ``host:port`` up by,
    so it negotiates their algorithm (an instance has several host keys; a first
    contact recorded one) and compares them itself; nothing else is loaded (not the
    user's known_hosts). The policy for a key not given is :func:`alias_policy`."""
    import paramiko

    client = paramiko.SSHClient()
    name = host if port == 22 else f"[{host}]:{port}"
    for recorded in keys.lookup(alias):
        try:
            key = paramiko.PKey.from_type_string(recorded.key_type,
                                                 base64.b64decode(recorded.key_base64))
        except Exception:
            continue  # a type this paramiko cannot read is never trusted by it
        client.get_host_keys().add(name, recorded.key_type, key)
    client.set_missing_host_key_policy(alias_policy(keys, alias))
    return client


def changed_from(keys: HostKeys, alias: str, error: Any) -> HostKeyChanged:
    """paramiko's BadHostKeyException, said the way :meth:`HostKeys.check` says it."""
    try:
        keys.check(alias, HostKey.of(error.key))
    except HostKeyChanged as changed:
        return changed
    return HostKeyChanged(f"the host key of {alias} does not match the recorded one")


def alias_policy(keys: HostKeys, alias: str) -> Any:
    """A paramiko MissingHostKeyPolicy judging by ``alias`` in ``keys`` (the client is
    given no other host keys, so every connection asks it): the recorded key passes,
    another raises HostKeyChanged, none raises HostKeyUnknown. Strict: it records
    nothing (first use goes through :meth:`HostKeys.trust_first`)."""
    import paramiko

    class AliasPolicy(paramiko.MissingHostKeyPolicy):
        def missing_host_key(self, client: Any, hostname: str, key: Any) -> None:
            if not keys.check(alias, HostKey.of(key)):
                raise HostKeyUnknown(f"no host key is recorded for {alias}: refusing an "
                                     "unknown key in strict mode")

    return AliasPolicy()
