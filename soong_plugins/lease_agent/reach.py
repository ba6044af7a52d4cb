"""How the laptop reaches an instance's agent, which listens on 127.0.0.1 there.

:func:`agent_url` gives the agent's base URL for a ``with`` block, choosing by what the
provider reports, never by guessing from an address:

* ``Instance.extra["agent_url"]`` (the simulator runs agents on this machine and says
  where each answers): that URL, directly — the ``direct`` tunnel backend;
* else a managed tunnel of the instance (``soong tunnel start``) that forwards the
  agent's port: its local port;
* else a short forward over SSH (the ``fabric`` backend's, :mod:`soong_plugins.
  fabric_tunnel.short`) for the block, trusting the host key on first use as
  ``soong ssh`` does.

:func:`agent_client` adds the instance's token (:mod:`.tokens`) and gives an
:class:`~.client.AgentClient`.
"""

from __future__ import annotations

import contextlib
from typing import Any, Callable, Iterator, Mapping, Sequence

from soong_core.errors import SoongError, UnsupportedError
from soong_core.interfaces import TunnelBackend
from soong_core.models import Instance, PortForward, Tunnel

DEFAULT_PORT = 8765


def agent_port(config: Mapping[str, Any]) -> int:
    port = (config.get("agent") or {}).get("port")
    return port if isinstance(port, int) and not isinstance(port, bool) else DEFAULT_PORT


def direct_url(instance: Instance) -> str | None:
    """The agent URL the provider reports for ``instance`` (http to a loopback address
    only: the simulator's agents run on this machine), else None."""
    from urllib.parse import urlsplit

    url = instance.extra.get("agent_url")
    if not isinstance(url, str) or not url:
        return None
    parts = urlsplit(url)
    if parts.scheme != "http" or parts.hostname not in ("127.0.0.1", "localhost", "::1") \
            or parts.port is None:
        raise SoongError(f"{instance.id}: the provider reports its agent at {url!r}, which "
                         "soong does not reach directly (only http on this machine)")
    return url.rstrip("/")


def open_url(instance: Instance, config: Mapping[str, Any]) -> str | None:
    """Where ``instance``'s agent answers without a new SSH connection: the URL its
    provider reports, or the local end of a running ``soong tunnel`` forwarding the
    agent's port; None when only a new SSH connection would reach it."""
    direct = direct_url(instance)
    if direct is not None:
        return direct
    from soong_plugins.fabric_tunnel import tunnels

    port = agent_port(config)
    state = tunnels.read_state(tunnels.state_path(instance.id))
    if state is not None and state.alive and state.document.get("state") == "up":
        for forward in state.forwards:
            if forward.get("role") == "agent" and forward.get("remote") == port \
                    and isinstance(forward.get("local"), int):
                return f"http://127.0.0.1:{forward['local']}"
    return None


@contextlib.contextmanager
def agent_url(instance: Instance, config: Mapping[str, Any], *,
              on_trust: Callable[[str], None] | None = None) -> Iterator[str]:
    """The base URL of ``instance``'s agent, for the block (see the module docstring).
    ``on_trust(fingerprint)`` hears a host key trusted on first use."""
    existing = open_url(instance, config)
    if existing is not None:
        yield existing
        return
    port = agent_port(config)
    from soong_plugins.fabric_tunnel.connect import check_login
    from soong_plugins.fabric_tunnel.hostkeys import HostKeys
    from soong_plugins.fabric_tunnel.settings import target_for
    from soong_plugins.fabric_tunnel.short import forwarded

    target = target_for(instance, config.get("ssh") or {})
    if not HostKeys(target.known_hosts).lookup(instance.id):
        new = check_login(target)
        if new is not None and on_trust is not None:
            on_trust(new)
    with forwarded(target, port) as local:
        yield f"http://127.0.0.1:{local}"


@contextlib.contextmanager
def agent_client(instance: Instance, config: Mapping[str, Any], *,
                 on_trust: Callable[[str], None] | None = None,
                 timeout: float | None = None) -> Iterator[Any]:
    """An :class:`~.client.AgentClient` for ``instance``'s agent, for the block."""
    from soong_plugins.lease_agent.client import TIMEOUT_S, AgentClient
    from soong_plugins.lease_agent.tokens import read_token

    token = read_token(instance.id)
    if not token:
        raise missing_token(instance)
    with agent_url(instance, config, on_trust=on_trust) as url:
        yield AgentClient(url, token, instance_id=instance.id,
                          timeout=TIMEOUT_S if timeout is None else timeout)


def missing_token(instance: Instance) -> SoongError:
    return SoongError(f"soong keeps no agent token for {instance.id}: it was launched "
                      "elsewhere, or by a soong that did not deploy the agent",
                      hints=["soong cannot tell whether its limits are enforced: install its "
                             f"agent from here with `soong agent install {instance.id}` (a "
                             "token kept elsewhere then stops working), or stop it with "
                             f"`soong stop {instance.id}` when you are done"])


class DirectTunnels(TunnelBackend):
    """The ``direct`` backend: an instance whose provider reports where its agent
    answers on this machine (the simulator's) is reached there, without SSH. It carries
    nothing else: a port forward is the ``fabric`` backend's."""

    name = "direct"

    def __init__(self, config: Mapping[str, Any]) -> None:
        self.config = config

    def open(self, instance: Instance, forwards: Sequence[PortForward]) -> Tunnel:
        url = direct_url(instance)
        if url is None:
            raise UnsupportedError(f"{instance.id} reports no direct agent URL: reach it "
                                   "with the fabric backend")
        wanted = [f for f in forwards if f.remote_port != agent_port(self.config)]
        if wanted:
            raise UnsupportedError(f"the direct backend reaches only the agent, not port "
                                   f"{wanted[0].remote_port}: use the fabric backend")
        return Tunnel(instance.id, self.name, (), extra={"agent_url": url})

    def close(self, tunnel: Tunnel) -> None:
        return None  # nothing was opened

    def list(self) -> list[Tunnel]:
        return []
