"""The ``table`` reporter: what ``soong status`` prints for a person.

One row per instance: short id, name, state, IP, GPU, uptime, time left on the lease,
cost so far, estimated total, and when and why it will stop. Colours carry meaning
(red: billing past a limit or unhealthy; yellow: booting or about to stop; green:
active; magenta: preempted; dim: over), and the same words are always there for
plain output (``NO_COLOR``, a pipe, ``--no-ansi``), which has no escape codes at all.

rich is imported inside :meth:`TableReporter.render`: importing the plugin stays cheap.
"""

from __future__ import annotations

import io
from typing import TYPE_CHECKING, Any, Mapping, Sequence, TextIO

from soong_core.clock import Clock, clock_from_config
from soong_core.costs import UNKNOWN, format_money, format_money_range
from soong_core.interfaces import StatusReporter
from soong_core.models import Action, InstanceState
from soong_core.policy import format_duration
from soong_core.text import printable
from soong_plugins.reporters.facts import (
    EMPTY_MESSAGE,
    Facts,
    facts_of,
    short_ids,
    wants_ansi,
)

if TYPE_CHECKING:
    from soong_core.models import InstanceStatus

COLUMNS = ("ID", "NAME", "STATE", "IP", "GPU", "UPTIME", "LEFT", "COST", "EST. TOTAL",
           "NEXT STOP")
TABLE_WIDTH = 1000
"""The console width rich is given: more than any row needs, so no cell is ever cut."""

STATE_STYLES: Mapping[InstanceState, str] = {
    InstanceState.BOOTING: "yellow",
    InstanceState.ACTIVE: "green",
    InstanceState.UNHEALTHY: "bold red",
    InstanceState.TERMINATING: "dim",
    InstanceState.TERMINATED: "dim",
    InstanceState.PREEMPTED: "magenta",
}
STILL_BILLING = "still billing"
UNMANAGED = "unmanaged"
NOT_ENFORCED = "(not enforced: stop it yourself)"


class TableReporter(StatusReporter):
    """Renders statuses as a table; ``clock`` gives "now" for uptime and countdowns
    (default: the config's ``clock`` section, the same clock ``Soong`` uses)."""

    name = "table"

    def __init__(self, config: Mapping[str, Any] | None = None, *,
                 clock: Clock | None = None) -> None:
        self.clock = clock if clock is not None else clock_from_config(
            (config or {}).get("clock"))

    def render(self, statuses: Sequence[InstanceStatus], out: TextIO) -> None:
        if not statuses:
            out.write(EMPTY_MESSAGE + "\n")
            return
        from rich import box
        from rich.console import Console
        from rich.table import Table
        from rich.text import Text

        ansi = wants_ansi(out)
        buffer = io.StringIO()
        # Never narrower than the table: rich would cut ids and costs to "fake-0…",
        # which loses the very facts a user reads the table for. A long line wraps in
        # the terminal instead, and piped output keeps one instance per line.
        console = Console(file=buffer, force_terminal=ansi, no_color=not ansi,
                          color_system="standard" if ansi else None, width=TABLE_WIDTH,
                          highlight=False, emoji=False, markup=False, soft_wrap=False)
        table = Table(box=box.SIMPLE_HEAD if ansi else None, show_edge=False,
                      header_style="bold" if ansi else None, pad_edge=False)
        for column in COLUMNS:
            numeric = column in ("UPTIME", "LEFT", "COST", "EST. TOTAL")
            table.add_column(column, justify="right" if numeric else "left", no_wrap=True)
        now = self.clock.now()
        facts = [facts_of(status, now) for status in statuses]
        shorts = short_ids([f.status.instance.id for f in facts])
        for fact in facts:
            cells = row_cells(fact, shorts[fact.status.instance.id])
            state = fact.status.instance.state
            styled = [Text(cell) for cell in cells]
            if not fact.overdue:  # an overdue row is red throughout, its state too
                styled[2].stylize(STATE_STYLES.get(state, ""))
            stop_style = _stop_style(fact)
            if stop_style:
                styled[9].stylize(stop_style)
            table.add_row(*styled, style=_row_style(fact))
        console.print(table)
        lines = buffer.getvalue().splitlines()
        if not ansi:
            lines = [line.rstrip() for line in lines]
        while lines and not lines[-1].strip():
            lines.pop()
        out.write("\n".join(lines) + "\n")


def row_cells(fact: Facts, short_id: str) -> list[str]:
    """The ten cells of one row, as plain text: what came from the provider (a name, an
    id, an address) or from history with its control characters shown as escapes, so a
    name can neither break its row nor send the terminal a command."""
    instance = fact.status.instance
    name = instance.name or "-"
    cells = [
        short_id,
        name,
        instance.state.value,
        instance.ip or "-",
        instance.type_name or UNKNOWN,
        format_duration(fact.uptime_s) if fact.uptime_s is not None else UNKNOWN,
        _left(fact),
        _cost(fact),
        format_money(fact.status.estimated_total) if fact.managed or fact.ended else UNKNOWN,
        next_stop_text(fact),
    ]
    return [printable(cell) for cell in cells]


def _cost(fact: Facts) -> str:
    """Cost so far; for an ending soong did not see, the range it lies in."""
    low = fact.ended.cost_min if fact.ended is not None else None
    return format_money_range(low, fact.status.cost_so_far)


def _left(fact: Facts) -> str:
    if not fact.managed:
        return UNKNOWN
    if fact.time_left_s is None:
        return "-"
    return format_duration(fact.time_left_s) if fact.time_left_s > 0 else "expired"


def next_stop_text(fact: Facts) -> str:
    """``"1h45m: lease_expired"``, ``"still billing: lease_expired passed 12m ago"``,
    ``"ended: preempted"``, ``"unmanaged"``..."""
    status = fact.status
    state = status.instance.state
    if fact.ended is not None:
        reason = fact.ended.reason or state.value
        return f"ended: {reason}" + (" (inferred)" if fact.ended.inferred else "")
    if state is InstanceState.TERMINATING:
        return "stopping"
    if not fact.managed:
        return UNMANAGED
    decision = status.decision
    if decision is None:
        return "-"
    why = ", ".join(decision.reasons) or decision.action.value
    if fact.overdue:
        late = fact.next_stop_in_s
        when = f" passed {format_duration(-late)} ago" if late is not None and late <= -1 else ""
        return f"{STILL_BILLING}: {why}{when}"
    if fact.next_stop_in_s is None:
        return "no limit"
    return f"{format_duration(fact.next_stop_in_s)}: {why}{enforcement_note(fact)}"


def enforcement_note(fact: Facts) -> str:
    """What follows the next stop: nothing when something on the instance enforces it,
    else a reminder that the stop happens only if somebody makes it happen."""
    if fact.enforced_by is None:
        return " (enforcement unknown)" if fact.status.enforcement is None else ""
    return "" if fact.enforced_by else f" {NOT_ENFORCED}"


def _row_style(fact: Facts) -> str:
    state = fact.status.instance.state
    if fact.overdue:
        return "red"
    if state in (InstanceState.TERMINATING, InstanceState.TERMINATED):
        return "dim"
    return ""


def _stop_style(fact: Facts) -> str:
    decision = fact.status.decision
    if fact.overdue:
        return "bold red"
    if not fact.managed and fact.ended is None:
        return "dim"
    if decision is not None and decision.action is Action.WARN and fact.billing:
        return "yellow"
    return ""
