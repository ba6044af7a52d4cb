"""Request-body checks, written from the spec's request schemas.

The simulator runs without jsonschema (a test dependency), so the rules the spec states
for request bodies (types, required fields, lengths, patterns, enums) are checked here by
hand. Each failure is the API's ``global/invalid-parameters`` naming the field.
"""

from __future__ import annotations

import json
import re
from typing import Any, Mapping

from soong_plugins.lambda_labs.simulator.errors import invalid_parameters

PUBLIC_REGION_CODES = frozenset({
    "europe-central-1", "asia-south-1", "australia-east-1", "me-west-1", "asia-northeast-1",
    "asia-northeast-2", "us-east-1", "us-west-2", "us-west-1", "us-south-1", "us-west-3",
    "us-midwest-1", "us-east-2", "us-south-2", "us-south-3", "us-east-3", "us-midwest-2",
})
"""The spec's ``PublicRegionCode`` enum: anything else fails request validation."""

TAG_KEY = re.compile(r"^[a-z][a-z0-9-:]+$")
TAG_KEY_MAX = 55
TAG_VALUE_MAX = 128
HOSTNAME = re.compile(r"^[a-z0-9][0-9a-z-]{0,62}$")
MOUNT_POINT = re.compile(r"^(/home|/lambda/nfs|/data)[//a-zA-Z0-9-]*$")
FILESYSTEM_NAME = re.compile(r"^[a-zA-Z]+[0-9a-zA-Z-]*$")
PUBLIC_KEY = re.compile(r"^(ssh-(rsa|ed25519|dss)|ecdsa-sha2-nistp(256|384|521)|"
                        r"sk-(ssh-ed25519|ecdsa-sha2-nistp256)@openssh\.com) "
                        r"[A-Za-z0-9+/]+={0,3}( .*)?$")
PROTOCOLS = frozenset({"tcp", "udp", "icmp", "all"})

USER_DATA_MAX_BYTES = 1_000_000
"""The spec: user data "cannot exceed 1MB". Read as 10^6 bytes of UTF-8, the stricter of
the two readings, so a client that passes here passes the real API."""


def parse_body(raw: bytes) -> Any:
    """The request body as JSON; empty or malformed is ``global/invalid-parameters``."""
    if not raw.strip():
        raise invalid_parameters("Invalid request data: the request body is empty.",
                                 "Send a JSON object.")
    try:
        return json.loads(raw.decode("utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise invalid_parameters(f"Invalid request data: the body is not valid JSON ({exc}).",
                                 "Send a JSON object.") from None


def require_object(body: Any) -> Mapping[str, Any]:
    if not isinstance(body, Mapping):
        raise invalid_parameters(f"Invalid request data: expected a JSON object, got "
                                 f"{_json_type(body)}.")
    return body


def _json_type(value: Any) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "a boolean"
    if isinstance(value, (int, float)):
        return "a number"
    if isinstance(value, str):
        return "a string"
    if isinstance(value, list):
        return "an array"
    return "an object"


def string(body: Mapping[str, Any], key: str, *, required: bool = False,
           min_length: int | None = None, max_length: int | None = None,
           pattern: re.Pattern[str] | None = None) -> str | None:
    """``body[key]`` as a string, checked like the spec's string schema."""
    if key not in body:
        if required:
            raise invalid_parameters(f"Invalid request data: {key} is required.")
        return None
    value = body[key]
    if not isinstance(value, str):
        raise invalid_parameters(f"Invalid request data: {key} must be a string, "
                                 f"not {_json_type(value)}.")
    if min_length is not None and len(value) < min_length:
        raise invalid_parameters(f"Invalid request data: {key} must be at least "
                                 f"{min_length} characters.")
    if max_length is not None and len(value) > max_length:
        raise invalid_parameters(f"Invalid request data: {key} must be at most "
                                 f"{max_length} characters.")
    if pattern is not None and not pattern.match(value):
        raise invalid_parameters(f"Invalid request data: {key} {value!r} must match "
                                 f"{pattern.pattern}.")
    return value


def region(body: Mapping[str, Any], key: str) -> str:
    value = string(body, key, required=True)
    assert value is not None
    if value not in PUBLIC_REGION_CODES:
        raise invalid_parameters(f"Invalid request data: {key} {value!r} is not a region code.",
                                 "GET /instance-types lists the regions.")
    return value


def string_list(body: Mapping[str, Any], key: str, *, required: bool = False) -> list[str]:
    if key not in body:
        if required:
            raise invalid_parameters(f"Invalid request data: {key} is required.")
        return []
    value = body[key]
    if not isinstance(value, list) or not all(isinstance(item, str) for item in value):
        raise invalid_parameters(f"Invalid request data: {key} must be an array of strings.")
    return list(value)


def object_list(body: Mapping[str, Any], key: str) -> list[Mapping[str, Any]]:
    if key not in body:
        return []
    value = body[key]
    if not isinstance(value, list) or not all(isinstance(item, Mapping) for item in value):
        raise invalid_parameters(f"Invalid request data: {key} must be an array of objects.")
    return list(value)


def tags(body: Mapping[str, Any]) -> list[dict[str, str]]:
    """``RequestedTagEntry`` items: key pattern and lengths, no key twice."""
    result: list[dict[str, str]] = []
    seen: set[str] = set()
    for index, entry in enumerate(object_list(body, "tags")):
        where = f"tags[{index}]"
        key = string(entry, "key", required=True)
        value = string(entry, "value", required=True)
        assert key is not None and value is not None
        if len(key) > TAG_KEY_MAX or not TAG_KEY.match(key):
            raise invalid_parameters(
                f"Invalid request data: {where}.key {key!r} must match {TAG_KEY.pattern} "
                f"and have at most {TAG_KEY_MAX} characters.")
        if len(value) > TAG_VALUE_MAX:
            raise invalid_parameters(f"Invalid request data: {where}.value has {len(value)} "
                                     f"characters, at most {TAG_VALUE_MAX}.")
        if key in seen:
            raise invalid_parameters(f"Invalid request data: tag key {key!r} is given twice.")
        seen.add(key)
        result.append({"key": key, "value": value})
    return result


def firewall_rules(value: Any, where: str) -> list[dict[str, Any]]:
    """``FirewallRule`` items: protocol, port range (not for icmp), source network."""
    if not isinstance(value, list) or not all(isinstance(item, Mapping) for item in value):
        raise invalid_parameters(f"Invalid request data: {where} must be an array of rules.")
    rules = []
    for index, rule in enumerate(value):
        at = f"{where}[{index}]"
        protocol = string(rule, "protocol", required=True)
        if protocol not in PROTOCOLS:
            raise invalid_parameters(f"Invalid request data: {at}.protocol {protocol!r} is "
                                     f"not one of {', '.join(sorted(PROTOCOLS))}.")
        network = string(rule, "source_network", required=True)
        description = string(rule, "description", required=True, max_length=128)
        assert network is not None and description is not None
        _check_network(network, at)
        checked: dict[str, Any] = {"protocol": protocol, "source_network": network,
                                   "description": description}
        ports = rule.get("port_range")
        if protocol == "icmp":
            if ports is not None:
                raise invalid_parameters(f"Invalid request data: {at}.port_range is not "
                                         "allowed for icmp.")
        else:
            if (not isinstance(ports, list) or len(ports) != 2
                    or not all(isinstance(p, int) and not isinstance(p, bool) and 1 <= p <= 65535
                               for p in ports) or ports[0] > ports[1]):
                raise invalid_parameters(f"Invalid request data: {at}.port_range must be "
                                         "[min, max] with 1 <= min <= max <= 65535.")
            checked["port_range"] = list(ports)
        rules.append(checked)
    return rules


def _check_network(network: str, where: str) -> None:
    import ipaddress

    try:
        ipaddress.IPv4Network(network, strict=False)
    except ValueError:
        raise invalid_parameters(f"Invalid request data: {where}.source_network {network!r} "
                                 "is not an IPv4 address or CIDR block.") from None
