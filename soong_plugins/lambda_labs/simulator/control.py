"""The simulator-only control endpoint, under ``/_sim`` (outside ``/api/v1``).

Tests and benchmarks turn knobs, inject faults, seed fleets and read bills here. It
requires the same API key as the API, answers in the same ``{"data": ...}`` /
``{"error": ...}`` envelopes, and is never rate limited or faulted. The reference is in
``docs/simulator.md``.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from soong_plugins.lambda_labs.simulator import validation
from soong_plugins.lambda_labs.simulator.agents import FAULTS as AGENT_FAULTS
from soong_plugins.lambda_labs.simulator.apikeys import KeyRingError
from soong_plugins.lambda_labs.simulator.errors import ApiError, invalid_parameters
from soong_plugins.lambda_labs.simulator.requestlog import read_lines
from soong_plugins.lambda_labs.simulator.routes import Call, Handler, Route

if TYPE_CHECKING:
    from soong_plugins.lambda_labs.simulator.cloud import Cloud

PREFIX = "/_sim"


def _route(method: str, path: str, name: str, handler: Handler) -> Route:
    return Route(method, PREFIX + path, handler, name, kind="control")


def _cloud(call: Call) -> Cloud:
    return call.simulator.cloud


def _set_capacity(call: Call) -> Any:
    body = validation.require_object(call.body())
    entries = body.get("entries", [body])
    if not isinstance(entries, list) or not entries:
        raise invalid_parameters("give instance_type, region and capacity, or entries: "
                                 "a list of such objects")
    for entry in entries:
        if not isinstance(entry, dict):
            raise invalid_parameters("each capacity entry must be an object")
        type_name = validation.string(entry, "instance_type", required=True)
        region = validation.string(entry, "region", required=True)
        if "capacity" not in entry:
            raise invalid_parameters("capacity is required")
        assert type_name is not None and region is not None
        _cloud(call).set_capacity(type_name, region, entry["capacity"])
    return _cloud(call).capacity_table()


def _fault(call: Call) -> Any:
    body = validation.require_object(call.body())
    fault = validation.string(body, "fault", required=True)
    assert fault is not None
    if fault in AGENT_FAULTS:
        _cloud(call).sim_instance(call.params["id"])  # 404 for an unknown instance
        return call.simulator.agents.fault(call.params["id"], fault)
    return _cloud(call).set_fault(call.params["id"], fault)


def _agent(call: Call) -> Any:
    _cloud(call).sim_instance(call.params["id"])  # 404 for an unknown instance
    return call.simulator.agents.info(call.params["id"])


def _requests(call: Call) -> Any:
    since = _int_query(call, "since", 0)
    limit = _int_query(call, "limit", 10_000)
    path = call.simulator.store.request_log_path
    entries = read_lines(path, since)
    return {"entries": entries[:limit], "next": since + min(len(entries), limit)}


def _mint_key(call: Call) -> Any:
    name = None
    if call.raw.strip():  # the body is optional: `curl -X POST .../_sim/keys` mints one
        body = validation.require_object(call.body())
        unknown = sorted(set(body) - {"name"})
        if unknown:
            raise invalid_parameters(f"unknown field(s) {', '.join(unknown)}: a key takes "
                                     "only an optional name")
        name = validation.string(body, "name")
    try:
        return call.simulator.keys.mint(name)
    except KeyRingError as exc:
        raise invalid_parameters(str(exc)) from None


def _revoke_key(call: Call) -> Any:
    try:
        return call.simulator.keys.revoke(call.params["prefix"])
    except KeyRingError as exc:
        if exc.not_found:
            raise ApiError(404, "global/object-does-not-exist", str(exc)) from None
        raise invalid_parameters(str(exc)) from None


def _int_query(call: Call, name: str, default: int) -> int:
    text = call.query.get(name)
    if text is None:
        return default
    try:
        value = int(text)
    except ValueError:
        value = -1
    if value < 0:
        raise invalid_parameters(f"{name} must be an integer >= 0, got {text!r}")
    return value


ROUTES: list[Route] = [
    _route("GET", "/status", "status", lambda c: c.simulator.status()),
    _route("GET", "/clock", "clock", lambda c: c.simulator.clock_info()),
    _route("GET", "/knobs", "knobs", lambda c: c.simulator.knobs()),
    _route("PATCH", "/knobs", "set_knobs", lambda c: c.simulator.update_knobs(c.body())),
    _route("POST", "/knobs", "set_knobs", lambda c: c.simulator.update_knobs(c.body())),
    _route("GET", "/capacity", "capacity", lambda c: _cloud(c).capacity_table()),
    _route("PUT", "/capacity", "set_capacity", _set_capacity),
    _route("POST", "/capacity", "set_capacity", _set_capacity),
    _route("POST", "/instances/{id}/fault", "fault", _fault),
    _route("GET", "/instances", "sim_instances", lambda c: _cloud(c).sim_instances()),
    _route("GET", "/instances/{id}", "sim_instance",
           lambda c: _cloud(c).sim_instance(c.params["id"])),
    _route("GET", "/instances/{id}/agent", "sim_agent", _agent),
    _route("POST", "/instances/{id}/network", "set_network",
           lambda c: _cloud(c).set_network(c.params["id"], c.body())),
    _route("POST", "/seed", "seed", lambda c: _cloud(c).seed(c.body())),
    _route("GET", "/billing", "billing", lambda c: _cloud(c).billing()),
    _route("GET", "/billing/{id}", "instance_billing",
           lambda c: _cloud(c).billing(c.params["id"])),
    _route("GET", "/requests", "requests", _requests),
    _route("GET", "/keys", "keys", lambda c: c.simulator.keys.listing()),
    _route("POST", "/keys", "mint_key", _mint_key),
    _route("DELETE", "/keys/{prefix}", "revoke_key", _revoke_key),
]
