"""``soong status`` shows each instance's agent's own view: the real agent in the
simulator's sandbox (its idle time, its lease; a dead agent is a visible note and the
tags-and-policies view), and stand-ins for what the simulator's agent does not say (a
version from another soong, warnings, GPU use) or where nothing is asked."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Callable

import jsonschema
import pytest

from soong_core import __version__
from soong_core.files import soong_dir, write_private
from soong_core.models import Instance, InstanceState
from soong_core.testing import LocalServer, SoongEnv
from soong_plugins.lambda_labs.simulator.testing import SimHarness
from soong_plugins.lease_agent import tokens
from soong_plugins.lease_agent.details import agent_details

pytestmark = pytest.mark.slow

SCHEMA = json.loads((Path(__file__).resolve().parents[2] / "docs" / "status.schema.json")
                    .read_text())
MANAGED_TAGS = {"soong:launch-id": "l-1", "soong:launched-at": "2026-12-04T10:00:00Z",
                "soong:lease-deadline": "2026-12-04T12:00:00Z",
                "soong:hard-deadline": "2026-12-04T18:00:00Z"}


def valid(document: Any, definition: str | None = None) -> None:
    schema = SCHEMA if definition is None else {
        "$schema": SCHEMA["$schema"], "$defs": SCHEMA["$defs"], "$ref": f"#/$defs/{definition}"}
    cls = jsonschema.validators.validator_for(schema)
    cls(schema, format_checker=cls.FORMAT_CHECKER).validate(document)


def cells(stdout: str, instance_id: str) -> dict[str, str]:
    lines = stdout.splitlines()
    header = lines[0].replace("EST. TOTAL", "EST.TOTAL").replace("NEXT STOP", "NEXT").split()
    [row] = [line.split() for line in lines[1:] if instance_id.startswith(line.split()[0])]
    return dict(zip(header, row))


def test_status_shows_the_agents_idle_time_and_its_view_in_json(
        lambda_sim: SimHarness, run_cli: Callable[..., Any]) -> None:
    assert run_cli("start -y --hours 2").exit_code == 0
    shown = run_cli("status")
    assert shown.exit_code == 0, shown.stderr
    [document] = json.loads(run_cli("status --json").stdout)["instances"]
    valid({"schema_version": 1, "generated_at": "2026-12-04T10:00:00Z",
           "instances": [document]})
    agent = document["details"]["lease_agent"]
    assert agent["state"] == "answered" and agent["message"] is None
    assert agent["version"] == __version__ and agent["version_skew"] is False
    assert isinstance(agent["idle_s"], int) and agent["idle_s"] >= 0
    assert agent["idle_timeout_s"] == 30 * 60  # the config's default, as the agent has it
    assert agent["next_stop"]["reasons"] == ["idle_timeout"]
    assert document["idle_s"] is not None and document["idle_s"] >= 0
    assert document["next_stop"]["reasons"] == ["idle_timeout"]  # the agent's idle stop
    assert document["next_stop"]["enforced_by"] == ["lease_agent"]
    row = cells(shown.stdout, document["id"])
    assert row["IDLE"] != "?" and row["NEXT"].endswith(":")  # e.g. "29m:" then the reason
    assert "idle_timeout" in shown.stdout and "agent" not in shown.stdout.split("\n", 2)[-1]


def test_a_dead_agent_is_a_visible_note_and_status_still_answers(
        lambda_sim: SimHarness, run_cli: Callable[..., Any]) -> None:
    assert run_cli("start -y --hours 2").exit_code == 0
    [before] = json.loads(run_cli("status --json").stdout)["instances"]
    instance_id = before["id"]
    lambda_sim.control("POST", f"/instances/{instance_id}/fault", {"fault": "agent_dead"})
    shown = run_cli("status")
    assert shown.exit_code == 0, shown.stderr
    row = cells(shown.stdout, instance_id)
    assert row["IDLE"] == "?"
    assert "lease_expired" in shown.stdout  # the tags-and-policies view: no idle stop
    [note] = [line for line in shown.stdout.splitlines() if "agent unreachable" in line]
    assert note.startswith(f"{row['ID']}: agent unreachable: it does not answer (")
    assert note.endswith("the limits shown come from its tags and soong's policies")
    [after] = json.loads(run_cli("status --json").stdout)["instances"]
    assert after["details"]["lease_agent"]["state"] == "unreachable"
    assert after["idle_s"] is None and after["next_stop"]["reasons"] == ["lease_expired"]


def test_without_its_token_the_agent_is_not_asked_and_says_how_to_fix_it(
        lambda_sim: SimHarness, run_cli: Callable[..., Any]) -> None:
    assert run_cli("start -y --hours 2").exit_code == 0
    [before] = json.loads(run_cli("status --json").stdout)["instances"]
    tokens.token_path(before["id"]).unlink()
    shown = run_cli("status")
    assert shown.exit_code == 0, shown.stderr
    assert (f"`soong agent install {before['id']}` gives it an agent this machine can ask"
            in shown.stdout)
    [after] = json.loads(run_cli("status --json").stdout)["instances"]
    assert after["details"]["lease_agent"]["state"] == "no_token"


def keep_token(instance_id: str) -> None:
    write_private(soong_dir("data") / "agents" / f"{instance_id}.token", "t0ken\n")


def test_no_open_way_to_the_agent_means_not_asked(soong_env: SoongEnv) -> None:
    keep_token("i-far")
    far = Instance("i-far", InstanceState.ACTIVE, ip="203.0.113.9", tags=MANAGED_TAGS)
    found = agent_details(far, {"agent": {"port": 8765}})
    assert found is not None and found["state"] == "not_asked"
    assert found["notes"] == [found["message"]]
    assert "no tunnel open to it: `soong agent status i-far` asks over SSH" in found["message"]
    assert agent_details(Instance("i-x", InstanceState.ACTIVE), {}) is None  # not soong's
    ended = Instance("i-far", InstanceState.TERMINATED, tags=MANAGED_TAGS)
    assert agent_details(ended, {}) is None


def test_another_version_warnings_and_gpu_use_become_notes(soong_env: SoongEnv) -> None:
    answer = {"version": "0.0.1", "now": 1000.0, "lease_deadline": 4600.0,
              "next_stop": {"at": 2800.0, "reasons": ["idle_timeout"]},
              "idle": {"seconds": 600.0, "timeout_seconds": 2400, "last_activity_at": 400.0,
                       "last_activity_source": "gpu"},
              "warnings": ["disk 97% full"], "terminating": None,
              "health": {"gpus": [{"index": 0, "utilization_percent": 3},
                                  {"index": 1, "utilization_percent": None}]}}
    with LocalServer(lambda request: json.dumps(answer)) as agent:
        keep_token("i-old")
        old = Instance("i-old", InstanceState.ACTIVE, tags=MANAGED_TAGS,
                       extra={"agent_url": agent.url})
        found = agent_details(old, {})
        [request] = agent.requests
    assert request.path == "/status" and request.headers["Authorization"] == "Bearer t0ken"
    assert found is not None and found["state"] == "answered"
    assert found["version_skew"] is True and found["time_left_s"] == 3600
    assert found["next_stop"] == {"at": "1970-01-01T00:46:40Z", "reasons": ["idle_timeout"],
                                  "in_s": 1800}
    assert found["view"] == {"lease_deadline": 4600.0, "last_activity_at": 400.0,
                             "idle_timeout_s": 2400.0}
    assert found["notes"] == [
        "agent warning: disk 97% full",
        f"its agent is version 0.0.1, this soong carries {__version__}: `soong agent "
        "install i-old` updates it",
        "GPU use: GPU 0 3%, GPU 1 unknown"]
    valid(found, "lease_agent_details")


@pytest.mark.parametrize("body", ["not json", json.dumps([1, 2]), ""])
def test_an_answer_that_is_not_a_status_is_unreachable_not_a_traceback(
        soong_env: SoongEnv, body: str) -> None:
    with LocalServer(lambda request: body) as agent:
        keep_token("i-odd")
        odd = Instance("i-odd", InstanceState.ACTIVE, tags=MANAGED_TAGS,
                       extra={"agent_url": agent.url})
        found = agent_details(odd, {})
    assert found is not None and found["state"] == "unreachable"
    assert found["message"].startswith("agent unreachable: it answered GET /status with "
                                       "something other than a JSON object")
