"""SSH keys, filesystems, images, firewall rules and rulesets, audit events."""

from __future__ import annotations

import pytest

from soong_plugins.lambda_labs.simulator.testing import DEFAULT_PUBLIC_KEY, SimHarness


def test_ssh_keys_add_list_generate_delete(sim: SimHarness) -> None:
    added = sim.api("POST", "/ssh-keys", {"name": "laptop", "public_key": DEFAULT_PUBLIC_KEY})
    assert added.data["public_key"] == DEFAULT_PUBLIC_KEY and "private_key" not in added.data
    generated = sim.api("POST", "/ssh-keys", {"name": "made-for-me"}).data
    assert generated["public_key"].startswith("ssh-ed25519 ")
    assert generated["private_key"].startswith("-----BEGIN OPENSSH PRIVATE KEY-----")
    listed = sim.api("GET", "/ssh-keys").data
    assert [k["name"] for k in listed] == ["laptop", "made-for-me"]
    assert all("private_key" not in k for k in listed)
    state = sim.simulator.store.state_path.read_text()
    assert generated["private_key"].splitlines()[1] not in state  # shown once, never kept
    assert sim.api("DELETE", f"/ssh-keys/{generated['id']}").data == {}
    assert [k["name"] for k in sim.api("GET", "/ssh-keys").data] == ["laptop"]


@pytest.mark.parametrize("body", [
    {},
    {"name": ""},
    {"name": "n" * 65},
    {"name": "ok", "public_key": "not a key"},
    {"name": "ok", "public_key": 5},
    {"name": "sim-test-key", "public_key": DEFAULT_PUBLIC_KEY},  # the name is taken
])
def test_bad_ssh_keys_are_invalid_parameters(sim: SimHarness, body: dict[str, object]) -> None:
    sim.add_key()
    reply = sim.api("POST", "/ssh-keys", body)
    assert (reply.status, reply.error_code) == (400, "global/invalid-parameters")


def test_deleting_an_unknown_key_is_400_as_the_spec_lists(sim: SimHarness) -> None:
    reply = sim.api("DELETE", "/ssh-keys/nope")
    assert (reply.status, reply.error_code) == (400, "global/invalid-parameters")


def test_filesystems_create_list_delete(sim: SimHarness) -> None:
    created = sim.api("POST", "/filesystems", {"name": "models", "region": "us-east-1"}).data
    assert created["mount_point"] == "/lambda/nfs/models" and created["is_in_use"] is False
    assert created["region"]["name"] == "us-east-1"
    assert [f["id"] for f in sim.api("GET", "/file-systems").data] == [created["id"]]
    duplicate = sim.api("POST", "/filesystems", {"name": "models", "region": "us-west-1"})
    assert (duplicate.status, duplicate.error_code) == (400, "global/duplicate")
    for bad in ({"name": "9lives", "region": "us-east-1"}, {"name": "x", "region": "nowhere"},
                {"name": "x"}, {"name": "x", "region": "us-east-2"}):
        assert sim.api("POST", "/filesystems", bad).error_code == "global/invalid-parameters"
    deleted = sim.api("DELETE", f"/filesystems/{created['id']}").data
    assert deleted == {"deleted_ids": [created["id"]]}
    missing = sim.api("DELETE", f"/filesystems/{created['id']}")
    assert (missing.status, missing.error_code) == (404, "global/object-does-not-exist")


def test_a_filesystem_is_free_again_once_its_instance_is_terminated(sim: SimHarness) -> None:
    fs = sim.api("POST", "/filesystems", {"name": "shared", "region": "us-east-1"}).data
    instance_id = sim.launch(file_system_names=["shared"])
    sim.api("POST", "/instance-operations/terminate", {"instance_ids": [instance_id]})
    assert sim.api("DELETE", f"/filesystems/{fs['id']}").status == 400  # still terminating
    sim.clock.advance(60)
    assert sim.api("DELETE", f"/filesystems/{fs['id']}").status == 200


def test_images_cover_every_region(sim: SimHarness) -> None:
    images = sim.api("GET", "/images").data
    regions = {image["region"]["name"] for image in images}
    types = sim.api("GET", "/instance-types").data
    offered = {r["name"] for t in types.values() for r in t["regions_with_capacity_available"]}
    assert offered <= regions
    assert {image["architecture"] for image in images} == {"x86_64", "arm64"}


def test_firewall_rules_and_rulesets(sim: SimHarness) -> None:
    rules = sim.api("GET", "/firewall-rules").data
    assert any(rule.get("port_range") == [22, 22] for rule in rules)
    new = [{"protocol": "tcp", "port_range": [8000, 8080], "source_network": "8.8.8.0/24",
            "description": "serving"}]
    assert sim.api("PUT", "/firewall-rules", {"data": new}).data == new
    assert sim.api("GET", "/firewall-rules").data == new
    for bad in ([{"protocol": "icmp", "port_range": [1, 1], "source_network": "0.0.0.0/0",
                  "description": ""}],
                [{"protocol": "tcp", "source_network": "0.0.0.0/0", "description": ""}],
                [{"protocol": "tcp", "port_range": [9, 1], "source_network": "0.0.0.0/0",
                  "description": ""}],
                [{"protocol": "sctp", "port_range": [1, 2], "source_network": "0.0.0.0/0",
                  "description": ""}],
                [{"protocol": "udp", "port_range": [1, 2], "source_network": "300.1.1.1",
                  "description": ""}]):
        assert sim.api("PUT", "/firewall-rules", {"data": bad}).status == 400
    assert sim.api("GET", "/firewall-rulesets").data == []
    ruleset = sim.api("POST", "/firewall-rulesets",
                      {"name": "web", "region": "us-east-1", "rules": new}).data
    assert ruleset["instance_ids"] == [] and ruleset["rules"] == new
    patched = sim.api("PATCH", f"/firewall-rulesets/{ruleset['id']}", {"name": "web2"}).data
    assert patched["name"] == "web2" and patched["rules"] == new
    assert sim.api("GET", f"/firewall-rulesets/{ruleset['id']}").data["name"] == "web2"
    assert sim.api("DELETE", f"/firewall-rulesets/{ruleset['id']}").data == {}
    assert sim.api("GET", f"/firewall-rulesets/{ruleset['id']}").status == 404
    glob = sim.api("PATCH", "/firewall-rulesets/global", {"rules": new}).data
    assert glob == {"id": "global", "name": "Global Firewall Rules", "rules": new}
    assert sim.api("GET", "/firewall-rulesets/global").data == glob


def test_audit_events_are_an_empty_page_and_check_their_range(sim: SimHarness) -> None:
    page = sim.api("GET", "/audit-events?start=2025-09-01T10:30:45Z").data
    assert page == {"events": [], "page_token": None}
    bad = sim.api("GET", "/audit-events?end=yesterday")
    assert (bad.status, bad.error_code) == (400, "global/invalid-parameters")
