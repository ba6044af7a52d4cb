"""Start-up options of a simulator, parsed from text the same way by ``soong sim up``
and by the background process it starts, so a bad value is refused (one line) before
anything is started."""

from __future__ import annotations

import math
from dataclasses import dataclass, field

from soong_plugins.lambda_labs.simulator import catalogue


@dataclass
class StartOptions:
    port: int = 0
    speed: float | None = None
    boot_seconds: float | None = None
    terminate_seconds: float | None = None
    rate_limit: bool = True
    capacity: list[tuple[str, str, int]] = field(default_factory=list)
    reset: bool = False
    capture_path: str | None = None

    def to_args(self) -> list[str]:
        """The same options as arguments of ``python -m soong_plugins.lambda_labs.simulator``."""
        args = ["--port", str(self.port)]
        if self.speed is not None:
            args += ["--speed", repr(self.speed)]
        if self.boot_seconds is not None:
            args += ["--boot-seconds", repr(self.boot_seconds)]
        if self.terminate_seconds is not None:
            args += ["--terminate-seconds", repr(self.terminate_seconds)]
        if not self.rate_limit:
            args.append("--no-rate-limit")
        for type_name, region, slots in self.capacity:
            args += ["--capacity", f"{type_name}:{region}={slots}"]
        if self.reset:
            args.append("--reset")
        if self.capture_path:
            args += ["--capture", self.capture_path]
        return args


def parse_port(text: str) -> int:
    try:
        port = int(text)
    except ValueError:
        raise ValueError(f"--port must be an integer from 0 to 65535, got {text!r}") from None
    if not 0 <= port <= 65535:
        raise ValueError(f"--port must be an integer from 0 to 65535, got {text!r}")
    return port


def parse_seconds(text: str, flag: str) -> float:
    try:
        value = float(text)
    except ValueError:
        value = math.nan
    if not math.isfinite(value) or value < 0:
        raise ValueError(f"{flag} must be a number of seconds >= 0, got {text!r}")
    return value


def parse_speed(text: str) -> float:
    from soong_plugins.lambda_labs.simulator.app import SPEED_MAX, SPEED_MIN

    try:
        value = float(text)
    except ValueError:
        value = math.nan
    if not math.isfinite(value) or not SPEED_MIN <= value <= SPEED_MAX:
        raise ValueError(f"--speed must be a number from {SPEED_MIN:g} to {SPEED_MAX:g} "
                         f"(simulated seconds per wall second), got {text!r}")
    return value


def parse_capacity(text: str) -> tuple[str, str, int]:
    """``TYPE:REGION=N``; ``*`` for TYPE or REGION means all (regions offering the type)."""
    spec, sep, count = text.partition("=")
    type_name, colon, region = spec.partition(":")
    if not sep or not colon or not type_name or not region:
        raise ValueError(f"--capacity must look like TYPE:REGION=N (e.g. gpu_1x_a10:us-east-1=0 "
                         f"or '*:*=5'), got {text!r}")
    try:
        slots = int(count)
    except ValueError:
        slots = -1
    if slots < 0:
        raise ValueError(f"--capacity {text!r}: N must be an integer >= 0")
    if type_name != "*" and type_name not in catalogue.TYPES_BY_NAME:
        raise ValueError(f"--capacity {text!r}: unknown instance type {type_name!r}")
    if region != "*" and region not in catalogue.REGIONS:
        raise ValueError(f"--capacity {text!r}: unknown region {region!r} (known: "
                         f"{', '.join(catalogue.REGIONS)})")
    return type_name, region, slots
