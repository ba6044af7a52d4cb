"""Injected faults: what a client of a real cloud must survive, on demand.

- ``error_rate``: that fraction of API requests answers ``error_status`` (5xx) in the
  API's error envelope *before* doing anything (nothing launched, nothing terminated);
- ``latency_seconds``: wall time added before every API answer;
- ``reset_rate``: that fraction of requests has its connection reset (TCP RST), nothing
  done and nothing answered;
- ``drop_launch_responses``: the next N launches *do* create their instance and then
  close the connection without a reply: the lost-response case that makes blind launch
  retries bill twice (DESIGN: tag, list, reconcile before any retry).

These knobs belong to one run of the simulator: a restart starts with none.
"""

from __future__ import annotations

import random
import threading
from dataclasses import asdict, dataclass, fields
from typing import Any, Mapping


@dataclass
class FaultSettings:
    error_rate: float = 0.0
    error_status: int = 503
    latency_seconds: float = 0.0
    reset_rate: float = 0.0
    drop_launch_responses: int = 0
    fault_seed: int | None = None
    """Seed for the random draws, so a test's faults repeat exactly."""


def _number(name: str, value: Any, low: float, high: float) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not low <= value <= high:
        raise ValueError(f"{name} must be a number from {low:g} to {high:g}, got {value!r}")
    return float(value)


def _integer(name: str, value: Any, low: int, high: int) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or not low <= value <= high:
        raise ValueError(f"{name} must be an integer from {low} to {high}, got {value!r}")
    return value


def check_fault_setting(name: str, value: Any) -> Any:
    """The value ``name`` may take, or ValueError naming the rule."""
    if name in ("error_rate", "reset_rate"):
        return _number(name, value, 0, 1)
    if name == "error_status":
        return _integer(name, value, 500, 599)
    if name == "latency_seconds":
        return _number(name, value, 0, 60)
    if name == "drop_launch_responses":
        return _integer(name, value, 0, 1_000_000)
    if name == "fault_seed":
        return None if value is None else _integer(name, value, 0, 2**63)
    raise ValueError(f"unknown fault setting {name!r}")


FAULT_NAMES = frozenset(f.name for f in fields(FaultSettings))


class FaultInjector:
    """Draws the faults for each request; thread-safe."""

    def __init__(self, settings: FaultSettings | None = None) -> None:
        self._settings = settings or FaultSettings()
        self._lock = threading.Lock()
        self._random = random.Random(self._settings.fault_seed)

    def settings(self) -> dict[str, Any]:
        with self._lock:
            return asdict(self._settings)

    def update(self, changes: Mapping[str, Any]) -> None:
        """Apply checked ``changes`` (see :func:`check_fault_setting`) all at once."""
        checked = {name: check_fault_setting(name, value) for name, value in changes.items()}
        with self._lock:
            for name, value in checked.items():
                setattr(self._settings, name, value)
            if "fault_seed" in checked:
                self._random = random.Random(checked["fault_seed"])

    def latency(self) -> float:
        with self._lock:
            return self._settings.latency_seconds

    def draw_reset(self) -> bool:
        with self._lock:
            rate = self._settings.reset_rate
            return rate > 0 and self._random.random() < rate

    def draw_error(self) -> int | None:
        """The status of an injected error for this request, or ``None``."""
        with self._lock:
            rate = self._settings.error_rate
            if rate > 0 and self._random.random() < rate:
                return self._settings.error_status
            return None

    def take_dropped_launch(self) -> bool:
        """True when this (successful) launch's reply is to be dropped; counts it."""
        with self._lock:
            if self._settings.drop_launch_responses > 0:
                self._settings.drop_launch_responses -= 1
                return True
            return False
