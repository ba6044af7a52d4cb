"""Records rendered as the spec's response objects (``Instance``, ``Filesystem``...).

Optional fields follow the spec's notes: no ``ip``/``hostname`` (nor ``jupyter_url``,
``jupyter_token``) before the instance is active, no ``file_system_mounts`` when nothing
is mounted, no ``name`` when none was given. Timestamps are simulated time, ISO 8601 in UTC.
"""

from __future__ import annotations

from datetime import datetime, timezone
from typing import Any

from soong_core.models import InstanceState
from soong_plugins.lambda_labs.simulator.catalogue import TYPES_BY_NAME, region_api
from soong_plugins.lambda_labs.simulator.state import (
    AuditEventRecord,
    FilesystemRecord,
    FirewallRulesetRecord,
    InstanceRecord,
    SshKeyRecord,
)

SIM_USER = {"id": "50096e2d2b6b4d5d9a0c5f3e7a1b2c3d", "email": "you@simulator.soong.invalid",
            "status": "active"}
"""The one user of the simulated account (``created_by`` of filesystems)."""


def iso(ts: float) -> str:
    return datetime.fromtimestamp(ts, tz=timezone.utc).isoformat()


def _available() -> dict[str, Any]:
    return {"available": True}


def _blocked(code: str, description: str) -> dict[str, Any]:
    return {"available": False, "reason_code": code, "reason_description": description}


def actions(status: InstanceState) -> dict[str, Any]:
    """The spec's ``InstanceActionAvailability`` for an instance in ``status``."""
    unsupported = _blocked("unsupported", "The simulator does not migrate or rebuild instances.")
    if status is InstanceState.BOOTING:
        waiting = _blocked("vm-has-not-launched", "The instance is still booting.")
        return {"migrate": waiting, "rebuild": waiting, "restart": waiting,
                "cold_reboot": waiting, "terminate": _available()}
    if status in (InstanceState.ACTIVE, InstanceState.UNHEALTHY):
        return {"migrate": unsupported, "rebuild": unsupported, "restart": _available(),
                "cold_reboot": _available(), "terminate": _available()}
    ending = _blocked("vm-is-terminating", f"The instance is {status.value}.")
    return {"migrate": ending, "rebuild": ending, "restart": ending, "cold_reboot": ending,
            "terminate": ending}


def default_hostname(ip: str) -> str:
    return ip.replace(".", "-")


def instance(record: InstanceRecord, now: float) -> dict[str, Any]:
    """The spec's ``Instance`` at simulated time ``now``."""
    status = record.status(now)
    data: dict[str, Any] = {"id": record.id}
    if record.name is not None:
        data["name"] = record.name
    booted = status in (InstanceState.ACTIVE, InstanceState.UNHEALTHY,
                        InstanceState.TERMINATING) and now >= record.active_at
    if booted:
        data["ip"] = record.ip
        data["private_ip"] = record.private_ip
    data["status"] = status.value
    data["ssh_key_names"] = list(record.ssh_key_names)
    data["file_system_names"] = list(record.file_system_names)
    if record.file_system_mounts:
        data["file_system_mounts"] = [dict(m) for m in record.file_system_mounts]
    data["region"] = region_api(record.region)
    data["instance_type"] = TYPES_BY_NAME[record.type_name].to_api()
    if booted or record.hostname is not None:
        data["hostname"] = record.hostname or default_hostname(record.ip)
    data["actions"] = actions(status)
    data["tags"] = [dict(tag) for tag in record.tags]
    if record.firewall_rulesets:
        data["firewall_rulesets"] = [{"id": rid} for rid in record.firewall_rulesets]
    if booted and record.jupyter_token is not None:
        data["jupyter_token"] = record.jupyter_token
        data["jupyter_url"] = jupyter_url(record.id, record.jupyter_token)
    return data


JUPYTER_DOMAIN = "lambdaspaces.sim.soong.invalid"
"""Where the spec's example URL has ``lambdaspaces.com``: a name that resolves nowhere,
since no JupyterLab runs behind a simulated instance."""


def sim_extras(record: InstanceRecord, now: float, agent_url: str | None = None
               ) -> dict[str, Any]:
    """The simulator-only facts of an instance (DESIGN Interfaces): where its sshd
    listens, and where its agent answers (``null`` while none runs)."""
    return {"id": record.id, "status": record.status(now).value, "ip": record.ip,
            "ssh_port": record.ssh_port, "agent_url": agent_url}


def jupyter_url(instance_id: str, token: str) -> str:
    """The spec's ``jupyter_url`` shape: ``https://jupyter-<id>.<domain>/?token=<token>``."""
    return f"https://jupyter-{instance_id}.{JUPYTER_DOMAIN}/?token={token}"


def ssh_key(record: SshKeyRecord) -> dict[str, Any]:
    return {"id": record.id, "name": record.name, "public_key": record.public_key}


def filesystem(record: FilesystemRecord, in_use: bool, bytes_used: int) -> dict[str, Any]:
    return {
        "id": record.id,
        "name": record.name,
        "mount_point": f"/lambda/nfs/{record.name}",
        "created": iso(record.created_at),
        "created_by": dict(SIM_USER),
        "is_in_use": in_use,
        "region": region_api(record.region),
        "bytes_used": bytes_used,
    }


def firewall_ruleset(record: FirewallRulesetRecord, instance_ids: list[str]) -> dict[str, Any]:
    return {
        "id": record.id,
        "name": record.name,
        "region": region_api(record.region),
        "rules": [dict(rule) for rule in record.rules],
        "created": iso(record.created_at),
        "instance_ids": instance_ids,
    }


AUDIT_CATALOG_VERSION = "2025-09-06"
"""The event catalog version the spec's example names."""


def lrn(kind: str, identifier: str) -> str:
    """A Lambda Resource Name as the spec's examples write them: ``lrn:cloud:KIND:ID``."""
    return f"lrn:cloud:{kind}:{identifier}"


def event_time(ts: float) -> str:
    """The spec's ``event_time`` form: UTC, microseconds, a ``Z`` (``...T10:30:45.123456Z``)."""
    return datetime.fromtimestamp(ts, tz=timezone.utc).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def audit_event(record: AuditEventRecord) -> dict[str, Any]:
    """The spec's ``AuditEvent``. The simulator does not say which API key acted
    (``request_api_key_lrn`` is null, as the spec allows "if applicable")."""
    return {
        "service_name": record.service_name,
        "resource_name": record.resource_name,
        "action": record.action,
        "catalog_version": AUDIT_CATALOG_VERSION,
        "event_id": record.id,
        "event_time": event_time(record.time),
        "actor_lrn": lrn("identity", SIM_USER["id"]),
        "resource_lrns": [lrn(record.resource_name, rid) for rid in record.resource_ids],
        "resource_owner_lrn": lrn("account", record.owner) if record.owner else None,
        "request_api_key_lrn": None,
        "additional_details": dict(record.details),
    }
