"""Reaching an instance over SSH, each failure one line with what to do next.

:func:`wait_for_sshd` waits (boundedly) until the instance's sshd greets;
:func:`check_login` reads its host key (trusting it on first use), then logs in once
with paramiko in strict mode, so a wrong key, a refusal, a timeout or a changed host key
is said plainly before the system ``ssh`` takes the terminal. paramiko is imported here,
in the functions that connect, never when the command is listed.
"""

from __future__ import annotations

import socket
import time
from typing import TYPE_CHECKING, Any

from soong_core.errors import SoongError

if TYPE_CHECKING:
    from soong_plugins.fabric_tunnel.settings import SshTarget


def _where(target: SshTarget) -> str:
    return f"{target.instance_id} ({target.host}:{target.port})"


def network_error(target: SshTarget, exc: BaseException) -> SoongError:
    """A connection that never got as far as SSH, in one line."""
    where = _where(target)
    if isinstance(exc, ConnectionRefusedError):
        return SoongError(f"{where} refused the SSH connection: its sshd is not listening "
                          "(still booting, or stopped)",
                          hints=["wait a minute and try again; `soong status` shows it"])
    if isinstance(exc, (socket.timeout, TimeoutError)):
        return SoongError(f"no answer from {where} within {target.connect_timeout:g} s",
                          hints=["check the instance is active (`soong status`) and that "
                                 "its firewall allows SSH (port 22)"])
    reason = getattr(exc, "strerror", None) or str(exc) or type(exc).__name__
    return SoongError(f"cannot reach {where}: {' '.join(str(reason).split())}",
                      hints=["check your network and `soong status`"])


def greets(target: SshTarget) -> bool:
    """True when something at the target answers with an SSH banner."""
    try:
        with socket.create_connection((target.host, target.port),
                                      timeout=min(5.0, target.connect_timeout)) as connection:
            connection.settimeout(min(5.0, target.connect_timeout))
            return connection.recv(4) == b"SSH-"
    except OSError:
        return False


def wait_for_sshd(target: SshTarget, wait: float, *, io: Any = None) -> None:
    """Return once the sshd greets; after ``wait`` seconds, the reason it does not."""
    if greets(target):
        return
    from contextlib import nullcontext

    from soong_core.cli.console import Phases

    end = time.monotonic() + wait
    phases = Phases(io, f"waiting for the sshd of {target.instance_id}") if io is not None \
        else nullcontext()
    with phases:
        while time.monotonic() < end:
            time.sleep(1.0)
            if greets(target):
                return
    try:  # the last attempt's own error says why
        with socket.create_connection((target.host, target.port),
                                      timeout=target.connect_timeout):
            pass
    except OSError as exc:
        raise network_error(target, exc) from None
    raise SoongError(f"{_where(target)} accepts connections but does not speak SSH",
                     hints=["is ssh_port right for this instance?"])


def check_login(target: SshTarget) -> str | None:
    """Host key and login, checked; the new key's fingerprint when it was trusted just
    now (first use), else None."""
    import paramiko

    from soong_plugins.fabric_tunnel.hostkeys import (
        HostKeys,
        changed_from,
        fetch_host_key,
        strict_client,
    )

    keys = HostKeys(target.known_hosts)
    try:
        presented = fetch_host_key(target.host, target.port, timeout=target.connect_timeout)
    except OSError as exc:
        raise network_error(target, exc) from None
    except paramiko.SSHException as exc:
        raise SoongError(f"{_where(target)} did not complete an SSH handshake: "
                         f"{' '.join(str(exc).split())}") from None
    first = keys.trust_first(target.instance_id, presented)
    if not target.key_path.is_file():
        raise SoongError(f"no SSH key at {target.key_path}",
                         hints=["set ssh.key_path to the private key the instance was "
                                "launched with, or run `soong configure`"])
    client = strict_client(keys, target.instance_id, target.host, target.port)
    try:
        client.connect(target.host, target.port, username=target.user,
                       key_filename=str(target.key_path), look_for_keys=False,
                       allow_agent=False, timeout=target.connect_timeout,
                       banner_timeout=target.connect_timeout,
                       auth_timeout=target.connect_timeout)
    except paramiko.BadHostKeyException as bad:
        raise changed_from(keys, target.instance_id, bad) from None
    except paramiko.PasswordRequiredException:
        pass  # a passphrase-protected key: the system ssh asks for it (or the agent has it)
    except paramiko.AuthenticationException:
        raise SoongError(f"{_where(target)} refused the key {target.key_path} for user "
                         f"{target.user}",
                         hints=["set ssh.key_path to the private key of the SSH key the "
                                "instance was launched with (defaults.ssh_key_name), and "
                                "ssh.user to its login user"]) from None
    except OSError as exc:
        raise network_error(target, exc) from None
    except paramiko.SSHException as exc:
        raise SoongError(f"SSH to {_where(target)} failed: "
                         f"{' '.join(str(exc).split())}") from None
    finally:
        client.close()
    return presented.fingerprint if first else None
