"""An extension goes through the instance's agent before soong records it.

The agent's ``POST /extend`` takes the hours and the deadline the laptop extends from
(``expected_deadline``); it refuses when its own deadline is another. That refusal is
how a retry never doubles: when the first attempt's answer was lost, the agent's
deadline is already the one asked for, and the retry counts it as done. Any other
refusal, or no answer, is one line, and the core records nothing.
"""

from __future__ import annotations

from typing import Any, Mapping

from soong_core.errors import SoongError
from soong_core.models import Instance

TOLERANCE_S = 0.01
"""Seconds within which two deadlines are the same (they travel as JSON floats)."""


def extend_through_agent(instance: Instance, hours: float, previous_deadline: float,
                         lease_deadline: float, config: Mapping[str, Any]) -> None:
    from soong_core.models import format_timestamp
    from soong_plugins.lease_agent.client import AgentError
    from soong_plugins.lease_agent.reach import agent_client

    nothing = "nothing was extended or recorded"
    try:
        with agent_client(instance, config) as client:
            answer = client.extend(hours, previous_deadline)
    except AgentError as exc:
        said = exc.fields.get("lease_deadline")
        if exc.code == "deadline_changed" and isinstance(said, (int, float)):
            if abs(float(said) - lease_deadline) <= TOLERANCE_S:
                return  # an earlier attempt took, its answer was lost: done once
            raise SoongError(
                f"the lease agent of {instance.id} has the lease ending at "
                f"{format_timestamp(float(said))}, not {format_timestamp(previous_deadline)} "
                f"as this machine's history says (extended from elsewhere?): {nothing}",
                hints=[f"see its view with `soong agent status {instance.id}`"]) from None
        if exc.code == "past_hard_deadline":
            most = exc.fields.get("max_hours")
            raise SoongError(f"{exc.message}: {nothing}",
                             hints=[f"extend by at most {most:g} h" if isinstance(
                                 most, (int, float)) else "see `soong agent status`"]) from None
        raise SoongError(f"{exc.message}: {nothing}, since the agent enforces the lease",
                         hints=exc.hints or [f"try again; `soong agent status {instance.id}` "
                                             "shows what the agent says"]) from None
    except SoongError as exc:  # no token, no way to reach it
        raise SoongError(f"{exc.message}: {nothing}, since the agent enforces the lease",
                         hints=exc.hints) from None
    moved = answer.get("lease_deadline")
    if not isinstance(moved, (int, float)) or abs(float(moved) - lease_deadline) > TOLERANCE_S:
        raise SoongError(f"the lease agent of {instance.id} answered the extension with "
                         f"lease_deadline {moved!r}, not {lease_deadline!r}: nothing was "
                         "recorded", hints=[f"see its view with `soong agent status "
                                            f"{instance.id}`"])
