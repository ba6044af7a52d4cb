"""State that survives restarts, the shared clock, billing, the request log and capture."""

from __future__ import annotations

import json
import stat
import time
from decimal import Decimal
from pathlib import Path
from typing import Callable

import pytest

from soong_core.clock import AcceleratedClock, ManualClock, clock_from_config
from soong_plugins.lambda_labs.simulator.app import Simulator, SimulatorError
from soong_plugins.lambda_labs.simulator.requestlog import read_lines
from soong_plugins.lambda_labs.simulator.state import CloudState, StateError
from soong_plugins.lambda_labs.simulator.testing import ConformanceChecker, SimHarness


def test_a_restarted_simulator_serves_the_same_cloud(sim_factory: Callable[..., SimHarness],
                                                     tmp_path: Path) -> None:
    first = sim_factory(state_dir=tmp_path)
    instance_id = first.launch(name="kept")
    first.api("POST", "/filesystems", {"name": "fs", "region": "us-east-1"})
    first.control("PATCH", "/knobs", {"boot_seconds": 5, "quota_instances": 9})
    key = first.api_key
    first.stop()
    second = sim_factory(state_dir=tmp_path)
    assert second.api_key == key  # the key lives in the state directory
    assert second.instance(instance_id)["name"] == "kept"
    assert [f["name"] for f in second.api("GET", "/file-systems").data] == ["fs"]
    knobs = second.control("GET", "/knobs")
    assert (knobs["boot_seconds"], knobs["quota_instances"]) == (5, 9)
    assert knobs["error_rate"] == 0  # faults belong to one run only


def test_state_files_are_private_and_hold_no_secret(sim: SimHarness) -> None:
    sim.launch(user_data="#!/bin/bash\necho the-user-data-text\n")
    store = sim.simulator.store
    for path in (store.state_path, store.key_path, store.request_log_path):
        assert stat.S_IMODE(path.stat().st_mode) == 0o600, path
    assert stat.S_IMODE(store.directory.stat().st_mode) == 0o700
    for path in (store.state_path, store.request_log_path):
        text = path.read_text()
        assert sim.api_key not in text and "the-user-data-text" not in text
        assert "Authorization" not in text and "Bearer" not in text


def test_an_unreadable_state_is_moved_aside(tmp_path: Path) -> None:
    (tmp_path / "state.json").write_text('{"version": 1, "instances": {"x": {"id": 3}}}')
    simulator = Simulator(tmp_path, clock=ManualClock())
    assert len(simulator.warnings) == 1 and "moved aside" in simulator.warnings[0]
    assert simulator.cloud.state.instances == {}
    moved = list(tmp_path.glob("state.json.corrupt-*"))
    assert len(moved) == 1 and '"id": 3' in moved[0].read_text()


@pytest.mark.parametrize("content", [[], {"version": 99}, {"version": 1, "settings": []},
                                     {"version": 1, "instances": {"a": {"id": "b"}}}])
def test_state_parsing_refuses_malformed_documents(content: object) -> None:
    with pytest.raises(StateError):
        CloudState.from_json(content)


def test_a_state_directory_that_is_a_file_is_one_line(tmp_path: Path) -> None:
    blocker = tmp_path / "file"
    blocker.write_text("x")
    with pytest.raises(SimulatorError, match="not a directory"):
        Simulator(blocker)


def test_the_clock_is_shared_through_its_anchors(tmp_path: Path) -> None:
    simulator = Simulator(tmp_path, speed=3600, rate_limit=False)
    stored = json.loads(simulator.store.state_path.read_text())["clock"]
    other = clock_from_config(stored)  # what another process derives from the state
    assert isinstance(other, AcceleratedClock) and other.factor == 3600
    assert isinstance(simulator.clock, AcceleratedClock)
    assert other.to_config() == simulator.clock.to_config()  # the same "now" everywhere
    before = simulator.clock.now()
    simulator.close()  # one simulator per state: the next one waits for this one's lock
    again = Simulator(tmp_path)  # restarted without --speed: same clock, time went on
    assert isinstance(again.clock, AcceleratedClock)
    assert again.clock.to_config() == other.to_config() and again.clock.now() >= before
    again.close()
    faster = Simulator(tmp_path, speed=7200)  # a new speed re-anchors...
    new = faster.clock
    assert isinstance(new, AcceleratedClock) and new.factor == 7200
    old_at_anchor = other.sim_anchor + other.factor * (new.wall_anchor - other.wall_anchor)
    assert abs(new.sim_anchor - old_at_anchor) < 3600 * 0.05  # ...where the old clock was


def test_changing_speed_rewrites_the_profile(tmp_path: Path) -> None:
    import yaml

    profile = tmp_path / "profiles" / "sim.yaml"
    with Simulator(tmp_path / "state", speed=10, profile_path=profile) as simulator:
        written = yaml.safe_load(profile.read_text())
        assert written["lambda"] == {"api_url": simulator.api_url, "api_key": simulator.api_key,
                                     "account_id": simulator.account_id}
        assert written["clock"]["factor"] == 10
        simulator.update_knobs({"speed": 100})
        assert yaml.safe_load(profile.read_text())["clock"]["factor"] == 100


def test_speed_is_refused_on_a_manual_clock(sim: SimHarness) -> None:
    reply = sim.client.request("PATCH", "/_sim/knobs", {"speed": 10})
    assert reply.status == 400 and "manual clock" in reply.body["error"]["message"]


def test_billing_follows_simulated_seconds_until_termination(sim: SimHarness) -> None:
    h100 = sim.launch(instance_type_name="gpu_8x_h100_sxm5")  # 2392 cents/hour
    a10 = sim.launch()  # 75 cents/hour
    sim.clock.advance(1800)
    sim.api("POST", "/instance-operations/terminate", {"instance_ids": [h100]})
    sim.clock.advance(1800)
    bills = {b["id"]: b for b in sim.control("GET", "/billing")["instances"]}
    assert bills[h100]["billed_seconds"] == 1800 and bills[h100]["cost_cents"] == "1196.000000"
    assert bills[h100]["billing_ended_at"] == bills[h100]["launched_at"] + 1800
    assert bills[a10]["cost_dollars"] == "0.750000" and bills[a10]["billing_ended_at"] is None
    report = sim.control("GET", "/billing")
    assert Decimal(report["total_cents"]) == Decimal("1271")
    sim.control("POST", f"/instances/{a10}/fault", {"fault": "preempted"})
    sim.clock.advance(3600)
    assert sim.control("GET", f"/billing/{a10}")["cost_cents"] == "75.000000"
    assert sim.client.request("GET", "/_sim/billing/nope").status == 404


def test_the_request_log_counts_and_times_every_request(sim: SimHarness) -> None:
    sim.api("GET", "/instances")
    sim.api("GET", "/instances?cluster_id=c1", auth=False)
    sim.launch()
    entries = read_lines(sim.simulator.store.request_log_path)
    api = [e for e in entries if e["kind"] == "api"]
    assert [(e["method"], e["path"], e["status"]) for e in api][:2] == [
        ("GET", "/api/v1/instances", 200), ("GET", "/api/v1/instances", 401)]
    assert api[1]["query"] == {"cluster_id": "c1"}
    assert [e["operation"] for e in api].count("launchInstance") == 1
    assert all(e["duration_ms"] >= 0 and e["ts"] <= time.time() for e in entries)
    page = sim.control("GET", "/requests?since=1&limit=1")
    assert page["next"] == 2 and page["entries"] == [entries[1]]
    assert sim.client.request("GET", "/_sim/requests?since=-1").status == 400


def test_body_capture_redacts_user_data_and_private_keys(sim_factory: Callable[..., SimHarness],
                                                         tmp_path: Path) -> None:
    capture = tmp_path / "bodies.jsonl"
    sim = sim_factory(capture_path=capture)
    generated = sim.api("POST", "/ssh-keys", {"name": "gen"}).data
    script = "#!/bin/bash\necho secret-script\n"
    sim.launch(ssh_key_names=["gen"], user_data=script)
    sim.api("POST", "/ssh-keys", raw=b"{oops")
    text = capture.read_text()
    assert "secret-script" not in text and generated["private_key"] not in text
    assert sim.api_key not in text
    entries = read_lines(capture)
    launch = next(e for e in entries if e["operation"] == "launchInstance")
    assert launch["request_body"]["user_data"] == f"<user_data: {len(script)} bytes>"
    assert launch["response_body"]["data"]["instance_ids"]
    assert entries[-1]["request_body_invalid"] == {"bytes": len(b"{oops")}
    checker = ConformanceChecker()
    checker.check_capture(capture)  # captured responses validate like live ones
    assert checker.checked >= 3 and checker.problems == []


def test_conformance_checking_catches_a_response_that_breaks_the_spec(
        sim_factory: Callable[..., SimHarness], monkeypatch: pytest.MonkeyPatch) -> None:
    from soong_plugins.lambda_labs.simulator import views

    sim = sim_factory()
    checker = sim_factory.checker  # type: ignore[attr-defined]
    instance_id = sim.launch()
    assert checker.checked > 0 and checker.problems == []
    real = views.instance
    monkeypatch.setattr(views, "instance", lambda record, now: {**real(record, now),
                                                               "status": "napping"})
    sim.instance(instance_id)
    assert len(checker.problems) == 1 and "napping" in checker.problems[0]
    checker.problems.clear()  # caught: do not fail this test at teardown


def test_writing_the_profile_keeps_the_users_settings(tmp_path: Path) -> None:
    import yaml

    from soong_core.config import write_config_file

    profile = tmp_path / "profiles" / "sim.yaml"
    write_config_file(profile, {"defaults": {"gpu": "gpu_1x_a10"},
                                "lambda": {"api_key": "old", "filesystem_name": "data"}})
    with Simulator(tmp_path / "state", speed=10, profile_path=profile) as simulator:
        written = yaml.safe_load(profile.read_text())
        assert written["defaults"] == {"gpu": "gpu_1x_a10"}
        assert written["lambda"] == {"api_key": simulator.api_key, "filesystem_name": "data",
                                     "api_url": simulator.api_url,
                                     "account_id": simulator.account_id}
        assert written["clock"]["factor"] == 10


def test_a_restart_keeps_the_port_when_it_is_free(tmp_path: Path) -> None:
    import socket

    profile = tmp_path / "profiles" / "sim.yaml"
    with Simulator(tmp_path / "state", profile_path=profile) as first:
        port = first.port
    with Simulator(tmp_path / "state", profile_path=profile) as second:
        assert second.port == port
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", port))
        with Simulator(tmp_path / "state", profile_path=profile) as third:
            assert third.port != port  # taken meanwhile: another free port, no error
