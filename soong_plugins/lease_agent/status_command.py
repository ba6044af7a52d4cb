"""``soong agent status [INSTANCE] [--json]``: what the instance's own agent says."""

from __future__ import annotations

from typing import Any, ClassVar

from cleo.helpers import argument, option
from cleo.io.inputs.argument import Argument
from cleo.io.inputs.option import Option

from soong_core.cli.command import SoongCommand


class AgentStatusCommand(SoongCommand):
    name = "agent status"
    description = "Ask an instance's lease agent what it enforces: next stop, idle, health."
    help = ("With no INSTANCE, the single running instance. The agent is reached where "
            "the provider says it answers (the simulator's), through a running "
            "<comment>soong tunnel</comment>, or over a short SSH forward, with the "
            "instance's token. <comment>--json</comment> prints the agent's GET /status "
            "answer as it is, with <comment>instance_id</comment> added.")
    needs_credential = True
    arguments: ClassVar[list[Argument]] = [
        argument("instance", description="The instance (id, unique prefix or name).",
                 optional=True),
    ]
    options: ClassVar[list[Option]] = [
        option("json", description="Print the agent's answer as JSON."),
    ]

    def handle(self) -> int:
        import json

        from cleo.io.outputs.output import Type

        from soong_core.select import select_instance
        from soong_core.text import cleo_literal
        from soong_plugins.lease_agent.reach import agent_client

        soong = self.soong
        instance = select_instance(soong.instances(), self.argument("instance"),
                                   ended=soong.ended_instances)

        def trusted(fingerprint: str) -> None:
            self.line_error(cleo_literal(f"trusting the host key of {instance.id} on first "
                                         f"use: {fingerprint}"))

        with agent_client(instance, soong.config, on_trust=trusted) as client:
            answer = client.status()
        if self.option("json"):
            self.io.write(json.dumps({"instance_id": instance.id, **answer}, indent=2,
                                     allow_nan=False) + "\n", type=Type.RAW)
            return 0
        for line in describe(instance.id, answer):
            self.line(cleo_literal(line))
        return 0


def describe(instance_id: str, answer: dict[str, Any]) -> list[str]:
    """The agent's status in a few lines (what a user checks: when it stops and why)."""
    from soong_core.display import format_duration
    from soong_core.models import format_timestamp

    def when(value: Any) -> str:
        return format_timestamp(value) if isinstance(value, (int, float)) else "unknown"

    now = answer.get("now") if isinstance(answer.get("now"), (int, float)) else None
    lines = [f"agent of {instance_id}: version {answer.get('version', '?')}, "
             f"action {answer.get('action', '?')}"]
    stop = answer.get("next_stop")
    if isinstance(stop, dict) and isinstance(stop.get("at"), (int, float)):
        left = f" (in {format_duration(stop['at'] - now)})" if now is not None else ""
        lines.append(f"  next stop: {when(stop['at'])}{left}: {stop.get('reason') or '?'}")
    else:
        lines.append("  next stop: none")
    lines.append(f"  lease until {when(answer.get('lease_deadline'))}; hard limit "
                 f"{when(answer.get('hard_deadline'))}")
    idle = answer.get("idle") if isinstance(answer.get("idle"), dict) else {}
    if idle:
        timeout = idle.get("timeout_seconds")
        limit = (f"stops after {format_duration(timeout)} idle"
                 if isinstance(timeout, (int, float)) else "no idle timeout")
        seconds = idle.get("seconds")
        idle_for = format_duration(seconds) if isinstance(seconds, (int, float)) else "?"
        source = idle.get("last_activity_source")
        lines.append(f"  idle for {idle_for} ({limit}"
                     + (f"; last activity: {source}" if source else "") + ")")
    sources = (answer.get("activity") or {}).get("sources") \
        if isinstance(answer.get("activity"), dict) else None
    if isinstance(sources, dict) and sources:
        looks = ", ".join(f"{name} {report.get('state') or 'not looked at yet'}"
                          if isinstance(report, dict) else name
                          for name, report in sorted(sources.items()))
        lines.append(f"  activity sources: {looks}")
    for warning in answer.get("warnings") or []:
        text = warning.get("message") if isinstance(warning, dict) else warning
        lines.append(f"  warning: {text}")
    if answer.get("terminating"):
        lines.append("  terminating the instance now")
    return lines
