"""The instance-type catalogue: cached on disk, its capacity believed for seconds and its
prices for an hour (each lifetime tested on an injected clock); estimates survive a
failing pricing call (last cached catalogue, else the bundled one, each marked)."""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any, Callable

import pytest

from soong_core.testing import SoongEnv
from soong_plugins.lambda_labs import bundled, errors
from soong_plugins.lambda_labs.cache import (
    CAPACITY_TTL,
    CATALOGUE_TTL,
    TypeCache,
    default_cache_dir,
)
from soong_plugins.lambda_labs.provider import LambdaProvider
from soong_plugins.lambda_labs.simulator.catalogue import INSTANCE_TYPES
from soong_plugins.lambda_labs.simulator.testing import SimHarness

T0 = 2_000_000_000.0
"""An injected wall time (2033), so dates print as real ones."""


def type_calls(entries: list[dict[str, Any]]) -> int:
    return sum(1 for e in entries if e["operation"] == "listInstanceTypes")


def at(provider: LambdaProvider, clock: list[float]) -> LambdaProvider:
    """``provider`` with its cache aged by ``clock[0]`` (wall seconds)."""
    provider.cache.now = lambda: clock[0]
    return provider


def a10(types: list[Any]) -> Any:
    return next(t for t in types if t.name == "gpu_1x_a10")


def test_a_second_process_within_the_capacity_lifetime_asks_nothing(
        cloud: SimHarness, api_log: Callable[..., Any], soong_env: SoongEnv) -> None:
    clock = [T0]
    first = at(LambdaProvider(cloud.api_url, cloud.api_key), clock)
    live = first.list_instance_types()
    clock[0] += CAPACITY_TTL - 0.5
    second = at(LambdaProvider(cloud.api_url, cloud.api_key), clock)  # the next command
    assert second.list_instance_types() == live and second.catalogue_source == "cache"
    assert type_calls(api_log(cloud)) == 1
    [cache_file] = default_cache_dir().iterdir()
    assert str(soong_env.cache_home) in str(cache_file)
    assert cloud.api_key not in cache_file.read_text()


def test_past_the_capacity_lifetime_or_with_another_key_it_asks_again(
        cloud: SimHarness, api_log: Callable[..., Any]) -> None:
    clock = [T0]
    at(LambdaProvider(cloud.api_url, cloud.api_key), clock).list_instance_types()
    clock[0] += CAPACITY_TTL
    later = at(LambdaProvider(cloud.api_url, cloud.api_key), clock)
    later.list_instance_types()
    assert later.catalogue_source == "live"  # the prices would stand an hour: not capacity
    assert type_calls(api_log(cloud)) == 2
    other = LambdaProvider(cloud.api_url, "another-key-0000000")
    with pytest.raises(errors.InvalidApiKeyError):  # `configure` proves a key this way
        other.list_instance_types()


def test_capacity_refused_at_launch_does_not_leave_a_stale_fresh_cache(
        provider: LambdaProvider, cloud: SimHarness, ssh_key: str) -> None:
    from soong_core.models import LaunchRequest

    provider.list_instance_types()
    cloud.control("PUT", "/capacity", {"instance_type": "gpu_1x_a10", "region": "us-east-1",
                                       "capacity": 0})
    launched = provider.launch(LaunchRequest("gpu_1x_a10", ("us-east-1", "us-west-1"),
                                             ssh_key_names=("soong",)))
    assert launched.region == "us-west-1"
    assert provider.cache.with_capacity(cloud.api_key) is None  # the next command asks again
    assert provider.cache.catalogue(cloud.api_key) is not None  # its prices still stand
    cloud.control("PUT", "/capacity", {"instance_type": "gpu_1x_a10", "region": "*", "capacity": 0})
    with pytest.raises(errors.InsufficientCapacityError):
        provider.launch(LaunchRequest("gpu_1x_a10", ("us-east-1",), ssh_key_names=("soong",)))
    fresh = LambdaProvider(cloud.api_url, cloud.api_key)
    a10 = next(t for t in fresh.list_instance_types() if t.name == "gpu_1x_a10")
    assert a10.regions_with_capacity == () and fresh.catalogue_source == "cache"


def test_failing_pricing_uses_the_last_cached_catalogue_marked(
        cloud: SimHarness, caplog: pytest.LogCaptureFixture) -> None:
    clock = [T0]
    at(LambdaProvider(cloud.api_url, cloud.api_key), clock).list_instance_types()
    cloud.control("PATCH", "/knobs", {"error_rate": 1.0})
    clock[0] += CATALOGUE_TTL
    stale = at(LambdaProvider(cloud.api_url, cloud.api_key), clock)
    with caplog.at_level(logging.WARNING, logger="soong.lambda"):
        types = stale.list_instance_types()
    a10 = next(t for t in types if t.name == "gpu_1x_a10")
    assert stale.catalogue_source == "stale-cache"
    assert a10.price_cents_per_hour == 75 and a10.regions_with_capacity == ()
    assert "[cached price list from 20" in a10.description and "capacity unknown" in a10.description
    assert "estimates use the price list cached at" in caplog.text


def test_failing_pricing_without_a_cache_uses_the_bundled_list_marked(
        cloud: SimHarness, caplog: pytest.LogCaptureFixture) -> None:
    cloud.control("PATCH", "/knobs", {"error_rate": 1.0, "error_status": 502})
    provider = LambdaProvider(cloud.api_url, cloud.api_key)
    with caplog.at_level(logging.WARNING, logger="soong.lambda"):
        types = provider.list_instance_types()
    assert provider.catalogue_source == "bundled" and len(types) == len(INSTANCE_TYPES)
    assert all(f"[bundled price list of {bundled.PRICES_AS_OF}" in t.description for t in types)
    assert "bundled price list" in caplog.text


def test_a_refused_key_or_an_unreachable_host_is_not_papered_over(cloud: SimHarness) -> None:
    url = cloud.api_url
    with pytest.raises(errors.InvalidApiKeyError):
        LambdaProvider(url, "wrong-key-00000000").list_instance_types()
    cloud.stop()
    with pytest.raises(errors.SimulatorNotRunningError):
        LambdaProvider(url, cloud.api_key).list_instance_types()


def test_the_bundled_prices_match_the_catalogue_the_simulator_models() -> None:
    payload = bundled.instance_types_payload()
    for spec in INSTANCE_TYPES:
        mine = payload[spec.name]["instance_type"]
        assert mine == spec.to_api(), spec.name


def test_an_unreadable_cache_is_ignored(cloud: SimHarness, tmp_path: Path,
                                        api_log: Callable[..., Any]) -> None:
    cache = TypeCache(cloud.api_url, tmp_path)
    cache.path.write_text("{not json")
    provider = LambdaProvider(cloud.api_url, cloud.api_key, cache_dir=tmp_path)
    assert provider.list_instance_types()
    assert json.loads(cache.path.read_text())["endpoint"] == cloud.api_url
    cache.path.write_text(json.dumps({"version": 1, "endpoint": "elsewhere", "fetched_at": 0,
                                      "data": {}}))
    assert cache.load() is None


def test_a_process_polling_for_capacity_sees_it_arrive(
        cloud: SimHarness, api_log: Callable[..., Any]) -> None:
    clock = [2_000_000_000.0]
    cloud.control("PUT", "/capacity", {"instance_type": "gpu_1x_a10", "region": "*", "capacity": 0})
    provider = LambdaProvider(cloud.api_url, cloud.api_key)
    provider.cache.now = lambda: clock[0]

    def a10_regions() -> tuple[str, ...]:
        return next(t for t in provider.list_instance_types()
                    if t.name == "gpu_1x_a10").regions_with_capacity

    assert a10_regions() == ()
    cloud.control("PUT", "/capacity", {"instance_type": "gpu_1x_a10", "region": "us-east-1",
                                       "capacity": 3})
    assert a10_regions() == ()  # the same command asking twice: one request
    clock[0] += 10  # the next poll of --wait-for-capacity
    assert a10_regions() == ("us-east-1",)
    assert type_calls(api_log(cloud)) == 2


# -- lifetimes ------------------------------------------------------------------------------


def test_within_the_catalogue_lifetime_a_failing_call_leaves_current_prices(
        cloud: SimHarness, caplog: pytest.LogCaptureFixture) -> None:
    """Past the capacity's lifetime and within the catalogue's, the answer's prices are
    the prices: unmarked, only the capacity unknown."""
    clock = [T0]
    at(LambdaProvider(cloud.api_url, cloud.api_key), clock).list_instance_types()
    cloud.control("PATCH", "/knobs", {"error_rate": 1.0})
    clock[0] += CATALOGUE_TTL - 1
    provider = at(LambdaProvider(cloud.api_url, cloud.api_key), clock)
    with caplog.at_level(logging.WARNING, logger="soong.lambda"):
        a10_type = a10(provider.list_instance_types())
    assert provider.catalogue_source == "cache" and provider.catalogue_error is not None
    assert a10_type.price_cents_per_hour == 75
    assert not a10_type.capacity_known and a10_type.regions_with_capacity == ()
    assert a10_type.description.endswith(" [capacity unknown]")
    assert "cached price list" not in a10_type.description
    assert "its prices of" in caplog.text and "capacity unknown" in caplog.text


def test_a_cached_answers_capacity_ages_from_the_answer_not_from_its_reading(
        cloud: SimHarness, api_log: Callable[..., Any]) -> None:
    """A command that found an 8-second-old answer on disk believes its capacity for two
    more seconds, not for ten."""
    clock = [T0]
    at(LambdaProvider(cloud.api_url, cloud.api_key), clock).list_instance_types()
    clock[0] += CAPACITY_TTL - 2
    provider = at(LambdaProvider(cloud.api_url, cloud.api_key), clock)
    provider.list_instance_types()
    clock[0] += 1
    provider.list_instance_types()
    assert type_calls(api_log(cloud)) == 1
    clock[0] += 1
    provider.list_instance_types()
    assert provider.catalogue_source == "live" and type_calls(api_log(cloud)) == 2


def test_insufficient_capacity_sends_this_process_back_to_the_api_at_once(
        provider: LambdaProvider, cloud: SimHarness, ssh_key: str,
        api_log: Callable[..., Any]) -> None:
    from soong_core.models import LaunchRequest

    clock = [T0]
    at(provider, clock).list_instance_types()
    cloud.control("PUT", "/capacity", {"instance_type": "gpu_1x_a10", "region": "us-east-1",
                                       "capacity": 0})
    provider.launch(LaunchRequest("gpu_1x_a10", ("us-east-1", "us-west-1"),
                                  ssh_key_names=("soong",)))
    before = type_calls(api_log(cloud))
    assert "us-east-1" not in a10(provider.list_instance_types()).regions_with_capacity
    assert type_calls(api_log(cloud)) == before + 1  # within the 10 s, yet live


def test_the_cache_lifetimes_are_those_the_issue_settled() -> None:
    assert CATALOGUE_TTL == 3600 and 0 < CAPACITY_TTL <= 10
