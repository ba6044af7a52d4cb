"""What the simulated cloud charges: its type's price per simulated second, from launch
until the terminate request (``terminating`` is not billed) or the preemption.

Amounts are exact :class:`~decimal.Decimal` cents, reported as strings, so a test can
compare what soong estimated with what the cloud billed to the cent without float noise.
"""

from __future__ import annotations

from decimal import ROUND_HALF_UP, Decimal
from typing import Any, Iterable

from soong_core.models import HOUR
from soong_plugins.lambda_labs.simulator.catalogue import TYPES_BY_NAME
from soong_plugins.lambda_labs.simulator.state import InstanceRecord

CENT = Decimal("0.000001")


def billed_seconds(record: InstanceRecord, now: float) -> float:
    end = record.billing_end()
    stop = now if end is None else min(now, end)
    return max(0.0, stop - record.launched_at)


def cost_cents(record: InstanceRecord, now: float) -> Decimal:
    """Exact cost so far, in cents (not rounded)."""
    price = TYPES_BY_NAME[record.type_name].price_cents_per_hour
    return Decimal(price) * Decimal(repr(billed_seconds(record, now))) / HOUR


def instance_bill(record: InstanceRecord, now: float) -> dict[str, Any]:
    cents = cost_cents(record, now)
    end = record.billing_end()
    return {
        "id": record.id,
        "name": record.name,
        "instance_type": record.type_name,
        "region": record.region,
        "price_cents_per_hour": TYPES_BY_NAME[record.type_name].price_cents_per_hour,
        "launched_at": record.launched_at,
        "billing_ended_at": end if end is not None and end <= now else None,
        "billed_seconds": billed_seconds(record, now),
        "status": record.status(now).value,
        "cost_cents": str(cents.quantize(CENT, ROUND_HALF_UP)),
        "cost_dollars": str((cents / 100).quantize(CENT, ROUND_HALF_UP)),
    }


def report(records: Iterable[InstanceRecord], now: float) -> dict[str, Any]:
    """Every instance's bill and the total, at simulated time ``now``."""
    bills = []
    total = Decimal(0)
    for record in records:
        bills.append(instance_bill(record, now))
        total += cost_cents(record, now)
    return {
        "now": now,
        "instances": bills,
        "total_cents": str(total.quantize(CENT, ROUND_HALF_UP)),
        "total_dollars": str((total / 100).quantize(CENT, ROUND_HALF_UP)),
    }
