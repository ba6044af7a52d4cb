"""The data soong passes around: instances, types, launch requests, decisions, events.

Pure standard library, no I/O: the lease agent bundles this module, so it must run on
an instance's bare ``python3``. Times are POSIX timestamps (float seconds, UTC) as read
from a :mod:`soong_core.clock` clock; money is :class:`~decimal.Decimal` dollars, and
provider prices are integer cents per hour exactly as the provider states them.
"""

from __future__ import annotations

import enum
import re
from dataclasses import dataclass, field, replace
from datetime import datetime, timezone
from decimal import Decimal
from typing import Any, Callable, Mapping

Timestamp = float
"""Seconds since the epoch, UTC, as a clock returns them."""

HOUR = 3_600
"""Seconds in an hour: the one constant every lease, deadline and price per hour uses.
An ``int``, so that it multiplies a :class:`~decimal.Decimal` exactly as well as a float."""

# -- tags -------------------------------------------------------------------------
# Launch facts live in tags (DESIGN, "Decisions"): tags cannot change after launch,
# so everything the CLI and the agent must agree on is written here once.

TAG_PREFIX = "soong:"
TAG_LAUNCH_ID = "soong:launch-id"
TAG_LAUNCHED_AT = "soong:launched-at"
TAG_LEASE_DEADLINE = "soong:lease-deadline"
TAG_HARD_DEADLINE = "soong:hard-deadline"
TAG_MODEL = "soong:model"
CORE_TAGS = frozenset({TAG_LAUNCH_ID, TAG_LAUNCHED_AT, TAG_LEASE_DEADLINE, TAG_HARD_DEADLINE,
                       TAG_MODEL})
"""The tags soong itself writes at launch; no plugin may set them."""

TAG_KEY_PATTERN = re.compile(r"^[a-z][a-z0-9-:]+$")
TAG_KEY_MAX = 55
TAG_VALUE_MAX = 128
"""soong's tag rule (DESIGN, "Launch facts live in tags"): what every provider soong
launches on accepts, so a tag a plugin contributes is refused here, naming the plugin,
rather than by the provider after the launch was sent. A provider's own request checks
(and the simulator's, written from its API description) may only be stricter."""


def validate_tag(key: str, value: str) -> None:
    """Raise ``ValueError`` naming the problem if ``key``/``value`` is not a valid tag."""
    if len(key) > TAG_KEY_MAX or not TAG_KEY_PATTERN.match(key):
        raise ValueError(f"tag key {key!r} is not allowed: it must match "
                         f"{TAG_KEY_PATTERN.pattern} and be at most {TAG_KEY_MAX} characters")
    if len(value) > TAG_VALUE_MAX:
        raise ValueError(f"tag {key!r}: value is {len(value)} characters, at most {TAG_VALUE_MAX}")


def format_timestamp(ts: Timestamp) -> str:
    """ISO 8601 in UTC with a ``Z``, second precision: the form stored in tags."""
    return datetime.fromtimestamp(ts, tz=timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")


def parse_timestamp(text: str) -> Timestamp:
    """Parse :func:`format_timestamp` output (or any ISO 8601 with offset); naive means UTC."""
    value = datetime.fromisoformat(text.strip().replace("Z", "+00:00"))
    if value.tzinfo is None:
        value = value.replace(tzinfo=timezone.utc)
    return value.timestamp()


# -- states and reasons -------------------------------------------------------------


class InstanceState(str, enum.Enum):
    """Every provider's states mapped onto one set (DESIGN, "Instance states")."""

    BOOTING = "booting"
    ACTIVE = "active"
    UNHEALTHY = "unhealthy"
    TERMINATING = "terminating"
    TERMINATED = "terminated"
    PREEMPTED = "preempted"

    @property
    def billing(self) -> bool:
        """True while the provider charges for the instance."""
        return self in (InstanceState.BOOTING, InstanceState.ACTIVE, InstanceState.UNHEALTHY)

    @property
    def ended(self) -> bool:
        return self in (InstanceState.TERMINATED, InstanceState.PREEMPTED)


class Reason(str, enum.Enum):
    """Stable termination reasons, written to history and shown to users."""

    IDLE_TIMEOUT = "idle_timeout"
    LEASE_EXPIRED = "lease_expired"
    HARD_TIMEOUT = "hard_timeout"
    WATCHDOG = "watchdog"
    MANUAL = "manual"
    PREEMPTED = "preempted"
    EXTERNAL = "external"
    """Ended by someone or something outside soong (the web console, another tool, an
    idle stop nobody reported): soong saw it billing, then saw it gone."""


# -- limits ---------------------------------------------------------------------------

LIMIT_LEASE = "lease"
LIMIT_IDLE = "idle"
LIMIT_HARD = "hard"
LIMITS: tuple[str, ...] = (LIMIT_LEASE, LIMIT_IDLE, LIMIT_HARD)
"""The limits something on an instance can enforce (DESIGN, "Who enforces what is
declared"): a launch contribution declares which of them it enforces."""

LIMIT_OF_REASON: Mapping[str, str] = {
    "lease_expired": LIMIT_LEASE,
    "idle_timeout": LIMIT_IDLE,
    "hard_timeout": LIMIT_HARD,
}
"""The limit behind each built-in termination reason."""


class Action(str, enum.Enum):
    """What a cost policy wants done with an instance now."""

    KEEP = "keep"
    WARN = "warn"
    TERMINATE = "terminate"

    @property
    def severity(self) -> int:
        return _SEVERITY[self]


_SEVERITY = {Action.KEEP: 0, Action.WARN: 1, Action.TERMINATE: 2}


class ActivityState(str, enum.Enum):
    """What one activity source saw at its latest look (agent side).

    ``active``: somebody uses the machine now; ``idle``: the source works and sees
    nobody; ``unavailable``: it cannot tell (no GPU tool, no utmp file, an endpoint that
    never answered); ``unhealthy``: it could tell before and now keeps failing. Only
    ``active`` is activity: a source that cannot look never keeps an instance alive.
    """

    ACTIVE = "active"
    IDLE = "idle"
    UNAVAILABLE = "unavailable"
    UNHEALTHY = "unhealthy"


@dataclass(frozen=True)
class ActivitySample:
    """One look of an activity source: its ``state``, one line of ``detail`` saying why
    (shown in the agent's ``/status``), and ``health``: JSON-serialisable facts worth
    showing (GPU memory and temperature, a serving engine's model), never secrets.

    ``last_activity`` is the latest moment (agent clock) the source saw use, when it
    knows one; a sampling source leaves it ``None`` and says ``active``, which the agent
    reads as "in use at the moment of this look". The agent counts it only with
    ``active`` and never later than the look itself.
    """

    state: ActivityState
    detail: str = ""
    health: Mapping[str, Any] = field(default_factory=dict)
    last_activity: Timestamp | None = None

    @property
    def is_activity(self) -> bool:
        return self.state is ActivityState.ACTIVE


class EventKind(str, enum.Enum):
    LAUNCH_INTENT = "launch_intent"
    """Written before the provider is asked to launch; ``instance_id`` is the launch id
    (the instance has no id yet). A ``launch`` or ``launch_failed`` event with the same
    ``detail["launch_id"]`` completes it (DESIGN, "Launch intent first")."""
    LAUNCH = "launch"
    LAUNCH_FAILED = "launch_failed"
    """A launch intent that produced no instance: the provider refused it, or no
    instance carrying its launch id turned up."""
    EXTEND = "extend"
    WARNING = "warning"
    TERMINATE = "terminate"


# -- catalogue ----------------------------------------------------------------------


@dataclass(frozen=True)
class Region:
    name: str
    description: str = ""


@dataclass(frozen=True)
class InstanceType:
    """A machine shape a provider sells, with where it can be launched right now."""

    name: str
    price_cents_per_hour: int
    description: str = ""
    gpu_description: str = ""
    gpus: int = 0
    vcpus: int = 0
    memory_gib: int = 0
    storage_gib: int = 0
    regions_with_capacity: tuple[str, ...] = ()
    capacity_known: bool = True
    """False when the provider could not say where there is capacity (its catalogue is a
    cached or bundled price list): ``regions_with_capacity`` is then empty for want of an
    answer, not of machines, and ``start`` leaves the question to the launch."""

    @property
    def price_per_hour(self) -> Decimal:
        return Decimal(self.price_cents_per_hour) / 100

    @property
    def available(self) -> bool:
        return bool(self.regions_with_capacity)


# -- instances ----------------------------------------------------------------------


@dataclass(frozen=True)
class Instance:
    """One instance as its provider reports it. Anything provider-specific goes in ``extra``.

    Optional fields are ``None`` when the provider has not said (no IP while booting, no
    name, no tags): nothing may assume they are present.
    """

    id: str
    state: InstanceState
    provider: str = ""
    name: str | None = None
    ip: str | None = None
    type_name: str | None = None
    region: str | None = None
    price_cents_per_hour: int | None = None
    hostname: str | None = None
    ssh_key_names: tuple[str, ...] = ()
    filesystem_names: tuple[str, ...] = ()
    tags: Mapping[str, str] = field(default_factory=dict)
    extra: Mapping[str, Any] = field(default_factory=dict)

    @property
    def managed(self) -> bool:
        """Launched by soong: only such instances are ever touched automatically."""
        return TAG_LAUNCH_ID in self.tags and self.launched_at is not None

    @property
    def launch_id(self) -> str | None:
        return self.tags.get(TAG_LAUNCH_ID)

    @property
    def launched_at(self) -> Timestamp | None:
        return self._tag_time(TAG_LAUNCHED_AT)

    @property
    def initial_lease_deadline(self) -> Timestamp | None:
        """The lease deadline set at launch; extensions live in the agent and history."""
        return self._tag_time(TAG_LEASE_DEADLINE)

    @property
    def hard_deadline(self) -> Timestamp | None:
        return self._tag_time(TAG_HARD_DEADLINE)

    @property
    def model(self) -> str | None:
        return self.tags.get(TAG_MODEL)

    @property
    def price_per_hour(self) -> Decimal | None:
        if self.price_cents_per_hour is None:
            return None
        return Decimal(self.price_cents_per_hour) / 100

    def _tag_time(self, key: str) -> Timestamp | None:
        text = self.tags.get(key)
        if not text:
            return None
        try:
            return parse_timestamp(text)
        except ValueError:
            return None


# -- user_data ------------------------------------------------------------------------
# Every contribution's part travels in one cloud-init multipart MIME document (DESIGN,
# "The agent travels light"): cloud-init runs its shell parts in filename order.

AGENT_PLUGIN = "lease_agent"
"""The plugin whose part (the lease agent's installer) goes first: ``00-soong-agent.sh``."""
USER_PART = "user"
"""The name of the user's own part (``soong start --user-data FILE``): it goes last."""
PART_TYPES: tuple[tuple[str, str, str], ...] = (
    ("#!", "text/x-shellscript", ".sh"),
    ("#cloud-config", "text/cloud-config", ".cfg"),
)
"""(first line starts with, MIME type, filename suffix) of the parts soong sends."""


def part_type(text: str) -> tuple[str, str]:
    """(MIME type, filename suffix) of a user_data part, by its first line: ``#!`` is a
    script, ``#cloud-config`` a cloud-config file; ``ValueError`` for anything else."""
    first = text.split("\n", 1)[0].rstrip("\r")
    for start, mime, suffix in PART_TYPES:
        if first.startswith(start) and (start == "#!" or first.strip() == start):
            return mime, suffix
    shown = first if len(first) <= 40 else first[:37] + "..."
    raise ValueError(f"a user_data part must start with '#!' (a script) or '#cloud-config', "
                     f"not {shown!r}")


def _part_label(name: str) -> str:
    if name == AGENT_PLUGIN:
        return "soong-agent"
    label = re.sub(r"[^a-z0-9]+", "-", name.lower()).strip("-")
    return label or "part"


def join_user_data(parts: list[tuple[str, str]]) -> str:
    """``(name, text)`` parts as a ``multipart/mixed`` document: the lease agent's part
    first, the user's (:data:`USER_PART`) last, the others in their order between, each
    an attachment named ``NN-<name>.sh`` (``.cfg`` for cloud-config). The text travels
    as it is (8bit, never base64 again: the agent's part is mostly base64 already)."""
    import hashlib

    ordered = sorted(parts, key=lambda p: 0 if p[0] == AGENT_PLUGIN else
                     2 if p[0] == USER_PART else 1)
    digest = hashlib.sha256("\0".join(text for _, text in ordered).encode("utf-8",
                                                                         "surrogatepass"))
    boundary = f"==soong-{digest.hexdigest()[:32]}=="
    while any(boundary in text for _, text in ordered):
        boundary = f"=={boundary}"
    lines = [f'Content-Type: multipart/mixed; boundary="{boundary}"', "MIME-Version: 1.0", ""]
    for number, (name, text) in enumerate(ordered):
        mime, suffix = part_type(text)
        lines += [f"--{boundary}", f'Content-Type: {mime}; charset="utf-8"',
                  "MIME-Version: 1.0", "Content-Transfer-Encoding: 8bit",
                  f'Content-Disposition: attachment; filename="{number:02d}-'
                  f'{_part_label(name)}{suffix}"', "", text]
    lines += [f"--{boundary}--", ""]
    return "\n".join(lines)


@dataclass(frozen=True)
class LaunchRequest:
    """What to launch. Plugins add tags and user_data parts through ``soong_prepare_launch``.

    ``regions`` is in order of preference: a provider tries the next one when the
    previous has no capacity.
    """

    type_name: str
    regions: tuple[str, ...]
    ssh_key_names: tuple[str, ...] = ()
    name: str | None = None
    hostname: str | None = None
    image: str | None = None
    filesystem_names: tuple[str, ...] = ()
    firewall_rulesets: tuple[str, ...] = ()
    tags: Mapping[str, str] = field(default_factory=dict)
    user_data_parts: tuple[str, ...] = ()
    user_data_names: tuple[str, ...] = ()
    """Who contributed each part (a plugin's name, or :data:`USER_PART` for the user's
    own file), in step with ``user_data_parts``; a part without a name is ``"part"``."""
    lease_hours: float = 4.0
    hard_timeout_hours: float = 8.0
    model: str | None = None

    @property
    def user_data(self) -> str | None:
        """The parts as one multipart MIME document (:func:`join_user_data`), or ``None``
        when nobody contributed any. ``ValueError`` for a part of no known type."""
        if not self.user_data_parts:
            return None
        names = self.user_data_names + ("part",) * (len(self.user_data_parts)
                                                    - len(self.user_data_names))
        return join_user_data(list(zip(names, self.user_data_parts)))

    def with_contribution(self, contribution: LaunchContribution, plugin: str) -> LaunchRequest:
        """Merge one plugin's contribution; a tag key set twice is an error naming both."""
        tags = dict(self.tags)
        for key, value in contribution.tags.items():
            validate_tag(key, value)
            if key in tags and tags[key] != value:
                raise ValueError(f"plugin {plugin!r} sets tag {key!r}, which is already set")
            tags[key] = value
        for part in contribution.user_data_parts:
            part_type(part)  # refused now, naming the plugin, not when the request is sent
        names = self.user_data_names + ("part",) * (len(self.user_data_parts)
                                                    - len(self.user_data_names))
        return replace(
            self,
            tags=tags,
            user_data_parts=self.user_data_parts + tuple(contribution.user_data_parts),
            user_data_names=names + (plugin,) * len(contribution.user_data_parts),
        )


@dataclass(frozen=True)
class LaunchContribution:
    """A plugin's additions to a launch request, returned from ``soong_prepare_launch``.

    ``enforces`` names the limits (:data:`LIMITS`: ``"lease"``, ``"idle"``, ``"hard"``)
    that what this contribution installs enforces on the instance itself; the start
    panel and ``status`` show them, and history keeps them with the launch.

    The hook runs while the launch is planned, before anything is shown or confirmed,
    so it must have no side effects. What only exists at launch (a secret generated
    for this instance, the launch id and deadlines in the tags) comes from ``finish``:
    called once at launch, after the user confirmed and the launch intent was
    recorded, with the request as it will be sent (soong's tags included); it returns
    the tags and user_data parts to add (its own ``enforces`` and ``finish`` are
    ignored) or None. An exception there aborts the launch before the provider call.
    """

    tags: Mapping[str, str] = field(default_factory=dict)
    user_data_parts: tuple[str, ...] = ()
    enforces: tuple[str, ...] = ()
    finish: Callable[[LaunchRequest], LaunchContribution | None] | None = None
    ready: Callable[[Instance, Callable[[str], None]], None] | None = None
    """Called once the launched instance is active (``start``, before it says the
    instance is ready; :meth:`~soong_core.api.Soong.wait_for_contributions`), with the
    instance and a callback naming the phase: returns once what this contribution
    installed is up, raises SoongError saying what is not enforced when it is not."""

    def __post_init__(self) -> None:
        object.__setattr__(self, "enforces", tuple(dict.fromkeys(self.enforces)))
        object.__setattr__(self, "user_data_parts", tuple(self.user_data_parts))
        unknown = [limit for limit in self.enforces if limit not in LIMITS]
        if unknown:
            raise ValueError(f"unknown limit {unknown[0]!r} in enforces "
                             f"(known: {', '.join(LIMITS)})")


@dataclass(frozen=True)
class InstanceView:
    """What a cost policy sees of one instance: its limits and its activity.

    The CLI builds it from tags, history and the agent's report; the agent from its
    own state file. Both then run the same policies on it.
    """

    instance_id: str
    launched_at: Timestamp
    lease_deadline: Timestamp
    hard_deadline: Timestamp
    last_activity_at: Timestamp | None = None
    idle_timeout_s: float | None = 30 * 60
    idle_grace_s: float = 10 * 60
    warn_before_s: float = 10 * 60
    price_cents_per_hour: int | None = None
    settings: Mapping[str, Any] = field(default_factory=dict)
    """Per-instance settings from config (third-party policies read theirs here)."""


@dataclass(frozen=True)
class Decision:
    """A policy's verdict at a moment: what to do, why, and when to look again.

    ``deadline`` is when this policy would stop the instance (``None``: never);
    ``next_check`` is the earliest time the verdict can change, so the agent sleeps
    until then instead of polling.
    """

    action: Action
    reasons: tuple[str, ...] = ()
    deadline: Timestamp | None = None
    next_check: Timestamp | None = None
    message: str = ""

    @classmethod
    def keep(cls, deadline: Timestamp | None = None, reason: str | None = None,
             next_check: Timestamp | None = None, message: str = "") -> Decision:
        reasons = (reason,) if reason else ()
        return cls(Action.KEEP, reasons, deadline, next_check, message)


@dataclass(frozen=True)
class Event:
    """One line of history: a launch, an extension, a warning or a termination."""

    kind: EventKind
    instance_id: str
    at: Timestamp
    provider: str = ""
    reason: str | None = None
    inferred: bool = False
    type_name: str | None = None
    region: str | None = None
    cost: Decimal | None = None
    detail: Mapping[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class Ended:
    """Why and when an instance ended, as history recorded it (its latest termination)."""

    reason: str | None
    """The termination reason (:class:`Reason` values, or a plugin's own)."""
    inferred: bool = False
    """Deduced by reconciliation because soong did not see the instance end."""
    at: Timestamp | None = None
    """When it ended; ``None`` only where nothing recorded it (a reporter that knows
    no more than the provider's "ended" state)."""
    cost_min: Decimal | None = None
    """The lower bound of its cost when soong did not see it end (the status's
    ``cost_so_far`` is then the upper bound); ``None`` when the cost is exact."""


@dataclass(frozen=True)
class ReportedView:
    """What something running on the instance (its lease agent) reports of the
    instance's limits and use, through the ``view`` key of a ``soong_status_details``
    mapping. ``status`` judges the policies on it rather than on the tags and history
    alone: there the idle timeout can be judged, since activity is seen on the instance.
    """

    source: str
    """The plugin that reported it."""
    lease_deadline: Timestamp | None = None
    """The lease deadline enforced there (extensions included); ``None``: not said."""
    idle_known: bool = False
    """Whether the instance's activity is known: ``last_activity_at`` and
    ``idle_timeout_s`` are then the instance's own (``None`` activity: none since launch;
    ``None`` timeout: no idle stop)."""
    last_activity_at: Timestamp | None = None
    idle_timeout_s: float | None = None


@dataclass(frozen=True)
class InstanceStatus:
    """An instance plus everything soong knows about it, ready for a reporter."""

    instance: Instance
    decision: Decision | None = None
    cost_so_far: Decimal | None = None
    estimated_total: Decimal | None = None
    details: Mapping[str, Any] = field(default_factory=dict)
    """Contributions of ``soong_status_details``, keyed by plugin name: plugins'
    details only (what history adds is :attr:`ended`)."""
    view: InstanceView | None = None
    """What the policies judged (current lease deadline, extensions included)."""
    as_of: Timestamp | None = None
    """When this status was computed (the clock's "now")."""
    enforcement: Mapping[str, tuple[str, ...]] | None = None
    """What enforces each limit (:data:`LIMITS`) on the instance, by plugin name, as
    its launch declared; an empty tuple: nothing does. ``None`` when this history has
    no launch of it (launched elsewhere, or not by soong)."""
    ended: Ended | None = None
    """What history recorded of the instance's end, for one the provider lists as ended
    or one only history still knows (``status --stopped``); ``None`` otherwise. The
    JSON output shows it as ``details.history`` too (see ``docs/json.md``)."""
    reported: ReportedView | None = None
    """What the instance itself reported (its lease agent), which :attr:`view` was
    built from; ``None`` when nothing on it was asked or answered."""


@dataclass(frozen=True)
class SshKey:
    name: str
    id: str = ""
    public_key: str = ""
    private_key: str | None = None
    """Only set when the provider generated the pair; shown once, never stored by soong."""


def same_public_key(a: str, b: str) -> bool:
    """Whether two OpenSSH public key lines (``ssh-ed25519 AAAA... comment``) hold the
    same key: type and key data compared, the comment (and spacing) ignored, since a
    provider may store a key with another comment than the file it came from."""
    return a.split()[:2] == b.split()[:2]


@dataclass(frozen=True)
class Filesystem:
    name: str
    region: str
    id: str = ""
    mount_point: str | None = None
    in_use: bool = False
    bytes_used: int | None = None


@dataclass(frozen=True)
class Image:
    id: str
    name: str
    region: str | None = None
    description: str = ""


@dataclass(frozen=True)
class Admission:
    """A launch or an extension about to happen, as cost policies see it in ``admit``."""

    kind: str
    """``"launch"`` or ``"extend"``."""
    now: Timestamp
    cost: Decimal
    """What this request commits: the launch up to its lease deadline, or the extension."""
    committed: Decimal = Decimal(0)
    """Spend already committed in the budget period, before this request."""
    period: str = "none"
    hours: float = 0.0
    type_name: str | None = None
    instance_id: str | None = None
    price_cents_per_hour: int | None = None
    """The instance's price, so a refusal can say how many hours would still fit."""
    committed_by_period: Mapping[str, Decimal] = field(default_factory=dict)
    """Committed spend per budget period (``day``, ``week``, ``month``, ``none``) where
    known, so a policy capping another period than ``period`` (a third-party daily cap
    next to the built-in monthly one) finds its own number."""

    def committed_for(self, period: str) -> Decimal | None:
        """Committed spend in ``period``; ``None`` when the caller did not compute it."""
        if period in self.committed_by_period:
            return self.committed_by_period[period]
        if period == self.period:
            return self.committed
        return None


@dataclass(frozen=True)
class PortForward:
    local_port: int
    remote_port: int
    remote_host: str = "127.0.0.1"


@dataclass(frozen=True)
class Tunnel:
    instance_id: str
    backend: str
    forwards: tuple[PortForward, ...] = ()
    pid: int | None = None
    extra: Mapping[str, Any] = field(default_factory=dict)
