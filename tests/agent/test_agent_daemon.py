"""The agent's enforcement, on a ManualClock: the policy engine's decisions, extensions,
activity, warnings, the state across restarts, signals and the loop (no polling)."""

from __future__ import annotations

import json
import signal
import threading
from pathlib import Path
from typing import Any

import pytest
from agent_units import HOUR, START, FakeTerminator, Lines, agent, config, run_in_thread

from soong_core.clock import ManualClock

from instance_agent.daemon import ApiError, systemd_powering_off

LEASE = START + 4 * HOUR
HARD = START + 8 * HOUR


class StepClock(ManualClock):
    """A manual clock whose seconds are wall seconds, so the loop's waits can be
    recorded and 'slept' by advancing it (see ``advancing_wait``)."""

    def to_wall(self, seconds: float) -> float:
        return seconds


def advancing_wait(clock: StepClock, waits: list[Any]) -> Any:
    """A loop wait that records its timeout and moves the clock instead of sleeping;
    with no timeout it blocks until notified, as the real one does."""

    def wait(condition: threading.Condition, timeout: float | None) -> None:
        waits.append(timeout)
        if timeout is None:
            condition.wait(30)
        else:
            clock.advance(timeout)

    return wait


def no_idle(root: Path, **sections: Any) -> dict[str, Any]:
    return config(root, instance={"idle_timeout_seconds": None}, **sections)


def test_decisions_come_from_the_policy_engine(tmp_path: Path) -> None:
    clock = ManualClock(START)
    a = agent(tmp_path, clock, cfg=no_idle(tmp_path))
    assert [name for name, _ in a.policies] == ["lease", "hard_timeout", "idle"]
    first = a.step()
    assert first.kind == "wait"
    assert a.decision.next_check == LEASE - 600  # the warning window opens
    clock.set(LEASE - 1)
    assert a.step().kind == "wait" and a.decision.action.value == "warn"
    clock.set(LEASE)
    last = a.step()
    assert (last.kind, last.reason) == ("terminate", "lease_expired")


def test_the_budget_policy_never_runs_on_the_instance(tmp_path: Path) -> None:
    a = agent(tmp_path)
    assert "budget" not in [name for name, _ in a.policies]


def test_idle_timeout_counts_from_the_last_activity(tmp_path: Path) -> None:
    clock = ManualClock(START)
    a = agent(tmp_path, clock)
    clock.set(START + 1700)
    a.activity("test")
    clock.set(START + 1800)
    assert a.step().kind == "wait"
    clock.set(START + 1700 + 1800)
    step = a.step()
    assert (step.kind, step.reason) == ("terminate", "idle_timeout")


def test_extend_adds_to_the_lease_and_a_retry_does_not_double(tmp_path: Path) -> None:
    a = agent(tmp_path, cfg=no_idle(tmp_path))
    answer = a.extend(1.5, LEASE)
    assert answer["lease_deadline"] == LEASE + 1.5 * HOUR
    with pytest.raises(ApiError) as retried:
        a.extend(1.5, LEASE)
    assert retried.value.status == 409 and retried.value.code == "deadline_changed"
    assert retried.value.extra["lease_deadline"] == LEASE + 1.5 * HOUR
    assert str(LEASE + 1.5 * HOUR) in retried.value.message
    assert a.state.lease_deadline == LEASE + 1.5 * HOUR
    assert len(a.state.extensions) == 1


def test_extend_past_the_hard_deadline_names_the_largest_extension(tmp_path: Path) -> None:
    a = agent(tmp_path, cfg=no_idle(tmp_path))
    with pytest.raises(ApiError) as refused:
        a.extend(4.5, LEASE)
    assert refused.value.status == 409 and refused.value.code == "past_hard_deadline"
    assert refused.value.extra["max_hours"] == 4.0
    assert "4 hours" in refused.value.message
    assert a.state.lease_deadline == LEASE
    a.extend(4, LEASE)
    with pytest.raises(ApiError) as full:
        a.extend(0.01, HARD)
    assert full.value.extra["max_hours"] == 0


def test_extended_to_the_hard_deadline_it_stops_for_both(tmp_path: Path) -> None:
    clock = ManualClock(START)
    a = agent(tmp_path, clock, cfg=no_idle(tmp_path))
    a.extend(4, LEASE)
    clock.set(HARD)
    step = a.step()
    assert step.kind == "terminate"
    assert set(step.value) == {"lease_expired", "hard_timeout"}


def test_the_state_keeps_the_lease_across_restarts(tmp_path: Path) -> None:
    clock = ManualClock(START)
    cfg = no_idle(tmp_path)
    first = agent(tmp_path, clock, cfg=cfg)
    first.extend(2, LEASE)
    again = agent(tmp_path, clock, cfg=cfg)  # as after SIGKILL: nothing else was saved
    assert again.state.lease_deadline == LEASE + 2 * HOUR
    assert again.status()["extensions"][0]["hours"] == 2
    assert again.status()["hard_deadline"] == HARD
    assert again.state_problems == []


def test_the_hard_deadline_is_the_configs_whatever_the_state_says(tmp_path: Path) -> None:
    cfg = no_idle(tmp_path)
    agent(tmp_path, cfg=cfg)
    path = Path(cfg["paths"]["state"])
    saved = json.loads(path.read_text())
    saved["lease_deadline"] = HARD + 100 * HOUR  # a hand-edited state
    saved["hard_deadline"] = HARD + 100 * HOUR
    path.write_text(json.dumps(saved))
    clock = ManualClock(HARD)
    step = agent(tmp_path, clock, cfg=cfg).step()
    assert (step.kind, step.reason) == ("terminate", "hard_timeout")


@pytest.mark.parametrize("content", [b"{not json", b"[]", b'{"schema_version": 99}',
                                     b'{"schema_version": 1, "launch_id": "other", '
                                     b'"lease_deadline": 1}', b"\xff\xfe",
                                     b'{"schema_version": 1, "launch_id": "example-launch-id",'
                                     b' "lease_deadline": "soon"}'])
def test_a_corrupt_state_falls_back_to_the_config(tmp_path: Path, content: bytes) -> None:
    cfg = no_idle(tmp_path)
    path = Path(cfg["paths"]["state"])
    path.parent.mkdir(parents=True)
    path.write_bytes(content)
    a = agent(tmp_path, cfg=cfg)
    assert a.state.lease_deadline == LEASE
    warnings = a.status()["warnings"]
    assert any("unusable" in w and "config's deadlines apply" in w for w in warnings)
    assert a.status()["state_problems"]
    aside = [p for p in path.parent.iterdir() if ".bad-" in p.name]
    assert len(aside) == 1 and aside[0].read_bytes() == content
    assert json.loads(path.read_text())["lease_deadline"] == LEASE  # a fresh, good one


def test_a_state_that_cannot_be_written_refuses_the_extension(tmp_path: Path) -> None:
    blocker = tmp_path / "var" / "lib"
    blocker.parent.mkdir(parents=True)
    blocker.write_text("a file where the state's folder should be")
    lines = Lines()
    a = agent(tmp_path, cfg=no_idle(tmp_path), log=lines)
    assert any(line.startswith("ERROR: cannot write the state file") for line in lines)
    with pytest.raises(ApiError) as refused:
        a.extend(1, LEASE)
    assert refused.value.status == 503 and refused.value.code == "state_unwritable"
    assert a.state.lease_deadline == LEASE
    assert any("cannot write the state file" in w for w in a.status()["warnings"])


def test_activity_is_saved_coalesced_and_never_later_than_it_happened(tmp_path: Path) -> None:
    clock = ManualClock(START)
    cfg = config(tmp_path, state={"activity_write_seconds": 60})
    a = agent(tmp_path, clock, cfg=cfg)
    path = Path(cfg["paths"]["state"])
    clock.set(START + 100)
    a.activity("first")
    assert json.loads(path.read_text())["last_activity_at"] == START + 100
    clock.set(START + 110)
    a.activity("second")  # within 60 s of the last write: kept in memory
    assert json.loads(path.read_text())["last_activity_at"] == START + 100
    assert a.step().kind == "wait"
    clock.set(START + 160)
    a.step()  # the loop writes it once its time comes
    assert json.loads(path.read_text())["last_activity_at"] == START + 110


def test_the_loop_wakes_for_a_pending_activity_write(tmp_path: Path) -> None:
    clock = StepClock(START)
    a = agent(tmp_path, clock, cfg=config(tmp_path, state={"activity_write_seconds": 60}))
    clock.set(START + 100)
    a.activity()
    clock.set(START + 110)
    a.activity()
    kind, timeout = a.step()
    assert kind == "wait" and timeout == pytest.approx(50)


def test_warnings_go_to_status_and_once_to_wall(tmp_path: Path) -> None:
    clock = ManualClock(START)
    sent: list[tuple[str, str]] = []
    done = threading.Event()

    def wall(command: str, message: str) -> None:
        sent.append((command, message))
        done.set()

    cfg = no_idle(tmp_path, paths={"wall": "/usr/bin/wall"})
    a = agent(tmp_path, clock, cfg=cfg, wall_command=wall)
    a.step()
    assert a.status()["warnings"] == []
    clock.set(LEASE - 300)
    a.step()
    assert done.wait(10)
    clock.set(LEASE - 200)
    a.step()
    assert a.status()["warnings"][0] == "stops in 3m: lease_expired"
    assert len(sent) == 1
    assert sent[0][0] == str(tmp_path) + "/usr/bin/wall"
    assert "stops in 5m: lease_expired" in sent[0][1]
    restarted = agent(tmp_path, clock, cfg=cfg, wall_command=wall)
    restarted.step()
    assert len(sent) == 1  # the warning of that deadline was already sent
    a.extend(1, LEASE)
    clock.set(LEASE + HOUR - 100)
    a.step()
    assert done.wait(10)


def test_the_wall_command_gets_the_message_on_stdin(tmp_path: Path) -> None:
    script = tmp_path / "usr" / "bin" / "wall"
    script.parent.mkdir(parents=True)
    received = tmp_path / "received"
    script.write_text(f"#!/bin/sh\ncat > {received}\n")
    script.chmod(0o755)
    a = agent(tmp_path, cfg=no_idle(tmp_path, paths={"wall": "/usr/bin/wall"}))
    a._run_wall(str(script), "soong: this instance stops in 5m")
    assert received.read_text() == "soong: this instance stops in 5m\n"


def test_a_broken_policy_is_logged_and_the_others_still_apply(tmp_path: Path) -> None:
    from soong_core.interfaces import CostPolicy

    class Broken(CostPolicy):
        name = "broken"

        def evaluate(self, view: Any, now: float) -> Any:
            raise RuntimeError("boom")

    from soong_plugins.policies.lease import LeasePolicy

    lines = Lines()
    clock = ManualClock(LEASE)
    a = agent(tmp_path, clock, log=lines,
              policies=[("broken", Broken()), ("lease", LeasePolicy())])
    assert a.step().reason == "lease_expired"
    assert any("policy broken failed: RuntimeError: boom" in line for line in lines)


def test_a_third_party_policy_named_in_config_runs(tmp_path: Path) -> None:
    cfg = config(tmp_path, plugins=["soong_curfew"],
                 instance={"settings": {"curfew": {"hour": 3}}})
    a = agent(tmp_path, cfg=cfg)
    names = [name for name, _ in a.policies]
    assert names[0] == "curfew" and "lease" in names
    assert a.policies[0][1].hour == 3


def test_a_plugin_that_cannot_load_is_a_warning_not_a_lost_limit(tmp_path: Path) -> None:
    a = agent(tmp_path, cfg=config(tmp_path, plugins=["no_such_plugin_module"]))
    assert "lease" in [name for name, _ in a.policies]
    assert any("plugin no_such_plugin_module: cannot load it" in w
               for w in a.status()["warnings"])


def test_status_reports_the_limits(tmp_path: Path) -> None:
    clock = ManualClock(START + 60)
    a = agent(tmp_path, clock)
    status = a.status()
    assert status["launched_at"] == START and status["uptime_seconds"] == 60
    assert status["lease_deadline"] == LEASE and status["hard_deadline"] == HARD
    assert status["next_stop"]["reason"] == "idle_timeout"
    assert status["next_stop"]["at"] == START + 1800
    assert status["next_stop"]["in_seconds"] == 1740
    assert status["idle"]["seconds"] == 60 and status["idle"]["deadline"] == START + 1800
    assert status["extensions"] == [] and status["terminating"] is None
    assert status["version"]
    assert status["max_extension_hours"] == 4


def test_shutdown_terminates_now_with_reason_manual(tmp_path: Path) -> None:
    clock = StepClock(START)
    waits: list[Any] = []
    a = agent(tmp_path, clock, wait=advancing_wait(clock, waits))
    a.shutdown("done for today")
    assert a.run() == 0
    terminator = FakeTerminator.instances[-1]
    assert terminator.reasons == ["manual"]
    assert terminator.pre_stop == [list(a.config["pre_stop"])]
    saved = json.loads(Path(a.config["paths"]["state"]).read_text())
    assert saved["terminating"]["reason"] == "manual"
    assert saved["terminating"]["note"] == "done for today"
    assert "done_at" in saved["terminating"]


def test_the_loop_sleeps_until_the_next_check_and_no_more(tmp_path: Path) -> None:
    """No polling: every wait lasts until the next moment a verdict can change, cut
    only at RECHECK_WALL_S (a wall clock stepped forward must not hide a deadline)."""
    from instance_agent.daemon import RECHECK_WALL_S

    clock = StepClock(START)
    waits: list[Any] = []
    lines = Lines()
    a = agent(tmp_path, clock, cfg=no_idle(tmp_path), log=lines,
              wait=advancing_wait(clock, waits))
    assert a.run() == 0
    # until the warning window, then the deadline, in waits of at most a minute
    per_minute = int(RECHECK_WALL_S)
    assert waits == [RECHECK_WALL_S] * int((4 * HOUR - 600) // per_minute + 600 // per_minute)
    assert a.wakeups == len(waits) + 1
    assert FakeTerminator.instances[-1].reasons == ["lease_expired"]
    assert any(line == "terminating: lease_expired" for line in lines)
    assert any(line.startswith("decision: warn: stops in 10m: lease_expired")
               for line in lines)


def test_events_wake_the_loop_at_once(tmp_path: Path) -> None:
    clock = StepClock(START)
    woken = threading.Event()
    waits: list[Any] = []

    def wait(condition: threading.Condition, timeout: float | None) -> None:
        waits.append(timeout)
        woken.set()
        condition.wait(60)  # a long sleep: only a notify ends it early

    a = agent(tmp_path, clock, cfg=no_idle(tmp_path), wait=wait)
    thread, codes = run_in_thread(a)
    assert woken.wait(10)
    before = a.wakeups
    for _ in range(5):
        a.status()
        a.health()
    assert a.wakeups == before  # /status and /health are no events
    woken.clear()
    a.extend(1, LEASE)
    assert woken.wait(10) and a.wakeups == before + 1
    assert a.last_timeout == pytest.approx(5 * HOUR - 600)  # the next check, then
    assert waits[-1] == 60.0  # slept in waits of at most RECHECK_WALL_S
    a.shutdown()
    thread.join(10)
    assert codes == [0]


def test_a_failed_terminate_attempt_resumes_after_a_restart(tmp_path: Path) -> None:
    clock = StepClock(LEASE)
    cfg = no_idle(tmp_path)

    def failing(provider: Any, **kw: Any) -> FakeTerminator:
        return FakeTerminator(provider, results=[False], **kw)

    first = agent(tmp_path, clock, cfg=cfg, terminator_factory=failing)
    assert first.run() == 0
    again = agent(tmp_path, clock, cfg=cfg)
    clock.set(START)  # even were the clock to say otherwise, the decision stands
    assert again.step().reason == "lease_expired"
    assert again.run() == 0
    assert FakeTerminator.instances[-1].reasons == ["lease_expired"]
    assert FakeTerminator.instances[-1].pre_stop == []  # they ran before the restart


def test_sigterm_saves_the_state_and_exits(tmp_path: Path) -> None:
    clock = StepClock(START)
    lines = Lines()
    waits: list[Any] = []
    a = agent(tmp_path, clock, cfg=no_idle(tmp_path), log=lines,
              wait=lambda condition, timeout: (waits.append(timeout), condition.wait(60)))
    thread, codes = run_in_thread(a)
    a.on_signal(signal.SIGTERM)
    thread.join(10)
    assert codes == [0]
    assert FakeTerminator.instances[-1].reasons == []
    assert any(line.startswith("SIGTERM: saving the state and exiting") for line in lines)
    assert json.loads(Path(a.config["paths"]["state"]).read_text())["terminating"] is None


def test_sigterm_of_a_poweroff_terminates_first(tmp_path: Path) -> None:
    clock = StepClock(START)
    lines = Lines()
    a = agent(tmp_path, clock, cfg=no_idle(tmp_path), log=lines, poweroff=lambda: True,
              wait=lambda condition, timeout: condition.wait(60))
    thread, codes = run_in_thread(a)
    a.on_signal(signal.SIGTERM)
    thread.join(10)
    assert codes == [0]
    assert FakeTerminator.instances[-1].reasons == ["manual"]
    assert any("powering off" in line for line in lines)


def test_a_signal_through_the_relay_reaches_the_loop(tmp_path: Path) -> None:
    a = agent(tmp_path, StepClock(START), cfg=no_idle(tmp_path),
              wait=lambda condition, timeout: condition.wait(60))
    thread, codes = run_in_thread(a)
    a.request_signal(signal.SIGINT)  # what the handler does: one byte into a pipe
    thread.join(10)
    assert codes == [0]


def test_a_sigterm_while_terminating_gives_up_and_a_restart_resumes(tmp_path: Path) -> None:
    clock = StepClock(LEASE)
    started = threading.Event()

    class Slow(FakeTerminator):
        def terminate(self, reason: str) -> bool:
            self.reasons.append(reason)
            started.set()
            while not self.wait(3600):
                pass
            return False

    a = agent(tmp_path, clock, cfg=no_idle(tmp_path), terminator_factory=Slow)
    thread, codes = run_in_thread(a)
    assert started.wait(10)
    a.on_signal(signal.SIGTERM)
    thread.join(10)
    assert codes == [0]
    saved = json.loads(Path(a.config["paths"]["state"]).read_text())
    assert saved["terminating"]["reason"] == "lease_expired"
    assert "done_at" not in saved["terminating"]


@pytest.mark.parametrize(("listing", "expected"), [
    ("123 poweroff.target start waiting\n", True),
    ("7 halt.target start running\n", True),
    ("99 reboot.target start waiting\n", False),
    ("", False),
])
def test_the_poweroff_detector_reads_systemctl_list_jobs(tmp_path: Path, listing: str,
                                                         expected: bool) -> None:
    fake = tmp_path / "systemctl"
    (tmp_path / "listing").write_text(listing)
    fake.write_text(f"#!/bin/sh\n[ \"$1\" = list-jobs ] && cat {tmp_path / 'listing'}\n")
    fake.chmod(0o755)
    assert systemd_powering_off(str(fake)) is expected


def test_no_systemctl_means_no_poweroff(tmp_path: Path) -> None:
    assert systemd_powering_off(None) is False
    assert systemd_powering_off(str(tmp_path / "missing")) is False


def test_a_wall_clock_stepped_forward_is_seen_within_a_recheck(tmp_path: Path) -> None:
    """NTP may step the clock hours ahead while the agent sleeps: the lease, now past,
    ends at the next wakeup, not after the whole wait the old time asked for."""
    from instance_agent.daemon import RECHECK_WALL_S

    clock = StepClock(START)
    waits: list[Any] = []

    def wait(condition: threading.Condition, timeout: float | None) -> None:
        waits.append(timeout)
        clock.advance(5 * HOUR if len(waits) == 1 else (timeout or 0))

    a = agent(tmp_path, clock, cfg=no_idle(tmp_path), wait=wait)
    assert a.run() == 0
    assert waits[0] == RECHECK_WALL_S and len(waits) == 1
    assert FakeTerminator.instances[-1].reasons == ["lease_expired"]
