"""Lambda Cloud's JSON objects as soong's models, and launch requests as JSON.

Replies are read defensively: unknown fields are kept in ``extra`` (or ignored), and
optional ones may be missing (no ``ip`` or ``hostname`` while booting, no ``name``, no
``tags``, even no ``instance_type``) without anything crashing. Only an instance
without an ``id`` is unusable; :func:`instances` skips it with a warning.

Standard library and the core's models only.
"""

from __future__ import annotations

import re
from typing import Any, Iterable, Mapping

from soong_core.models import (
    Filesystem,
    Image,
    Instance,
    InstanceState,
    InstanceType,
    LaunchRequest,
    Region,
    SshKey,
)
from soong_plugins.lambda_labs.redact import get_logger

log = get_logger()

PROVIDER = "lambda"

STATES: dict[str, InstanceState] = {state.value: state for state in InstanceState}
"""Lambda's ``InstanceStatus`` values are soong's, one for one (DESIGN, "Instance states")."""
UNKNOWN_STATE = InstanceState.UNHEALTHY
"""A status this version does not know: treated as billing and shown in red, so that
nothing assumes it is harmless; the raw value is kept in ``extra["lambda_status"]``."""

_MAPPED = frozenset({"id", "status", "name", "ip", "hostname", "region", "instance_type",
                     "ssh_key_names", "file_system_names", "tags"})
_SECRET_FIELDS = frozenset({"jupyter_token", "jupyter_url"})
"""Replies carry a JupyterLab token (also inside the URL): never copied anywhere."""
_UUID = re.compile(r"^[0-9a-fA-F]{8}-?[0-9a-fA-F]{4}-?[0-9a-fA-F]{4}-?[0-9a-fA-F]{4}-?"
                   r"[0-9a-fA-F]{12}$")


def _text(value: Any) -> str | None:
    return value if isinstance(value, str) and value else None


def _int(value: Any, default: int = 0) -> int:
    return value if isinstance(value, int) and not isinstance(value, bool) else default


def _strings(value: Any) -> tuple[str, ...]:
    if not isinstance(value, list):
        return ()
    return tuple(v for v in value if isinstance(v, str))


def _region_name(value: Any) -> str | None:
    if isinstance(value, Mapping):
        return _text(value.get("name"))
    return _text(value)


def tags(value: Any) -> dict[str, str]:
    """``[{"key", "value"}, ...]`` (the spec) or a plain mapping -> ``{key: value}``."""
    if isinstance(value, Mapping):
        return {k: v for k, v in value.items() if isinstance(k, str) and isinstance(v, str)}
    found: dict[str, str] = {}
    if isinstance(value, list):
        for entry in value:
            if isinstance(entry, Mapping) and isinstance(entry.get("key"), str) \
                    and isinstance(entry.get("value"), str):
                found[entry["key"]] = entry["value"]
    return found


def state(value: Any) -> InstanceState:
    if isinstance(value, str) and value in STATES:
        return STATES[value]
    log.debug("unknown Lambda Cloud instance status %r: shown as %s", value, UNKNOWN_STATE.value)
    return UNKNOWN_STATE


def instance(data: Mapping[str, Any], prices: Mapping[str, int] | None = None) -> Instance:
    """One ``Instance`` object. ``prices`` (type -> cents per hour) fills the price when
    the reply has no ``instance_type``."""
    raw_type = data.get("instance_type")
    itype: Mapping[str, Any] = raw_type if isinstance(raw_type, Mapping) else {}
    type_name = _text(itype.get("name")) if itype else None
    price = itype.get("price_cents_per_hour") if itype else None
    if not isinstance(price, int) or isinstance(price, bool):
        price = (prices or {}).get(type_name) if type_name else None
    extra = {k: v for k, v in data.items() if k not in _MAPPED and k not in _SECRET_FIELDS}
    if itype:
        extra["instance_type"] = dict(itype)
    raw_status = data.get("status")
    if not (isinstance(raw_status, str) and raw_status in STATES):
        extra["lambda_status"] = raw_status
    return Instance(
        id=str(data["id"]), state=state(raw_status), provider=PROVIDER,
        name=_text(data.get("name")), ip=_text(data.get("ip")), type_name=type_name,
        region=_region_name(data.get("region")), price_cents_per_hour=price,
        hostname=_text(data.get("hostname")), ssh_key_names=_strings(data.get("ssh_key_names")),
        filesystem_names=_strings(data.get("file_system_names")), tags=tags(data.get("tags")),
        extra=extra)


def instances(data: Any, prices: Mapping[str, int] | None = None) -> list[Instance]:
    """A list of ``Instance`` objects; entries without an ``id`` are skipped."""
    found = []
    for entry in data if isinstance(data, list) else []:
        if isinstance(entry, Mapping) and isinstance(entry.get("id"), str) and entry["id"]:
            found.append(instance(entry, prices))
        else:
            log.warning("Lambda Cloud listed an instance without an id: ignored")
    return found


def instance_types(data: Any, note: str | None = None) -> list[InstanceType]:
    """``GET /instance-types``'s ``data`` (a mapping of name -> item). ``note`` marks a
    catalogue that is not live (cached or bundled): it is appended to each description
    and no capacity is claimed from it."""
    found = []
    for key, item in (data.items() if isinstance(data, Mapping) else []):
        if not isinstance(item, Mapping):
            continue
        raw_type = item.get("instance_type")
        itype: Mapping[str, Any] = raw_type if isinstance(raw_type, Mapping) else {}
        name = _text(itype.get("name")) or (key if isinstance(key, str) else None)
        price = itype.get("price_cents_per_hour")
        if not name or not isinstance(price, int) or isinstance(price, bool):
            continue  # a type without a price cannot be estimated, so it is not offered
        raw_specs = itype.get("specs")
        specs: Mapping[str, Any] = raw_specs if isinstance(raw_specs, Mapping) else {}
        description = _text(itype.get("description")) or ""
        regions = item.get("regions_with_capacity_available")
        capacity = tuple(r for r in (_region_name(r) for r in
                                     (regions if isinstance(regions, list) else [])) if r)
        found.append(InstanceType(
            name=name, price_cents_per_hour=price,
            description=f"{description} [{note}]" if note else description,
            gpu_description=_text(itype.get("gpu_description")) or "",
            gpus=_int(specs.get("gpus")), vcpus=_int(specs.get("vcpus")),
            memory_gib=_int(specs.get("memory_gib")), storage_gib=_int(specs.get("storage_gib")),
            regions_with_capacity=() if note else capacity, capacity_known=not note))
    return sorted(found, key=lambda t: (t.price_cents_per_hour, t.name))


def regions_seen(data: Any) -> dict[str, str]:
    """Region name -> description, from the regions an instance-types answer names."""
    seen: dict[str, str] = {}
    for item in (data.values() if isinstance(data, Mapping) else []):
        regions = item.get("regions_with_capacity_available") if isinstance(item, Mapping) else None
        for region in regions if isinstance(regions, list) else []:
            if isinstance(region, Mapping) and _text(region.get("name")):
                seen[region["name"]] = _text(region.get("description")) or ""
    return seen


def regions(known: Mapping[str, str], seen: Mapping[str, str]) -> list[Region]:
    merged = {**known, **{k: v or known.get(k, "") for k, v in seen.items()}}
    return [Region(name, description) for name, description in sorted(merged.items())]


def ssh_key(data: Mapping[str, Any]) -> SshKey:
    return SshKey(name=str(data.get("name") or ""), id=str(data.get("id") or ""),
                  public_key=str(data.get("public_key") or ""),
                  private_key=_text(data.get("private_key")))


def ssh_keys(data: Any) -> list[SshKey]:
    return [ssh_key(k) for k in (data if isinstance(data, list) else []) if isinstance(k, Mapping)]


def filesystem(data: Mapping[str, Any]) -> Filesystem:
    used = data.get("bytes_used")
    return Filesystem(name=str(data.get("name") or ""),
                      region=_region_name(data.get("region")) or "",
                      id=str(data.get("id") or ""), mount_point=_text(data.get("mount_point")),
                      in_use=data.get("is_in_use") is True,
                      bytes_used=used if isinstance(used, int) and not isinstance(used, bool)
                      else None)


def filesystems(data: Any) -> list[Filesystem]:
    return [filesystem(f) for f in (data if isinstance(data, list) else [])
            if isinstance(f, Mapping)]


def images(data: Any) -> list[Image]:
    found = []
    for entry in data if isinstance(data, list) else []:
        if isinstance(entry, Mapping) and _text(entry.get("id")):
            found.append(Image(id=entry["id"], name=_text(entry.get("family"))
                               or _text(entry.get("name")) or entry["id"],
                               region=_region_name(entry.get("region")),
                               description=_text(entry.get("description")) or ""))
    return found


def image_spec(image: str) -> dict[str, str]:
    """``LaunchRequest.image`` as the API wants it: an id (a UUID) or a family name."""
    return {"id": image} if _UUID.match(image) else {"family": image}


def launch_body(request: LaunchRequest, region: str, tags_: Mapping[str, str]) -> dict[str, Any]:
    """``InstanceLaunchRequest`` for one region. Optional fields are left out when empty,
    as the API's defaults (latest Lambda Stack image, IP-based hostname) are wanted then."""
    body: dict[str, Any] = {"region_name": region, "instance_type_name": request.type_name,
                            "ssh_key_names": list(request.ssh_key_names)}
    if request.filesystem_names:
        body["file_system_names"] = list(request.filesystem_names)
    if request.hostname:
        body["hostname"] = request.hostname
    if request.name:
        body["name"] = request.name
    if request.image:
        body["image"] = image_spec(request.image)
    if request.user_data is not None:
        body["user_data"] = request.user_data
    if tags_:
        body["tags"] = [{"key": k, "value": v} for k, v in tags_.items()]
    if request.firewall_rulesets:
        body["firewall_rulesets"] = [{"id": r} for r in request.firewall_rulesets]
    return body


def names(items: Iterable[Any]) -> str:
    return ", ".join(str(i) for i in items)
