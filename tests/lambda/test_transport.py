"""HTTP behaviour of the Lambda client: retries, pacing, timeouts, connection errors."""

from __future__ import annotations

import http.server
import threading
import time
from typing import Any, Callable, Iterator

import pytest

from soong_plugins.lambda_labs import errors, transport
from soong_plugins.lambda_labs.pacing import GENERAL, LAUNCH, Limiter, VirtualTimer
from soong_plugins.lambda_labs.provider import LambdaProvider
from soong_plugins.lambda_labs.simulator.testing import SimHarness


def test_requests_are_paced_at_one_per_second_and_the_server_never_says_429(
        provider: LambdaProvider, cloud: SimHarness, timer: VirtualTimer,
        api_log: Callable[..., Any]) -> None:
    for _ in range(6):
        provider.list_instances()
    gaps = timer.sleeps
    assert len(gaps) == 5 and all(g >= 1.0 for g in gaps)
    assert [e["status"] for e in api_log(cloud)] == [200] * 6  # the audit also checks: no 429


def test_a_server_short_of_tokens_answers_429_once_and_retry_after_is_honoured(
        cloud_factory: Callable[..., SimHarness], timer: VirtualTimer,
        api_log: Callable[..., Any]) -> None:
    cloud = cloud_factory(allow_429=True)
    cloud.api("GET", "/instances")  # another program spends this second's token
    provider = LambdaProvider(cloud.api_url, cloud.api_key)
    assert provider.list_instances() == []
    assert [e["status"] for e in api_log(cloud)] == [200, 429, 200]
    # Retry-After: 1, then the rest of our own token's second
    assert timer.sleeps[0] == 1.0 and timer.slept == pytest.approx(1 / GENERAL.rate)


def test_5xx_is_retried_with_backoff_then_reported_as_provider_unavailable(
        provider: LambdaProvider, cloud: SimHarness, timer: VirtualTimer,
        api_log: Callable[..., Any]) -> None:
    cloud.control("PATCH", "/knobs", {"error_rate": 1.0, "error_status": 503})
    with pytest.raises(errors.ProviderUnavailableError) as caught:
        provider.list_instances()
    assert caught.value.message == ("Lambda Cloud is unavailable (HTTP 503): "
                                    "provider/internal-unavailable (listing instances)")
    assert caught.value.hints == ("try again in a few minutes; https://status.lambda.ai "
                                  "shows outages",)
    assert len(api_log(cloud)) == 1 + transport.STATUS_RETRIES
    # exponential: 0.5 s, 1 s, 2 s... (plus jitter) between attempts
    least = sum(transport.BACKOFF_BASE * 2 ** i for i in range(transport.STATUS_RETRIES))
    most = least + transport.STATUS_RETRIES * (transport.JITTER + 1 / GENERAL.rate)
    assert least <= timer.slept <= most


def test_a_transient_5xx_is_invisible(provider: LambdaProvider, cloud: SimHarness,
                                      api_log: Callable[..., Any]) -> None:
    cloud.control("PATCH", "/knobs", {"error_rate": 0.5, "fault_seed": 7})
    for _ in range(4):
        assert provider.list_instances() == []
    faults = [e["fault"] for e in api_log(cloud)]
    assert "error" in faults and faults.count(None) == 4


def test_resets_on_reads_are_retried(provider: LambdaProvider, cloud: SimHarness,
                                     api_log: Callable[..., Any]) -> None:
    cloud.control("PATCH", "/knobs", {"reset_rate": 0.5, "fault_seed": 3})
    for _ in range(4):
        assert provider.list_instances() == []
    faults = [e["fault"] for e in api_log(cloud)]
    assert "reset" in faults and faults.count(None) == 4


def test_other_4xx_fail_at_once(cloud: SimHarness, api_log: Callable[..., Any]) -> None:
    provider = LambdaProvider(cloud.api_url, "soong-wrong-key-000000")
    with pytest.raises(errors.InvalidApiKeyError):
        provider.list_instances()
    assert [e["status"] for e in api_log(cloud)] == [401]


def test_every_call_has_a_timeout(cloud: SimHarness) -> None:
    cloud.control("PATCH", "/knobs", {"latency_seconds": 0.2})
    slow = transport.Transport(cloud.api_url, cloud.api_key, timeout=(2.0, 0.05))
    with pytest.raises(errors.ApiTimeoutError) as caught:
        slow.request("GET", "/instances")
    assert "did not answer within 0.05s" in caught.value.message
    assert transport.TIMEOUT[0] > 0 and transport.TIMEOUT[1] > 0


def test_launch_is_sent_once_and_the_other_posts_are_retried(
        provider: LambdaProvider, cloud: SimHarness, api_log: Callable[..., Any]) -> None:
    cloud.control("PATCH", "/knobs", {"error_rate": 1.0, "error_status": 503})
    client = provider.client.transport
    body = {"region_name": "us-east-1", "instance_type_name": "gpu_1x_a10",
            "ssh_key_names": ["soong"]}
    launched = client.request("POST", transport.LAUNCH_PATH, body, launch=True)
    assert launched.status == 503 and launched.retries == 0
    assert len(api_log(cloud)) == 1  # never repeated blindly: the client reconciles first
    terminated = client.request("POST", "/instance-operations/terminate",
                                {"instance_ids": ["0" * 32]})
    assert terminated.status == 503 and terminated.retries == transport.STATUS_RETRIES
    assert len(api_log(cloud)) == 2 + transport.STATUS_RETRIES
    # urllib3 retries nothing on its own: every attempt, and its timeout, is decided here
    session = transport.shared().session_for(provider.endpoint)
    assert session.get_adapter(provider.endpoint + "/instances").max_retries.total == 0


def test_one_session_per_process_shared_by_providers(cloud: SimHarness) -> None:
    first = LambdaProvider(cloud.api_url, cloud.api_key)
    second = LambdaProvider(cloud.api_url + "/", cloud.api_key)
    first.list_instances()
    second.list_instances()
    state = transport.shared()
    assert state.session is not None and len(state.limiters) == 1


def test_missing_key_is_a_config_error_before_any_request(
        cloud: SimHarness, api_log: Callable[..., Any]) -> None:
    provider = LambdaProvider(cloud.api_url, None)
    with pytest.raises(errors.MissingApiKeyError) as caught:
        provider.list_instances()
    assert caught.value.message == ("no Lambda Cloud API key: run `soong configure` or set "
                                    "LAMBDA_API_KEY")
    assert caught.value.exit_code == 2
    assert api_log(cloud) == []


def test_nothing_listening_on_loopback_means_the_simulator_is_down(
        cloud: SimHarness, timer: VirtualTimer) -> None:
    url = cloud.api_url
    cloud.stop()
    with pytest.raises(errors.SimulatorNotRunningError) as caught:
        LambdaProvider(url, cloud.api_key).list_instances()
    assert caught.value.message == "simulator not running: run `soong sim up`"
    assert timer.slept == 0  # refused on loopback: not retried, said at once


def test_an_unknown_host_is_one_line_naming_it(timer: VirtualTimer) -> None:
    provider = LambdaProvider("http://soong-test.invalid/api/v1", "soong-test-key-000000")
    with pytest.raises(errors.ConnectionFailedError) as caught:
        provider.list_instances()
    message = caught.value.message
    assert message == ("cannot reach Lambda Cloud at soong-test.invalid: the host name does not "
                       "resolve")
    assert "\n" not in message and "network" in caught.value.hints[0]


def test_limiter_buckets_match_the_documented_limits() -> None:
    timer = VirtualTimer()
    limiter = Limiter(timer)
    for _ in range(7):
        limiter.acquire(launch=True)
    # five launches back to back (each still a second apart), then one per 12 s: the
    # sixth a launch interval after the first, the seventh one after the sixth
    assert timer.sleeps[:4] == [pytest.approx(1 / GENERAL.rate)] * 4
    assert timer.sleeps[4] == pytest.approx(1 / LAUNCH.rate - 4 / GENERAL.rate)
    assert timer.sleeps[5] == pytest.approx(1 / LAUNCH.rate)
    assert 1 / GENERAL.rate > 1.0 and 1 / LAUNCH.rate > 12.0 and LAUNCH.burst == 5
    assert limiter.waited == pytest.approx(timer.slept)


def test_retry_after_in_seconds_or_as_a_date_and_cut_to_a_minute() -> None:
    now = 784111777.0  # Sun, 06 Nov 1994 08:49:37 GMT
    assert transport.retry_after({"Retry-After": "2"}) == 2
    assert transport.retry_after({"Retry-After": "Sun, 06 Nov 1994 08:49:47 GMT"}, now) == 10
    assert transport.retry_after({"Retry-After": "Sun, 06 Nov 1994 08:49:27 GMT"}, now) == 0
    assert transport.retry_after({"Retry-After": "3600"}) == transport.RETRY_AFTER_MAX
    for junk in ("", "soon", "nan", "inf"):
        assert transport.retry_after({"Retry-After": junk}) is None, junk
    assert transport.retry_after({}) is None


# -- the server's clock, from the Date header (DESIGN, "Laptop clock") --------------------

def test_server_time_is_none_before_any_request(provider: LambdaProvider) -> None:
    assert provider.server_time() is None
    assert transport.Transport("http://127.0.0.1:9/api/v1", "k").server_time() is None


def test_server_time_follows_the_date_of_the_latest_reply(
        provider: LambdaProvider, cloud: SimHarness) -> None:
    cloud_start = cloud.clock.now()  # a ManualClock, far from this machine's clock
    provider.list_instances()
    first = provider.server_time()
    assert first is not None and cloud_start <= first < cloud_start + 2
    cloud.clock.advance(3600)
    provider.list_ssh_keys()
    later = provider.server_time()
    assert later is not None and cloud_start + 3600 <= later < cloud_start + 3602


def test_server_time_runs_on_from_the_reply_without_a_request(
        provider: LambdaProvider, cloud: SimHarness, api_log: Callable[..., Any]) -> None:
    provider.list_instances()
    first = provider.server_time()
    time.sleep(0.2)
    second = provider.server_time()
    assert first is not None and second is not None and 0.2 <= second - first < 1.0
    assert len(api_log(cloud)) == 1


def test_an_error_reply_still_tells_the_time(cloud: SimHarness) -> None:
    provider = LambdaProvider(cloud.api_url, "soong-wrong-key-000000")
    with pytest.raises(errors.InvalidApiKeyError):
        provider.list_instances()
    told = provider.server_time()
    assert told is not None and abs(told - cloud.clock.now()) < 2


class DatedHandler(http.server.BaseHTTPRequestHandler):
    """Answers ``{"data": []}`` with the Date header the test sets (or none)."""

    date: str | None = None

    def do_GET(self) -> None:
        body = b'{"data": []}'
        self.send_response_only(200)
        if self.date is not None:
            self.send_header("Date", self.date)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, format: str, *args: Any) -> None:
        pass


@pytest.fixture
def dated_server() -> Iterator[tuple[str, type[DatedHandler]]]:
    handler = type("Handler", (DatedHandler,), {})
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}/api/v1", handler
    finally:
        server.shutdown()
        server.server_close()


def test_a_malformed_or_missing_date_is_ignored(
        dated_server: tuple[str, type[DatedHandler]]) -> None:
    url, handler = dated_server
    client = transport.Transport(url, "soong-test-key-000000")
    handler.date = "yesterday at noon"
    assert client.request("GET", "/instances").ok
    assert client.server_time() is None
    handler.date = "Sun, 06 Nov 1994 08:49:37 GMT"
    client.request("GET", "/instances")
    good = client.server_time()
    assert good is not None and 784111777 <= good < 784111777 + 2
    for bad in ("Sun, 99 Nov 1994 99:49:37 GMT", "", None):
        handler.date = bad
        assert client.request("GET", "/instances").ok
        later = client.server_time()  # the last good reading, running on
        assert later is not None and good <= later < good + 2


def test_http_dates_in_every_form_and_malformed_ones() -> None:
    parse = transport.parse_http_date
    assert parse("Sun, 06 Nov 1994 08:49:37 GMT") == 784111777
    assert parse("Sunday, 06-Nov-94 08:49:37 GMT") == 784111777
    assert parse("Sun Nov  6 08:49:37 1994") == 784111777
    assert parse("Sun, 06 Nov 1994 08:49:37 -0000") == 784111777
    assert parse("Sun, 06 Nov 1994 09:49:37 +0100") == 784111777
    for bad in (None, "", "not a date", "Sun, 32 Nov 1994 08:49:37 GMT", "1994-11-06"):
        assert parse(bad) is None, bad


# -- a 429 as the edge sends it (plain text) or as the envelope ---------------------------------


@pytest.mark.parametrize("body", ["text", "json"])
def test_a_429_in_either_body_is_retried_after_retry_after(
        cloud_factory: Callable[..., SimHarness], timer: VirtualTimer,
        api_log: Callable[..., Any], body: str) -> None:
    cloud = cloud_factory(allow_429=True, rate_limit_body=body)
    cloud.api("GET", "/instances")  # another program spends this second's token
    provider = LambdaProvider(cloud.api_url, cloud.api_key)
    assert provider.list_instances() == []
    assert [e["status"] for e in api_log(cloud)] == [200, 429, 200]
    assert timer.sleeps[0] == 1.0


@pytest.mark.parametrize("body", ["text", "json"])
def test_a_429_that_outlasts_the_retries_is_one_line_in_either_body(
        cloud_factory: Callable[..., SimHarness], api_log: Callable[..., Any],
        body: str) -> None:
    from soong_plugins.lambda_labs.simulator.ratelimit import LAUNCH as SIM_LAUNCH
    from soong_plugins.lambda_labs.simulator.ratelimit import Limit

    # one request an hour: waiting for the next (Retry-After, cut to a minute) would pass
    # the 60 s deadline, so the client reports the 429 it has
    cloud = cloud_factory(allow_429=True, rate_limit_body=body,
                          limits=(Limit(rate=1 / 3600, burst=1), SIM_LAUNCH))
    cloud.api("GET", "/instances")
    provider = LambdaProvider(cloud.api_url, cloud.api_key)
    with pytest.raises(errors.RateLimitedError) as caught:
        provider.list_instances()
    assert caught.value.message == ("Lambda Cloud kept answering 'too many requests' "
                                    "(listing instances)")
    assert caught.value.status == 429 and caught.value.hints
    assert [e["status"] for e in api_log(cloud)] == [200, 429]
