"""API keys of a simulated account: the primary one, minted ones, revoked ones
(``/_sim/keys``). The agent's separate key and the fleet trial's revoked-key fault stand
on these."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any, Callable

import pytest

from soong_plugins.lambda_labs.simulator.apikeys import KEYS_FILE, PREFIX_LENGTH
from soong_plugins.lambda_labs.simulator.client import SimClient
from soong_plugins.lambda_labs.simulator.testing import SimHarness


def client(sim: SimHarness, key: str) -> SimClient:
    return SimClient(sim.url, key)


def mint(sim: SimHarness, body: Any = None) -> dict[str, Any]:
    reply = sim.client.request("POST", "/_sim/keys", body)
    assert reply.status == 200, reply.body
    minted: dict[str, Any] = reply.body["data"]
    return minted


def test_a_minted_key_works_and_a_revoked_one_answers_401(sim: SimHarness) -> None:
    minted = mint(sim, {"name": "agent"})
    key = minted["key"]
    assert key != sim.api_key and key.startswith("soong-sim-")
    assert minted["prefix"] == key[:PREFIX_LENGTH] and minted["name"] == "agent"
    assert minted["primary"] is False

    other = client(sim, key)
    assert other.api("GET", "/instance-types").status == 200

    revoked = sim.client.request("DELETE", f"/_sim/keys/{minted['prefix']}")
    assert revoked.status == 200 and revoked.body["data"]["prefix"] == minted["prefix"]
    refused = other.api("GET", "/instance-types")
    assert refused.status == 401 and refused.body["error"]["code"] == "global/invalid-api-key"
    # The primary key is untouched by revoking another.
    assert sim.api("GET", "/instance-types").status == 200


def test_a_request_with_a_minted_key_reaches_the_same_account(sim: SimHarness) -> None:
    instance_id = sim.launch()
    key = mint(sim)["key"]
    listed = client(sim, key).api("GET", "/instances")
    assert [item["id"] for item in listed.body["data"]] == [instance_id]


def test_the_listing_names_keys_without_showing_them(sim: SimHarness) -> None:
    first, second = mint(sim, {"name": "one"}), mint(sim)
    listed = sim.control("GET", "/keys")
    assert [entry["primary"] for entry in listed] == [True, False, False]
    assert [entry["prefix"] for entry in listed[1:]] == [first["prefix"], second["prefix"]]
    assert listed[0]["prefix"] == sim.api_key[:PREFIX_LENGTH]
    text = json.dumps(listed)
    for key in (sim.api_key, first["key"], second["key"]):
        assert key not in text


def test_the_primary_key_cannot_be_revoked(sim: SimHarness) -> None:
    reply = sim.client.request("DELETE", f"/_sim/keys/{sim.api_key[:PREFIX_LENGTH]}")
    assert reply.status == 400
    assert "primary key cannot be revoked" in reply.body["error"]["message"]
    assert sim.api("GET", "/instance-types").status == 200


def test_an_unknown_prefix_is_404_and_a_bad_body_400(sim: SimHarness) -> None:
    reply = sim.client.request("DELETE", "/_sim/keys/soong-sim-nothere1")
    assert reply.status == 404
    assert reply.body["error"]["code"] == "global/object-does-not-exist"
    for body, fragment in (({"nmae": "x"}, "unknown field(s) nmae"), ([], "object"),
                           ({"name": 3}, "name"), ({"name": "x" * 65}, "at most 64")):
        refused = sim.client.request("POST", "/_sim/keys", body)
        assert refused.status == 400, body
        assert fragment in refused.body["error"]["message"], refused.body
    assert len(sim.control("GET", "/keys")) == 1  # nothing minted by a refused request


def test_keys_survive_a_restart_and_a_reset_and_are_stored_only_as_digests(
        sim_factory: Callable[..., SimHarness], tmp_path: Path) -> None:
    first = sim_factory(state_dir=tmp_path / "state")
    kept, dropped = mint(first, {"name": "kept"}), mint(first, {"name": "dropped"})
    first.client.request("DELETE", f"/_sim/keys/{dropped['prefix']}")
    first.stop()

    stored = (tmp_path / "state" / KEYS_FILE)
    assert stored.stat().st_mode & 0o777 == 0o600
    text = stored.read_text()
    assert kept["key"] not in text and kept["prefix"] in text and dropped["prefix"] not in text

    second = sim_factory(state_dir=tmp_path / "state")
    assert client(second, kept["key"]).api("GET", "/instance-types").status == 200
    assert client(second, dropped["key"]).api("GET", "/instance-types").status == 401
    second.stop()

    reset = sim_factory(state_dir=tmp_path / "state", reset=True)  # forgets the cloud only
    assert client(reset, kept["key"]).api("GET", "/instance-types").status == 200


@pytest.mark.parametrize("content", ["{not json", '{"schema_version": 9, "keys": []}',
                                     '{"schema_version": 1, "keys": [{"prefix": 1}]}'])
def test_an_unreadable_keys_file_is_moved_aside(sim_factory: Callable[..., SimHarness],
                                                tmp_path: Path, content: str) -> None:
    state = tmp_path / "state"
    state.mkdir()
    (state / KEYS_FILE).write_text(content)
    sim = sim_factory(state_dir=state)
    assert any("moved aside" in warning for warning in sim.simulator.warnings)
    assert not (state / KEYS_FILE).exists() or (state / KEYS_FILE).read_text() != content
    assert [p for p in os.listdir(state) if p.startswith(KEYS_FILE) and p != KEYS_FILE]
    assert sim.api("GET", "/instance-types").status == 200
    assert mint(sim)["key"]  # and minting works again


def test_a_minted_key_is_never_captured_or_logged(sim_factory: Callable[..., SimHarness],
                                                  tmp_path: Path) -> None:
    sim = sim_factory(capture_path=tmp_path / "capture.jsonl")
    key = mint(sim)["key"]
    client(sim, key).api("GET", "/instances")
    sim.stop()
    for path in [tmp_path / "capture.jsonl", *sim.simulator.store.directory.iterdir()]:
        if path.is_file():
            assert key not in path.read_text(errors="replace"), path
    assert "<api key: not captured>" in (tmp_path / "capture.jsonl").read_text()


def test_a_jupyter_token_is_never_captured(sim_factory: Callable[..., SimHarness],
                                           tmp_path: Path) -> None:
    sim = sim_factory(capture_path=tmp_path / "capture.jsonl", boot_seconds=0)
    instance_id = sim.launch(tags=[{"key": "soong:launch-id", "value": "L1"}])
    token = sim.instance(instance_id).get("jupyter_token")
    assert token  # active at once (boot_seconds=0): the spec's Jupyter fields are there
    sim.api("GET", "/instances")
    sim.api("POST", "/instance-operations/terminate", {"instance_ids": [instance_id]})
    sim.stop()
    captured = (tmp_path / "capture.jsonl").read_text()
    assert token not in captured and "<jupyter token: not captured>" in captured
    assert '"key":"soong:launch-id"' in captured.replace(' ', '')  # a tag's key is no secret
