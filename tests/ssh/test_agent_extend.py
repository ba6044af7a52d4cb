"""An extension goes through the instance's lease agent before soong records it: the
real agent in the simulator's sandbox (its deadline moves; a retry after a lost answer
extends once; a dead agent means nothing is extended or recorded), and a stand-in for
the refusals' wording."""

from __future__ import annotations

import json
import urllib.request
from typing import Any, Callable

import pytest

from soong_core.errors import SoongError
from soong_core.files import soong_dir, write_private
from soong_core.models import Instance, InstanceState, parse_timestamp
from soong_core.testing import Answer, LocalServer, Request, SoongEnv
from soong_plugins.lambda_labs.simulator.testing import SimHarness
from soong_plugins.lease_agent import tokens
from soong_plugins.lease_agent.extend import extend_through_agent

HOUR = 3600.0


@pytest.fixture
def cloud(lambda_sim: SimHarness) -> SimHarness:
    return lambda_sim


def agent_view(cloud: SimHarness, instance_id: str) -> dict[str, Any]:
    url = cloud.control("GET", f"/instances/{instance_id}")["agent_url"]
    request = urllib.request.Request(url + "/status", headers={
        "Authorization": f"Bearer {tokens.read_token(instance_id)}"})
    with urllib.request.urlopen(request, timeout=5) as answer:
        view: dict[str, Any] = json.loads(answer.read())
    return view


def test_the_agent_moves_the_lease_and_a_retry_never_doubles(
        cloud: SimHarness, run_cli: Callable[..., Any]) -> None:
    assert run_cli("start -y --hours 1").exit_code == 0
    [shown] = json.loads(run_cli("status --json").stdout)["instances"]
    instance_id = shown["id"]
    launched = agent_view(cloud, instance_id)["lease_deadline"]

    extended = run_cli("extend 1 -y")
    assert extended.exit_code == 0, extended.stderr
    assert agent_view(cloud, instance_id)["lease_deadline"] == pytest.approx(launched + HOUR)

    # The agent takes a second hour, but its answer never reaches soong: the retry
    # finds the agent's deadline already where it asks, and counts it once.
    url = cloud.control("GET", f"/instances/{instance_id}")["agent_url"]
    lost = urllib.request.Request(url + "/extend", method="POST", data=json.dumps(
        {"hours": 1, "expected_deadline": launched + HOUR}).encode(), headers={
        "Authorization": f"Bearer {tokens.read_token(instance_id)}",
        "Content-Type": "application/json"})
    urllib.request.urlopen(lost, timeout=5).close()
    retried = run_cli("extend 1 -y")
    assert retried.exit_code == 0, retried.stderr
    assert agent_view(cloud, instance_id)["lease_deadline"] == pytest.approx(launched + 2 * HOUR)
    [after] = json.loads(run_cli("status --json").stdout)["instances"]
    # history's deadline is the agent's: two extensions recorded, not three
    assert parse_timestamp(after["lease_deadline"]) == pytest.approx(launched + 2 * HOUR, abs=1)

    cloud.control("POST", f"/instances/{instance_id}/fault", {"fault": "agent_dead"})
    dead = run_cli("extend 1 -y")
    assert dead.exit_code == 1
    first = dead.stderr.splitlines()[0]
    assert first.startswith(f"error: the agent of {instance_id} does not answer")
    assert first.endswith("nothing was extended or recorded, since the agent enforces the "
                          "lease")
    [still] = json.loads(run_cli("status --json").stdout)["instances"]
    assert still["lease_deadline"] == after["lease_deadline"]


def moved_elsewhere(request: Request) -> Answer:
    return Answer(json.dumps({"error": {"code": "deadline_changed", "message": "changed",
                                        "lease_deadline": 9000.0}}), status=409,
                  content_type="application/json")


def test_a_deadline_moved_elsewhere_is_refused_naming_both(soong_env: SoongEnv) -> None:
    with LocalServer(moved_elsewhere) as agent:
        write_private(soong_dir("data") / "agents" / "i-1.token", "t0ken\n")
        instance = Instance("i-1", InstanceState.ACTIVE, extra={"agent_url": agent.url})
        with pytest.raises(SoongError, match="has the lease ending at 1970-01-01T02:30:00Z, "
                                             "not 1970-01-01T02:00:00Z") as refused:
            extend_through_agent(instance, 1, 7200.0, 10800.0, {})
        assert "`soong agent status i-1`" in refused.value.hints[0]
        extend_through_agent(instance, 0.5, 7200.0, 9000.0, {})  # already there: done
