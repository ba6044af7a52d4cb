"""``status`` merges what the instances report of themselves (``soong_status_details``).

Every instance is asked at once, within one budget in all; a plugin's ``view`` (the
lease the instance enforces, its activity, its idle timeout) is what the policies are
judged on, so the idle stop shows; its ``notes`` are lines under the table. The
concurrency is proven with a barrier, not with a stopwatch.
"""

from __future__ import annotations

import json
import logging
import threading
import time
from typing import Any, Callable

import pytest

from soong_core import Soong, hookimpl
from soong_core.clock import ManualClock
from soong_core.config import write_config_file
from soong_core.fake import FakeProvider
from soong_core.models import Instance
from soong_core.plugins import Plugins
from soong_core.testing import CliResult, SoongEnv

HOUR = 3600.0
MINUTE = 60.0
CONFIG = {"defaults": {"provider": "fake", "gpu": "gpu_1x_a10", "region": "us-east-1",
                       "lease_hours": 4, "hard_timeout_hours": 8,
                       "idle_timeout_minutes": 30}}


@pytest.fixture
def soong(fake_provider: FakeProvider, plugins: Plugins, clock: ManualClock) -> Any:
    fake_provider.add_ssh_key("soong", "ssh-ed25519 AAAAtest soong")
    fake_provider.boot_seconds = 0
    clock.set(1_800_000_000.0)
    with Soong(CONFIG, plugins=plugins, clock=clock) as soong:
        yield soong


class Reporting:
    """Reports ``views[instance id]`` as the instance's own view."""

    def __init__(self, views: dict[str, Any], notes: tuple[str, ...] = ()) -> None:
        self.views = views
        self.notes = list(notes)

    @hookimpl
    def soong_status_details(self, instance: Instance) -> dict[str, Any] | None:
        if instance.id not in self.views:
            return None
        return {"view": self.views[instance.id], "notes": self.notes}


def test_every_instance_is_asked_at_once(soong: Soong, register_plugin: Any) -> None:
    """Five calls meet at a barrier: asked one after another, the first would wait
    for the others in vain and the barrier would break."""
    instances = [soong.launch(hours=2, name=f"box-{n}") for n in range(5)]
    barrier = threading.Barrier(len(instances), timeout=10)
    met: list[str] = []

    class Waiting:
        @hookimpl
        def soong_status_details(self, instance: Instance) -> dict[str, Any]:
            barrier.wait()
            met.append(instance.id)
            return {"met": True}

    register_plugin(Waiting(), "waiting")
    soong.status_details_budget_s = 30.0
    statuses = soong.status()
    assert sorted(met) == sorted(i.id for i in instances)
    assert all(s.details == {"waiting": {"met": True}} for s in statuses)


def test_what_does_not_answer_within_the_budget_is_left_out_with_a_warning(
        soong: Soong, register_plugin: Any, caplog: pytest.LogCaptureFixture) -> None:
    slow_box = soong.launch(hours=2, name="slow")
    quick_box = soong.launch(hours=2, name="quick")
    release = threading.Event()

    class Stuck:
        @hookimpl
        def soong_status_details(self, instance: Instance) -> dict[str, Any]:
            if instance.id == slow_box.id:
                release.wait(30)
            return {"answered": True}

    register_plugin(Stuck(), "stuck")
    soong.status_details_budget_s = 0.2
    try:
        with caplog.at_level(logging.WARNING, logger="soong"):
            statuses = {s.instance.id: s for s in soong.status()}
    finally:
        release.set()
    assert statuses[quick_box.id].details == {"stuck": {"answered": True}}
    assert statuses[slow_box.id].details == {}
    assert statuses[slow_box.id].decision is not None  # shown from tags and policies
    assert (f"plugin 'stuck' gave no status details within 0.2 s for {slow_box.id}: "
            "shown without them") in caplog.text


def test_the_reported_activity_brings_the_idle_stop_into_the_next_stop(
        soong: Soong, register_plugin: Any, clock: ManualClock) -> None:
    instance = soong.launch(hours=4, name="idle")
    clock.advance(40 * MINUTE)
    [before] = soong.status()
    assert before.decision is not None and before.decision.reasons == ("lease_expired",)
    assert before.reported is None
    register_plugin(Reporting({instance.id: {
        "last_activity_at": clock.now() - 25 * MINUTE, "idle_timeout_s": 30 * MINUTE,
        "lease_deadline": before.view.lease_deadline if before.view else None}}), "agent")
    [status] = soong.status()
    assert status.decision is not None and status.decision.reasons == ("idle_timeout",)
    assert status.decision.deadline == pytest.approx(clock.now() + 5 * MINUTE)
    assert status.reported is not None and status.reported.source == "agent"
    from soong_core.display import facts_of

    assert facts_of(status, clock.now()).idle_s == pytest.approx(25 * MINUTE)


def test_the_lease_the_instance_enforces_wins_and_never_passes_the_hard_limit(
        soong: Soong, register_plugin: Any, clock: ManualClock) -> None:
    instance = soong.launch(hours=2, name="agent-knows")
    assert instance.hard_deadline is not None
    register_plugin(Reporting({instance.id: {"lease_deadline": clock.now() + 3 * HOUR}}),
                    "agent")
    [status] = soong.status()
    assert status.view is not None and status.view.lease_deadline == pytest.approx(
        clock.now() + 3 * HOUR)
    assert status.view.idle_timeout_s is None  # no activity reported: idle not judged


def test_a_reported_lease_past_the_hard_limit_stops_at_it(
        soong: Soong, register_plugin: Any, clock: ManualClock) -> None:
    instance = soong.launch(hours=2, name="too-far")
    register_plugin(Reporting({instance.id: {"lease_deadline": clock.now() + 20 * HOUR}}),
                    "agent")
    [status] = soong.status()
    assert status.view is not None and status.view.lease_deadline == instance.hard_deadline


def test_no_activity_since_launch_counts_idle_from_the_launch(
        soong: Soong, register_plugin: Any, clock: ManualClock) -> None:
    instance = soong.launch(hours=4, name="untouched")
    clock.advance(50 * MINUTE)
    register_plugin(Reporting({instance.id: {"last_activity_at": None,
                                             "idle_timeout_s": 30 * MINUTE}}), "agent")
    [status] = soong.status()
    assert status.decision is not None and "idle_timeout" in status.decision.reasons
    assert status.decision.action.value == "terminate"  # overdue: 20 min past its idle stop


@pytest.mark.parametrize("view", [
    {"last_activity_at": "yesterday", "idle_timeout_s": 60},
    {"lease_deadline": float("nan")},
    {"idle_timeout_s": -5},
    {"lease": 12},
    ["not", "a", "mapping"],
])
def test_a_malformed_view_is_one_warning_and_ignored(
        soong: Soong, register_plugin: Any, caplog: pytest.LogCaptureFixture,
        view: Any) -> None:
    instance = soong.launch(hours=4, name="odd")
    register_plugin(Reporting({instance.id: view}), "odd")
    with caplog.at_level(logging.WARNING, logger="soong"):
        [status] = soong.status()
    assert status.reported is None and status.decision is not None
    assert status.decision.reasons == ("lease_expired",)
    assert "plugin 'odd': its status details' 'view' is not" in caplog.text


# -- what the CLI shows --------------------------------------------------------------


@pytest.fixture
def cli_cloud(soong_env: SoongEnv, fake_provider: FakeProvider, clock: ManualClock
              ) -> FakeProvider:
    write_config_file(soong_env.config_file, {"defaults": {"provider": "fake",
                                                            "idle_timeout_minutes": 30}})
    fake_provider.add_ssh_key("soong", "ssh-ed25519 AAAAtest soong")
    fake_provider.boot_seconds = 0
    return fake_provider


def launched(plugins: Plugins, clock: ManualClock, *, ago: float, name: str) -> Instance:
    clock.set(time.time() - ago)
    with Soong(CONFIG, plugins=plugins, clock=clock) as soong:
        return soong.launch(hours=4, name=name)


def test_the_table_shows_idle_time_and_the_notes(
        cli_cloud: FakeProvider, plugins: Plugins, clock: ManualClock,
        register_plugin: Any, run_cli: Callable[..., CliResult]) -> None:
    busy = launched(plugins, clock, ago=HOUR, name="busy")
    launched(plugins, clock, ago=HOUR, name="quiet")
    register_plugin(Reporting({busy.id: {"last_activity_at": time.time() - 12 * MINUTE - 5,
                                         "idle_timeout_s": 30 * MINUTE}},
                              notes=("agent warning: disk 97% full",)), "agent")
    result = run_cli("status")
    assert result.exit_code == 0, result.stderr
    lines = result.stdout.splitlines()
    header = lines[0].split()
    cells = {line.split()[1]: line.split() for line in lines[1:] if len(line.split()) > 8}
    assert cells["busy"][header.index("IDLE")] == "12m"
    assert "17m: idle_timeout" in " ".join(cells["busy"])
    assert cells["quiet"][header.index("IDLE")] == "?"  # nothing on it reported
    assert f"{cells['busy'][0]} busy: agent warning: disk 97% full" in lines
    assert not any("quiet:" in line for line in lines)
    document = json.loads(run_cli("status --json").stdout)
    by_name = {i["name"]: i for i in document["instances"]}
    assert 12 * MINUTE <= by_name["busy"]["idle_s"] < 13 * MINUTE
    assert by_name["quiet"]["idle_s"] is None
    assert by_name["busy"]["next_stop"]["reasons"] == ["idle_timeout"]
