"""The tunnel process: port forwards to one instance that outlive the command.

``soong tunnel start`` binds the local ports itself (so a busy one is said at once and
nothing is left half-started), then starts ``python -m soong_plugins.fabric_tunnel.
forward INSTANCE_ID`` in a session of its own, hands it the listening sockets
(``pass_fds``) and a JSON spec on its standard input, and waits until the state file
says ``up`` or ``failed``. This process then holds one SSH connection to the instance,
checked against soong's known_hosts in strict mode (trust on first use happens in
``soong ssh`` and ``tunnel start``, never here), and carries every connection accepted
on a local port over a ``direct-tcpip`` channel.

It stays up when the network does not: the connection is watched (the transport's
own end, and a keepalive request every ``keepalive`` seconds that must be answered
within three intervals, like ``ServerAliveCountMax 3``), and a lost one is
re-established with a capped exponential backoff while the local ports keep
listening. A changed host key or a refused login is no passing fault: it stops with
that error in the state. ``SIGTERM`` stops it cleanly; it removes its state file on
the way out.

Throughput: each forwarded connection gets two threads, each blocking in ``recv`` and
writing what it got at once (a thread per direction moves bulk data with one wake-up per
chunk, where a select loop over all sockets pays a Python round per packet). Chunks
are :data:`CHUNK` bytes. Each channel asks for a :data:`WINDOW` byte window and
:data:`PACKET` byte packets (see each). AES-GCM comes first in the cipher list (one pass
of authenticated encryption in OpenSSL, where CTR adds a separate HMAC pass; paramiko
lists CTR first): a download measured 323 MiB/s with it, 214-256 with CTR, on
loopback.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import sys
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Mapping

CHUNK = 256 * 1024
WINDOW = 16 * 1024 * 1024
"""Each channel's receive window: paramiko's default 2 MiB makes a fast sender wait a
round trip for every 2 MiB."""
PACKET = 256 * 1024
"""OpenSSH's own channel packet size (``CHAN_TCP_PACKET_DEFAULT``): larger packets
are not sent by its sshd anyway."""
SOCKET_BUFFER = 4 * 1024 * 1024
PREFERRED_CIPHERS = ("aes128-gcm@openssh.com", "aes256-gcm@openssh.com")
BACKOFF_FIRST_S = 0.5
WATCH_S = 0.25
PROBES_MISSED = 3


class Fatal(Exception):
    """A fault that retrying cannot cure (a changed host key, a refused login)."""


@dataclass(frozen=True)
class Forward:
    local: int
    remote: int
    remote_host: str
    role: str
    """``agent`` (the lease agent's port), ``config`` (``tunnel.ports``) or ``flag``."""
    fd: int = -1

    def public(self) -> dict[str, Any]:
        return {"local": self.local, "remote": self.remote, "remote_host": self.remote_host,
                "role": self.role}


class StateFile:
    """The tunnel's state (DESIGN Interfaces): rewritten whole, atomically, under a lock."""

    def __init__(self, path: Path, document: dict[str, Any]) -> None:
        self.path = path
        self.document = document
        self._lock = threading.Lock()

    def update(self, **changes: Any) -> None:
        from soong_core.files import write_private

        with self._lock:
            self.document.update(changes)
            write_private(self.path, json.dumps(self.document, indent=1, sort_keys=True) + "\n")

    def remove(self) -> None:
        try:
            self.path.unlink()
        except OSError:
            pass


def one_line(exc: BaseException) -> str:
    text = " ".join(str(exc).split()) or type(exc).__name__
    return text if isinstance(exc, Fatal) else f"{type(exc).__name__}: {text}"


class TunnelProcess:
    def __init__(self, spec: dict[str, Any], listeners: list[tuple[Forward, socket.socket]],
                 state: StateFile, *, sleep: Callable[[float], None] | None = None) -> None:
        self.spec = spec
        self.listeners = listeners
        self.state = state
        self.stopping = threading.Event()
        self.transport: Any = None
        self._transport_lock = threading.Lock()
        self.reconnects = 0
        self.wait = sleep or self.stopping.wait

    # -- the SSH connection -------------------------------------------------------------

    def connect(self) -> Any:
        return connect(self.spec)

    def watch(self, transport: Any) -> bool:
        """Watch ``transport`` for one keepalive interval: False as soon as it ends (a
        closed connection is noticed within :data:`WATCH_S`), else whether its peer
        answered the keepalive request at the end of the interval."""
        end = time.monotonic() + float(self.spec["keepalive"])
        while time.monotonic() < end:
            if self.stopping.wait(WATCH_S):
                return True
            if not transport.is_active():
                return False
        return self.alive(transport)

    def alive(self, transport: Any) -> bool:
        """The transport is up and its peer answers a keepalive request within
        ``PROBES_MISSED`` intervals (while waiting, a dropped transport ends it early)."""
        if not transport.is_active():
            return False
        answered = threading.Event()

        def probe() -> None:
            try:
                transport.global_request("keepalive@openssh.com", wait=True)
            except Exception:
                return
            answered.set()

        threading.Thread(target=probe, name="keepalive", daemon=True).start()
        end = time.monotonic() + PROBES_MISSED * float(self.spec["keepalive"])
        while time.monotonic() < end and not self.stopping.is_set():
            if answered.wait(0.2):
                return transport.is_active()
            if not transport.is_active():
                return False
        return self.stopping.is_set()

    # -- forwarding -----------------------------------------------------------------------

    def accept_loop(self, forward: Forward, listener: socket.socket) -> None:
        while not self.stopping.is_set():
            try:
                conn, peer = listener.accept()
            except OSError:
                return  # closed: stopping
            threading.Thread(target=self.serve, args=(forward, conn, peer),
                             name=f"carry-{forward.local}", daemon=True).start()

    def serve(self, forward: Forward, conn: socket.socket, peer: Any) -> None:
        with self._transport_lock:
            transport = self.transport
        if transport is None or not transport.is_active():
            conn.close()  # reconnecting: the client sees the connection end, and retries
            return
        problem = carry(transport, conn, peer, forward.remote_host, forward.remote,
                        float(self.spec["connect_timeout"]))
        if problem is not None:
            self.state.update(last_error=problem)

    # -- the supervisor -------------------------------------------------------------------

    def run(self) -> int:
        try:
            transport = self.connect()
        except Exception as exc:
            self.state.update(state="failed", last_error=one_line(exc), fatal=True)
            return 1
        self._set(transport)
        self.state.update(state="up", connected_at=time.time(), last_error=None,
                          cipher=transport.remote_cipher)
        for forward, listener in self.listeners:
            threading.Thread(target=self.accept_loop, args=(forward, listener),
                             name=f"accept-{forward.local}", daemon=True).start()
        cap = float(self.spec["backoff_max"])
        while not self.stopping.is_set():
            if self.watch(transport):
                continue
            if self.stopping.is_set():
                break
            self._set(None)
            transport.close()
            self.state.update(state="reconnecting", lost_at=time.time())
            delay = BACKOFF_FIRST_S
            while not self.stopping.is_set():
                try:
                    transport = self.connect()
                    break
                except Fatal as exc:
                    self.state.update(state="failed", last_error=one_line(exc), fatal=True)
                    self.close_listeners()
                    return 1
                except Exception as exc:
                    self.state.update(last_error=one_line(exc))
                    self.wait(delay)
                    delay = min(cap, delay * 2)
            else:
                break
            self.reconnects += 1
            self._set(transport)
            self.state.update(state="up", connected_at=time.time(),
                              reconnects=self.reconnects)
        self.close_listeners()
        if self.transport is not None:
            self.transport.close()
        return 0

    def _set(self, transport: Any) -> None:
        with self._transport_lock:
            self.transport = transport

    def close_listeners(self) -> None:
        for _, listener in self.listeners:
            try:
                listener.close()
            except OSError:
                pass


def carry(transport: Any, conn: socket.socket, peer: Any, remote_host: str,
          remote_port: int, timeout: float) -> str | None:
    """Carry one accepted connection over a new ``direct-tcpip`` channel to
    ``remote_host:remote_port`` on the instance, both ways, until both ends are done;
    what went wrong opening the channel (the connection is then closed), else None."""
    try:
        channel = transport.open_channel("direct-tcpip", (remote_host, remote_port), peer,
                                         window_size=WINDOW, max_packet_size=PACKET,
                                         timeout=timeout)
    except Exception as exc:
        conn.close()
        return f"{remote_host}:{remote_port} on the instance: {one_line(exc)}"
    tune(conn)
    down = threading.Thread(
        target=pump, args=(channel.recv, conn.sendall,
                           lambda: conn.shutdown(socket.SHUT_WR), conn.close),
        daemon=True, name=f"down-{remote_port}")
    down.start()
    pump(conn.recv, channel.sendall, channel.shutdown_write, channel.close)
    down.join()
    channel.close()
    conn.close()
    return None


def pump(receive: Callable[[int], bytes], send: Callable[[bytes], Any],
         finish: Callable[[], Any], abandon: Callable[[], Any]) -> None:
    """Move bytes one way until the source ends (then ``finish``: pass the end on) or
    fails (then ``abandon``: close the other side, which ends the other direction)."""
    try:
        while True:
            data = receive(CHUNK)
            if not data:
                break
            send(data)
        finish()
    except Exception:
        try:
            abandon()
        except Exception:
            pass


def tune(sock: socket.socket) -> None:
    """Big kernel buffers for bulk transfer, no Nagle delay for interactive use."""
    for option in (socket.SO_SNDBUF, socket.SO_RCVBUF):
        try:
            sock.setsockopt(socket.SOL_SOCKET, option, SOCKET_BUFFER)
        except OSError:
            pass
    try:
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    except OSError:
        pass


def connect(spec: Mapping[str, Any]) -> Any:
    """One strict connection to what ``spec`` names (:meth:`SshTarget.spec`): the
    recorded host key only, compared before any login; its authenticated transport.
    :class:`Fatal` for what retrying cannot cure, OSError and paramiko's errors for the
    rest."""
    import paramiko

    from soong_plugins.fabric_tunnel.hostkeys import HostKey, HostKeyChanged, HostKeys

    keys = HostKeys(Path(spec["known_hosts"]))
    alias = spec["instance_id"]
    timeout = float(spec["connect_timeout"])
    sock = socket.create_connection((spec["host"], spec["port"]), timeout=timeout)
    tune(sock)
    transport = paramiko.Transport(sock)
    try:
        transport.banner_timeout = timeout
        options = transport.get_security_options()
        options.ciphers = prefer(tuple(options.ciphers), PREFERRED_CIPHERS)
        transport.start_client(timeout=timeout)
        try:
            known = keys.check(alias, HostKey.of(transport.get_remote_server_key()))
        except HostKeyChanged as changed:
            raise Fatal(changed.message) from None
        if not known:
            raise Fatal(f"no host key is recorded for {alias}: connect once with "
                        f"`soong ssh {alias}` to trust it")
        try:
            key = paramiko.PKey.from_path(spec["key_path"])
        except paramiko.PasswordRequiredException:
            raise Fatal(f"the key {spec['key_path']} needs a passphrase, which a "
                        "tunnel in the background cannot ask for") from None
        except (OSError, paramiko.SSHException) as exc:
            raise Fatal(f"cannot read the key {spec['key_path']}: {one_line(exc)}") \
                from None
        try:
            transport.auth_publickey(spec["user"], key)
        except paramiko.AuthenticationException:
            raise Fatal(f"{alias} refused the key {spec['key_path']} for user "
                        f"{spec['user']}") from None
    except BaseException:
        transport.close()
        raise
    sock.settimeout(None)
    return transport


def prefer(offered: tuple[str, ...], first: tuple[str, ...]) -> tuple[str, ...]:
    """``offered`` with the names of ``first`` (that it has) moved to its front: the
    server takes the first of the client's list it supports."""
    return tuple(c for c in first if c in offered) + tuple(c for c in offered if c not in first)


def main(argv: list[str]) -> int:
    if len(argv) != 2:
        print("usage: python -m soong_plugins.fabric_tunnel.forward INSTANCE_ID "
              "(the spec on stdin)", file=sys.stderr)
        return 2
    spec = json.loads(sys.stdin.read())
    if spec.get("instance_id") != argv[1]:
        print("the spec is for another instance", file=sys.stderr)
        return 2
    forwards = [Forward(**f) for f in spec["forwards"]]
    listeners = [(f, socket.socket(fileno=f.fd)) for f in forwards]
    state = StateFile(Path(spec["state_path"]), {
        "pid": os.getpid(), "instance_id": spec["instance_id"], "name": spec.get("name"),
        "account": spec.get("account"),
        "host": spec["host"],
        "port": spec["port"], "forwards": [f.public() for f in forwards],
        "started": time.time(), "state": "connecting", "reconnects": 0,
        "last_error": None})
    state.update()
    process = TunnelProcess(spec, listeners, state)

    def stop(signum: int, frame: Any) -> None:
        process.stopping.set()

    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)
    signal.signal(signal.SIGHUP, signal.SIG_IGN)  # the terminal that started it may close
    code = process.run()
    if code == 0:
        state.remove()  # stopped on purpose: nothing left to report
    return code


if __name__ == "__main__":
    sys.exit(main(sys.argv))
