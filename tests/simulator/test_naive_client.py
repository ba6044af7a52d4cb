"""A client nobody here wrote, as published Lambda Cloud clients are: plain ``requests``,
no pacing, no retries, against a simulator with its default settings (rate limits on).

It reads the catalogue twice a few milliseconds apart, then lists the account's
instances and terminates everything it listed, including one that has already ended.
Against the real cloud this works and stops every bill; so it must here (issue 12:
"Rate limits as the edge enforces them", "What it lists, it can terminate").

The simulator's rate limits run on a virtual wall clock the test moves, so "5 ms
apart" needs no sleeping and cannot flake on a slow machine.
"""

from __future__ import annotations

from typing import Any, Callable

import pytest

from soong_plugins.lambda_labs.pacing import VirtualTimer
from soong_plugins.lambda_labs.simulator.testing import SimHarness

BILLING = {"booting", "active", "unhealthy"}


class NaiveClient:
    """What a tutorial's client does: one ``requests`` call per operation, the key as
    HTTP basic auth (``curl -u KEY:``), ``raise_for_status`` and nothing else."""

    def __init__(self, api_url: str, api_key: str) -> None:
        import requests

        self.api_url = api_url
        self.session = requests.Session()
        self.session.auth = (api_key, "")

    def get(self, path: str) -> Any:
        reply = self.session.get(self.api_url + path, timeout=10)
        reply.raise_for_status()
        return reply.json()["data"]

    def post(self, path: str, body: Any) -> Any:
        reply = self.session.post(self.api_url + path, json=body, timeout=10)
        reply.raise_for_status()
        return reply.json()["data"]


@pytest.fixture
def timer() -> VirtualTimer:
    return VirtualTimer()


@pytest.fixture
def cloud(sim_factory: Callable[..., SimHarness], timer: VirtualTimer) -> SimHarness:
    """Default settings (rate limits as the edge enforces them, ``terminate_ended``
    return), the limits on the virtual wall clock."""
    return sim_factory(rate_limit=True, wall=timer.monotonic)


def seed_fleet(cloud: SimHarness) -> tuple[list[str], str]:
    """Two live instances and one that has ended but is still listed, made without the
    API (so the client's requests are the only ones the limiter sees)."""
    ids = cloud.control("POST", "/seed", {"count": 3, "instance_type": "gpu_1x_a10",
                                          "region": "us-east-1", "status": "active"}
                        )["instance_ids"]
    ended = ids[0]
    cloud.cloud.terminate({"instance_ids": [ended]})
    cloud.clock.advance(cloud.cloud.state.settings.terminate_seconds + 1)
    return ids[1:], ended


def test_two_requests_5ms_apart_are_both_answered(cloud: SimHarness,
                                                  timer: VirtualTimer) -> None:
    client = NaiveClient(cloud.api_url, cloud.api_key)
    types = client.get("/instance-types")  # what a client reads before a launch
    timer.sleep(0.005)
    images = client.get("/images")  # a 429 here raises: the edge admits this burst
    assert "gpu_1x_a10" in types and images


def test_list_then_terminate_everything_leaves_nothing_billing(cloud: SimHarness,
                                                               timer: VirtualTimer) -> None:
    live, ended = seed_fleet(cloud)
    client = NaiveClient(cloud.api_url, cloud.api_key)
    client.get("/instance-types")
    timer.sleep(0.005)
    client.get("/images")

    timer.sleep(2)  # later, the sweep: list, then terminate all of it at once
    listed = [instance["id"] for instance in client.get("/instances")]
    assert sorted(listed) == sorted([ended, *live])  # the ended one is still listed
    timer.sleep(0.005)
    answer = client.post("/instance-operations/terminate", {"instance_ids": listed})

    statuses = {i["id"]: i["status"] for i in answer["terminated_instances"]}
    assert statuses == {ended: "terminated", live[0]: "terminating",
                        live[1]: "terminating"}
    bill = cloud.control("GET", "/billing")
    assert all(row["billing_ended_at"] is not None for row in bill["instances"])
    assert not [i for i in cloud.api("GET", "/instances").data if i["status"] in BILLING]
