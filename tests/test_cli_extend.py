"""``soong extend`` on the fake cloud: the summary, the confirmation, the refusals."""

from __future__ import annotations

import json
from typing import Any

import pytest

from soong_core.config import write_config_file
from soong_core.fake import FakeProvider
from soong_core.testing import SoongEnv, live_fake_cloud

CONFIG = {"defaults": {"provider": "fake", "gpu": "gpu_1x_a10", "region": "us-east-1",
                       "lease_hours": 2, "hard_timeout_hours": 8},
          "budget": {"max_dollars": 20}}


@pytest.fixture
def cloud(soong_env: SoongEnv, register_plugin: Any) -> FakeProvider:
    provider = live_fake_cloud(register_plugin)
    write_config_file(soong_env.config_file, CONFIG)
    return provider


def lease_left(run_cli: Any) -> str:
    [shown] = json.loads(run_cli("status --json").stdout)["instances"]
    return str(shown["lease_deadline"])


def test_extend_shows_the_cost_and_the_new_stop_then_records_it(
        cloud: FakeProvider, run_cli: Any) -> None:
    assert run_cli("start -y").exit_code == 0
    before = lease_left(run_cli)
    extended = run_cli("extend 1.5 -y")
    assert extended.exit_code == 0, extended.stderr
    lines = extended.stdout.splitlines()
    assert lines[0].startswith("extend ") and lines[0].endswith("by 1h30m = $1.13")
    assert lines[1].startswith("  lease ends   ") and " -> " in lines[1]
    assert "(4h30m more possible after this)" in lines[2]
    assert lines[3] == ("  budget       $1.50 of $20.00 committed this month; $17.38 left "
                        "after this")
    assert "lease extended by 1h30m, now ends" in lines[4]
    assert lease_left(run_cli) != before


def test_extend_asks_and_a_no_changes_nothing(cloud: FakeProvider, run_cli: Any) -> None:
    assert run_cli("start -y").exit_code == 0
    before = lease_left(run_cli)
    declined = run_cli("extend 1", inputs="n\n")
    assert declined.exit_code == 1
    assert lease_left(run_cli) == before


@pytest.mark.parametrize("words, first", [
    ("extend abc -y", "error: HOURS must be a number of hours greater than 0, got 'abc'"),
    ("extend -- -1 -y", "error: HOURS must be a number of hours greater than 0, got '-1'"),
    ("extend nan -y", "error: HOURS must be a number of hours greater than 0, got 'nan'"),
    ("extend 7 -y", "error: extending {id} by 7h would pass its hard limit at {hard}: at most "
                    "6h more"),
])
def test_bad_hours_and_the_hard_limit_are_one_line(cloud: FakeProvider, run_cli: Any,
                                                   words: str, first: str) -> None:
    assert run_cli("start -y").exit_code == 0
    [shown] = json.loads(run_cli("status --json").stdout)["instances"]
    refused = run_cli(words)
    assert refused.exit_code != 0
    assert refused.stderr.splitlines()[0] == first.format(id=shown["id"],
                                                          hard=shown["hard_deadline"])
    assert "Traceback" not in refused.stderr


def test_to_max_stops_at_the_hard_limit(cloud: FakeProvider, run_cli: Any) -> None:
    assert run_cli("start -y").exit_code == 0
    refused = run_cli("extend 7 -y")
    assert "or with --to-max to stop at the hard limit" in refused.stderr
    clamped = run_cli("extend 7 -y --to-max")
    assert clamped.exit_code == 0, clamped.stderr
    assert "(reached: no further extension)" in clamped.stdout
    [shown] = json.loads(run_cli("status --json").stdout)["instances"]
    assert shown["lease_deadline"] == shown["hard_deadline"]
    again = run_cli("extend 1 -y --to-max")
    assert again.exit_code == 1 and "at most nothing more" in again.stderr
