"""The copied spec, its validator, and that the simulator serves every operation of it."""

from __future__ import annotations

from typing import Any

import pytest

from soong_plugins.lambda_labs.simulator import api, catalogue
from soong_plugins.lambda_labs.simulator.routes import Router
from soong_plugins.lambda_labs.simulator.testing import spec_validator
from soong_plugins.lambda_labs.spec import SPEC_VERSION, load_spec, operations


def test_spec_is_package_data_and_the_official_version() -> None:
    spec = load_spec()
    assert spec["openapi"].startswith("3.1")
    assert spec["info"]["version"] == SPEC_VERSION
    assert "/api/v1/instance-operations/launch" in spec["paths"]


def test_every_operation_of_the_spec_is_routed_and_nothing_else() -> None:
    spec_ops = {(op.method.upper(), op.template, op.operation_id) for op in operations()}
    routed = {(route.method, route.template, route.operation) for route in api.ROUTES}
    assert routed == spec_ops
    assert len(spec_ops) == 24


@pytest.mark.parametrize("method, path, operation", [
    ("GET", "/api/v1/file-systems", "listFilesystems"),
    ("POST", "/api/v1/filesystems", "createFilesystem"),
    ("GET", "/api/v1/firewall-rulesets/global", "getGlobalFirewallRuleset"),
    ("GET", "/api/v1/firewall-rulesets/abc", "getFirewallRuleset"),
])
def test_routing_keeps_the_spec_spellings(method: str, path: str, operation: str) -> None:
    route, _ = Router(api.ROUTES).match(method, path)
    assert route.operation == operation


def test_catalogue_regions_are_spec_region_codes() -> None:
    codes = set(load_spec()["components"]["schemas"]["PublicRegionCode"]["enum"])
    assert len(catalogue.REGIONS) >= 10 and set(catalogue.REGIONS) <= codes
    assert len(catalogue.INSTANCE_TYPES) >= 15
    for spec in catalogue.INSTANCE_TYPES:
        assert spec.regions and set(spec.regions) <= set(catalogue.REGIONS), spec.name
        assert spec.price_cents_per_hour > 0 and spec.gpus >= 1


INSTANCE: dict[str, Any] = {
    "id": "i1", "status": "active", "ssh_key_names": ["k"], "file_system_names": [],
    "region": {"name": "us-east-1", "description": "Virginia, USA"},
    "instance_type": {"name": "gpu_1x_a10", "description": "d", "gpu_description": "g",
                      "price_cents_per_hour": 75,
                      "specs": {"vcpus": 1, "memory_gib": 1, "storage_gib": 1, "gpus": 1}},
    "actions": {name: {"available": True}
                for name in ("migrate", "rebuild", "restart", "cold_reboot", "terminate")},
}


@pytest.mark.parametrize("status, body, ok", [
    (200, {"data": [INSTANCE]}, True),
    (200, {"data": [{**INSTANCE, "status": "sleeping"}]}, False),
    (200, {"data": [{k: v for k, v in INSTANCE.items() if k != "actions"}]}, False),
    (200, {"data": [INSTANCE], "extra": 1}, False),
    (200, {"data": [{**INSTANCE, "region": {"name": "mars-1", "description": "x"}}]}, False),
    (401, {"error": {"code": "global/invalid-api-key", "message": "m", "suggestion": "s"}}, True),
    (401, {"error": {"code": "global/invalid-api-key", "message": "m"}}, False),
    (401, {"error": {"code": "global/other", "message": "m", "suggestion": "s"}}, False),
    (404, {"error": {"code": "global/object-does-not-exist", "message": "m"}}, False),
    (429, {"error": {"code": "global/rate-limit-exceeded", "message": "m"}}, True),
    (429, {"message": "slow down"}, False),
    (503, {"error": {"code": "provider/internal-unavailable", "message": "m",
                     "suggestion": "s"}}, True),
    (418, {"error": {"code": "x", "message": "m"}}, False),
])
def test_validator_accepts_the_spec_and_refuses_the_rest(status: int, body: Any, ok: bool) -> None:
    problems = spec_validator().validate_response("GET", "/api/v1/instances", status, body)
    assert (problems == []) is ok, problems


def test_validator_allows_an_unlisted_400_only_for_invalid_request_bodies() -> None:
    validator = spec_validator()
    invalid = {"error": {"code": "global/invalid-parameters", "message": "bad body"}}
    other = {"error": {"code": "global/quota-exceeded", "message": "m", "suggestion": "s"}}
    path = "/api/v1/instance-operations/terminate"
    assert validator.validate_response("POST", path, 400, invalid) == []
    assert validator.validate_response("POST", path, 400, other) != []
    assert validator.validate_response("GET", "/api/v1/instances", 400, invalid) != []


def test_validator_checks_requests_too() -> None:
    validator = spec_validator()
    launch = "/api/v1/instance-operations/launch"
    good = {"region_name": "us-east-1", "instance_type_name": "gpu_1x_a10",
            "ssh_key_names": ["k"], "tags": [{"key": "soong:launch-id", "value": "x"}]}
    assert validator.validate_request("POST", launch, good) == []
    assert validator.validate_request("POST", launch, {**good, "region_name": "mars"}) != []
    assert validator.validate_request("POST", launch,
                                      {**good, "tags": [{"key": "Bad", "value": "x"}]}) != []
    assert validator.validate_request("POST", "/api/v1/nope", {}) != []
