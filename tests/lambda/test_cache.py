"""The instance-type catalogue: cached on disk a short while; estimates survive a failing
pricing call (last cached catalogue, else the bundled one, each marked)."""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any, Callable

import pytest

from soong_core.testing import SoongEnv
from soong_plugins.lambda_labs import bundled, errors
from soong_plugins.lambda_labs.cache import TTL, TypeCache, default_cache_dir
from soong_plugins.lambda_labs.provider import LambdaProvider
from soong_plugins.lambda_labs.simulator.catalogue import INSTANCE_TYPES
from soong_plugins.lambda_labs.simulator.testing import SimHarness


def type_calls(entries: list[dict[str, Any]]) -> int:
    return sum(1 for e in entries if e["operation"] == "listInstanceTypes")


def test_a_second_process_within_the_ttl_asks_nothing(
        cloud: SimHarness, api_log: Callable[..., Any], soong_env: SoongEnv) -> None:
    first = LambdaProvider(cloud.api_url, cloud.api_key)
    live = first.list_instance_types()
    second = LambdaProvider(cloud.api_url, cloud.api_key)  # as the next command would
    assert second.list_instance_types() == live and second.catalogue_source == "cache"
    assert type_calls(api_log(cloud)) == 1
    [cache_file] = default_cache_dir().iterdir()
    assert str(soong_env.cache_home) in str(cache_file)
    assert cloud.api_key not in cache_file.read_text()


def test_past_the_ttl_or_with_another_key_it_asks_again(
        cloud: SimHarness, api_log: Callable[..., Any]) -> None:
    clock = [1000.0]
    provider = LambdaProvider(cloud.api_url, cloud.api_key)
    provider.cache.now = lambda: clock[0]
    provider.list_instance_types()
    later = LambdaProvider(cloud.api_url, cloud.api_key)
    later.cache.now = lambda: clock[0] + TTL + 1
    later.list_instance_types()
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
    assert provider.cache.fresh(cloud.api_key) is None  # the next command asks again
    assert provider.cache.load() is not None  # still there for prices, should pricing fail
    cloud.control("PUT", "/capacity", {"instance_type": "gpu_1x_a10", "region": "*", "capacity": 0})
    with pytest.raises(errors.InsufficientCapacityError):
        provider.launch(LaunchRequest("gpu_1x_a10", ("us-east-1",), ssh_key_names=("soong",)))
    fresh = LambdaProvider(cloud.api_url, cloud.api_key)
    a10 = next(t for t in fresh.list_instance_types() if t.name == "gpu_1x_a10")
    assert a10.regions_with_capacity == () and fresh.catalogue_source == "cache"


def test_failing_pricing_uses_the_last_cached_catalogue_marked(
        cloud: SimHarness, caplog: pytest.LogCaptureFixture) -> None:
    LambdaProvider(cloud.api_url, cloud.api_key).list_instance_types()
    cloud.control("PATCH", "/knobs", {"error_rate": 1.0})
    stale = LambdaProvider(cloud.api_url, cloud.api_key, cache_ttl=0)
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
