"""The API's error codes become typed errors with one line saying what to do next."""

from __future__ import annotations

import re
from typing import Any, Callable

import pytest

from soong_core.config import default_config_path, write_config_file
from soong_core.errors import SoongError
from soong_core.models import TAG_LAUNCH_ID, LaunchRequest
from soong_core.testing import CliResult
from soong_plugins.lambda_labs import errors
from soong_plugins.lambda_labs.provider import LambdaProvider
from soong_plugins.lambda_labs.simulator.testing import SimHarness


def request(**fields: Any) -> LaunchRequest:
    return LaunchRequest("gpu_1x_a10", ("us-east-1",), ssh_key_names=("soong",),
                         tags={TAG_LAUNCH_ID: "x"}, **fields)


def one_line(error: SoongError) -> None:
    assert error.message and "\n" not in error.message
    assert all("\n" not in hint for hint in error.hints)


def test_invalid_key(cloud: SimHarness) -> None:
    with pytest.raises(errors.InvalidApiKeyError) as caught:
        LambdaProvider(cloud.api_url, "not-the-key-000000").list_instances()
    assert caught.value.message == "Lambda Cloud refused the API key (listing instances)"
    assert "soong configure" in caught.value.hints[0] and caught.value.code == "global/invalid-api-key"
    one_line(caught.value)


def test_account_inactive(provider: LambdaProvider, cloud: SimHarness) -> None:
    cloud.control("PATCH", "/knobs", {"account_active": False})
    with pytest.raises(errors.AccountInactiveError) as caught:
        provider.list_instances()
    assert caught.value.message == "your Lambda Cloud account is inactive (listing instances)"
    assert "payment method" in caught.value.hints[0]


def test_insufficient_capacity_in_one_region(provider: LambdaProvider, cloud: SimHarness,
                                             ssh_key: str) -> None:
    cloud.control("PUT", "/capacity", {"instance_type": "gpu_1x_a10", "region": "us-east-1",
                                       "capacity": 0})
    with pytest.raises(errors.InsufficientCapacityError) as caught:
        provider.launch(request())
    assert caught.value.message == ("capacity gone in us-east-1: no gpu_1x_a10 could be "
                                    "launched")
    assert "--wait-for-capacity" in caught.value.hints[0] and "--region" in caught.value.hints[0]


def test_quota_exceeded(provider: LambdaProvider, cloud: SimHarness, ssh_key: str) -> None:
    cloud.control("PATCH", "/knobs", {"quota_instances": 0})
    with pytest.raises(errors.QuotaExceededError) as caught:
        provider.launch(request())
    assert caught.value.message.startswith("Lambda Cloud quota exceeded (launching gpu_1x_a10 "
                                           "in us-east-1)")
    assert "soong status" in caught.value.hints[0]


def test_file_system_in_the_wrong_region_reported_by_the_api(
        provider: LambdaProvider, cloud: SimHarness, ssh_key: str) -> None:
    fs = provider.create_filesystem("data", "us-west-1")
    body = {"region_name": "us-east-1", "instance_type_name": "gpu_1x_a10",
            "ssh_key_names": ["soong"], "file_system_names": [fs.name]}
    with pytest.raises(errors.FilesystemWrongRegionError) as caught:
        provider.client.launch(body, "x", action="launching", region="us-east-1")
    assert "us-west-1" in caught.value.message and "--region" in caught.value.hints[0]


def test_invalid_parameters_quote_the_api(provider: LambdaProvider, ssh_key: str) -> None:
    body = {"region_name": "us-east-1", "instance_type_name": "gpu_1x_a10",
            "ssh_key_names": ["soong", "soong"]}  # the spec allows a list; the API wants one
    with pytest.raises(errors.InvalidParametersError) as caught:
        provider.client.launch(body, "x", action="launching", region="us-east-1")
    assert caught.value.message.startswith("Lambda Cloud refused the request (launching): ")
    assert "exactly one SSH key" in caught.value.message


@pytest.mark.parametrize("fields, words", [
    ({"hostname": "Not A Hostname"}, "hostname 'Not A Hostname'"),
    ({"name": "n" * 65}, "name is 65 characters"),
    ({"tags": {"Bad Key": "v"}}, "tag key 'Bad Key'"),
    ({"tags": {"k" * 56: "v"}}, "at most 55"),
    ({"tags": {"key": "v" * 129}}, "at most 128"),
    ({"user_data_parts": ("#!/bin/sh\n" + "x" * 1_000_001,)}, "bytes: Lambda Cloud takes at most 1000000"),
])
def test_requests_the_api_would_refuse_are_refused_before_sending(
        provider: LambdaProvider, ssh_key: str, fields: dict[str, Any], words: str) -> None:
    from soong_core.errors import UsageError

    if "tags" in fields:
        fields = {**fields, "tags": {TAG_LAUNCH_ID: "x", **fields["tags"]}}
    with pytest.raises(UsageError, match=re.escape(words)) as caught:
        provider.launch(LaunchRequest("gpu_1x_a10", ("us-east-1",), ssh_key_names=("soong",),
                                      **{"tags": {TAG_LAUNCH_ID: "x"}, **fields}))
    one_line(caught.value)


@pytest.mark.parametrize("status, code, kind, words", [
    (503, "provider/internal-unavailable", errors.ProviderUnavailableError, "status.lambda.ai"),
    (502, "provider/upstream-timeout", errors.ProviderUnavailableError, "status.lambda.ai"),
    (500, "global/internal-error", errors.ProviderUnavailableError, "try again in a few"),
    (429, "global/rate-limit-exceeded", errors.RateLimitedError, "same API key"),
    (404, "global/object-does-not-exist", errors.NotFoundError, "List them"),
    (400, "global/duplicate", errors.DuplicateError, "another name"),
    (400, "filesystems/filesystem-in-use", errors.FilesystemInUseError, "soong stop"),
    (400, "global/quota-exceeded", errors.QuotaExceededError, "quota"),
    (403, "global/account-inactive", errors.AccountInactiveError, "payment method"),
    (401, "global/invalid-api-key", errors.InvalidApiKeyError, "soong configure"),
    (400, "instance-operations/launch/insufficient-capacity", errors.InsufficientCapacityError,
     "--wait-for-capacity"),
    (400, "instance-operations/launch/file-system-in-wrong-region",
     errors.FilesystemWrongRegionError, "--region"),
    (418, "brand/new-code", errors.ApiError, "Suggested"),
])
def test_every_code_has_a_type_and_a_next_step(status: int, code: str, kind: type,
                                               words: str) -> None:
    body = {"error": {"code": code, "message": "Something.", "suggestion": "Suggested. List them."}}
    error = errors.api_error(status, body, action="doing it", regions=("us-east-1",))
    assert type(error) is kind and error.code == code and error.status == status
    assert words in " ".join(error.hints)
    assert "(doing it)" in error.message
    one_line(error)


def test_bodies_that_are_not_the_envelope_still_give_a_typed_error() -> None:
    assert isinstance(errors.api_error(502, None), errors.ProviderUnavailableError)
    assert isinstance(errors.api_error(401, "<html>"), errors.InvalidApiKeyError)
    assert isinstance(errors.api_error(404, {"error": "x"}), errors.NotFoundError)


def test_a_non_json_answer_is_one_line(provider: LambdaProvider) -> None:
    from soong_plugins.lambda_labs.client import LambdaClient
    from soong_plugins.lambda_labs.transport import Reply

    error = LambdaClient._error(Reply(404, None, {}, text="<html>Not Found</html>"), "listing")
    assert isinstance(error, errors.UnexpectedReplyError)
    assert error.message == "unexpected answer from Lambda Cloud (listing): HTTP 404, not JSON"
    assert "/api/v1" in error.hints[0]


# -- an outage is an outage, not "no capacity" (issue 10, point 6) -------------------------

OUTAGE = {"error_rate": 1.0, "error_status": 503}


def test_a_503_during_a_launch_is_the_provider_unavailable(
        provider: LambdaProvider, cloud: SimHarness, ssh_key: str,
        api_log: Callable[..., Any]) -> None:
    cloud.control("PATCH", "/knobs", OUTAGE)
    with pytest.raises(errors.ProviderUnavailableError) as caught:
        provider.launch(request())
    assert caught.value.message == ("Lambda Cloud is unavailable (HTTP 503): "
                                    "provider/internal-unavailable (launching gpu_1x_a10 in "
                                    "us-east-1)")
    assert "status.lambda.ai" in caught.value.hints[0]
    assert caught.value.nothing_launched is False  # a 5xx may come after the launch happened
    # the reconciling listing failed too (that is the outage): no blind second launch
    assert [e["operation"] for e in api_log(cloud)].count("launchInstance") == 1
    one_line(caught.value)


def test_with_no_region_asked_an_outage_is_not_capacity_gone_in_any_region(
        provider: LambdaProvider, cloud: SimHarness, ssh_key: str) -> None:
    cloud.control("PATCH", "/knobs", OUTAGE)
    anywhere = LaunchRequest("gpu_1x_a10", (), ssh_key_names=("soong",), tags={TAG_LAUNCH_ID: "x"})
    with pytest.raises(errors.ProviderUnavailableError) as caught:
        provider.launch(anywhere)
    assert caught.value.message == ("cannot tell where gpu_1x_a10 has capacity: Lambda Cloud is "
                                    "unavailable (HTTP 503): provider/internal-unavailable "
                                    "(listing instance types)")
    assert "--region" in caught.value.hints[-1] and caught.value.nothing_launched
    one_line(caught.value)


@pytest.mark.parametrize("where", ["", " --region us-east-1"])
def test_start_during_an_outage_says_lambda_is_unavailable(
        cloud: SimHarness, run_cli: Callable[..., CliResult], where: str) -> None:
    write_config_file(default_config_path(), {"lambda": {"api_url": cloud.api_url,
                                                         "api_key": cloud.api_key}})
    cloud.control("PATCH", "/knobs", OUTAGE)
    result = run_cli(f"start -y --gpu gpu_1x_a10{where}")
    assert result.exit_code == 1, result.stderr
    errors_shown = [line for line in result.stderr.splitlines() if line.startswith("error:")]
    assert errors_shown == ["error: Lambda Cloud is unavailable (HTTP 503): "
                            "provider/internal-unavailable (listing instances)"]
    assert "no capacity" not in result.stdout + result.stderr
    assert "Traceback" not in result.stderr
