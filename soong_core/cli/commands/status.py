"""``soong status``: every instance, what it costs, and when and why it will stop.

The command is thin: the embedding API computes statuses (``Soong.status()``, which
first reconciles history with the provider: :mod:`soong_core.reconcile`), and a
reporter plugin renders (``table``, or ``json`` with ``--json``). ``--history`` shows
the recorded events instead. Imports beyond cleo happen inside :meth:`handle`.
"""

from __future__ import annotations

import io
from typing import TYPE_CHECKING, Any, ClassVar, Sequence

from cleo.helpers import option
from cleo.io.inputs.option import Option
from cleo.io.outputs.output import Type

from soong_core.cli.command import SoongCommand
from soong_core.errors import UsageError

if TYPE_CHECKING:
    from decimal import Decimal

    from soong_core.api import Soong
    from soong_core.models import Event, Instance, InstanceStatus, Timestamp

DEFAULT_HOURS = 24.0
HISTORY_SCHEMA_VERSION = 1
HISTORY_HEADERS = ("TIME", "KIND", "INSTANCE", "REASON", "COST")
"""The columns of ``status --history``; the cost is right-justified."""


class AnsiBuffer(io.StringIO):
    """Where a reporter renders: it collects the text, and its ``ansi`` attribute
    carries cleo's decision on styling (``--ansi``, ``--no-ansi``, ``NO_COLOR``, a
    terminal or not), which reporters honour (see ``docs/hooks/reporters.md``)."""

    def __init__(self, ansi: bool) -> None:
        super().__init__()
        self.ansi = ansi


class StatusCommand(SoongCommand):
    name = "status"
    needs_credential = True
    description = ("List instances: state, cost so far, estimated total, the next limit and "
                   "what enforces it.")
    help = ("Shows every instance the provider reports: state, IP, GPU, uptime, time left "
            "on the lease, cost so far, estimated total, and the next limit with its reason, "
            "marked when nothing on the instance enforces it. History is brought up to date "
            "first: a lost launch is adopted by its launch id, and an instance soong launched "
            "that ended unseen is recorded with what can be told of it (marked inferred).\n\n"
            "--json prints the stable schema of docs/json.md and nothing else on stdout.")
    options: ClassVar[list[Option]] = [
        option("instance-id", "i", "Show one instance: its id, a unique id prefix or its name.",
               flag=False),
        option("json", None, "Print JSON (schema: docs/json.md) instead of a table."),
        option("history", None, "Show recorded events (launches, extensions, terminations "
               "and their reasons) instead of instances."),
        option("hours", None, f"With --history or --stopped: how many hours back to look "
               f"(default {DEFAULT_HOURS:g}).", flag=False),
        option("stopped", None, "Also list instances that ended within --hours, with why."),
    ]

    def handle(self) -> int:
        show_history = bool(self.option("history"))
        stopped = bool(self.option("stopped"))
        hours = self._hours(show_history or stopped)
        if show_history and stopped:
            raise UsageError("--history and --stopped cannot be combined",
                             hints=[("--history lists events; --stopped adds ended instances "
                                     "to the instance table")])
        ref = self.option("instance-id")

        soong = self.soong  # first: with no key anywhere it fails before loading anything
        from soong_core.models import HOUR

        since = soong.clock.now() - hours * HOUR
        if show_history:
            return self._history(soong, since, ref)
        return self._instances(soong, since if stopped else None, ref)

    # -- instances ---------------------------------------------------------------

    def _instances(self, soong: Soong, since: Timestamp | None, ref: str | None) -> int:
        from soong_core.select import select_instance

        statuses: list[InstanceStatus] = list(soong.status(ended_since=since))
        self.note_reconciled()
        if ref is not None:
            chosen = select_instance([s.instance for s in statuses], ref)
            statuses = [s for s in statuses if s.instance.id == chosen.id]
        reporter = self.plugins.reporters().create("json" if self.option("json") else "table",
                                                   soong.config)
        buffer = AnsiBuffer(self.io.output.is_decorated() and not self.option("json"))
        reporter.render(statuses, buffer)
        self.io.write(buffer.getvalue(), type=Type.RAW)
        return 0

    # -- history -----------------------------------------------------------------

    def _history(self, soong: Soong, since: Timestamp, ref: str | None) -> int:
        from soong_core.models import EventKind

        instances = soong.instances()
        self.note_reconciled()
        events = soong.history.events(since=since)
        if ref is not None:
            from soong_core.select import select_instance

            chosen = select_instance(_history_candidates(instances, events), ref)
            launch_ids = {e.detail.get("launch_id") for e in events
                          if e.instance_id == chosen.id and e.kind is EventKind.LAUNCH}
            events = [e for e in events if e.instance_id == chosen.id
                      or (e.kind is EventKind.LAUNCH_INTENT and e.instance_id in launch_ids)]
        now = soong.clock.now()
        if self.option("json"):
            from soong_core.models import format_timestamp

            document = {"schema_version": HISTORY_SCHEMA_VERSION,
                        "generated_at": format_timestamp(now),
                        "since": format_timestamp(since),
                        "events": [event_document(e) for e in events]}
            import json

            self.io.write(json.dumps(document, indent=2, allow_nan=False) + "\n", type=Type.RAW)
            return 0
        if not events:
            from soong_core.display import format_duration

            self.line(f"no events in the last {format_duration(now - since)}")
            return 0
        # A completed intent says nothing its launch does not: the table shows those
        # still in doubt (the JSON keeps every event).
        open_ids = {e.instance_id for e in soong.history.open_intents()}
        self._history_table([e for e in events if e.kind is not EventKind.LAUNCH_INTENT
                             or e.instance_id in open_ids])
        return 0

    def _history_table(self, events: Sequence[Event]) -> None:
        from soong_core.models import format_timestamp
        from soong_core.select import short_ids
        from soong_core.tables import Column, Row, render_table

        shorts = short_ids([e.instance_id for e in events])
        rows = [Row((format_timestamp(e.at), e.kind.value, shorts[e.instance_id],
                     (e.reason or "-") + (" (inferred)" if e.inferred else ""), _cost_cell(e)))
                for e in events]
        columns = [Column(header, right=header == "COST") for header in HISTORY_HEADERS]
        text = render_table(columns, rows, ansi=self.io.output.is_decorated())
        self.io.write(text, type=Type.RAW)

    # -- options -----------------------------------------------------------------

    def _hours(self, used: bool) -> float:
        """``--hours`` as a positive number of hours; a usage error (exit 2) otherwise."""
        raw = self.option("hours")
        if raw is None:
            return DEFAULT_HOURS
        if not used:
            raise UsageError("--hours applies only with --history or --stopped",
                             hints=[("add --history to see events, or --stopped to list "
                                     "ended instances")])
        from soong_core.numbers import number_option

        return float(number_option(raw, "--hours", unit="hours", above=0))


def event_document(event: Event) -> dict[str, Any]:
    """One element of ``status --history --json``'s ``events`` (see ``docs/json.md``)."""
    from soong_core.models import format_timestamp
    from soong_core.reconcile import cost_min

    return {
        "at": format_timestamp(event.at),
        "kind": event.kind.value,
        "instance_id": event.instance_id,
        "provider": event.provider or None,
        "type": event.type_name,
        "region": event.region,
        "reason": event.reason,
        "inferred": event.inferred,
        "cost": _money(event.cost),
        "cost_min": _money(cost_min(event.detail)),
        "detail": dict(event.detail),
    }


def _cost_cell(event: Event) -> str:
    """An event's cost for the table: ``$0.50-$0.75`` when only a range is known."""
    from soong_core.costs import format_money_range
    from soong_core.reconcile import cost_min

    if event.cost is None:
        return "-"
    return format_money_range(cost_min(event.detail), event.cost)


def _money(amount: Decimal | None) -> str | None:
    """JSON money: dollars with two decimals as text, or None."""
    from soong_core.costs import round_cents

    return None if amount is None else str(round_cents(amount))


def _history_candidates(instances: Sequence[Instance], events: Sequence[Event]) -> list[Instance]:
    """What ``--history --instance-id`` may name: listed instances and those in the window."""
    from soong_core.models import Instance, InstanceState

    candidates = {i.id: i for i in instances}
    for event in events:
        if event.instance_id not in candidates:
            name = event.detail.get("name")
            preempted = event.reason == "preempted"
            candidates[event.instance_id] = Instance(
                event.instance_id,
                InstanceState.PREEMPTED if preempted else InstanceState.TERMINATED,
                provider=event.provider, name=name if isinstance(name, str) else None,
                type_name=event.type_name, region=event.region)
    return list(candidates.values())
