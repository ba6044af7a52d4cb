"""A short forward: one port of an instance on a free local port, for one ``with`` block.

What a command needs to ask something of a service on the instance once (the lease
agent's API, on 127.0.0.1 there) without a managed tunnel: one strict SSH connection
(:func:`.forward.connect`: the recorded host key only), a listener on 127.0.0.1 at a
port the kernel picks, a ``direct-tcpip`` channel per accepted connection carried by
:func:`.forward.pump`; everything closes when the block ends.
"""

from __future__ import annotations

import contextlib
import socket
import threading
from typing import TYPE_CHECKING, Iterator

from soong_core.errors import SoongError

if TYPE_CHECKING:
    from soong_plugins.fabric_tunnel.settings import SshTarget


@contextlib.contextmanager
def forwarded(target: SshTarget, remote_port: int, remote_host: str = "127.0.0.1"
              ) -> Iterator[int]:
    """The local port that reaches ``remote_host:remote_port`` on ``target`` while the
    block runs. One-line SoongErrors for what stops the connection."""
    import paramiko

    from soong_plugins.fabric_tunnel import forward
    from soong_plugins.fabric_tunnel.connect import network_error

    try:
        transport = forward.connect(target.spec())
    except forward.Fatal as exc:
        raise SoongError(str(exc)) from None
    except OSError as exc:
        raise network_error(target, exc) from None
    except paramiko.SSHException as exc:
        raise SoongError(f"SSH to {target.instance_id} failed: "
                         f"{' '.join(str(exc).split())}") from None
    listener = socket.socket()
    stopping = threading.Event()
    try:
        listener.bind(("127.0.0.1", 0))
        listener.listen(16)

        def accept() -> None:
            while not stopping.is_set():
                try:
                    conn, peer = listener.accept()
                except OSError:
                    return
                threading.Thread(target=forward.carry, daemon=True,
                                 args=(transport, conn, peer, remote_host, remote_port,
                                       target.connect_timeout)).start()

        threading.Thread(target=accept, daemon=True).start()
        yield int(listener.getsockname()[1])
    finally:
        stopping.set()
        listener.close()
        transport.close()
