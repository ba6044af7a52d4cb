"""Managed tunnels: start, inspect and stop the tunnel process of an instance.

One tunnel process per instance (:mod:`.forward`), with its state in
``$XDG_STATE_HOME/soong/tunnels/<instance-id>.json`` (pid, forwards, started,
reconnects, last error; DESIGN Interfaces). :func:`start` binds the local ports here,
on 127.0.0.1 only, so that a busy one is refused at once, naming its holder where the
platform tells (Linux ``/proc``), with nothing left half-started; then it hands the
sockets to the tunnel process and waits for it to connect. :func:`stop` signals a
recorded pid only after checking that it is that instance's tunnel process (a pid can
be reused). :func:`states` reads every state, and :func:`clean` removes the state of
a process that is gone.

:class:`FabricTunnels` is the same as a :class:`~soong_core.interfaces.TunnelBackend`
(the built-in ``fabric`` backend), for programs that embed the core.
"""

from __future__ import annotations

import errno
import json
import os
import socket
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable, Iterable, Mapping, Sequence

from soong_core.errors import SoongError, UsageError
from soong_core.files import soong_dir
from soong_core.interfaces import TunnelBackend
from soong_core.models import Instance, PortForward, Tunnel

if TYPE_CHECKING:
    from soong_plugins.fabric_tunnel.forward import Forward
    from soong_plugins.fabric_tunnel.settings import SshTarget

MODULE = "soong_plugins.fabric_tunnel.forward"
LOOPBACK = "127.0.0.1"
STOP_WAIT_S = 5.0
START_SLACK_S = 10.0
"""How much longer than one connection attempt ``start`` waits for the process."""


def state_dir() -> Path:
    return soong_dir("state") / "tunnels"


def state_path(instance_id: str) -> Path:
    return state_dir() / f"{instance_id}.json"


@dataclass
class TunnelState:
    path: Path
    document: dict[str, Any]
    alive: bool = False
    listening: dict[int, bool] = field(default_factory=dict)

    @property
    def instance_id(self) -> str:
        return str(self.document.get("instance_id") or self.path.stem)

    @property
    def pid(self) -> int | None:
        pid = self.document.get("pid")
        return pid if isinstance(pid, int) and not isinstance(pid, bool) and pid > 0 else None

    @property
    def forwards(self) -> list[dict[str, Any]]:
        found = self.document.get("forwards")
        return [f for f in found if isinstance(f, dict)] if isinstance(found, list) else []

    def port_of(self, role: str) -> int | None:
        for forward in self.forwards:
            if forward.get("role") == role and isinstance(forward.get("local"), int):
                return int(forward["local"])
        return None

    def to_json(self) -> dict[str, Any]:
        doc = self.document
        return {
            "instance_id": self.instance_id, "name": doc.get("name"), "pid": self.pid,
            "alive": self.alive, "state": doc.get("state") if self.alive else "dead",
            "started": doc.get("started"), "reconnects": doc.get("reconnects", 0),
            "last_error": doc.get("last_error"),
            "forwards": [{**f, "listening": self.listening.get(f.get("local") or 0, False)}
                         for f in self.forwards]}


def read_state(path: Path) -> TunnelState | None:
    try:
        document = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        return None
    except (OSError, ValueError):
        document = {}
    if not isinstance(document, dict):
        document = {}
    state = TunnelState(path, document)
    state.alive = state.pid is not None and is_tunnel_process(state.pid, state.instance_id)
    return state


def states() -> list[TunnelState]:
    """Every recorded tunnel, with whether its process lives, by instance id."""
    try:
        paths = sorted(state_dir().glob("*.json"))
    except OSError:
        return []
    found = [read_state(path) for path in paths]
    return [state for state in found if state is not None]


def probe(state: TunnelState) -> TunnelState:
    """Fill in whether each local port accepts connections."""
    for forward in state.forwards:
        port = forward.get("local")
        if isinstance(port, int):
            state.listening[port] = state.alive and listening(port)
    return state


def clean(state: TunnelState) -> bool:
    """Remove the state of a process that is gone; True when it was removed."""
    if state.alive:
        return False
    try:
        state.path.unlink()
    except FileNotFoundError:
        pass
    except OSError as exc:
        raise SoongError(f"cannot remove {state.path}: {exc.strerror or exc}") from None
    return True


def listening(port: int) -> bool:
    """Whether something listens on 127.0.0.1:``port``. On Linux from ``/proc/net/tcp``,
    without connecting (a connection to a forwarded port would open a channel to the
    instance); elsewhere by connecting."""
    inodes = _listening_inodes(port)
    return bool(inodes) if inodes is not None else accepts(port)


def accepts(port: int, timeout: float = 0.5) -> bool:
    try:
        with socket.create_connection((LOOPBACK, port), timeout=timeout):
            return True
    except OSError:
        return False


def is_tunnel_process(pid: int, instance_id: str) -> bool:
    """Whether ``pid`` runs this instance's tunnel process (not a reused pid)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        pass  # someone else's: the command line below tells
    try:
        raw = Path(f"/proc/{pid}/cmdline").read_bytes()
        words = [w.decode(errors="replace") for w in raw.split(b"\0") if w]
    except FileNotFoundError:
        if Path("/proc/self").exists():
            return False  # Linux, and it has just ended
        done = subprocess.run(["ps", "-o", "command=", "-p", str(pid)], capture_output=True,
                              text=True, timeout=10, check=False)
        words = done.stdout.split()
    except OSError:
        return False
    return MODULE in words and instance_id in words


# -- ports ----------------------------------------------------------------------------------


def parse_forward(text: str) -> PortForward:
    """``LOCAL:REMOTE`` (``8000:8000``); ``PORT`` alone means the same port both sides."""
    raw = str(text).strip()
    parts = raw.split(":")
    try:
        numbers = [int(p) for p in parts]
    except ValueError:
        numbers = []
    if len(numbers) == 1:
        numbers *= 2
    if len(numbers) != 2 or not all(1 <= n <= 65535 for n in numbers):
        raise UsageError(f"a port forward is LOCAL:REMOTE with ports from 1 to 65535, "
                         f"got {raw!r}", hints=["for example --port 8000:8000"])
    return PortForward(local_port=numbers[0], remote_port=numbers[1])


def _listening_inodes(port: int) -> set[str] | None:
    """The socket inodes listening on TCP ``port`` (Linux ``/proc``); None where the
    platform does not tell."""
    inodes: set[str] = set()
    readable = False
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        try:
            lines = Path(table).read_text().splitlines()[1:]
        except OSError:
            continue
        readable = True
        for line in lines:
            fields = line.split()
            if len(fields) > 9 and fields[3] == "0A" and \
                    int(fields[1].rsplit(":", 1)[1], 16) == port:
                inodes.add(f"socket:[{fields[9]}]")
    return inodes if readable else None


def holder_of(port: int) -> tuple[int, str] | None:
    """The pid and name of the process listening on TCP ``port``, where Linux's
    ``/proc`` tells; None elsewhere or when it cannot be found."""
    inodes = _listening_inodes(port)
    if not inodes:
        return None
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            for fd in (entry / "fd").iterdir():
                if os.readlink(fd) in inodes:
                    name = (entry / "comm").read_text().strip()
                    return int(entry.name), name
        except OSError:
            continue
    return None


def busy(port: int, suggestion: str) -> SoongError:
    holder = holder_of(port)
    who = f"in use by pid {holder[0]} ({holder[1]})" if holder else "in use"
    return SoongError(f"local port {port} is {who}", hints=[f"forward another local port: "
                                                         f"--port {suggestion}"])


def bind(port: int) -> socket.socket:
    """A listening socket on 127.0.0.1 (``port`` 0: a free one), inheritable."""
    listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    try:
        listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # TIME_WAIT only
        listener.bind((LOOPBACK, port))
        listener.listen(128)
        listener.set_inheritable(True)
    except BaseException:
        listener.close()
        raise
    return listener


def _suggest(local: int, remote: int) -> str:
    other = local + 10000 if local + 10000 <= 65535 else local - 1
    return f"{other}:{remote}"


# -- start and stop -------------------------------------------------------------------------


def start(target: SshTarget, forwards: Sequence[PortForward], *, name: str | None = None,
          account: str | None = None, agent_port: int | None = None,
          backoff_max: float = 30.0, roles: Mapping[int, str] | None = None,
          check: Callable[[], None] | None = None) -> TunnelState:
    """Start the tunnel process of ``target``'s instance with ``forwards`` (and the
    agent's port, to a free local port, when ``agent_port`` is given); returns its
    state once it is connected. ``check`` runs once the ports are bound, before the
    process starts (the login check: a busy port is said before anything connects).
    One line and nothing left running on any failure."""
    from soong_plugins.fabric_tunnel.forward import Forward

    instance_id = target.instance_id
    previous = read_state(state_path(instance_id))
    if previous is not None and previous.alive:
        raise SoongError(f"a tunnel to {instance_id} is already running (pid {previous.pid})",
                         hints=[f"see it with `soong tunnel status`; stop it first with "
                                f"`soong tunnel stop {instance_id}`"])
    locals_ = [f.local_port for f in forwards]
    twice = sorted({p for p in locals_ if locals_.count(p) > 1})
    if twice:
        raise UsageError(f"local port {twice[0]} is given twice")
    wanted: list[tuple[int, int, str, str]] = [
        (f.local_port, f.remote_port, f.remote_host, (roles or {}).get(f.local_port, "flag"))
        for f in forwards]
    if agent_port is not None:
        reuse = previous.port_of("agent") if previous is not None else None
        wanted.append((reuse or 0, agent_port, LOOPBACK, "agent"))
    if not wanted:
        raise UsageError("nothing to forward", hints=["give --port LOCAL:REMOTE, or set "
                                                      "tunnel.ports in the config"])
    bound: list[tuple[Forward, socket.socket]] = []
    try:
        for local, remote, host, role in wanted:
            try:
                listener = bind(local)
            except OSError as exc:
                if role == "agent" and local:  # the port it had: any free one will do
                    listener = bind(0)
                elif exc.errno == errno.EADDRINUSE:
                    raise busy(local, _suggest(local, remote)) from None
                else:
                    raise SoongError(f"cannot listen on {LOOPBACK}:{local}: "
                                     f"{exc.strerror or exc}") from None
            bound.append((Forward(listener.getsockname()[1], remote, host, role,
                                  listener.fileno()), listener))
        if check is not None:
            check()
        return _spawn(target, bound, name=name, account=account, backoff_max=backoff_max)
    finally:
        for _, listener in bound:
            listener.close()  # the tunnel process has its own copies


def _spawn(target: SshTarget, bound: list[tuple[Forward, socket.socket]], *,
           name: str | None, account: str | None, backoff_max: float) -> TunnelState:
    from soong_core.files import private_dir

    instance_id = target.instance_id
    path = state_path(instance_id)
    try:
        private_dir(path.parent)
        path.unlink(missing_ok=True)  # a dead process's
    except OSError as exc:
        raise SoongError(f"cannot use {path.parent}: {exc.strerror or exc}") from None
    spec = {**target.spec(), "name": name, "account": account, "backoff_max": backoff_max,
            "state_path": str(path), "forwards": [{**f.public(), "fd": f.fd} for f, _ in bound]}
    log = path.with_suffix(".log")
    with open(log, "wb") as log_file:  # this tunnel's own errors
        process = subprocess.Popen(
            [sys.executable, "-m", MODULE, instance_id], stdin=subprocess.PIPE,
            stdout=subprocess.DEVNULL, stderr=log_file, pass_fds=[f.fd for f, _ in bound],
            start_new_session=True, close_fds=True)
    assert process.stdin is not None
    process.stdin.write(json.dumps(spec).encode())
    process.stdin.close()
    end = time.monotonic() + target.connect_timeout + START_SLACK_S
    while True:
        state = read_state(path)
        doc = state.document if state is not None else {}
        if doc.get("pid") == process.pid and doc.get("state") == "up":
            state = probe(state)  # type: ignore[arg-type]
            return state
        exited = process.poll()
        if exited is not None or doc.get("state") == "failed" or time.monotonic() > end:
            if exited is None:
                process.kill()
                process.wait(10)
            error = doc.get("last_error") or (_tail(log) if exited is not None
                                              else "it did not connect in time")
            path.unlink(missing_ok=True)
            raise SoongError(f"the tunnel to {instance_id} did not start: {error}",
                             hints=["check the connection with `soong ssh "
                                    f"{instance_id} -- true`"])
        time.sleep(0.05)


def _tail(log: Path) -> str:
    try:
        lines = log.read_text(errors="replace").strip().splitlines()
    except OSError:
        return "its process ended"
    return lines[-1] if lines else "its process ended"


def stop(state: TunnelState) -> bool:
    """Stop the tunnel process of ``state`` (only after checking the pid is it) and
    remove its state; True when a live process was stopped."""
    import signal

    pid = state.pid
    stopped = False
    if state.alive and pid is not None:
        for sent in (signal.SIGTERM, signal.SIGKILL):  # politely, then for sure
            try:
                os.kill(pid, sent)
            except ProcessLookupError:
                break
            end = time.monotonic() + STOP_WAIT_S
            while time.monotonic() < end and is_tunnel_process(pid, state.instance_id):
                time.sleep(0.05)
            if not is_tunnel_process(pid, state.instance_id):
                break
        stopped = True
    state.alive = False
    clean(state)
    return stopped


def stop_for(instance_ids: Iterable[str]) -> list[str]:
    """Stop the tunnels of ``instance_ids`` (ended instances); the ids stopped."""
    stopped = []
    for instance_id in instance_ids:
        state = read_state(state_path(instance_id))
        if state is not None:
            stop(state)
            stopped.append(instance_id)
    return stopped


def stop_ended(instances: Sequence[Instance], *, complete: bool, account: str) -> list[str]:
    """Stop the tunnels of instances seen ended, or absent from a complete list of the
    account they were started under; the ids stopped."""
    seen = {instance.id: instance for instance in instances}
    ended = []
    for state in states():
        instance = seen.get(state.instance_id)
        if instance is not None:
            if not instance.state.billing:
                ended.append(state.instance_id)
        elif complete and state.document.get("account") == account:
            ended.append(state.instance_id)
    return stop_for(ended)


# -- the backend ----------------------------------------------------------------------------


class FabricTunnels(TunnelBackend):
    """The built-in ``fabric`` tunnel backend over :func:`start`, :func:`stop` and
    :func:`states`, with the ``ssh`` and ``tunnel`` config sections."""

    name = "fabric"

    def __init__(self, config: Mapping[str, Any]) -> None:
        self.config = config

    def open(self, instance: Instance, forwards: Sequence[PortForward]) -> Tunnel:
        from soong_plugins.fabric_tunnel.connect import check_login, wait_for_sshd
        from soong_plugins.fabric_tunnel.settings import target_for

        target = target_for(instance, self.config.get("ssh") or {})
        section = self.config.get("tunnel") or {}

        def check() -> None:
            wait_for_sshd(target, 0)
            check_login(target)

        state = start(target, forwards, name=instance.name, check=check,
                      agent_port=(self.config.get("agent") or {}).get("port"),
                      backoff_max=float(section.get("reconnect_max_seconds") or 30))
        return _as_tunnel(state)

    def close(self, tunnel: Tunnel) -> None:
        state = read_state(state_path(tunnel.instance_id))
        if state is not None:
            stop(state)

    def list(self) -> list[Tunnel]:
        return [_as_tunnel(state) for state in states() if state.alive]

    def shell(self, instance: Instance, command: Sequence[str] = ()) -> int:
        from soong_plugins.fabric_tunnel.connect import check_login
        from soong_plugins.fabric_tunnel.settings import target_for

        target = target_for(instance, self.config.get("ssh") or {})
        check_login(target)
        return subprocess.run(target.ssh_argv(command), check=False).returncode


def _as_tunnel(state: TunnelState) -> Tunnel:
    forwards = tuple(PortForward(int(f["local"]), int(f["remote"]),
                                 str(f.get("remote_host") or LOOPBACK))
                     for f in state.forwards
                     if isinstance(f.get("local"), int) and isinstance(f.get("remote"), int))
    return Tunnel(state.instance_id, "fabric", forwards, state.pid,
                  extra={k: v for k, v in state.to_json().items() if k != "forwards"})
