"""``soong start`` is ready only once the instance's agent answers.

An instance is active (the provider says so, sshd answers) a little before cloud-init
has run the agent's installer and systemd has started it. :func:`wait_for_agent` asks the
agent's ``GET /health`` (through :func:`.reach.agent_client`: the simulator's URL, or a
short SSH forward) until it answers or ``agent.ready_timeout_seconds`` pass; then it
says plainly that nothing on the instance enforces its limits, and what to do.
"""

from __future__ import annotations

import time
from typing import Any, Callable, Mapping

from soong_core.errors import SoongError
from soong_core.models import Instance

POLL_S = 2.0
DEFAULT_LIMIT_S = 600.0


def wait_for_agent(instance: Instance, config: Mapping[str, Any], *,
                   on_phase: Callable[[str], None] | None = None,
                   on_trust: Callable[[str], None] | None = None,
                   sleep: Callable[[float], None] = time.sleep,
                   monotonic: Callable[[], float] = time.monotonic) -> dict[str, Any]:
    """The agent's first health answer; SoongError (the instance named, billing, its
    limits not enforced) when none comes within the limit."""
    from soong_plugins.lease_agent.client import AgentError
    from soong_plugins.lease_agent.reach import agent_client, missing_token
    from soong_plugins.lease_agent.tokens import read_token

    if not read_token(instance.id):
        raise missing_token(instance)
    limit = (config.get("agent") or {}).get("ready_timeout_seconds")
    limit = float(limit) if isinstance(limit, (int, float)) and not isinstance(limit, bool) \
        else DEFAULT_LIMIT_S
    end = monotonic() + limit
    said = ""
    if on_phase is not None:
        on_phase(f"waiting for the lease agent of {instance.id}")
    while True:
        try:
            with agent_client(instance, config, on_trust=on_trust, timeout=5.0) as client:
                while True:
                    try:
                        return client.health()
                    except AgentError as exc:
                        if exc.status == 401:
                            raise
                        said = exc.message
                    if monotonic() > end:
                        break
                    sleep(POLL_S)
        except AgentError as exc:
            if exc.status == 401:
                raise _not_enforced(instance, limit, exc.message) from None
            said = exc.message
        except SoongError as exc:  # no SSH yet (the short forward), no address
            said = exc.message
        if monotonic() > end:
            raise _not_enforced(instance, limit, said)
        sleep(POLL_S)


def _not_enforced(instance: Instance, limit: float, said: str) -> SoongError:
    from soong_core.display import format_duration

    last = f" (last: {said})" if said else ""
    return SoongError(
        f"the lease agent of {instance.id} did not answer within {format_duration(limit)}"
        f"{last}: its lease, idle timeout and hard limit are NOT enforced on the instance, "
        "which bills until you stop it",
        hints=[f"install the agent again with `soong agent install {instance.id}`, or stop "
               f"the instance with `soong stop {instance.id}`; the agent's log on it: "
               f"`soong ssh {instance.id} -- sudo tail /var/log/soong/agent.log`"])
