"""Launch: idempotent under lost replies, failover across regions, paced by the launch limit."""

from __future__ import annotations

import json
import logging
from typing import Any, Callable

import pytest
import requests
from requests.adapters import HTTPAdapter
from requests.structures import CaseInsensitiveDict
from urllib3.exceptions import ConnectTimeoutError

from soong_core.errors import UsageError
from soong_core.models import TAG_LAUNCH_ID, LaunchRequest
from soong_plugins.lambda_labs import errors, transport
from soong_plugins.lambda_labs.pacing import LAUNCH, VirtualTimer
from soong_plugins.lambda_labs.provider import LambdaProvider
from soong_plugins.lambda_labs.simulator.testing import SimHarness

LAUNCH_OP = "launchInstance"


def request(*regions: str, launch_id: str = "launch-1", **fields: Any) -> LaunchRequest:
    return LaunchRequest("gpu_1x_a10", regions or ("us-east-1",), ssh_key_names=("soong",),
                         tags={TAG_LAUNCH_ID: launch_id}, **fields)


def launched_ids(cloud: SimHarness, launch_id: str) -> list[str]:
    """Instances in the simulated cloud carrying ``launch_id`` (what would be billed)."""
    return [record.id for record in cloud.cloud.state.instances.values()
            if {"key": TAG_LAUNCH_ID, "value": launch_id} in record.tags]


def launches(entries: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return [e for e in entries if e["operation"] == LAUNCH_OP]


class ScriptedLaunch(HTTPAdapter):
    """The launch URL's adapter, failing as scripted before (``connect-timeout``) or after
    (``504-after``: the launch happens, the reply is replaced) the real request."""

    def __init__(self, script: list[str]) -> None:
        super().__init__(max_retries=0)
        self.script = script

    def send(self, request: requests.PreparedRequest,  # type: ignore[override]
             **kwargs: Any) -> requests.Response:
        step = self.script.pop(0) if self.script else "pass"
        if step == "connect-timeout":
            cause = ConnectTimeoutError("connection to the API timed out")
            raise requests.exceptions.ConnectTimeout(cause, request=request)
        if step == "504-before":  # a gateway error; whether the launch happened is unknown
            return self._gateway_timeout(request)
        response = super().send(request, **kwargs)
        if step == "504-after":
            return self._gateway_timeout(request)
        return response

    @staticmethod
    def _gateway_timeout(request: requests.PreparedRequest) -> requests.Response:
        fake = requests.Response()
        fake.status_code = 504
        fake._content = json.dumps({"error": {"code": "provider/internal-unavailable",
                                              "message": "Gateway timeout"}}).encode()
        fake.headers = CaseInsensitiveDict({"Content-Type": "application/json"})
        fake.request, fake.url = request, request.url or ""
        return fake


def script_launches(provider: LambdaProvider, script: list[str]) -> ScriptedLaunch:
    session = transport.shared().session_for(provider.endpoint)
    adapter = ScriptedLaunch(script)
    session.mount(provider.endpoint + transport.LAUNCH_PATH, adapter)
    return adapter


def test_a_dropped_reply_is_reconciled_exactly_one_instance_exists(
        provider: LambdaProvider, cloud: SimHarness, ssh_key: str,
        api_log: Callable[..., Any]) -> None:
    cloud.control("PATCH", "/knobs", {"drop_launch_responses": 1})
    instance = provider.launch(request())
    assert launched_ids(cloud, "launch-1") == [instance.id]
    assert instance.extra["adopted"] is True and instance.region == "us-east-1"
    entries = api_log(cloud)
    assert [e["fault"] for e in launches(entries)] == ["dropped"]
    assert entries[-1]["operation"] == "listInstances"  # it looked instead of relaunching


def test_several_dropped_replies_in_a_row_still_bill_once_each(
        provider: LambdaProvider, cloud: SimHarness, ssh_key: str) -> None:
    cloud.control("PATCH", "/knobs", {"drop_launch_responses": 3})
    made = [provider.launch(request(launch_id=f"launch-{n}")) for n in range(3)]
    for n, instance in enumerate(made):
        assert launched_ids(cloud, f"launch-{n}") == [instance.id]
    assert len(cloud.cloud.state.instances) == 3


def test_a_launch_that_never_left_is_retried_after_looking(
        provider: LambdaProvider, cloud: SimHarness, ssh_key: str,
        api_log: Callable[..., Any]) -> None:
    adapter = script_launches(provider, ["connect-timeout", "pass"])
    instance = provider.launch(request())
    assert adapter.script == []
    assert launched_ids(cloud, "launch-1") == [instance.id]
    assert instance.extra["launch_attempts"] == 2 and "adopted" not in instance.extra


def test_a_gateway_error_after_the_launch_happened_adopts_it(
        provider: LambdaProvider, cloud: SimHarness, ssh_key: str,
        api_log: Callable[..., Any]) -> None:
    script_launches(provider, ["504-after"])
    instance = provider.launch(request())
    assert launched_ids(cloud, "launch-1") == [instance.id]
    assert instance.extra["adopted"] is True
    assert len(launches(api_log(cloud))) == 1


def test_a_reset_launch_lists_before_retrying_and_launches_once(
        provider: LambdaProvider, cloud: SimHarness, ssh_key: str,
        api_log: Callable[..., Any]) -> None:
    # reset_rate 1: the launch is reset (nothing done), and so is the reconciling list
    # (retried by urllib3, then given up): the client must not launch blindly.
    cloud.control("PATCH", "/knobs", {"reset_rate": 1.0})
    with pytest.raises(errors.ConnectionFailedError):
        provider.launch(request())
    operations = [e["operation"] for e in api_log(cloud)]
    after = operations[operations.index(LAUNCH_OP) + 1:]
    assert after == ["listInstances"] * (1 + transport.READ_RETRIES)
    assert launched_ids(cloud, "launch-1") == []
    assert caught_nothing_launched(provider) is False  # unknown: the intent stays open


def caught_nothing_launched(provider: LambdaProvider, launch_id: str = "launch-1") -> bool:
    with pytest.raises(errors.LambdaError) as caught:
        provider.launch(request("us-east-1", "us-west-1", launch_id=launch_id))
    return caught.value.nothing_launched


def test_a_refusal_says_nothing_was_launched_only_when_that_is_certain(
        provider: LambdaProvider, cloud: SimHarness, ssh_key: str) -> None:
    for region in ("us-east-1", "us-west-1"):
        cloud.control("PUT", "/capacity", {"instance_type": "gpu_1x_a10", "region": region,
                                           "capacity": 0})
    assert caught_nothing_launched(provider) is True  # every region answered "no capacity"
    # A gateway error whose launch may have happened, then "no capacity": the first
    # attempt's outcome is not known, so neither is the launch's.
    script_launches(provider, ["504-before"])
    assert caught_nothing_launched(provider, "launch-2") is False
    with pytest.raises(UsageError) as refused:  # refused before any request went out
        provider.launch(LaunchRequest("gpu_1x_a10", ("us-east-1",)))
    assert refused.value.nothing_launched is True


def test_failover_to_the_next_region_and_say_where_it_landed(
        provider: LambdaProvider, cloud: SimHarness, ssh_key: str,
        caplog: pytest.LogCaptureFixture, api_log: Callable[..., Any]) -> None:
    cloud.control("PUT", "/capacity", {"instance_type": "gpu_1x_a10", "region": "us-east-1",
                                       "capacity": 0})
    with caplog.at_level(logging.WARNING, logger="soong.lambda"):
        instance = provider.launch(request("us-east-1", "us-west-1"))
    assert instance.region == "us-west-1"
    assert instance.extra["regions_without_capacity"] == ["us-east-1"]
    assert "no capacity for gpu_1x_a10 in us-east-1: launched in us-west-1 instead" in caplog.text
    assert [e["status"] for e in launches(api_log(cloud))] == [400, 200]
    assert launched_ids(cloud, "launch-1") == [instance.id]


def test_no_capacity_anywhere_names_the_regions_tried_and_where_there_is_some(
        provider: LambdaProvider, cloud: SimHarness, ssh_key: str) -> None:
    for region in ("us-east-1", "us-west-1"):
        cloud.control("PUT", "/capacity", {"instance_type": "gpu_1x_a10", "region": region,
                                           "capacity": 0})
    with pytest.raises(errors.InsufficientCapacityError) as caught:
        provider.launch(request("us-east-1", "us-west-1"))
    error = caught.value
    assert error.regions == ("us-east-1", "us-west-1")
    assert error.message == "capacity gone in us-east-1, us-west-1: no gpu_1x_a10 could be launched"
    assert error.hints[0].startswith("try --region us-west-2 (also: ")
    assert error.hints[0].endswith(", or --wait-for-capacity")


def test_only_regions_holding_the_filesystem_are_tried(
        provider: LambdaProvider, cloud: SimHarness, ssh_key: str,
        api_log: Callable[..., Any]) -> None:
    provider.create_filesystem("data", "us-west-1")
    instance = provider.launch(request("us-east-1", "us-west-1", filesystem_names=("data",)))
    assert instance.region == "us-west-1" and instance.filesystem_names == ("data",)
    assert [e["status"] for e in launches(api_log(cloud))] == [200]
    with pytest.raises(errors.FilesystemWrongRegionError) as wrong:
        provider.launch(request("us-east-1", filesystem_names=("data",), launch_id="launch-2"))
    assert wrong.value.message == "filesystem data is in us-west-1, not in us-east-1"
    assert wrong.value.hints[0].startswith("launch there with --region us-west-1")
    with pytest.raises(errors.NotFoundError, match="no filesystem named nope"):
        provider.launch(request(filesystem_names=("nope",), launch_id="launch-3"))


def test_launches_keep_to_one_per_12_seconds_after_five(
        provider: LambdaProvider, cloud: SimHarness, ssh_key: str, timer: VirtualTimer) -> None:
    start = timer.monotonic()
    for n in range(7):
        provider.launch(request(launch_id=f"l{n}"))
    elapsed = timer.monotonic() - start
    # the burst of five, then two more at the launch rate (the audit: no 429 on the way)
    assert elapsed >= 2 / LAUNCH.rate
    assert elapsed < 2 / LAUNCH.rate + 7 * 1.1
    assert len(cloud.cloud.state.instances) == 7


def test_launch_sends_what_the_request_asks(provider: LambdaProvider, cloud: SimHarness,
                                            ssh_key: str) -> None:
    instance = provider.launch(request(name="exp", hostname="box1",
                                       image="lambda-stack-22-04",
                                       user_data_parts=("#!/bin/bash\necho hi",)))
    [record] = cloud.cloud.state.instances.values()
    assert record.name == "exp" and record.hostname == "box1"
    assert record.image == {"family": "lambda-stack-22-04"}
    assert record.user_data_bytes == len(request(user_data_parts=("#!/bin/bash\necho hi",)
                                             ).user_data or "")
    assert instance.price_cents_per_hour == 75 and instance.tags[TAG_LAUNCH_ID] == "launch-1"


def test_a_launch_without_a_launch_id_gets_one(provider: LambdaProvider, cloud: SimHarness,
                                               ssh_key: str) -> None:
    bare = LaunchRequest("gpu_1x_a10", ("us-east-1",), ssh_key_names=("soong",))
    instance = provider.launch(bare)
    assert len(instance.tags[TAG_LAUNCH_ID]) == 32


def test_exactly_one_ssh_key(provider: LambdaProvider) -> None:
    with pytest.raises(UsageError, match="exactly one SSH key, not 0"):
        provider.launch(LaunchRequest("gpu_1x_a10", ("us-east-1",)))


def test_an_unknown_ssh_key_says_so(provider: LambdaProvider, cloud: SimHarness) -> None:
    with pytest.raises(errors.NotFoundError) as caught:
        provider.launch(request())
    assert "SSH key 'soong' does not exist" in caught.value.message
    assert "launching gpu_1x_a10 in us-east-1" in caught.value.message
