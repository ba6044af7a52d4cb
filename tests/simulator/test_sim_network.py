"""The simulator-only network facts: POST /_sim/instances/{id}/network points an
instance at a test's sshd, GET /_sim/instances[/{id}] reads them back."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Callable

import pytest

from soong_plugins.lambda_labs.simulator.testing import SimHarness


def test_an_instance_gets_the_address_and_port_of_a_test_sshd(sim: SimHarness) -> None:
    instance_id = sim.launch()
    before = sim.control("GET", f"/instances/{instance_id}")
    assert before["ssh_port"] == 22 and before["agent_url"] is None  # as a real instance
    after = sim.control("POST", f"/instances/{instance_id}/network",
                        {"ip": "127.0.0.1", "ssh_port": 2222})
    assert (after["ip"], after["ssh_port"]) == ("127.0.0.1", 2222)
    sim.clock.advance(3600)  # booted: the API shows an address
    assert sim.instance(instance_id)["ip"] == "127.0.0.1"
    listed = {entry["id"]: entry for entry in sim.control("GET", "/instances")}
    assert listed[instance_id]["ssh_port"] == 2222
    sim.control("POST", f"/instances/{instance_id}/network", {"ssh_port": 2200})
    assert sim.control("GET", f"/instances/{instance_id}")["ip"] == "127.0.0.1"  # kept


@pytest.mark.parametrize(("body", "message"), [
    ({}, "give ip, ssh_port or both"),
    ({"ip": "localhost"}, "ip must be an IPv4 address"),
    ({"ssh_port": 0}, "ssh_port must be an integer from 1 to 65535"),
    ({"ssh_port": True}, "ssh_port must be an integer from 1 to 65535"),
    ({"port": 22}, "unknown field(s) port"),
])
def test_a_wrong_network_is_one_clear_error(sim: SimHarness, body: dict[str, Any],
                                            message: str) -> None:
    instance_id = sim.launch()
    refused = sim.client.request("POST", f"/_sim/instances/{instance_id}/network", body)
    assert refused.status == 400 and message in refused.body["error"]["message"]


def test_unknown_and_ended_instances_are_refused(sim: SimHarness) -> None:
    assert sim.client.request("GET", "/_sim/instances/nope").status == 404
    instance_id = sim.launch()
    sim.control("POST", f"/instances/{instance_id}/fault", {"fault": "preempted"})
    refused = sim.client.request("POST", f"/_sim/instances/{instance_id}/network",
                                 {"ssh_port": 2222})
    assert refused.status == 400


def test_the_network_survives_a_restart_of_the_simulator(
        sim_factory: Callable[..., SimHarness], tmp_path: Path) -> None:
    first = sim_factory(state_dir=tmp_path / "state")
    instance_id = first.launch()
    first.control("POST", f"/instances/{instance_id}/network",
                  {"ip": "127.0.0.1", "ssh_port": 2201})
    first.stop()
    second = sim_factory(state_dir=tmp_path / "state")
    assert second.control("GET", f"/instances/{instance_id}")["ssh_port"] == 2201
