"""Instances over HTTP: lifecycle on simulated time, batch terminate, restart, rename,
faults, capacity, quota. Time moves with the ManualClock; nothing sleeps."""

from __future__ import annotations

from typing import Any

import pytest

from soong_plugins.lambda_labs.simulator.testing import SimHarness


def statuses(sim: SimHarness) -> dict[str, str]:
    return {i["id"]: i["status"] for i in sim.api("GET", "/instances").data}


def test_boot_then_active_with_an_ip_then_terminating_then_gone(sim: SimHarness) -> None:
    sim.control("PATCH", "/knobs", {"boot_seconds": 90, "terminate_seconds": 20,
                                    "ended_visible_seconds": 300})
    instance_id = sim.launch(name="trial", tags=[{"key": "soong:launch-id", "value": "L1"}])
    booting = sim.instance(instance_id)
    assert booting["status"] == "booting"
    assert "ip" not in booting and "hostname" not in booting
    assert booting["name"] == "trial"
    assert booting["tags"] == [{"key": "soong:launch-id", "value": "L1"}]
    assert booting["actions"]["restart"]["available"] is False
    sim.clock.advance(89)
    assert sim.instance(instance_id)["status"] == "booting"
    sim.clock.advance(1)
    active = sim.instance(instance_id)
    assert active["status"] == "active"
    assert active["ip"].count(".") == 3 and active["hostname"] == active["ip"].replace(".", "-")
    assert active["actions"]["terminate"] == {"available": True}

    ended = sim.api("POST", "/instance-operations/terminate", {"instance_ids": [instance_id]})
    assert [i["status"] for i in ended.data["terminated_instances"]] == ["terminating"]
    sim.clock.advance(20)
    assert statuses(sim) == {instance_id: "terminated"}
    sim.clock.advance(300)
    assert statuses(sim) == {}
    assert sim.api("GET", f"/instances/{instance_id}").error_code == "global/object-does-not-exist"


def test_batch_terminate_with_one_unknown_id_terminates_nothing(sim: SimHarness) -> None:
    first, second = sim.launch(), sim.launch()
    reply = sim.api("POST", "/instance-operations/terminate",
                    {"instance_ids": [first, "0" * 32, second]})
    assert (reply.status, reply.error_code) == (404, "global/object-does-not-exist")
    assert "0" * 32 in reply.body["error"]["message"]
    assert statuses(sim) == {first: "booting", second: "booting"}

    both = sim.api("POST", "/instance-operations/terminate", {"instance_ids": [first, second]})
    assert {i["id"] for i in both.data["terminated_instances"]} == {first, second}
    again = sim.api("POST", "/instance-operations/terminate", {"instance_ids": [first]})
    assert again.data["terminated_instances"][0]["status"] == "terminating"  # a retry is harmless
    sim.clock.advance(3600)
    gone = sim.api("POST", "/instance-operations/terminate", {"instance_ids": [first]})
    assert gone.status == 404  # terminated ones are not terminated twice


def test_an_ended_but_listed_instance_comes_back_unchanged(sim: SimHarness) -> None:
    """What a client lists, it can terminate: one ended instance in the batch does not
    make the call a 404 that leaves the live ones billing."""
    sim.control("PATCH", "/knobs", {"terminate_seconds": 10, "ended_visible_seconds": 300})
    assert sim.control("GET", "/knobs")["terminate_ended"] == "return"
    ended, preempted, live = sim.launch(), sim.launch(), sim.launch()
    sim.api("POST", "/instance-operations/terminate", {"instance_ids": [ended]})
    sim.control("POST", f"/instances/{preempted}/fault", {"fault": "preempted"})
    sim.clock.advance(60)
    before = {i["id"]: i for i in sim.api("GET", "/instances").data}
    assert {k: v["status"] for k, v in before.items()} == {
        ended: "terminated", preempted: "preempted", live: "active"}
    record = sim.cloud.state.instances[ended]
    ends = (record.terminate_requested_at, record.terminated_at)

    reply = sim.api("POST", "/instance-operations/terminate",
                    {"instance_ids": list(before)})
    answered = {i["id"]: i for i in reply.data["terminated_instances"]}
    assert answered[ended] == before[ended] and answered[preempted] == before[preempted]
    assert answered[live]["status"] == "terminating"
    assert (record.terminate_requested_at, record.terminated_at) == ends  # untouched
    assert sim.cloud.state.instances[preempted].terminate_requested_at is None
    assert not any(i["status"] in ("booting", "active", "unhealthy")
                   for i in sim.api("GET", "/instances").data)


def test_terminate_ended_404_fails_the_batch_as_before(sim_factory: Any) -> None:
    sim = sim_factory(terminate_ended="404")
    assert sim.control("GET", "/knobs")["terminate_ended"] == "404"
    ended, live = sim.launch(), sim.launch()
    sim.api("POST", "/instance-operations/terminate", {"instance_ids": [ended]})
    sim.clock.advance(60)
    reply = sim.api("POST", "/instance-operations/terminate", {"instance_ids": [ended, live]})
    assert (reply.status, reply.error_code) == (404, "global/object-does-not-exist")
    assert ended in reply.body["error"]["message"]
    assert sim.instance(live)["status"] == "active"  # nothing terminated
    assert sim.control("PATCH", "/knobs", {"terminate_ended": "return"})["terminate_ended"] \
        == "return"
    assert len(sim.api("POST", "/instance-operations/terminate",
                       {"instance_ids": [ended, live]}).data["terminated_instances"]) == 2


def test_the_terminate_ended_knob_takes_only_its_two_words(sim: SimHarness) -> None:
    for value in ("yes", "", True, None, 405):
        reply = sim.client.request("PATCH", "/_sim/knobs", {"terminate_ended": value})
        assert reply.status == 400 and "terminate_ended" in reply.body["error"]["message"]
    assert sim.control("PATCH", "/knobs", {"terminate_ended": 404})["terminate_ended"] == "404"


def test_terminate_ended_persists_and_is_a_start_option(sim_factory: Any,
                                                        tmp_path: Any) -> None:
    from soong_plugins.lambda_labs.simulator.app import Simulator, SimulatorError

    first = sim_factory(state_dir=tmp_path / "cloud", terminate_ended="404")
    first.stop()
    again = sim_factory(state_dir=tmp_path / "cloud")
    assert again.control("GET", "/knobs")["terminate_ended"] == "404"
    again.stop()
    with pytest.raises(SimulatorError, match="terminate_ended must be one of return, 404"):
        Simulator(tmp_path / "other", terminate_ended="sometimes", rate_limit=False)


def test_terminating_no_ids_answers_an_empty_list(sim: SimHarness) -> None:
    instance_id = sim.launch()
    reply = sim.api("POST", "/instance-operations/terminate", {"instance_ids": []})
    assert (reply.status, reply.data) == (200, {"terminated_instances": []})
    assert sim.instance(instance_id)["status"] == "booting"


def test_terminate_and_restart_refuse_malformed_bodies(sim: SimHarness) -> None:
    restart_empty: list[Any] = [{"instance_ids": []}]
    for path, extra in (("/instance-operations/terminate", []),
                        ("/instance-operations/restart", restart_empty)):
        bodies: list[Any] = [{}, {"instance_ids": "abc"}, [1], *extra]
        for body in bodies:
            reply = sim.api("POST", path, body)
            assert (reply.status, reply.error_code) == (400, "global/invalid-parameters"), body


def test_restart_boots_again_and_clears_unhealthy(sim: SimHarness) -> None:
    instance_id = sim.launch()
    sim.clock.advance(60)
    sim.control("POST", f"/instances/{instance_id}/fault", {"fault": "unhealthy"})
    assert sim.instance(instance_id)["status"] == "unhealthy"
    restarted = sim.api("POST", "/instance-operations/restart", {"instance_ids": [instance_id]})
    assert restarted.data["restarted_instances"][0]["status"] == "booting"
    sim.clock.advance(60)
    assert sim.instance(instance_id)["status"] == "active"
    unknown = sim.api("POST", "/instance-operations/restart", {"instance_ids": ["nope"]})
    assert unknown.status == 404


def test_preempted_instances_end_and_free_their_capacity(sim: SimHarness) -> None:
    sim.control("PUT", "/capacity", {"instance_type": "gpu_1x_a10", "region": "us-east-1",
                                     "capacity": 1})
    instance_id = sim.launch()
    full = sim.api("POST", "/instance-operations/launch", sim.launch_body())
    assert full.status == 400
    assert full.error_code == "instance-operations/launch/insufficient-capacity"
    sim.control("POST", f"/instances/{instance_id}/fault", {"fault": "preempted"})
    assert sim.instance(instance_id)["status"] == "preempted"
    assert sim.instance(instance_id)["actions"]["terminate"]["available"] is False
    assert sim.launch()  # the slot is free again
    bad = sim.client.request("POST", f"/_sim/instances/{instance_id}/fault", {"fault": "healthy"})
    assert bad.status == 400  # an ended instance takes no more faults


def test_rename_changes_only_the_name(sim: SimHarness) -> None:
    instance_id = sim.launch(name="old")
    renamed = sim.api("POST", f"/instances/{instance_id}", {"name": "new"})
    assert renamed.data["name"] == "new" and renamed.data["id"] == instance_id
    too_long = sim.api("POST", f"/instances/{instance_id}", {"name": "x" * 65})
    assert too_long.error_code == "global/invalid-parameters"
    assert sim.api("POST", "/instances/nope", {"name": "x"}).status == 404


def test_instance_types_show_regions_with_capacity(sim: SimHarness) -> None:
    types = sim.api("GET", "/instance-types").data
    assert len(types) >= 15
    a10 = types["gpu_1x_a10"]
    assert a10["instance_type"]["price_cents_per_hour"] == 75
    assert {"name": "us-east-1", "description": "Virginia, USA"} in \
        a10["regions_with_capacity_available"]
    sim.control("PUT", "/capacity", {"instance_type": "gpu_1x_a10", "region": "*", "capacity": 0})
    sim.control("PUT", "/capacity", {"entries": [
        {"instance_type": "gpu_1x_a10", "region": "us-west-1", "capacity": 1}]})
    types = sim.api("GET", "/instance-types").data
    regions = types["gpu_1x_a10"]["regions_with_capacity_available"]
    assert [r["name"] for r in regions] == ["us-west-1"]
    sim.launch(region_name="us-west-1")
    assert sim.api("GET", "/instance-types").data["gpu_1x_a10"][
        "regions_with_capacity_available"] == []
    table = {(row["instance_type"], row["region"]): row for row in sim.control("GET", "/capacity")}
    assert table[("gpu_1x_a10", "us-west-1")] == {"instance_type": "gpu_1x_a10",
                                                  "region": "us-west-1", "capacity": 1,
                                                  "used": 1, "available": 0}


def test_quota_and_inactive_account(sim: SimHarness) -> None:
    sim.control("PATCH", "/knobs", {"quota_instances": 1})
    sim.launch()
    over = sim.api("POST", "/instance-operations/launch", sim.launch_body())
    assert (over.status, over.error_code) == (400, "global/quota-exceeded")
    sim.control("PATCH", "/knobs", {"account_active": False})
    inactive = sim.api("GET", "/instances")
    assert (inactive.status, inactive.error_code) == (403, "global/account-inactive")


def test_list_filters_by_cluster_and_orders_by_launch(sim: SimHarness) -> None:
    first = sim.launch()
    sim.clock.advance(1)
    second = sim.launch()
    assert [i["id"] for i in sim.api("GET", "/instances").data] == [first, second]
    assert sim.api("GET", "/instances?cluster_id=abc").data == []


def test_seeded_fleets_carry_unique_tags_and_skip_limits(sim: SimHarness) -> None:
    sim.control("PUT", "/capacity", {"instance_type": "*", "region": "*", "capacity": 0})
    seeded: dict[str, Any] = sim.control("POST", "/seed", {
        "count": 300, "instance_type": "gpu_1x_h100_sxm5", "region": "us-west-3",
        "name": "fleet-{i}", "launched_seconds_ago": 600,
        "tags": {"soong:launch-id": "seed-{i}", "team": "bench"}})
    ids = seeded["instance_ids"]
    assert len(set(ids)) == 300
    listed = sim.api("GET", "/instances").data
    assert len(listed) == 300 and {i["status"] for i in listed} == {"active"}
    launch_ids = {next(t["value"] for t in i["tags"] if t["key"] == "soong:launch-id")
                  for i in listed}
    assert launch_ids == {f"seed-{n}" for n in range(300)}
    assert listed[7]["name"].startswith("fleet-")
    bill = sim.control("GET", f"/billing/{ids[0]}")
    assert bill["billed_seconds"] == 600
    booting = sim.control("POST", "/seed", {"count": 2, "status": "booting"})["instance_ids"]
    assert {sim.instance(i)["status"] for i in booting} == {"booting"}
    bad = sim.client.request("POST", "/_sim/seed", {"count": 0})
    assert bad.error_code == "global/invalid-parameters"
