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
        checked: dict[str, Any] = {"protocol": protocol,
                                   "source_network": source_network(network, at),
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


ANY_NETWORK = "0.0.0.0/0"
"""The one network the spec allows whose address is not public: "any address"."""


NON_PUBLIC_NETWORKS = ("0.0.0.0/8", "10.0.0.0/8", "100.64.0.0/10", "127.0.0.0/8",
                       "169.254.0.0/16", "172.16.0.0/12", "192.0.0.0/24", "192.0.2.0/24",
                       "192.88.99.0/24", "192.168.0.0/16", "198.18.0.0/15",
                       "198.51.100.0/24", "203.0.113.0/24", "224.0.0.0/4", "240.0.0.0/4")
"""IANA's special-purpose IPv4 blocks that are not globally reachable (RFC 6890 and its
updates), multicast and reserved: written out rather than asked of ``ipaddress``, whose
``is_global`` answers differ between Python versions."""


def source_network(network: str, where: str) -> str:
    """A ``source_network`` as the spec describes it: a public IPv4 address, optionally
    followed by ``/mask`` (none means ``/32``), or ``0.0.0.0/0``. Host bits set past the
    mask (``1.2.3.4/24``) and an address in a non-public block
    (:data:`NON_PUBLIC_NETWORKS`) are refused. The spec asks the *address* to be public,
    so a wide block that starts at a public address (``8.0.0.0/5``) is taken as given.
    Returns the network with its mask."""
    import ipaddress

    field_name = f"{where}.source_network"
    try:
        parsed = ipaddress.IPv4Network(network if "/" in network else network + "/32",
                                       strict=False)
    except ValueError:
        raise invalid_parameters(f"Invalid request data: {field_name} {network!r} is not an "
                                 "IPv4 address or CIDR block.",
                                 "Give an address like 1.2.3.4 or a block like 1.2.3.0/24; "
                                 "0.0.0.0/0 allows any address.") from None
    text = str(parsed)
    if text == ANY_NETWORK:
        return text
    address = ipaddress.IPv4Address(network.split("/", 1)[0])
    if address != parsed.network_address:
        raise invalid_parameters(f"Invalid request data: {field_name} {network!r} has host "
                                 f"bits set past its /{parsed.prefixlen} mask.",
                                 f"Did you mean {text}?")
    if any(address in ipaddress.IPv4Network(block) for block in NON_PUBLIC_NETWORKS):
        raise invalid_parameters(f"Invalid request data: {field_name} {network!r} is not a "
                                 "public IPv4 network.",
                                 "Give a public address or block, or 0.0.0.0/0 for any "
                                 "address.")
    return text
