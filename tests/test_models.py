"""The pure models: tags, timestamps, instances read from tags, launch contributions."""

from __future__ import annotations

from decimal import Decimal

import pytest
from hypothesis import given
from hypothesis import strategies as st

from soong_core.models import (
    HOUR,
    TAG_HARD_DEADLINE,
    TAG_LAUNCH_ID,
    TAG_LAUNCHED_AT,
    Action,
    Instance,
    InstanceState,
    InstanceType,
    LaunchContribution,
    LaunchRequest,
    format_timestamp,
    parse_timestamp,
    same_public_key,
    validate_tag,
)


@pytest.mark.parametrize("key", ["soong:launch-id", "a1", "team:ml-research"])
def test_valid_tag_keys(key: str) -> None:
    validate_tag(key, "x" * 128)


@pytest.mark.parametrize("key", ["", "a", "Soong:x", "1abc", "soong_id", "soong id", "-ab"])
def test_invalid_tag_keys(key: str) -> None:
    with pytest.raises(ValueError, match="must match"):
        validate_tag(key, "v")


def test_tag_key_length_limit() -> None:
    """55 characters, as the providers' APIs allow: a plugin's longer key is refused
    before launch, not by the provider after it."""
    validate_tag("k" * 55, "v")
    with pytest.raises(ValueError, match="at most 55 characters"):
        validate_tag("k" * 56, "v")


def test_tag_value_length_limit() -> None:
    with pytest.raises(ValueError, match="129 characters, at most 128"):
        validate_tag("soong:model", "x" * 129)


@given(st.integers(min_value=0, max_value=4_000_000_000))
def test_timestamps_round_trip_to_the_second(seconds: int) -> None:
    assert parse_timestamp(format_timestamp(seconds)) == seconds


def test_parse_timestamp_accepts_offsets_and_naive_utc() -> None:
    assert parse_timestamp("2026-11-29T10:00:00+01:00") == parse_timestamp("2026-11-29T09:00:00Z")
    assert parse_timestamp("2026-11-29T09:00:00") == parse_timestamp("2026-11-29T09:00:00Z")


def test_instance_reads_launch_facts_from_tags() -> None:
    tags = {TAG_LAUNCH_ID: "l-1", TAG_LAUNCHED_AT: "2026-11-29T09:00:00Z",
            TAG_HARD_DEADLINE: "2026-11-29T17:00:00Z"}
    instance = Instance("i-1", InstanceState.ACTIVE, tags=tags, price_cents_per_hour=129)
    assert instance.managed and instance.launch_id == "l-1"
    assert instance.hard_deadline - instance.launched_at == 8 * 3600
    assert instance.price_per_hour == Decimal("1.29")


@pytest.mark.parametrize("tags", [{}, {TAG_LAUNCH_ID: "l-1"},
                                  {TAG_LAUNCH_ID: "l-1", TAG_LAUNCHED_AT: "yesterday"}])
def test_instances_without_usable_tags_are_unmanaged(tags: dict[str, str]) -> None:
    instance = Instance("i-1", InstanceState.ACTIVE, tags=tags)
    assert not instance.managed
    assert instance.launched_at is None and instance.price_per_hour is None


def test_states_know_what_bills() -> None:
    billing = {s for s in InstanceState if s.billing}
    assert billing == {InstanceState.BOOTING, InstanceState.ACTIVE, InstanceState.UNHEALTHY}
    assert {s for s in InstanceState if s.ended} == {InstanceState.TERMINATED, InstanceState.PREEMPTED}


def test_action_severity_orders_verdicts() -> None:
    assert sorted(Action, key=lambda a: a.severity) == [Action.KEEP, Action.WARN, Action.TERMINATE]


def test_instance_type_price_is_exact() -> None:
    itype = InstanceType("gpu_8x_h100", 2392, regions_with_capacity=("us-east-1",))
    assert itype.price_per_hour == Decimal("23.92") and itype.available


def test_launch_request_contributions_merge() -> None:
    request = LaunchRequest("t", ("r",), tags={TAG_LAUNCH_ID: "a"})
    assert request.user_data is None
    merged = request.with_contribution(
        LaunchContribution(tags={TAG_LAUNCH_ID: "a", "x:y": "1"},
                           user_data_parts=("#!/bin/sh\necho one",)), "p")
    assert merged.tags == {TAG_LAUNCH_ID: "a", "x:y": "1"}
    assert merged.user_data_names == ("p",) and merged.user_data is not None
    assert 'filename="00-p.sh"' in merged.user_data and "\n#!/bin/sh\necho one\n" in merged.user_data
    assert request.tags == {TAG_LAUNCH_ID: "a"}  # the original is untouched
    with pytest.raises(ValueError, match="already set"):
        merged.with_contribution(LaunchContribution(tags={"x:y": "2"}), "q")


KEY = "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIGmQ"


@pytest.mark.parametrize(("a", "b", "same"), [
    (KEY, KEY, True),
    (f"{KEY} alice@laptop", f"{KEY} soong", True),  # comments differ
    (f"{KEY}  alice", f"  {KEY}\n", True),  # spacing and line ends
    (KEY, KEY.replace("IGmQ", "IGmR"), False),  # another key
    (KEY, KEY.replace("ssh-ed25519", "ssh-rsa"), False),  # same data, another type
    (KEY, "", False),
])
def test_same_public_key_ignores_comments_only(a: str, b: str, same: bool) -> None:
    assert same_public_key(a, b) is same
    assert same_public_key(b, a) is same


def test_hour_is_an_exact_integer() -> None:
    assert HOUR == 60 * 60 and isinstance(HOUR, int)
    assert Decimal(129) * Decimal("1.5") * HOUR / (100 * HOUR) == Decimal("1.935")
