"""The simulated cloud's state: plain records that round-trip through JSON.

Instance status is never stored: it is derived from timestamps of simulated time
(launched, active from, terminate requested, preempted...) and the clock, so an
instance becomes ``active`` without anything running, a restarted simulator picks up
where it left off, and reads never write.

What is deliberately absent: the API key (its own 0600 file), Authorization headers and
user_data (only its size and SHA-256 are kept, so tests can check what was sent).
Each instance's Jupyter token is kept (the file is private): the API shows the same one
for the instance's whole life, across restarts.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Any, Mapping

from soong_core.models import InstanceState

STATE_VERSION = 1

DEFAULT_BOOT_SECONDS = 60.0
DEFAULT_TERMINATE_SECONDS = 10.0
DEFAULT_ENDED_VISIBLE_SECONDS = 300.0
TERMINATE_ENDED_RETURN = "return"
TERMINATE_ENDED_404 = "404"
TERMINATE_ENDED_CHOICES = (TERMINATE_ENDED_RETURN, TERMINATE_ENDED_404)


class StateError(ValueError):
    """The state file's content is not a state this simulator can read."""


@dataclass
class InstanceRecord:
    id: str
    type_name: str
    region: str
    launched_at: float
    """Simulated time of the launch: billing starts here."""
    active_at: float
    """Simulated time the (latest) boot ends; a restart moves it."""
    ip: str
    private_ip: str
    ssh_key_names: list[str] = field(default_factory=list)
    file_system_names: list[str] = field(default_factory=list)
    file_system_mounts: list[dict[str, str]] = field(default_factory=list)
    name: str | None = None
    hostname: str | None = None
    image: dict[str, str] | None = None
    tags: list[dict[str, str]] = field(default_factory=list)
    firewall_rulesets: list[str] = field(default_factory=list)
    user_data_bytes: int | None = None
    user_data_sha256: str | None = None
    terminate_requested_at: float | None = None
    terminated_at: float | None = None
    """When ``terminating`` turns into ``terminated`` (set with the request)."""
    preempted_at: float | None = None
    unhealthy_since: float | None = None
    seeded: bool = False
    restarts: int = 0
    first_active_at: float | None = None
    """When the first boot ended (a restart moves ``active_at``, not this); ``None`` in a
    state written before it was kept: ``active_at`` stands in."""
    jupyter_token: str | None = None
    """The JupyterLab token the API shows once the instance is active (``None`` in a
    state written before the simulator had one: then no Jupyter fields are shown)."""
    ssh_port: int = 22
    """The port its sshd listens on, as ``POST /_sim/instances/{id}/network`` set it (a
    test's sshd on 127.0.0.1); 22, as on a real instance, otherwise."""

    def status(self, now: float) -> InstanceState:
        """The API status at simulated time ``now``."""
        if self.preempted_at is not None and now >= self.preempted_at:
            return InstanceState.PREEMPTED
        if self.terminate_requested_at is not None:
            if self.terminated_at is None or now < self.terminated_at:
                return InstanceState.TERMINATING
            return InstanceState.TERMINATED
        if now < self.active_at:
            return InstanceState.BOOTING
        if self.unhealthy_since is not None and now >= self.unhealthy_since:
            return InstanceState.UNHEALTHY
        return InstanceState.ACTIVE

    def ended_at(self) -> float | None:
        """When the instance stopped existing for the account (terminated or preempted)."""
        ends = [t for t in (self.terminated_at, self.preempted_at) if t is not None]
        return min(ends) if ends else None

    def mounted_between(self, now: float) -> tuple[float, float] | None:
        """The simulated interval up to ``now`` in which this instance had its
        filesystems mounted: from its first boot's end until terminate was requested
        or it was preempted. ``None`` if it never became active."""
        start = self.first_active_at if self.first_active_at is not None else self.active_at
        end = min(t for t in (self.billing_end(), now) if t is not None)
        return (start, end) if end > start else None

    def billing_end(self) -> float | None:
        """When billing stopped: the terminate request (``terminating`` is not billed,
        as ``InstanceState.billing`` says) or the preemption."""
        ends = [t for t in (self.terminate_requested_at, self.preempted_at) if t is not None]
        return min(ends) if ends else None

    def holds_capacity(self, now: float) -> bool:
        """Until it is terminated or preempted, an instance occupies a slot."""
        return not self.status(now).ended

    def visible(self, now: float, ended_visible_seconds: float) -> bool:
        """Listed by the API: alive, or ended less than ``ended_visible_seconds`` ago."""
        ended = self.ended_at()
        return ended is None or now < ended or now - ended < ended_visible_seconds


@dataclass
class SshKeyRecord:
    id: str
    name: str
    public_key: str
    created_at: float


@dataclass
class FilesystemRecord:
    id: str
    name: str
    region: str
    created_at: float
    bytes_used: int = 0


@dataclass
class FirewallRulesetRecord:
    id: str
    name: str
    region: str
    created_at: float
    rules: list[dict[str, Any]] = field(default_factory=list)


@dataclass
class AuditEventRecord:
    """One entry of the account's audit log (the spec's ``AuditEvent``, rendered by
    :func:`~.views.audit_event`)."""

    id: str
    time: float
    """Simulated time the action happened."""
    resource_name: str
    action: str
    resource_ids: list[str] = field(default_factory=list)
    details: dict[str, Any] = field(default_factory=dict)
    owner: str | None = None
    """The account id (``resource_owner_lrn``), when known."""
    service_name: str = "cloud"

    @property
    def resource_type(self) -> str:
        """What ``GET /audit-events?resource_type=`` matches: ``cloud.instance``."""
        return f"{self.service_name}.{self.resource_name}"


DEFAULT_FIREWALL_RULES: list[dict[str, Any]] = [
    {"protocol": "tcp", "port_range": [22, 22], "source_network": "0.0.0.0/0",
     "description": "Allow SSH from anywhere"},
    {"protocol": "icmp", "source_network": "0.0.0.0/0", "description": "Allow ICMP"},
]


@dataclass
class Settings:
    """Properties of the simulated cloud that survive a restart (set by flags of
    ``soong sim up`` or the control endpoint)."""

    boot_seconds: float = DEFAULT_BOOT_SECONDS
    terminate_seconds: float = DEFAULT_TERMINATE_SECONDS
    ended_visible_seconds: float = DEFAULT_ENDED_VISIBLE_SECONDS
    default_capacity: int | None = None
    """Slots per offered (type, region); ``None``: the catalogue's default."""
    capacity: dict[str, int] = field(default_factory=dict)
    """Overrides by ``"type:region"``: total slots there (running instances count)."""
    quota_instances: int | None = None
    """At most this many live instances, or launch answers ``global/quota-exceeded``."""
    account_active: bool = True
    """False: every API call answers 403 ``global/account-inactive``."""
    filesystem_growth_bytes_per_hour: int = 0
    """How fast a filesystem's ``bytes_used`` grows per simulated hour while an active
    instance mounts it (0: it stays as it is)."""
    terminate_ended: str = TERMINATE_ENDED_RETURN
    """A terminate naming an ended, still listed instance: ``"return"`` it unchanged,
    or ``"404"`` the whole call (DESIGN, "Batch terminate")."""


@dataclass
class CloudState:
    version: int = STATE_VERSION
    clock: dict[str, Any] | None = None
    """``AcceleratedClock.to_config()``: the anchors every process derives time from."""
    settings: Settings = field(default_factory=Settings)
    instances: dict[str, InstanceRecord] = field(default_factory=dict)
    ssh_keys: dict[str, SshKeyRecord] = field(default_factory=dict)
    filesystems: dict[str, FilesystemRecord] = field(default_factory=dict)
    firewall_rulesets: dict[str, FirewallRulesetRecord] = field(default_factory=dict)
    firewall_rules: list[dict[str, Any]] = field(
        default_factory=lambda: [dict(rule) for rule in DEFAULT_FIREWALL_RULES])
    global_rules: list[dict[str, Any]] = field(default_factory=list)
    next_address: int = 1
    """Counter for instance IPs, so an address is never handed out twice."""
    audit_events: list[AuditEventRecord] = field(default_factory=list)
    """The audit log, oldest first."""

    def latest_time(self) -> float | None:
        """The latest simulated time recorded anywhere in this cloud (a launch, a boot's
        end, a scheduled termination, a key's creation), or ``None`` for an empty one."""
        times: list[float] = []
        for instance in self.instances.values():
            times += [t for t in (instance.launched_at, instance.active_at,
                                  instance.terminate_requested_at, instance.terminated_at,
                                  instance.preempted_at, instance.unhealthy_since)
                      if t is not None]
        for records in (self.ssh_keys, self.filesystems, self.firewall_rulesets):
            times += [record.created_at for record in records.values()]
        return max(times, default=None)

    def to_json(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_json(cls, data: Any) -> CloudState:
        """Rebuild from :meth:`to_json` output; anything malformed is a StateError."""
        if not isinstance(data, Mapping):
            raise StateError("the state is not a JSON object")
        version = data.get("version")
        if version != STATE_VERSION:
            raise StateError(f"state version {version!r}, this simulator reads "
                             f"{STATE_VERSION}")
        try:
            return cls(
                version=STATE_VERSION,
                clock=_optional_mapping(data.get("clock")),
                settings=_record(Settings, data.get("settings", {})),
                instances=_records(InstanceRecord, data.get("instances", {})),
                ssh_keys=_records(SshKeyRecord, data.get("ssh_keys", {})),
                filesystems=_records(FilesystemRecord, data.get("filesystems", {})),
                firewall_rulesets=_records(FirewallRulesetRecord,
                                           data.get("firewall_rulesets", {})),
                firewall_rules=_list(data.get("firewall_rules", DEFAULT_FIREWALL_RULES)),
                global_rules=_list(data.get("global_rules", [])),
                next_address=int(data.get("next_address", 1)),
                audit_events=[_record(AuditEventRecord, item)
                              for item in _list(data.get("audit_events", []))],
            )
        except (TypeError, ValueError, KeyError) as exc:
            raise StateError(f"malformed state: {exc}") from None


def _optional_mapping(value: Any) -> dict[str, Any] | None:
    if value is None:
        return None
    if not isinstance(value, Mapping):
        raise StateError("clock is not an object")
    return dict(value)


def _list(value: Any) -> list[Any]:
    if not isinstance(value, list):
        raise StateError(f"expected a list, found {type(value).__name__}")
    return [dict(item) if isinstance(item, Mapping) else item for item in value]


def _record(kind: type[Any], value: Any) -> Any:
    if not isinstance(value, Mapping):
        raise StateError(f"{kind.__name__} is not an object")
    names = {f.name for f in dataclasses.fields(kind)}
    record = kind(**{k: v for k, v in value.items() if k in names})
    for f in dataclasses.fields(kind):  # a list where a name belongs is corruption
        if not _has_type(getattr(record, f.name), str(f.type)):
            raise StateError(f"{kind.__name__}.{f.name} is not a {f.type}")
    return record


_TYPES: dict[str, tuple[type, ...]] = {
    "str": (str,), "float": (int, float), "int": (int,), "bool": (bool,), "list": (list,),
    "dict": (dict,),
}


def _has_type(value: Any, annotation: str) -> bool:
    """Checks a value against its field's annotation string (``str | None``, ``list[...]``)."""
    options = [part.strip() for part in annotation.split("|")]
    if value is None:
        return "None" in options
    for option in options:
        accepted = _TYPES.get(option.split("[", 1)[0])
        if accepted is None:
            return True  # a type this check does not know: trust it
        if isinstance(value, accepted) and not (isinstance(value, bool) and bool not in accepted):
            return True
    return False


def _records(kind: type[Any], value: Any) -> dict[str, Any]:
    if not isinstance(value, Mapping):
        raise StateError(f"{kind.__name__} collection is not an object")
    records = {str(key): _record(kind, item) for key, item in value.items()}
    for key, record in records.items():
        if record.id != key:
            raise StateError(f"{kind.__name__} {key!r} has id {record.id!r}")
    return records
