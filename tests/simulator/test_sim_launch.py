"""Launch validates like the API: each bad request gets the spec's status and error code,
and launches nothing."""

from __future__ import annotations

from typing import Any, Callable

import pytest

from soong_plugins.lambda_labs.simulator.testing import SimHarness

INVALID = "global/invalid-parameters"
NOT_FOUND = "global/object-does-not-exist"
CAPACITY = "instance-operations/launch/insufficient-capacity"
WRONG_REGION = "instance-operations/launch/file-system-in-wrong-region"


def with_fields(**fields: Any) -> Callable[[dict[str, Any]], dict[str, Any]]:
    return lambda body: {**body, **fields}


def without(key: str) -> Callable[[dict[str, Any]], dict[str, Any]]:
    return lambda body: {k: v for k, v in body.items() if k != key}


@pytest.mark.parametrize("change, status, code", [
    (without("region_name"), 400, INVALID),
    (without("instance_type_name"), 400, INVALID),
    (without("ssh_key_names"), 400, INVALID),
    (with_fields(region_name="mars-north-1"), 400, INVALID),
    (with_fields(region_name=7), 400, INVALID),
    (with_fields(instance_type_name="gpu_99x_imaginary"), 404, NOT_FOUND),
    (with_fields(ssh_key_names=[]), 400, INVALID),
    (with_fields(ssh_key_names=["sim-test-key", "other"]), 400, INVALID),
    (with_fields(ssh_key_names=["nobody-has-this-key"]), 404, NOT_FOUND),
    (with_fields(tags=[{"key": "Upper", "value": "x"}]), 400, INVALID),
    (with_fields(tags=[{"key": "a", "value": "x"}]), 400, INVALID),  # two characters at least
    (with_fields(tags=[{"key": "k" * 56, "value": "x"}]), 400, INVALID),
    (with_fields(tags=[{"key": "ok", "value": "v" * 129}]), 400, INVALID),
    (with_fields(tags=[{"key": "ok", "value": "1"}, {"key": "ok", "value": "2"}]), 400, INVALID),
    (with_fields(tags=[{"key": "ok"}]), 400, INVALID),
    (with_fields(user_data="#" * 1_000_001), 400, INVALID),
    (with_fields(user_data=42), 400, INVALID),
    (with_fields(hostname="Not_A_Hostname"), 400, INVALID),
    (with_fields(name="n" * 65), 400, INVALID),
    (with_fields(image={"id": "no-such-image"}), 404, NOT_FOUND),
    (with_fields(image={"family": "windows-95"}), 404, NOT_FOUND),
    (with_fields(image="ubuntu"), 400, INVALID),
    (with_fields(file_system_names=["missing-fs"]), 404, NOT_FOUND),
    (with_fields(file_system_mounts=[{"mount_point": "/etc/passwd", "file_system_id": "x"}]),
     400, INVALID),
    (with_fields(firewall_rulesets=[{"id": "no-such-ruleset"}]), 404, NOT_FOUND),
    (with_fields(region_name="us-east-2"), 400, CAPACITY),  # a valid code this cloud lacks
    (with_fields(instance_type_name="gpu_8x_v100"), 400, CAPACITY),  # not sold in us-east-1
])
def test_bad_launches_are_refused_with_the_spec_error(
        sim: SimHarness, change: Callable[[dict[str, Any]], dict[str, Any]],
        status: int, code: str) -> None:
    reply = sim.api("POST", "/instance-operations/launch", change(sim.launch_body()))
    assert (reply.status, reply.error_code) == (status, code), reply.body
    assert reply.body["error"]["message"]
    assert sim.api("GET", "/instances").data == []


@pytest.mark.parametrize("raw", [b"", b"{not json", b"[1, 2]", b'"text"', b"\xff\xfe"])
def test_malformed_bodies_are_invalid_parameters(sim: SimHarness, raw: bytes) -> None:
    reply = sim.api("POST", "/instance-operations/launch", raw=raw)
    assert (reply.status, reply.error_code) == (400, INVALID)


def test_a_full_launch_is_reflected_in_the_instance(sim: SimHarness) -> None:
    fs = sim.api("POST", "/filesystems", {"name": "data", "region": "us-west-1"}).data
    other = sim.api("POST", "/filesystems", {"name": "scratch", "region": "us-west-1"}).data
    ruleset = sim.api("POST", "/firewall-rulesets", {
        "name": "ssh", "region": "us-west-1",
        "rules": [{"protocol": "tcp", "port_range": [22, 22], "source_network": "0.0.0.0/0",
                   "description": "ssh"}]}).data
    image = next(i for i in sim.api("GET", "/images").data
                 if i["region"]["name"] == "us-west-1" and i["family"] == "ubuntu-24-04")
    user_data = "#!/bin/bash\necho hello\n" + "#" * 999_000
    instance_id = sim.launch(
        region_name="us-west-1", instance_type_name="gpu_1x_h100_pcie", name="box",
        hostname="box-1", file_system_names=["data"],
        file_system_mounts=[{"mount_point": "/data/scratch", "file_system_id": other["id"]}],
        image={"id": image["id"]}, firewall_rulesets=[{"id": ruleset["id"]}],
        user_data=user_data, tags=[{"key": "soong:model", "value": "llama"}],
        quantity=1)  # the old field the spec dropped: 1 is what the API launches anyway
    instance = sim.instance(instance_id)
    assert instance["hostname"] == "box-1"
    assert instance["file_system_names"] == ["data", "scratch"]
    assert instance["file_system_mounts"] == [
        {"mount_point": "/lambda/nfs/data", "file_system_id": fs["id"]},
        {"mount_point": "/data/scratch", "file_system_id": other["id"]}]
    assert instance["firewall_rulesets"] == [{"id": ruleset["id"]}]
    assert instance["instance_type"]["name"] == "gpu_1x_h100_pcie"
    record = sim.cloud.state.instances[instance_id]
    assert record.user_data_bytes == len(user_data)  # its size is kept, never the text
    filesystems = {f["name"]: f["is_in_use"] for f in sim.api("GET", "/file-systems").data}
    assert filesystems == {"data": True, "scratch": True}
    in_use = sim.api("DELETE", f"/filesystems/{fs['id']}")
    assert (in_use.status, in_use.error_code) == (400, "filesystems/filesystem-in-use")
    used = sim.api("DELETE", f"/firewall-rulesets/{ruleset['id']}")
    assert used.error_code == "firewall-rulesets/firewall-ruleset-in-use"


def test_filesystem_and_firewall_ruleset_must_share_the_region(sim: SimHarness) -> None:
    far = sim.api("POST", "/filesystems", {"name": "far", "region": "europe-central-1"})
    assert far.status == 200
    wrong = sim.api("POST", "/instance-operations/launch",
                    sim.launch_body(file_system_names=["far"]))
    assert (wrong.status, wrong.error_code) == (400, WRONG_REGION)
    ruleset = sim.api("POST", "/firewall-rulesets", {"name": "eu", "region": "europe-central-1",
                                                     "rules": []}).data
    elsewhere = sim.api("POST", "/instance-operations/launch",
                        sim.launch_body(firewall_rulesets=[{"id": ruleset["id"]}]))
    assert (elsewhere.status, elsewhere.error_code) == (400, INVALID)


def test_launch_listeners_receive_user_data_which_the_state_never_keeps(sim: SimHarness) -> None:
    received: list[tuple[str, str | None]] = []
    sim.cloud.add_launch_listener(lambda record, user_data: received.append((record.id, user_data)))
    instance_id = sim.launch(user_data="#!/bin/bash\nexport TOKEN=hush-hush\n")
    assert received == [(instance_id, "#!/bin/bash\nexport TOKEN=hush-hush\n")]
    state = sim.simulator.store.state_path.read_text()
    assert "hush-hush" not in state and "user_data_sha256" in state


@pytest.mark.parametrize("quantity", [2, 5, 100])
def test_a_quantity_above_one_is_refused_as_the_api_does(sim: SimHarness, quantity: int
                                                         ) -> None:
    reply = sim.api("POST", "/instance-operations/launch", sim.launch_body(quantity=quantity))
    assert (reply.status, reply.error_code) == (400, "global/invalid-parameters")
    assert reply.body["error"]["message"] == "Requested too many instances."
    assert sim.api("GET", "/instances").data == []  # nothing launched


@pytest.mark.parametrize("quantity", [0, -1, 1.5, "2", True, None])
def test_a_quantity_that_is_no_count_is_refused(sim: SimHarness, quantity: Any) -> None:
    reply = sim.api("POST", "/instance-operations/launch", sim.launch_body(quantity=quantity))
    assert (reply.status, reply.error_code) == (400, "global/invalid-parameters")
    assert "quantity" in reply.body["error"]["message"]
    assert sim.api("GET", "/instances").data == []
