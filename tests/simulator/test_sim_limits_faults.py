"""Rate limits (wall time) and injected faults."""

from __future__ import annotations

import http.client
import json
import time
from typing import Any, Callable

import pytest

from soong_core.testing import CliResult, SoongEnv, run_soong
from soong_plugins.lambda_labs.simulator.client import SimClient, SimUnreachable
from soong_plugins.lambda_labs.simulator.ratelimit import (
    GENERAL,
    LAUNCH,
    STRICT,
    Limit,
    RateLimiter,
)
from soong_plugins.lambda_labs.simulator.testing import SimHarness


class FakeWall:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


@pytest.mark.parametrize("mode", ["edge", "strict"])
def test_the_documented_launch_limits_on_a_fake_wall_clock(mode: str) -> None:
    wall = FakeWall()
    limiter = RateLimiter(mode=mode, now=wall)
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
    assert (LAUNCH.rate * 12, LAUNCH.burst) == (pytest.approx(1), 5)


def test_the_edge_admits_a_burst_of_three_around_one_per_second() -> None:
    wall = FakeWall()
    limiter = RateLimiter(now=wall)  # the default mode
    assert limiter.mode == "edge" and (GENERAL.rate, GENERAL.burst) == (1.0, 3)
    assert [limiter.admit(False) for _ in range(3)] == [None] * 3  # ms apart, as clients do
    wait, why = limiter.admit(False) or (0, "")
    assert wait == pytest.approx(1.0) and why == "requests are limited to 1 per second, 3 in a row"
    wall.now += 1
    assert limiter.admit(False) is None and limiter.admit(False) is not None
    wall.now += 60  # a quiet minute fills the bucket to 3, no more
    assert [limiter.admit(False) is None for _ in range(4)] == [True, True, True, False]


def test_strict_mode_is_one_a_second_with_no_burst() -> None:
    wall = FakeWall()
    limiter = RateLimiter(mode="strict", now=wall)
    assert (STRICT.rate, STRICT.burst) == (1.0, 1)
    assert limiter.admit(False) is None
    wait, why = limiter.admit(False) or (0, "")
    assert wait == pytest.approx(1.0) and why == "requests are limited to 1 per second"
    wall.now += 60
    assert [limiter.admit(False) is None for _ in range(2)] == [True, False]


def test_switching_modes_keeps_the_launch_bucket_and_off_admits_everything() -> None:
    wall = FakeWall()
    limiter = RateLimiter(mode="strict", now=wall)
    for _ in range(5):
        wall.now += 1
        assert limiter.admit(True) is None
    limiter.mode = "off"
    assert not limiter.enabled and all(limiter.admit(True) is None for _ in range(50))
    limiter.enabled = True  # back on in the mode it had
    assert limiter.mode == "strict"
    limiter.mode = "edge"
    wall.now += 1
    refused = limiter.admit(True)  # the five launches above still count
    assert refused is not None and "launches" in refused[1]
    with pytest.raises(ValueError, match="mode must be one of edge, strict, off"):
        limiter.mode = "fast"


def test_a_refused_request_takes_no_token() -> None:
    wall = FakeWall()
    limiter = RateLimiter(launch=Limit(rate=1 / 12, burst=1), now=wall)
    assert limiter.admit(True) is None
    wall.now += 1
    assert limiter.admit(True) is not None  # the launch bucket is empty...
    assert limiter.admit(False) is None  # ...and the general token was not spent on it


def test_disabled_limits_admit_everything() -> None:
    limiter = RateLimiter(enabled=False, now=FakeWall())
    assert limiter.mode == "off"
    assert all(limiter.admit(True) is None for _ in range(50))


def test_a_429_is_cloudflares_plain_text_by_default(sim_factory: Callable[..., SimHarness]
                                                     ) -> None:
    wall = FakeWall()
    sim = sim_factory(rate_limit=True, wall=wall)  # rate limits on wall time, faked
    assert [sim.api("GET", "/instances").status for _ in range(3)] == [200] * 3
    limited = sim.api("GET", "/instance-types")
    assert (limited.status, limited.body) == (429, "error code: 1015")
    assert limited.headers["Content-Type"] == "text/plain; charset=UTF-8"
    assert limited.headers["Retry-After"] == "1"
    knobs = sim.control("GET", "/knobs")
    assert (knobs["rate_limit_mode"], knobs["rate_limit_body"]) == ("edge", "text")
    sim.control("PATCH", "/knobs", {"rate_limit_body": "json"})
    enveloped = sim.api("GET", "/instance-types")
    assert enveloped.status == 429 and enveloped.headers["Content-Type"] == "application/json"
    assert enveloped.error_code == "global/rate-limit-exceeded"
    assert "1 per second, 3 in a row" in enveloped.body["error"]["message"]
    wall.now += 1
    assert sim.api("GET", "/instances").status == 200
    entries = sim.control("GET", "/requests")["entries"]
    assert [e["fault"] for e in entries if e["status"] == 429] == ["rate_limited"] * 2
    # the teardown's conformance check accepts both bodies


def test_the_spec_check_accepts_the_edges_text_and_no_other() -> None:
    from soong_plugins.lambda_labs.simulator.testing import spec_validator

    validator = spec_validator()
    assert validator.validate_response("GET", "/api/v1/instances", 429, "error code: 1015") == []
    assert validator.validate_response("GET", "/api/v1/instances", 429, "slow down") != []
    assert validator.validate_response("GET", "/api/v1/instances", 200, "error code: 1015") != []


def test_strict_mode_and_the_mode_knobs(sim_factory: Callable[..., SimHarness]) -> None:
    wall = FakeWall()
    sim = sim_factory(rate_limit="strict", rate_limit_body="json", wall=wall)
    assert sim.control("GET", "/status")["rate_limit_mode"] == "strict"
    assert [sim.api("GET", "/instances").status for _ in range(2)] == [200, 429]
    sim.control("PATCH", "/knobs", {"rate_limit_mode": "edge"})
    assert [sim.api("GET", "/instances").status for _ in range(4)] == [200] * 3 + [429]
    sim.control("PATCH", "/knobs", {"rate_limit": False})
    assert sim.control("GET", "/knobs")["rate_limit_mode"] == "off"
    assert all(sim.api("GET", "/instances").status == 200 for _ in range(5))
    sim.control("PATCH", "/knobs", {"rate_limit": True, "rate_limit_mode": "strict"})
    wall.now += 10
    assert [sim.api("GET", "/instances").status for _ in range(2)] == [200, 429]


@pytest.mark.parametrize("options, message", [
    ({"rate_limit": "fast"}, "rate_limit must be one of edge, strict, off, got 'fast'"),
    ({"rate_limit_body": "xml"}, "rate_limit_body must be one of text, json, got 'xml'"),
])
def test_bad_rate_limit_options_are_refused_before_starting(
        tmp_path: Any, options: dict[str, Any], message: str) -> None:
    from soong_plugins.lambda_labs.simulator.app import Simulator, SimulatorError

    with pytest.raises(SimulatorError) as caught:
        Simulator(tmp_path, **options)
    assert str(caught.value) == message


def test_429_carries_retry_after_in_the_api_envelope(
        sim_factory: Callable[..., SimHarness]) -> None:
    # The documented numbers are checked above; here, windows of 0.25 s (requests) and
    # 1 s (launches) on a fake wall clock.
    wall = FakeWall()
    sim = sim_factory(rate_limit=True, rate_limit_body="json", wall=wall,
                      limits=(Limit(rate=4.0, burst=1), Limit(rate=1.0, burst=1)))
    assert sim.api("GET", "/instance-types").status == 200
    limited = sim.api("GET", "/instances")
    assert limited.status == 429 and limited.headers["Retry-After"] == "1"
    assert limited.error_code == "global/rate-limit-exceeded"
    assert sim.control("GET", "/status")["rate_limit"] is True  # control calls are not limited
    wall.now += 0.3  # wall time: rate limits never follow the simulated clock
    assert sim.api("POST", "/ssh-keys", {"name": "k"}).status == 200
    wall.now += 0.3
    body = {"region_name": "us-east-1", "instance_type_name": "gpu_1x_a10", "ssh_key_names": ["k"]}
    assert sim.api("POST", "/instance-operations/launch", body).status == 200
    wall.now += 0.3
    second = sim.api("POST", "/instance-operations/launch", body)
    assert second.status == 429 and int(second.headers["Retry-After"]) == 1
    assert "launches" in second.body["error"]["message"]
    assert len(sim.cloud.state.instances) == 1
    entries = sim.control("GET", "/requests")["entries"]
    assert [e["fault"] for e in entries if e["status"] == 429] == ["rate_limited"] * 2
    sim.control("PATCH", "/knobs", {"rate_limit": False})
    assert all(sim.api("GET", "/instances").status == 200 for _ in range(5))


def test_start_options_reach_the_background_process_unchanged() -> None:
    from soong_plugins.lambda_labs.simulator.__main__ import build_parser
    from soong_plugins.lambda_labs.simulator.options import StartOptions

    for mode, body in [("strict", "json"), ("off", "text"), ("edge", "text")]:
        args = build_parser().parse_args(
            ["--state-dir", "x", *StartOptions(rate_limit=mode, rate_limit_body=body).to_args()])
        assert (args.rate_limit, args.rate_limit_body, args.no_rate_limit) == (mode, body, False)
    assert build_parser().parse_args(["--state-dir", "x"]).rate_limit == "edge"


@pytest.mark.parametrize("flags, message", [
    ("--rate-limit fast", "--rate-limit must be one of edge, strict, off, got 'fast'"),
    ("--rate-limit-body xml", "--rate-limit-body must be one of text, json, got 'xml'"),
    ("--rate-limit strict --no-rate-limit",
     "--no-rate-limit contradicts --rate-limit strict: give one of them"),
])
def test_bad_rate_limit_flags_are_one_line_usage_errors(
        run_cli: Callable[..., CliResult], flags: str, message: str) -> None:
    result = run_cli(f"sim up {flags}")
    assert result.exit_code == 2
    assert result.stderr == f"error: {message}\n", result.stderr


@pytest.mark.slow
def test_sim_up_starts_in_the_mode_and_body_asked_for(soong_env: SoongEnv) -> None:
    up = run_soong("sim", "up", "--json", "--rate-limit", "strict", "--rate-limit-body", "json",
                   env=soong_env, timeout=60)
    assert up.exit_code == 0, up.stderr
    started = json.loads(up.stdout)
    try:
        client = SimClient(started["url"], started["api_key"])
        status = client.control("GET", "/status")
        assert (status["rate_limit_mode"], status["rate_limit_body"]) == ("strict", "json")
        # back to back: the edge's burst would admit all three, strict refuses some
        replies = [client.api("GET", "/instances") for _ in range(3)]
        assert replies[0].status == 200
        limited = [r for r in replies if r.status == 429]
        assert limited and {r.error_code for r in limited} == {"global/rate-limit-exceeded"}
    finally:
        run_soong("sim", "down", env=soong_env, timeout=60)


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
    {"rate_limit_mode": "fast"}, {"rate_limit_body": "xml"}, {"rate_limit_mode": True},
    {"quota_instances": 1.5}, {"account_active": 1}, {"warp": 9}, {},
])
def test_bad_knobs_change_nothing(sim: SimHarness, knobs: dict[str, Any]) -> None:
    before = sim.control("GET", "/knobs")
    reply = sim.client.request("PATCH", "/_sim/knobs", {**knobs, "latency_seconds": 0.5}
                               if knobs and "latency_seconds" not in knobs else knobs)
    assert (reply.status, reply.error_code) == (400, "global/invalid-parameters")
    assert sim.control("GET", "/knobs") == before
