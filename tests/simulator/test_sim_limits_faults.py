"""Rate limits (wall time) and injected faults."""

from __future__ import annotations

import http.client
import time
from typing import Any, Callable

import pytest

from soong_plugins.lambda_labs.simulator.client import SimUnreachable
from soong_plugins.lambda_labs.simulator.ratelimit import GENERAL, LAUNCH, Limit, RateLimiter
from soong_plugins.lambda_labs.simulator.testing import SimHarness


class FakeWall:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def test_the_documented_limits_on_a_fake_wall_clock() -> None:
    wall = FakeWall()
    limiter = RateLimiter(now=wall)
    assert limiter.admit(False) is None
    wait, why = limiter.admit(False) or (0, "")
    assert wait == pytest.approx(1.0) and "requests" in why
    launches = []
    for _ in range(7):
        wall.now += 1  # one request per second keeps the general limit happy
        launches.append(limiter.admit(True))
    assert launches[:5] == [None] * 5  # five launches in a row...
    wait, why = launches[5] or (0, "")
    # ...then one per 12 s: 5 s after the first, 5/12 of a token has come back
    assert "launches" in why and wait == pytest.approx(12 - 5)
    wall.now += 7
    assert limiter.admit(True) is None
    assert (GENERAL.rate, GENERAL.burst, LAUNCH.burst) == (1.0, 1, 5)
    assert LAUNCH.rate * 12 == pytest.approx(1)


def test_a_refused_request_takes_no_token() -> None:
    wall = FakeWall()
    limiter = RateLimiter(launch=Limit(rate=1 / 12, burst=1), now=wall)
    assert limiter.admit(True) is None
    wall.now += 1
    assert limiter.admit(True) is not None  # the launch bucket is empty...
    assert limiter.admit(False) is None  # ...and the general token was not spent on it


def test_disabled_limits_admit_everything() -> None:
    limiter = RateLimiter(enabled=False, now=FakeWall())
    assert all(limiter.admit(True) is None for _ in range(50))


def test_429_carries_retry_after_in_the_api_envelope(
        sim_factory: Callable[..., SimHarness]) -> None:
    # The documented numbers are checked above on a fake clock; here, real wall time with
    # windows of 0.25 s (requests) and 1 s (launches) keeps the test short.
    sim = sim_factory(rate_limit=True, limits=(Limit(rate=4.0, burst=1), Limit(rate=1.0, burst=1)))
    assert sim.api("GET", "/instance-types").status == 200
    limited = sim.api("GET", "/instances")
    assert limited.status == 429 and limited.headers["Retry-After"] == "1"
    assert limited.error_code == "global/rate-limit-exceeded"
    assert sim.control("GET", "/status")["rate_limit"] is True  # control calls are not limited
    time.sleep(0.3)  # real wall time: rate limits never follow the simulated clock
    assert sim.api("POST", "/ssh-keys", {"name": "k"}).status == 200
    time.sleep(0.3)
    body = {"region_name": "us-east-1", "instance_type_name": "gpu_1x_a10", "ssh_key_names": ["k"]}
    assert sim.api("POST", "/instance-operations/launch", body).status == 200
    time.sleep(0.3)
    second = sim.api("POST", "/instance-operations/launch", body)
    assert second.status == 429 and int(second.headers["Retry-After"]) == 1
    assert "launches" in second.body["error"]["message"]
    assert len(sim.cloud.state.instances) == 1
    entries = sim.control("GET", "/requests")["entries"]
    assert [e["fault"] for e in entries if e["status"] == 429] == ["rate_limited"] * 2
    sim.control("PATCH", "/knobs", {"rate_limit": False})
    assert all(sim.api("GET", "/instances").status == 200 for _ in range(5))


def test_injected_errors_do_nothing_and_look_like_the_api(sim: SimHarness) -> None:
    body = sim.launch_body()
    sim.control("PATCH", "/knobs", {"error_rate": 1.0, "error_status": 503})
    reply = sim.api("POST", "/instance-operations/launch", body)
    assert (reply.status, reply.error_code) == (503, "provider/internal-unavailable")
    sim.control("PATCH", "/knobs", {"error_status": 500})
    assert sim.api("GET", "/instances").error_code == "global/internal-error"
    sim.control("PATCH", "/knobs", {"error_rate": 0.5, "fault_seed": 7})
    outcomes = [sim.api("GET", "/instances").status for _ in range(40)]
    assert 0 < outcomes.count(500) < 40 and set(outcomes) == {200, 500}
    sim.control("PATCH", "/knobs", {"error_rate": 0})
    assert sim.cloud.state.instances == {}


def test_a_dropped_launch_reply_still_creates_the_instance(sim: SimHarness) -> None:
    sim.add_key()
    sim.control("PATCH", "/knobs", {"drop_launch_responses": 1})
    with pytest.raises(SimUnreachable):
        sim.api("POST", "/instance-operations/launch",
                sim.launch_body(tags=[{"key": "soong:launch-id", "value": "lost-1"}]))
    listed = sim.api("GET", "/instances").data  # the client reconciles by listing
    assert [t["value"] for t in listed[0]["tags"]] == ["lost-1"]
    assert sim.control("GET", "/knobs")["drop_launch_responses"] == 0
    assert sim.launch()  # only the next N launches are dropped
    entries = sim.control("GET", "/requests")["entries"]
    dropped = [e for e in entries if e["fault"] == "dropped"]
    assert len(dropped) == 1 and dropped[0]["status"] is None


def test_connection_resets_abort_without_doing_anything(sim: SimHarness) -> None:
    sim.add_key()
    sim.control("PATCH", "/knobs", {"reset_rate": 1.0})
    connection = http.client.HTTPConnection("127.0.0.1", sim.simulator.port, timeout=5)
    connection.request("POST", "/api/v1/instance-operations/launch",
                       body=b'{"region_name": "us-east-1"}',
                       headers={"Authorization": f"Bearer {sim.api_key}"})
    with pytest.raises((ConnectionResetError, http.client.RemoteDisconnected)):
        connection.getresponse()
    connection.close()
    sim.control("PATCH", "/knobs", {"reset_rate": 0})
    assert sim.api("GET", "/instances").data == []


def test_added_latency_is_wall_time_on_api_calls_only(sim: SimHarness) -> None:
    sim.control("PATCH", "/knobs", {"latency_seconds": 0.2})
    started = time.monotonic()
    sim.api("GET", "/instances")
    assert time.monotonic() - started >= 0.2
    started = time.monotonic()
    sim.control("GET", "/status")
    assert time.monotonic() - started < 0.2


@pytest.mark.parametrize("knobs", [
    {"error_rate": 2}, {"error_status": 404}, {"latency_seconds": -1}, {"reset_rate": "x"},
    {"drop_launch_responses": 1.5}, {"speed": 2}, {"boot_seconds": -5}, {"rate_limit": "no"},
    {"quota_instances": 1.5}, {"account_active": 1}, {"warp": 9}, {},
])
def test_bad_knobs_change_nothing(sim: SimHarness, knobs: dict[str, Any]) -> None:
    before = sim.control("GET", "/knobs")
    reply = sim.client.request("PATCH", "/_sim/knobs", {**knobs, "latency_seconds": 0.5}
                               if knobs and "latency_seconds" not in knobs else knobs)
    assert (reply.status, reply.error_code) == (400, "global/invalid-parameters")
    assert sim.control("GET", "/knobs") == before
