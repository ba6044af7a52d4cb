"""Pytest fixtures: an in-process simulator whose every response is checked against the spec.

Use them from a ``conftest.py``::

    from soong_plugins.lambda_labs.simulator.testing import sim, sim_clock, sim_factory

(or list ``"soong_plugins.lambda_labs.simulator.testing"`` in the root conftest's
``pytest_plugins``). Needs ``jsonschema``, a test dependency.

``sim_clock``
    The :class:`~soong_core.clock.ManualClock` the default ``sim`` runs on.
``sim``
    A :class:`SimHarness`: a simulator serving on ``127.0.0.1:<free port>`` from a
    thread, on ``sim_clock``, rate limits off, with a client. Tests move time with
    ``sim.clock.advance(seconds)``; nothing sleeps.
``sim_factory``
    ``sim_factory(**options)`` makes more (or differently configured) ones; options are
    :class:`~soong_plugins.lambda_labs.simulator.app.Simulator`'s (``rate_limit=True``,
    ``limits=...``, ``faults=...``, ``state_dir=...`` to share a cloud across restarts:
    one at a time, a simulator locks its state directory until it stops).

Every response a fixture's simulator serves (API routes; the control endpoint is not in
the spec) is validated with :class:`~soong_plugins.lambda_labs.spec.SpecValidator`; a
test whose traffic broke the spec fails at teardown, listing each offending response.
"""

from __future__ import annotations

import functools
import itertools
from pathlib import Path
from typing import Any, Callable, Iterator

import pytest

from soong_core.clock import ManualClock
from soong_plugins.lambda_labs.simulator.app import Simulator
from soong_plugins.lambda_labs.simulator.client import Reply, SimClient
from soong_plugins.lambda_labs.simulator.server import Exchange

@functools.lru_cache(maxsize=1)
def spec_validator() -> Any:
    """One validator for the session (building it resolves the whole spec)."""
    from soong_plugins.lambda_labs.spec import SpecValidator

    return SpecValidator()


class ConformanceChecker:
    """An ``on_exchange`` hook: validates each API response, keeps the problems."""

    def __init__(self) -> None:
        self.problems: list[str] = []
        self.checked = 0

    def __call__(self, exchange: Exchange) -> None:
        if exchange.kind == "control" or exchange.status is None:
            return
        self.checked += 1
        method = "GET" if exchange.method == "HEAD" else exchange.method  # GET's headers
        found = spec_validator().validate_response(method, exchange.path,
                                                   exchange.status, exchange.response_body)
        if found:
            self.problems.append(f"{exchange.method} {exchange.path} -> {exchange.status}: "
                                 + "; ".join(found))

    def check_capture(self, path: str | Path) -> None:
        """Validate the responses recorded in a capture file (simulators run elsewhere)."""
        from soong_plugins.lambda_labs.simulator.requestlog import read_lines

        for entry in read_lines(path):
            if entry.get("kind") == "control" or entry.get("status") is None:
                continue
            self.checked += 1
            found = spec_validator().validate_response(entry["method"], entry["path"],
                                                       entry["status"], entry["response_body"])
            if found:
                self.problems.append(f"{entry['method']} {entry['path']} -> "
                                     f"{entry['status']}: " + "; ".join(found))


def request_problems(capture: str | Path, *, allow_429: bool = False) -> list[str]:
    """What is wrong with the requests a client sent, from a capture file: any path,
    query or body the spec does not allow, and any 429 unless ``allow_429`` (a client
    with a working rate limiter never makes the server refuse it; an agent's requests,
    counted apart, are checked against the spec only)."""
    from soong_plugins.lambda_labs.simulator.requestlog import read_lines

    validator = spec_validator()
    problems = []
    for entry in read_lines(capture):
        if entry.get("kind") == "control":
            continue
        where = f"{entry['method']} {entry['path']}"
        if "request_body_invalid" in entry:
            problems.append(f"{where}: the body is not JSON")
        found = (validator.validate_request(entry["method"], entry["path"],
                                            entry.get("request_body"))
                 + validator.validate_query(entry["method"], entry["path"],
                                            entry.get("query") or {}))
        problems += [f"{where}: {p}" for p in found]
        if entry.get("status") == 429 and not allow_429 and "source" not in entry:
            problems.append(f"{where}: answered 429 (the client outran the rate limit)")
    return problems


DEFAULT_KEY_NAME = "sim-test-key"
DEFAULT_PUBLIC_KEY = ("ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAICN+lJwsONkwrdsSnQsu1ydUkIuIg5oOC+"
                      "Eslvmtt60T sim-test")


class SimHarness:
    """A started simulator and a client for it."""

    def __init__(self, simulator: Simulator) -> None:
        self.simulator = simulator
        self.client = SimClient(simulator.url, simulator.api_key)

    @property
    def url(self) -> str:
        return self.simulator.url

    @property
    def api_url(self) -> str:
        return self.simulator.api_url

    @property
    def api_key(self) -> str:
        return self.simulator.api_key

    @property
    def clock(self) -> Any:
        return self.simulator.clock

    @property
    def cloud(self) -> Any:
        return self.simulator.cloud

    def api(self, method: str, path: str, body: Any = None, **kwargs: Any) -> Reply:
        """``method /api/v1{path}`` with the key (``auth=False`` without)."""
        return self.client.api(method, path, body, **kwargs)

    def control(self, method: str, path: str, body: Any = None) -> Any:
        return self.client.control(method, path, body)

    def add_key(self, name: str = DEFAULT_KEY_NAME, public_key: str = DEFAULT_PUBLIC_KEY) -> str:
        """Add an SSH key (once); returns its name."""
        if not any(key["name"] == name for key in self.api("GET", "/ssh-keys").data):
            added = self.api("POST", "/ssh-keys", {"name": name, "public_key": public_key})
            assert added.status == 200, added.body
        return name

    def launch_body(self, **fields: Any) -> dict[str, Any]:
        body: dict[str, Any] = {"region_name": "us-east-1", "instance_type_name": "gpu_1x_a10",
                                "ssh_key_names": [self.add_key()]}
        body.update(fields)
        return body

    def launch(self, **fields: Any) -> str:
        """Launch one instance (us-east-1, gpu_1x_a10 unless ``fields`` say otherwise)."""
        launched = self.api("POST", "/instance-operations/launch", self.launch_body(**fields))
        instance_id: str = launched.data["instance_ids"][0]
        return instance_id

    def instance(self, instance_id: str) -> dict[str, Any]:
        data: dict[str, Any] = self.api("GET", f"/instances/{instance_id}").data
        return data

    def stop(self) -> None:
        self.simulator.stop()


@pytest.fixture
def sim_clock() -> ManualClock:
    return ManualClock()


@pytest.fixture
def sim_factory(tmp_path_factory: pytest.TempPathFactory, sim_clock: ManualClock
                ) -> Iterator[Callable[..., SimHarness]]:
    checker = ConformanceChecker()
    started: list[SimHarness] = []
    counter = itertools.count()

    def make(*, state_dir: str | Path | None = None, **options: Any) -> SimHarness:
        options.setdefault("clock", sim_clock)
        options.setdefault("rate_limit", False)
        hook = options.pop("on_exchange", None)

        def on_exchange(exchange: Exchange) -> None:
            checker(exchange)
            if hook is not None:
                hook(exchange)

        directory = state_dir or tmp_path_factory.mktemp(f"sim{next(counter)}")
        harness = SimHarness(Simulator(directory, on_exchange=on_exchange, **options).start())
        started.append(harness)
        return harness

    make.checker = checker  # type: ignore[attr-defined]
    try:
        yield make
    finally:
        for harness in started:
            harness.stop()
    if checker.problems:
        pytest.fail("responses that break the Lambda Cloud spec:\n  "
                    + "\n  ".join(checker.problems), pytrace=False)


@pytest.fixture
def sim(sim_factory: Callable[..., SimHarness]) -> SimHarness:
    return sim_factory()
