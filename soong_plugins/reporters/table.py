"""The ``table`` reporter: what ``soong status`` prints for a person.

One row per instance: short id, name, state, IP, GPU, uptime, time left on the lease,
idle time (as the instance's agent reports it), cost so far, estimated total, and when
and why it will stop; under the table, the lines plugins add per instance (their
details' ``notes``: an agent not asked or unreachable, its warnings). Colours carry meaning
(red: billing past a limit or unhealthy; yellow: booting or about to stop; green:
active; magenta: preempted; dim: over), and the same words are always there for
plain output (``NO_COLOR``, a pipe, ``--no-ansi``), which has no escape codes at all.

The layout is the core's (:func:`soong_core.tables.render_table`): a rich ``Table`` up to
200 rows, the same columns and words as padded text beyond. rich is imported when a
table is rendered: importing the plugin stays cheap.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Mapping, Sequence, TextIO

from soong_core.clock import Clock, clock_from_config
from soong_core.costs import UNKNOWN, format_money, format_money_range
from soong_core.display import EMPTY_MESSAGE, Facts, facts_of, format_duration, wants_ansi
from soong_core.interfaces import StatusReporter
from soong_core.models import Action, InstanceState
from soong_core.select import short_ids
from soong_core.tables import Column, Row, render_table
from soong_core.text import printable

if TYPE_CHECKING:
    from soong_core.models import InstanceStatus

COLUMNS = ("ID", "NAME", "STATE", "IP", "GPU", "UPTIME", "LEFT", "IDLE", "COST",
           "EST. TOTAL", "NEXT STOP")
NUMERIC = frozenset({"UPTIME", "LEFT", "IDLE", "COST", "EST. TOTAL"})
"""The right-justified columns."""
TABLE_COLUMNS = tuple(Column(name, right=name in NUMERIC) for name in COLUMNS)
NEXT_STOP_CELL = COLUMNS.index("NEXT STOP")
NOTES_DETAIL = "notes"
"""The key of a plugin's status details whose lines the table shows under the table."""

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
        now = self.clock.now()
        facts = [facts_of(status, now) for status in statuses]
        shorts = short_ids([f.status.instance.id for f in facts])
        rows = [table_row(fact, shorts[fact.status.instance.id]) for fact in facts]
        out.write(render_table(TABLE_COLUMNS, rows, ansi=wants_ansi(out), header_rule=True))
        for fact in facts:
            for line in note_lines(fact.status, shorts[fact.status.instance.id]):
                out.write(line + "\n")


def note_lines(status: InstanceStatus, short_id: str) -> list[str]:
    """The lines plugins add under the table for one instance (the ``notes`` list of
    their status details: the lease agent's "not asked", "unreachable", warnings...),
    each led by the instance's short id and name, its text escaped as the cells' is."""
    who = short_id + (f" {status.instance.name}" if status.instance.name else "")
    lines = []
    for found in status.details.values():
        notes = found.get(NOTES_DETAIL) if isinstance(found, Mapping) else None
        if isinstance(notes, (list, tuple)):
            lines += [printable(f"{who}: {note}") for note in notes if isinstance(note, str)]
    return lines


def table_row(fact: Facts, short_id: str) -> Row:
    """One instance's row: its cells and colours (an overdue row is red throughout, its
    state too; the next stop is coloured by how urgent it is)."""
    cell_styles: dict[int, str] = {}
    if not fact.overdue:
        cell_styles[2] = STATE_STYLES.get(fact.status.instance.state, "")
    stop_style = _stop_style(fact)
    if stop_style:
        cell_styles[NEXT_STOP_CELL] = stop_style
    return Row(row_cells(fact, short_id), style=_row_style(fact), cell_styles=cell_styles)


def row_cells(fact: Facts, short_id: str) -> list[str]:
    """The eleven cells of one row, as plain text: what came from the provider (a name, an
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
        _idle(fact),
        _cost(fact),
        format_money(fact.status.estimated_total) if fact.managed or fact.ended else UNKNOWN,
        next_stop_text(fact),
    ]
    return [printable(cell) for cell in cells]


def _idle(fact: Facts) -> str:
    """How long unused, as the instance reports it; unknown while billing without a
    report (the laptop cannot see activity), ``-`` once it is not billing."""
    if fact.idle_s is not None:
        return format_duration(fact.idle_s)
    return UNKNOWN if fact.billing else "-"


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
