"""The ``json`` reporter: ``soong status --json``, a stable schema for scripts.

The schema is documented field by field in ``docs/json.md`` and machine-checked by
``docs/status.schema.json``. Its rules, which keep scripts from breaking:

* every key is always present (``null`` when unknown), so a script never needs
  ``.get``;
* money is a string of dollars with two decimals (``"5.16"``), never a float, so it
  parses exactly with any decimal library;
* times are ISO 8601 in UTC (``"2027-01-15T08:00:00Z"``), durations whole seconds;
* ``schema_version`` changes only when a key is removed or its meaning changes;
  adding keys is not a breaking change.
"""

from __future__ import annotations

import json
import math
from decimal import Decimal
from typing import TYPE_CHECKING, Any, Mapping, Sequence, TextIO

from soong_core.clock import Clock, clock_from_config
from soong_core.costs import round_cents
from soong_core.display import Facts, facts_of
from soong_core.interfaces import StatusReporter
from soong_core.models import LIMITS, Timestamp, format_timestamp

if TYPE_CHECKING:
    from soong_core.models import Ended, InstanceStatus

SCHEMA_VERSION = 1
HISTORY_DETAIL = "history"
"""The key of ``details`` that shows what history recorded of an ended instance's end
(:attr:`~soong_core.models.InstanceStatus.ended`), kept for scripts that read it there:
``{reason, inferred, ended_at, cost_min}``."""


def money(amount: Decimal | None) -> str | None:
    """``Decimal("5.155")`` -> ``"5.16"``: dollars rounded half up to cents, as text."""
    return None if amount is None else str(round_cents(amount))


def when(ts: Timestamp | None) -> str | None:
    return None if ts is None else format_timestamp(ts)


def seconds(value: float | None) -> int | None:
    """Whole seconds, truncated toward zero (a countdown never claims time it lacks)."""
    return None if value is None else int(value)


def instance_document(fact: Facts) -> dict[str, Any]:
    """One element of ``instances``: the keys documented in ``docs/json.md``."""
    status = fact.status
    instance = status.instance
    decision = status.decision
    next_stop = None
    if decision is not None and fact.billing:
        next_stop = {
            "at": when(fact.next_stop_at),
            "in_s": seconds(fact.next_stop_in_s),
            "reasons": list(decision.reasons),
            "action": decision.action.value,
            "message": decision.message,
            "enforced_by": None if fact.enforced_by is None else list(fact.enforced_by),
        }
    ended = None
    if fact.ended is not None:
        ended = {"at": when(fact.ended.at), "reason": fact.ended.reason,
                 "inferred": fact.ended.inferred, "cost_min": money(fact.ended.cost_min)}
    enforcement = None
    if status.enforcement is not None:
        enforcement = {limit: list(status.enforcement.get(limit, ())) for limit in LIMITS}
    return {
        "id": instance.id,
        "name": instance.name,
        "state": instance.state.value,
        "ip": instance.ip,
        "type": instance.type_name,
        "region": instance.region,
        "model": instance.model,
        "managed": fact.managed,
        "launched_at": when(fact.launched_at),
        "uptime_s": seconds(fact.uptime_s),
        "lease_deadline": when(fact.lease_deadline),
        "hard_deadline": when(fact.hard_deadline),
        "time_left_s": seconds(fact.time_left_s),
        "idle_s": seconds(fact.idle_s),
        "cost_so_far": money(status.cost_so_far),
        "estimated_total": money(status.estimated_total),
        "price_per_hour": money(instance.price_per_hour),
        "overdue": fact.overdue,
        "next_stop": next_stop,
        "ended": ended,
        "enforcement": enforcement,
        "details": _jsonable(details_of(status)),
    }


def details_of(status: InstanceStatus) -> dict[str, Any]:
    """``details``: the plugins' details and, for an ended instance, ``history``
    derived from the typed :attr:`~soong_core.models.InstanceStatus.ended` (soong's own
    key wins over a plugin that took the name)."""
    details = dict(status.details)
    if status.ended is not None:
        details[HISTORY_DETAIL] = history_detail(status.ended)
    return details


def history_detail(ended: Ended) -> dict[str, Any]:
    """``details.history``: ``ended_at`` a POSIX timestamp, ``cost_min`` decimal text."""
    return {"reason": ended.reason, "inferred": ended.inferred, "ended_at": ended.at,
            "cost_min": None if ended.cost_min is None else str(ended.cost_min)}


def status_document(statuses: Sequence[InstanceStatus], now: Timestamp) -> dict[str, Any]:
    """The whole ``status --json`` object at ``now``."""
    return {
        "schema_version": SCHEMA_VERSION,
        "generated_at": format_timestamp(now),
        "instances": [instance_document(facts_of(s, now)) for s in statuses],
    }


def _jsonable(value: Any) -> Any:
    """Plugin details made JSON-safe: Decimals as strings (money never goes through a
    float), tuples as lists, NaN and infinities as ``null`` (not JSON), anything
    else as its ``str``."""
    if isinstance(value, Mapping):
        return {str(k): _jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_jsonable(v) for v in value]
    if isinstance(value, Decimal):
        return str(value)
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if value is None or isinstance(value, (str, int, bool)):
        return value
    return str(value)


def dumps(document: Mapping[str, Any]) -> str:
    """How soong prints JSON: indented, keys in schema order, ending with a newline."""
    return json.dumps(document, indent=2, allow_nan=False) + "\n"


class JsonReporter(StatusReporter):
    """Writes :func:`status_document` as JSON; ``clock`` as for the table reporter."""

    name = "json"

    def __init__(self, config: Mapping[str, Any] | None = None, *,
                 clock: Clock | None = None) -> None:
        self.clock = clock if clock is not None else clock_from_config(
            (config or {}).get("clock"))

    def render(self, statuses: Sequence[InstanceStatus], out: TextIO) -> None:
        out.write(dumps(status_document(statuses, self.clock.now())))
