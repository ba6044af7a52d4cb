"""Fixtures of the Lambda provider tests: simulated clouds that audit the client.

Every test here runs with the provider's process-wide limiter on a
:class:`~soong_plugins.lambda_labs.pacing.VirtualTimer` (``timer``): the pacing and the
backoff happen, in virtual seconds, and nothing sleeps. A ``cloud`` enforces Lambda's
rate limits on the same virtual clock, records every request body, and at teardown
fails the test if the client sent anything the spec does not allow (path, query, body)
or ever made the server answer 429. Responses are checked against the spec by the
simulator fixtures themselves.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Callable, Iterator

import pytest

from soong_plugins.lambda_labs import transport
from soong_plugins.lambda_labs.pacing import VirtualTimer
from soong_plugins.lambda_labs.provider import LambdaProvider
from soong_plugins.lambda_labs.simulator.requestlog import read_lines
from soong_plugins.lambda_labs.simulator.testing import (
    DEFAULT_PUBLIC_KEY,
    SimHarness,
    request_problems,
    sim,
    sim_clock,
    sim_factory,
)

__all__ = ["sim", "sim_clock", "sim_factory"]

KEY_NAME = "soong"
"""The SSH key name soong launches with by default (``defaults.ssh_key_name``)."""


@pytest.fixture(autouse=True)
def timer() -> Iterator[VirtualTimer]:
    """The provider's pacing on virtual time, for this test; real time again after it."""
    virtual = VirtualTimer()
    transport.reset(virtual)
    try:
        yield virtual
    finally:
        transport.reset()


@pytest.fixture
def cloud_factory(sim_factory: Callable[..., SimHarness], timer: VirtualTimer,
                  tmp_path_factory: pytest.TempPathFactory) -> Iterator[Callable[..., SimHarness]]:
    """``cloud_factory(allow_429=False, **Simulator options)``: a simulator with the
    API's rate limits in strict mode (1/s, no burst: soong's pacing is tested against the
    tightest reading) on the virtual clock and body capture, audited at teardown."""
    audits: list[tuple[Path, bool]] = []

    def make(*, allow_429: bool = False, **options: Any) -> SimHarness:
        capture = tmp_path_factory.mktemp("capture") / "bodies.jsonl"
        options.setdefault("rate_limit", "strict")
        options.setdefault("wall", timer.monotonic)
        harness = sim_factory(capture_path=capture, **options)
        harness.capture_path = capture  # type: ignore[attr-defined]
        audits.append((capture, allow_429))
        return harness

    yield make
    problems = [p for capture, allow in audits for p in request_problems(capture, allow_429=allow)]
    if problems:
        pytest.fail("requests the client should not have sent:\n  " + "\n  ".join(problems),
                    pytrace=False)


@pytest.fixture
def cloud(cloud_factory: Callable[..., SimHarness]) -> SimHarness:
    return cloud_factory()


@pytest.fixture
def provider(cloud: SimHarness) -> LambdaProvider:
    return LambdaProvider(cloud.api_url, cloud.api_key)


@pytest.fixture
def ssh_key(provider: LambdaProvider) -> str:
    """The default SSH key, registered through the provider (so the limiter knows)."""
    return provider.add_ssh_key(KEY_NAME, DEFAULT_PUBLIC_KEY).name


def api_requests(harness: SimHarness) -> list[dict[str, Any]]:
    return [e for e in read_lines(harness.simulator.store.request_log_path)
            if e["kind"] == "api" and "source" not in e]


@pytest.fixture
def api_log() -> Callable[[SimHarness], list[dict[str, Any]]]:
    """``api_log(cloud)``: the API requests a cloud received from soong, in order (control
    calls and the instances' agents' requests left out), from its request log."""
    return api_requests
