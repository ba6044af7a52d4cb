"""What the spec's own words ask of the simulator: source networks, Jupyter fields on
active instances, audit events of launches and terminations, filesystem growth."""

from __future__ import annotations

import base64
import json
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Callable

import pytest

from soong_plugins.lambda_labs.simulator import cloud as cloud_module
from soong_plugins.lambda_labs.simulator.testing import SimHarness


def _rule(network: str) -> dict[str, Any]:
    return {"protocol": "tcp", "port_range": [22, 22], "source_network": network,
            "description": "ssh"}


# -- firewall source networks ---------------------------------------------------------

def test_a_source_network_without_a_mask_gets_32(sim: SimHarness) -> None:
    rules = [_rule("1.2.3.4"), _rule("8.8.8.0/24"), _rule("8.0.0.0/5")]  # a public address
    answer = sim.api("PUT", "/firewall-rules", {"data": rules})
    assert [r["source_network"] for r in answer.data] == ["1.2.3.4/32", "8.8.8.0/24", "8.0.0.0/5"]
    assert [r["source_network"] for r in sim.api("GET", "/firewall-rules").data] == [
        "1.2.3.4/32", "8.8.8.0/24", "8.0.0.0/5"]


def test_any_address_stays_accepted_and_is_the_default(sim: SimHarness) -> None:
    assert {r["source_network"] for r in sim.api("GET", "/firewall-rules").data} == {"0.0.0.0/0"}
    answer = sim.api("PATCH", "/firewall-rulesets/global", {"rules": [_rule("0.0.0.0/0")]})
    assert answer.data["rules"][0]["source_network"] == "0.0.0.0/0"


@pytest.mark.parametrize("network, why", [
    ("10.0.0.0/8", "not a public"), ("192.168.1.0/24", "not a public"),
    ("172.16.0.1", "not a public"), ("127.0.0.1", "not a public"),
    ("169.254.0.0/16", "not a public"), ("224.0.0.1", "not a public"),
    ("240.0.0.0/4", "not a public"), ("100.64.0.0/10", "not a public"),
    ("0.0.0.0", "not a public"), ("255.255.255.255", "not a public"),
    ("198.51.100.7", "not a public"), ("192.0.0.9", "not a public"),  # same on every Python
    ("10.0.0.1/8", "host bits"), ("1.2.3.4/24", "host bits"),
    ("1.2.3.4/33", "not an IPv4"), ("::1", "not an IPv4"), ("example.com", "not an IPv4"),
])
def test_non_public_networks_and_host_bits_are_refused(sim: SimHarness, network: str,
                                                       why: str) -> None:
    before = sim.api("GET", "/firewall-rules").data
    for method, path, body in (("PUT", "/firewall-rules", {"data": [_rule(network)]}),
                               ("PATCH", "/firewall-rulesets/global", {"rules": [_rule(network)]}),
                               ("POST", "/firewall-rulesets", {"name": "r", "region": "us-east-1",
                                                               "rules": [_rule(network)]})):
        answer = sim.api(method, path, body)
        assert answer.status == 400, (method, answer.body)
        error = answer.body["error"]
        assert error["code"] == "global/invalid-parameters"
        assert why in error["message"] and repr(network) in error["message"]
        assert "\n" not in error["message"]
    assert sim.api("GET", "/firewall-rules").data == before  # nothing changed


# -- Jupyter --------------------------------------------------------------------------

def test_jupyter_fields_appear_once_the_instance_is_active(sim: SimHarness) -> None:
    instance_id = sim.launch()
    booting = sim.instance(instance_id)
    assert booting["status"] == "booting"
    assert "jupyter_url" not in booting and "jupyter_token" not in booting
    sim.clock.advance(61)
    active = sim.instance(instance_id)
    assert active["status"] == "active"
    token = active["jupyter_token"]
    assert len(token) == 32 and int(token, 16) >= 0
    assert active["jupyter_url"] == (f"https://jupyter-{instance_id}.lambdaspaces.sim.soong"
                                     f".invalid/?token={token}")
    other = sim.launch()
    sim.clock.advance(61)
    assert sim.instance(other)["jupyter_token"] != token  # one per instance
    assert sim.instance(instance_id)["jupyter_token"] == token  # and it stays


# -- audit events ---------------------------------------------------------------------

def _events(sim: SimHarness, **query: str) -> dict[str, Any]:
    from urllib.parse import urlencode

    suffix = f"?{urlencode(query)}" if query else ""
    data: dict[str, Any] = sim.api("GET", f"/audit-events{suffix}").data
    return data


def _iso(ts: float) -> str:
    return datetime.fromtimestamp(ts, tz=timezone.utc).isoformat()


def test_launches_and_terminations_are_audit_events(sim: SimHarness) -> None:
    assert _events(sim) == {"events": [], "page_token": None}
    launched_at = sim.clock.now()
    instance_id = sim.launch()
    sim.clock.advance(100)
    sim.api("POST", "/instance-operations/terminate", {"instance_ids": [instance_id]})
    sim.api("POST", "/instance-operations/terminate", {"instance_ids": [instance_id]})  # again
    page = _events(sim)
    assert page["page_token"] is None
    assert [e["action"] for e in page["events"]] == ["launched", "terminated"]
    launch = page["events"][0]
    account = sim.simulator.account_id
    assert launch["service_name"] == "cloud" and launch["resource_name"] == "instance"
    assert launch["resource_lrns"] == [f"lrn:cloud:instance:{instance_id}"]
    assert launch["resource_owner_lrn"] == f"lrn:cloud:account:{account}"
    assert launch["actor_lrn"].startswith("lrn:cloud:identity:")
    assert launch["request_api_key_lrn"] is None
    assert launch["additional_details"] == {"instance_lrn": f"lrn:cloud:instance:{instance_id}",
                                            "instance_type": "gpu_1x_a10",
                                            "region": "us-east-1"}
    stamp = datetime.strptime(launch["event_time"], "%Y-%m-%dT%H:%M:%S.%fZ")
    assert stamp.replace(tzinfo=timezone.utc).timestamp() == pytest.approx(launched_at)
    assert len({e["event_id"] for e in page["events"]}) == 2


def test_audit_events_filter_by_time_and_resource_type(sim: SimHarness) -> None:
    first = sim.clock.now()
    sim.launch()
    sim.clock.advance(3600)
    second = sim.clock.now()
    sim.launch()
    assert len(_events(sim, start=_iso(second))["events"]) == 1
    assert len(_events(sim, end=_iso(first))["events"]) == 1  # inclusive
    assert len(_events(sim, start=_iso(first), end=_iso(second))["events"]) == 2
    naive = datetime.fromtimestamp(second, tz=timezone.utc).replace(tzinfo=None).isoformat()
    assert len(_events(sim, start=naive)["events"]) == 1  # no offset: UTC
    assert len(_events(sim, resource_type="cloud.instance")["events"]) == 2
    assert _events(sim, resource_type="cloud.api_key")["events"] == []
    for bad in ({"start": "yesterday"}, {"start": _iso(second), "end": _iso(first)},
                {"page_token": "bm90IGEgdG9rZW4="}, {"page_token": "***"}):
        from urllib.parse import urlencode

        answer = sim.api("GET", f"/audit-events?{urlencode(bad)}")
        assert answer.status == 400 and \
            answer.body["error"]["code"] == "global/invalid-parameters", bad


def test_audit_events_come_in_pages(sim: SimHarness, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(cloud_module, "AUDIT_PAGE_SIZE", 2)
    ids = [sim.launch() for _ in range(5)]
    seen: list[str] = []
    query: dict[str, str] = {"resource_type": "cloud.instance"}
    pages = 0
    while True:
        page = _events(sim, **query)
        pages += 1
        seen += [e["resource_lrns"][0].rsplit(":", 1)[1] for e in page["events"]]
        if page["page_token"] is None:
            break
        json.loads(base64.b64decode(page["page_token"]))  # the spec example's shape
        query["page_token"] = page["page_token"]
    assert pages == 3 and seen == ids  # oldest first, each once


def test_audit_events_survive_a_restart(sim_factory: Callable[..., SimHarness],
                                        tmp_path: Path) -> None:
    first = sim_factory(state_dir=tmp_path)
    first.launch()
    events = _events(first)["events"]
    first.stop()
    second = sim_factory(state_dir=tmp_path)
    assert _events(second)["events"] == events


# -- filesystem growth ----------------------------------------------------------------

def _bytes_used(sim: SimHarness, name: str) -> int:
    found = [fs for fs in sim.api("GET", "/file-systems").data if fs["name"] == name]
    assert len(found) == 1
    used: int = found[0]["bytes_used"]
    return used


def test_bytes_used_grows_while_an_active_instance_mounts_it(sim: SimHarness) -> None:
    assert sim.control("GET", "/knobs")["filesystem_growth_bytes_per_hour"] == 0
    sim.api("POST", "/filesystems", {"name": "data", "region": "us-east-1"})
    sim.api("POST", "/filesystems", {"name": "idle", "region": "us-east-1"})
    sim.control("PATCH", "/knobs", {"filesystem_growth_bytes_per_hour": 3600})
    instance_id = sim.launch(file_system_names=["data"])
    sim.clock.advance(60)  # booting: not mounted yet
    assert _bytes_used(sim, "data") == 0
    sim.clock.advance(100)
    assert _bytes_used(sim, "data") == 100  # 1 byte a simulated second
    second = sim.launch(file_system_names=["data"])
    sim.clock.advance(160)  # both mount it for 100 s: counted once
    assert _bytes_used(sim, "data") == 260
    sim.api("POST", "/instance-operations/terminate", {"instance_ids": [instance_id, second]})
    sim.clock.advance(1000)
    assert _bytes_used(sim, "data") == 260  # no longer mounted
    assert _bytes_used(sim, "idle") == 0


def test_the_growth_knob_is_checked_and_persists(sim_factory: Callable[..., SimHarness],
                                                 tmp_path: Path) -> None:
    sim = sim_factory(state_dir=tmp_path)
    for bad in (-1, 1.5, "fast", None, True):
        reply = sim.client.request("PATCH", "/_sim/knobs",
                                   {"filesystem_growth_bytes_per_hour": bad})
        assert reply.status == 400, bad
    sim.control("PATCH", "/knobs", {"filesystem_growth_bytes_per_hour": 1_000_000})
    sim.stop()
    again = sim_factory(state_dir=tmp_path)
    assert again.control("GET", "/knobs")["filesystem_growth_bytes_per_hour"] == 1_000_000
