"""Start-up options of a simulator, parsed from text the same way by ``soong sim up``
and by the background process it starts, so a bad value is refused (one line) before
anything is started."""

from __future__ import annotations

from dataclasses import dataclass, field

from soong_core.numbers import parse_number
from soong_plugins.lambda_labs.simulator import catalogue
from soong_plugins.lambda_labs.simulator.ratelimit import BODIES, MODES


@dataclass
class StartOptions:
    port: int = 0
    speed: float | None = None
    boot_seconds: float | None = None
    terminate_seconds: float | None = None
    terminate_ended: str | None = None
    """One of :data:`~.state.TERMINATE_ENDED_CHOICES`; ``None``: as stored."""
    rate_limit: str = "edge"
    """One of :data:`~.ratelimit.MODES`."""
    rate_limit_body: str = "text"
    """One of :data:`~.ratelimit.BODIES`: what a 429 carries."""
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
        if self.terminate_ended is not None:
            args += ["--terminate-ended", self.terminate_ended]
        args += ["--rate-limit", self.rate_limit, "--rate-limit-body", self.rate_limit_body]
        for type_name, region, slots in self.capacity:
            args += ["--capacity", f"{type_name}:{region}={slots}"]
        if self.reset:
            args.append("--reset")
        if self.capture_path:
            args += ["--capture", self.capture_path]
        return args


def parse_port(text: str) -> int:
    return int(parse_number(text, "--port", integer=True, minimum=0, maximum=65535))


def parse_seconds(text: str, flag: str) -> float:
    return float(parse_number(text, flag, unit="seconds", minimum=0))


def parse_speed(text: str) -> float:
    from soong_plugins.lambda_labs.simulator.app import SPEED_MAX, SPEED_MIN

    return float(parse_number(text, "--speed", minimum=SPEED_MIN, maximum=SPEED_MAX,
                              note="simulated seconds per wall second"))


def parse_terminate_ended(text: str) -> str:
    """``--terminate-ended``: what a terminate naming an instance the API still lists as
    ended answers: ``return`` (it comes back unchanged, as DESIGN's "Batch terminate"
    has it) or ``404`` (the whole call fails)."""
    from soong_plugins.lambda_labs.simulator.state import TERMINATE_ENDED_CHOICES

    if text not in TERMINATE_ENDED_CHOICES:
        raise ValueError(f"--terminate-ended must be one of {', '.join(TERMINATE_ENDED_CHOICES)}"
                         f", got {text!r}")
    return text


def parse_rate_limit(text: str) -> str:
    """``--rate-limit``: ``edge`` (a burst of 3 around 1/s, as Lambda's edge counts),
    ``strict`` (1/s, no burst) or ``off``."""
    if text not in MODES:
        raise ValueError(f"--rate-limit must be one of {', '.join(MODES)}, got {text!r}")
    return text


def parse_rate_limit_body(text: str) -> str:
    """``--rate-limit-body``: ``text`` (Cloudflare's ``error code: 1015``) or ``json``."""
    if text not in BODIES:
        raise ValueError(f"--rate-limit-body must be one of {', '.join(BODIES)}, got {text!r}")
    return text


def parse_capacity(text: str) -> tuple[str, str, int]:
    """``TYPE:REGION=N``; ``*`` for TYPE or REGION means all (regions offering the type)."""
    spec, sep, count = text.partition("=")
    type_name, colon, region = spec.partition(":")
    if not sep or not colon or not type_name or not region:
        raise ValueError(f"--capacity must look like TYPE:REGION=N (e.g. gpu_1x_a10:us-east-1=0 "
                         f"or '*:*=5'), got {text!r}")
    slots = int(parse_number(count, f"--capacity {text!r}: N", integer=True, minimum=0))
    if type_name != "*" and type_name not in catalogue.TYPES_BY_NAME:
        raise ValueError(f"--capacity {text!r}: unknown instance type {type_name!r}")
    if region != "*" and region not in catalogue.REGIONS:
        raise ValueError(f"--capacity {text!r}: unknown region {region!r} (known: "
                         f"{', '.join(catalogue.REGIONS)})")
    return type_name, region, slots
