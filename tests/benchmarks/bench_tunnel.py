"""Benchmark: managed tunnels (``python tests/benchmarks/run.py tunnel``).

Against a real OpenSSH sshd on 127.0.0.1 (as the tests start it; needs openssh-server):

(a) Start to first byte: from calling ``tunnels.start`` (bind the ports, spawn the
    tunnel process, SSH handshake and login) to the first byte echoed back through the
    forward; beside it, a plain ``ssh -N -L`` started to its first echoed byte.
(b) Throughput: 100 MiB through the forward, each way (up: the client sends, a sink on
    the "instance" counts; down: a source there sends, the client counts), best of 3,
    against ``ssh -N -L`` with the same settings on the same machine, and the ratio.
    Target >= 0.5x, stretch >= 0.8x.

Exits 1 when a target is missed.
"""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from dataclasses import dataclass
from typing import Any, Callable

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))

SIZE = 100 * 2**20
RUNS = 3
TARGET, STRETCH = 0.5, 0.8
BLOCK = b"\x5a" * 2**20


def serve(handler: Callable[[socket.socket], None]) -> int:
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(8)

    def accept() -> None:
        while True:
            conn, _ = listener.accept()
            threading.Thread(target=handler, args=(conn,), daemon=True).start()

    threading.Thread(target=accept, daemon=True).start()
    return int(listener.getsockname()[1])


def sink(conn: socket.socket) -> None:
    total = 0
    while True:
        data = conn.recv(2**20)
        if not data:
            break
        total += len(data)
    conn.sendall(str(total).encode())
    conn.close()


def source(conn: socket.socket) -> None:
    left = int(conn.recv(32))
    while left > 0:
        chunk = BLOCK[:min(left, len(BLOCK))]
        conn.sendall(chunk)
        left -= len(chunk)
    conn.close()


def echo(conn: socket.socket) -> None:
    while True:
        data = conn.recv(65536)
        if not data:
            break
        conn.sendall(data)
    conn.close()


def up(port: int) -> float:
    start = time.perf_counter()
    with socket.create_connection(("127.0.0.1", port)) as conn:
        left = SIZE
        while left > 0:
            chunk = BLOCK[:min(left, len(BLOCK))]
            conn.sendall(chunk)
            left -= len(chunk)
        conn.shutdown(socket.SHUT_WR)
        counted = int(conn.recv(64))
    assert counted == SIZE, counted
    return SIZE / (time.perf_counter() - start) / 2**20


def down(port: int) -> float:
    start = time.perf_counter()
    got = 0
    with socket.create_connection(("127.0.0.1", port)) as conn:
        conn.sendall(str(SIZE).encode())
        while True:
            data = conn.recv(2**20)
            if not data:
                break
            got += len(data)
    assert got == SIZE, got
    return SIZE / (time.perf_counter() - start) / 2**20


def first_byte(port: int, limit: float = 30.0) -> None:
    end = time.monotonic() + limit
    while time.monotonic() < end:
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=5) as conn:
                conn.sendall(b"x")
                if conn.recv(1) == b"x":
                    return
        except OSError:
            pass
        time.sleep(0.005)
    raise RuntimeError(f"no byte back through 127.0.0.1:{port} within {limit:g} s")


GCM = "aes128-gcm@openssh.com"


@dataclass
class Plain:
    cipher: str
    first: float
    up: float
    down: float


def run_plain(target: Any, ports: dict[str, int], extra: list[str], log: Path) -> Plain:
    """``ssh -N -L`` for each port, with soong's settings (and ``extra``): its figures."""
    from soong_core.testing import free_port

    theirs = {name: free_port() for name in ports}
    forwards = [arg for n in ports
                for arg in ("-L", f"127.0.0.1:{theirs[n]}:127.0.0.1:{ports[n]}")]
    began = time.perf_counter()
    with open(log, "wb") as errors:
        ssh = subprocess.Popen(["ssh", *target.options(), "-v", "-N", "-o", "BatchMode=yes",
                                *extra, *forwards, f"root@{target.host}"],
                               stdin=subprocess.DEVNULL, stderr=errors)
    try:
        first_byte(theirs["echo"])
        first = time.perf_counter() - began
        result = Plain("?", first, max(up(theirs["sink"]) for _ in range(RUNS)),
                       max(down(theirs["source"]) for _ in range(RUNS)))
    finally:
        ssh.terminate()
        ssh.wait(10)
    for line in log.read_text(errors="replace").splitlines():
        if "client->server cipher:" in line:
            result.cipher = line.split("cipher:", 1)[1].split()[0]
    return result


def main() -> int:
    from soong_core.models import PortForward
    from soong_core.testing import free_port
    from soong_plugins.fabric_tunnel import tunnels
    from soong_plugins.fabric_tunnel.hostkeys import HostKeys, fetch_host_key
    from soong_plugins.fabric_tunnel.settings import SshTarget
    from soong_plugins.fabric_tunnel.testing import SshServer, missing_sshd_reason

    reason = missing_sshd_reason()
    if reason:
        print(f"cannot run: {reason}")
        return 1
    with tempfile.TemporaryDirectory(prefix="soong-bench-tunnel-") as tmp:
        for variable, folder in (("XDG_STATE_HOME", "state"), ("XDG_DATA_HOME", "data")):
            os.environ[variable] = str(Path(tmp) / folder)
        sshd = SshServer(Path(tmp) / "sshd").start()
        try:
            ports = {"echo": serve(echo), "sink": serve(sink), "source": serve(source)}
            target = SshTarget("bench-1", sshd.host, sshd.port, "root", sshd.client_key,
                               Path(tmp) / "data" / "known_hosts", 10, 30)
            HostKeys(target.known_hosts).add("bench-1", fetch_host_key(sshd.host, sshd.port))
            ours = {name: free_port() for name in ports}
            began = time.perf_counter()
            state = tunnels.start(target, [PortForward(ours[n], ports[n]) for n in ports])
            first_byte(ours["echo"])
            ours_first = time.perf_counter() - began
            ours_up = max(up(ours["sink"]) for _ in range(RUNS))
            ours_down = max(down(ours["source"]) for _ in range(RUNS))
            recorded = tunnels.read_state(tunnels.state_path("bench-1"))
            ours_cipher = (recorded.document.get("cipher") if recorded else None) or "?"
            tunnels.stop(state)

            plain = {}
            for label, extra in (("ssh -L", []), ("ssh -L -c aes128-gcm", ["-c",
                                                                        GCM])):
                plain[label] = run_plain(target, ports, extra, Path(tmp) / "ssh.log")
        finally:
            sshd.stop()
    print(f"soong tunnel's cipher: {ours_cipher}")
    print(f"start to first byte: soong tunnel {ours_first * 1000:.0f} ms, "
          + ", ".join(f"{label} {p.first * 1000:.0f} ms" for label, p in plain.items()))
    verdicts = []
    for direction, mine in (("up", ours_up), ("down", ours_down)):
        for label, p in plain.items():
            theirs = p.up if direction == "up" else p.down
            ratio = mine / theirs
            targeted = label == "ssh -L"
            verdict = ("meets the stretch" if ratio >= STRETCH else "meets" if ratio >= TARGET
                       else "MISSES") if targeted else "for comparison"
            if targeted:
                verdicts.append(ratio >= TARGET)
            print(f"100 MiB {direction:4}: soong tunnel {mine:5.0f} MiB/s, {label} "
                  f"({p.cipher}) {theirs:5.0f} MiB/s, ratio {ratio:.2f}x: {verdict}")
    print(f"(target {TARGET}x, stretch {STRETCH}x of plain ssh -L with its default cipher)")
    return 0 if all(verdicts) else 1


if __name__ == "__main__":
    sys.exit(main())
