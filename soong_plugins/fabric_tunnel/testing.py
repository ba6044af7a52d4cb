"""A real OpenSSH ``sshd`` on 127.0.0.1 for tests, started and stopped by the test.

:class:`SshServer` runs ``/usr/sbin/sshd -D -e -f <dir>/sshd_config`` as DESIGN's "Tests
and root" says: ``ListenAddress 127.0.0.1``, a free ``Port``, a ``HostKey`` made for the
test and kept across restarts (unless a test asks for a new one), an absolute
``AuthorizedKeysFile`` holding a client key made for the test, ``UsePAM no``,
``StrictModes no``, ``PermitRootLogin prohibit-password``, its ``PidFile`` in the
test's folder. Tests log in as root (``ssh.user: root``) with :attr:`SshServer.client_key`.
The fixture ``instance_service`` is a small HTTP server on 127.0.0.1 standing in for a
service on the instance, ``echo_service`` a TCP echo (:class:`EchoServer`) for bytes
both ways through a tunnel; ``SshServer.stop(drop_sessions=True)`` ends its sessions as a
dropped network would.

The fixtures ``sshd`` and ``instance_service`` start them; without ``sshd`` installed
they skip with the reason, and fail under ``CI=true`` (CI installs openssh-server).
"""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import time
from pathlib import Path
from typing import Iterator

import pytest

from soong_core.testing import LocalServer, free_port

SSHD = "/usr/sbin/sshd"
START_LIMIT_S = 30.0


def keygen(path: Path, comment: str) -> Path:
    """A fresh ed25519 key pair at ``path`` (and ``path.pub``), no passphrase."""
    for leftover in (path, path.with_name(path.name + ".pub")):
        leftover.unlink(missing_ok=True)
    subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", comment, "-f",
                    str(path)], check=True, stdin=subprocess.DEVNULL,
                   stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, timeout=30)
    return path


def fingerprint(public_key: Path) -> str:
    """``SHA256:...`` of a public key file, as ``ssh-keygen -l`` prints it."""
    listed = subprocess.run(["ssh-keygen", "-l", "-E", "sha256", "-f", str(public_key)],
                            check=True, capture_output=True, text=True, timeout=30)
    return listed.stdout.split()[1]


def missing_sshd_reason() -> str | None:
    """Why no sshd can be started here, or None."""
    if not os.access(SSHD, os.X_OK):
        return f"{SSHD} is not installed (apt-get install openssh-server)"
    if shutil.which("ssh-keygen") is None:
        return "ssh-keygen is not installed (apt-get install openssh-client)"
    return None


class SshServer:
    """One sshd in ``folder``; :meth:`start`, :meth:`restart`, :meth:`stop`."""

    def __init__(self, folder: Path) -> None:
        self.folder = folder
        folder.mkdir(parents=True, exist_ok=True)
        self.host_key = keygen(folder / "ssh_host_ed25519_key", "soong-test-host")
        self.client_key = keygen(folder / "client_ed25519", "soong-test-client")
        self.authorized_keys = folder / "authorized_keys"
        self.authorized_keys.write_text(
            self.client_key.with_name(self.client_key.name + ".pub").read_text())
        self.port = free_port()
        self.host = "127.0.0.1"
        self.user = "root"
        self.log_path = folder / "sshd.log"
        self.process: subprocess.Popen[bytes] | None = None
        self.environment: dict[str, str] = {}
        """Set in every session (sshd's ``SetEnv``), from the next (re)start: a test
        points an installer's ``SOONG_ROOT`` at a sandbox with it."""

    @property
    def host_public_key(self) -> Path:
        return self.host_key.with_name(self.host_key.name + ".pub")

    @property
    def host_fingerprint(self) -> str:
        return fingerprint(self.host_public_key)

    def config_text(self) -> str:
        return "\n".join([
            f"ListenAddress {self.host}",
            f"Port {self.port}",
            f"HostKey {self.host_key}",
            f"AuthorizedKeysFile {self.authorized_keys}",
            "UsePAM no",
            "StrictModes no",
            "PermitRootLogin prohibit-password",
            "PasswordAuthentication no",
            "KbdInteractiveAuthentication no",
            f"PidFile {self.folder / 'sshd.pid'}",
            "AllowTcpForwarding yes",
            "PrintMotd no",
            "LogLevel VERBOSE",
            *([f"SetEnv {' '.join(f'{k}={v}' for k, v in self.environment.items())}"]
              if self.environment else []),
            "",
        ])

    def start(self) -> SshServer:
        Path("/run/sshd").mkdir(parents=True, exist_ok=True)  # its privilege separation dir
        config = self.folder / "sshd_config"
        config.write_text(self.config_text())
        checked = subprocess.run([SSHD, "-t", "-f", str(config)], capture_output=True,
                                 text=True, timeout=30)
        if checked.returncode != 0:
            raise RuntimeError(f"sshd rejects its test config: {checked.stderr.strip()}")
        log = open(self.log_path, "ab")
        try:
            self.process = subprocess.Popen([SSHD, "-D", "-e", "-f", str(config)],
                                            stdin=subprocess.DEVNULL, stdout=log, stderr=log)
        finally:
            log.close()
        end = time.monotonic() + START_LIMIT_S
        while not self.listening():
            if self.process.poll() is not None:
                raise RuntimeError(f"sshd exited with {self.process.returncode}:\n"
                                   + self.log_path.read_text(errors="replace"))
            if time.monotonic() > end:
                raise RuntimeError(f"sshd did not listen on {self.host}:{self.port} within "
                                   f"{START_LIMIT_S:g} s")
            time.sleep(0.05)
        return self

    def listening(self) -> bool:
        try:
            with socket.create_connection((self.host, self.port), timeout=1) as connection:
                return connection.recv(4).startswith(b"SSH-")
        except OSError:
            return False

    def stop(self, *, drop_sessions: bool = False) -> None:
        """Stop listening. The sessions it forked live on, as sshd's do, unless
        ``drop_sessions``: then they are killed too, as a dropped network ends them."""
        if self.process is not None and self.process.poll() is None:
            sessions = _children(self.process.pid) if drop_sessions else []
            self.process.terminate()
            try:
                self.process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(timeout=10)
            for pid in sessions:
                try:
                    os.kill(pid, 9)
                except ProcessLookupError:
                    pass
        self.process = None

    def restart(self, *, new_host_key: bool = False) -> SshServer:
        """Stop and start again on the same port; ``new_host_key``: as a reinstalled
        machine would, with another host key."""
        self.stop()
        if new_host_key:
            keygen(self.host_key, "soong-test-host-2")
        return self.start()


def process_ended(pid: int) -> bool:
    """The process has ended (a zombie its parent has not reaped yet counts as ended)."""
    try:
        os.kill(pid, 0)
        stat = Path(f"/proc/{pid}/stat").read_text()
    except (ProcessLookupError, FileNotFoundError):
        return True
    return stat.rsplit(")", 1)[1].split()[0] == "Z"


def _children(pid: int) -> list[int]:
    """Every descendant of ``pid`` (Linux ``/proc``)."""
    parents: dict[int, list[int]] = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
        except OSError:
            continue
        parent = int(stat.rsplit(")", 1)[1].split()[1])
        parents.setdefault(parent, []).append(int(entry.name))
    found, todo = [], [pid]
    while todo:
        for child in parents.get(todo.pop(), []):
            found.append(child)
            todo.append(child)
    return found


class EchoServer:
    """A TCP service on 127.0.0.1 that sends back what it receives (each connection in
    a thread of its own): what a tunnel test pushes bytes through, both ways."""

    def __init__(self) -> None:
        import threading

        self.listener = socket.socket()
        self.listener.bind(("127.0.0.1", 0))
        self.listener.listen(16)
        self.port = self.listener.getsockname()[1]
        self.connections = 0
        threading.Thread(target=self._serve, daemon=True).start()

    def _serve(self) -> None:
        import threading

        while True:
            try:
                conn, _ = self.listener.accept()
            except OSError:
                return
            self.connections += 1
            threading.Thread(target=self._echo, args=(conn,), daemon=True).start()

    @staticmethod
    def _echo(conn: socket.socket) -> None:
        with conn:
            try:
                while True:
                    data = conn.recv(1 << 16)
                    if not data:
                        break
                    conn.sendall(data)
                conn.shutdown(socket.SHUT_WR)
            except OSError:
                pass

    def close(self) -> None:
        self.listener.close()


def echo_through(port: int, payload: bytes, *, timeout: float = 30.0) -> bytes:
    """Send ``payload`` to 127.0.0.1:``port`` (while reading), then what came back."""
    import threading

    received = bytearray()
    with socket.create_connection(("127.0.0.1", port), timeout=timeout) as conn:
        def read() -> None:
            while True:
                try:
                    data = conn.recv(1 << 16)
                except OSError:
                    return  # reset: what came so far
                if not data:
                    return
                received.extend(data)

        reader = threading.Thread(target=read, daemon=True)
        reader.start()
        try:
            conn.sendall(payload)
            conn.shutdown(socket.SHUT_WR)
        except OSError:
            pass  # ended by the other side: what came back says how far it got
        reader.join(timeout)
    return bytes(received)


SERVICE_BODY = b"soong test service\n"
"""What the service behind the test sshd answers to every request."""


def require_sshd() -> None:
    """Skip here without sshd, with the reason; under ``CI=true`` fail instead."""
    reason = missing_sshd_reason()
    if reason is None:
        return
    if os.environ.get("CI", "").lower() == "true":
        pytest.fail(f"{reason} (CI=true: a missing component fails the run)")
    pytest.skip(reason)


@pytest.fixture
def sshd(tmp_path_factory: pytest.TempPathFactory) -> Iterator[SshServer]:
    """A started :class:`SshServer`; stopped at teardown."""
    require_sshd()
    server = SshServer(tmp_path_factory.mktemp("sshd"))
    try:
        yield server.start()
    finally:
        server.stop()


@pytest.fixture
def echo_service() -> Iterator[EchoServer]:
    """An :class:`EchoServer` standing in for a service on the instance."""
    server = EchoServer()
    try:
        yield server
    finally:
        server.close()


@pytest.fixture
def instance_service() -> Iterator[LocalServer]:
    """A service on the instance (a :class:`~soong_core.testing.LocalServer` answering
    :data:`SERVICE_BODY`); stopped at teardown."""
    with LocalServer(lambda request: SERVICE_BODY) as service:
        yield service
