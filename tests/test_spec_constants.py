"""The client's, the core's and the simulator's limits, read against the API description.

Every number and pattern is read out of the spec's own text here (schemas, and the
sentences of its introduction for the rate limits and the user-data size), never copied
from the code under test, so a wrong constant cannot pass by construction: change the
spec and this file says which constant no longer agrees.
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import pytest

from soong_core import models
from soong_plugins.lambda_labs import checks, pacing
from soong_plugins.lambda_labs.provider import LambdaProvider
from soong_plugins.lambda_labs.simulator import ratelimit, validation

REPO = Path(__file__).resolve().parent.parent
PACKAGED = REPO / "soong_plugins" / "lambda_labs" / "spec" / "lambda-cloud-openapi-1.8.3.json"
"""The verbatim copy the package ships (and CI has)."""
REFERENCE = REPO.parent / "shared" / "reference" / "lambda-cloud-openapi-1.8.3.json"
"""The copy the project's design names, where a checkout has it beside it."""

WORDS = {"one": 1, "two": 2, "three": 3, "four": 4, "five": 5, "six": 6, "ten": 10}
SECONDS = {"second": 1, "minute": 60, "hour": 3600}


@pytest.fixture(scope="module")
def spec() -> dict[str, Any]:
    data: dict[str, Any] = json.loads(PACKAGED.read_text(encoding="utf-8"))
    return data


def schema(spec: dict[str, Any], name: str) -> dict[str, Any]:
    found: dict[str, Any] = spec["components"]["schemas"][name]
    return found


def field(spec: dict[str, Any], name: str, prop: str) -> dict[str, Any]:
    found: dict[str, Any] = schema(spec, name)["properties"][prop]
    return found


def prose(spec: dict[str, Any]) -> str:
    """The introduction, whitespace folded (its sentences wrap at any word)."""
    return " ".join(spec["info"]["description"].split())


def number(word: str) -> int:
    return int(word) if word.isdigit() else WORDS[word.lower()]


def test_the_packaged_spec_is_the_reference_copy(spec: dict[str, Any]) -> None:
    """The packaged file is the official 1.8.3 specification; beside a checkout that has
    the shared reference folder, byte for byte that copy (a clean clone has none)."""
    assert spec["info"]["version"] == "1.8.3"
    if REFERENCE.is_file():
        assert PACKAGED.read_bytes() == REFERENCE.read_bytes()


# -- tags -------------------------------------------------------------------------------


def test_tag_rules_of_core_client_and_simulator_are_the_spec_s(spec: dict[str, Any]) -> None:
    key, value = field(spec, "RequestedTagEntry", "key"), field(spec, "RequestedTagEntry", "value")
    assert models.TAG_KEY_PATTERN.pattern == validation.TAG_KEY.pattern == key["pattern"]
    assert models.TAG_KEY_MAX == validation.TAG_KEY_MAX == key["maxLength"]
    assert models.TAG_VALUE_MAX == validation.TAG_VALUE_MAX == value["maxLength"]


def test_the_core_tag_check_refuses_exactly_what_the_spec_refuses(spec: dict[str, Any]) -> None:
    """Behaviour, not only constants: the longest key and value allowed pass, one more
    character fails (the client's launch check is the core's)."""
    longest_key = field(spec, "RequestedTagEntry", "key")["maxLength"]
    longest_value = field(spec, "RequestedTagEntry", "value")["maxLength"]
    models.validate_tag("k" * longest_key, "v" * longest_value)
    with pytest.raises(ValueError):
        models.validate_tag("k" * (longest_key + 1), "v")
    with pytest.raises(ValueError):
        models.validate_tag("k", "v" * (longest_value + 1))
    for tag in models.CORE_TAGS:  # soong's own tags are tags the API takes
        assert re.match(field(spec, "RequestedTagEntry", "key")["pattern"], tag), tag
        assert len(tag) <= longest_key


# -- launch request fields ---------------------------------------------------------------------


def test_launch_request_limits(spec: dict[str, Any]) -> None:
    hostname = field(spec, "InstanceLaunchRequest", "hostname")
    assert checks.HOSTNAME.pattern == validation.HOSTNAME.pattern == hostname["pattern"]
    name_max = field(spec, "InstanceLaunchRequest", "name")["maxLength"]
    assert checks.NAME_MAX == LambdaProvider.name_max_length == name_max
    assert field(spec, "Instance", "name")["maxLength"] == name_max  # what comes back


def test_user_data_limit_is_the_spec_s_megabytes_read_strictly(spec: dict[str, Any]) -> None:
    """ "cannot exceed 1MB": read as 10^6 bytes, the stricter of the two readings."""
    text = " ".join(field(spec, "InstanceLaunchRequest", "user_data")["description"].split())
    found = re.search(r"cannot exceed (\d+)\s*MB", text)
    assert found, text
    limit = int(found.group(1)) * 10 ** 6
    assert checks.USER_DATA_MAX == validation.USER_DATA_MAX_BYTES == limit


def test_the_simulators_other_request_patterns(spec: dict[str, Any]) -> None:
    mount = field(spec, "RequestedFilesystemMountEntry", "mount_point")
    assert validation.MOUNT_POINT.pattern == mount["pattern"]
    assert validation.FILESYSTEM_NAME.pattern == field(spec, "FilesystemCreateRequest",
                                                       "name")["pattern"]
    assert validation.PUBLIC_REGION_CODES == frozenset(schema(spec, "PublicRegionCode")["enum"])


# -- rate limits ------------------------------------------------------------------------------


def _rate_limits(spec: dict[str, Any]) -> tuple[float, float, int]:
    """(requests per second in general, launches per second, launches in a row), as the
    introduction states them."""
    text = prose(spec)
    general = re.search(r"generally limited to (\w+) requests? per (\w+)", text)
    launch = re.search(r"`/instance-operations/launch` endpoint are limited to (\w+) "
                       r"requests? per (\d+) seconds, or (\w+) requests per (\w+)", text)
    assert general and launch, text
    per_second = number(general.group(1)) / SECONDS[general.group(2)]
    launch_rate = number(launch.group(1)) / int(launch.group(2))
    # "or five per minute": after a quiet minute, five may go back to back
    assert number(launch.group(3)) <= launch_rate * SECONDS[launch.group(4)]
    return per_second, launch_rate, number(launch.group(3))


def test_the_simulator_enforces_the_documented_rate_limits(spec: dict[str, Any]) -> None:
    per_second, launch_rate, burst = _rate_limits(spec)
    assert ratelimit.GENERAL.rate == pytest.approx(per_second)
    assert ratelimit.LAUNCH.rate == pytest.approx(launch_rate)
    assert ratelimit.LAUNCH.burst == burst


def test_the_client_paces_below_the_documented_rate_limits(spec: dict[str, Any]) -> None:
    """The client's buckets are the spec's, slowed by its margin: never faster."""
    per_second, launch_rate, burst = _rate_limits(spec)
    assert pacing.MARGIN > 1
    assert pacing.GENERAL.rate * pacing.MARGIN == pytest.approx(per_second)
    assert pacing.LAUNCH.rate * pacing.MARGIN == pytest.approx(launch_rate)
    assert pacing.GENERAL.burst <= ratelimit.GENERAL.burst
    assert pacing.LAUNCH.burst <= burst
