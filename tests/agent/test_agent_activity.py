"""Activity sources and heartbeats inside the agent, on a ManualClock: what a look
counts, what /status shows, the last look before an idle stop, heartbeats that never
hold up enforcement. The sources themselves are tested in tests/activity/."""

from __future__ import annotations

import threading
import time
from pathlib import Path
from typing import Any

import pytest
from agent_units import START, FakeTerminator, Lines, agent, config, run_in_thread

from soong_core.clock import ManualClock
from soong_core.interfaces import ActivitySource
from soong_core.models import ActivitySample, ActivityState

from instance_agent.config import ConfigError, validate
from instance_agent.daemon import ApiError, load_plugins

IDLE = 1800.0
GRACE = 600.0


class Scripted(ActivitySource):
    """Answers the states it is given, in turn (the last one forever)."""

    name = "scripted"

    def __init__(self, *states: ActivityState | Exception, health: dict[str, Any] | None = None
                 ) -> None:
        self.states = list(states)
        self.health = health or {}
        self.calls: list[float] = []

    def sample(self, now: float) -> ActivitySample:
        self.calls.append(now)
        state = self.states.pop(0) if len(self.states) > 1 else self.states[0]
        if isinstance(state, Exception):
            raise state
        return ActivitySample(state, f"scripted {state.value}", self.health)


class StepClock(ManualClock):
    """A manual clock whose seconds are wall seconds (the loop's waits can be read)."""

    def to_wall(self, seconds: float) -> float:
        return seconds


def idle_config(root: Path, **sections: Any) -> dict[str, Any]:
    return config(root, instance={"idle_timeout_seconds": IDLE, "idle_grace_seconds": GRACE},
                  **sections)


def test_an_active_look_is_activity_at_the_moment_of_the_look(tmp_path: Path) -> None:
    clock = ManualClock(START)
    source = Scripted(ActivityState.ACTIVE, ActivityState.IDLE)
    a = agent(tmp_path, clock, cfg=idle_config(tmp_path), sources=[("gpu", source)])
    assert a.idle_deadline() == START + IDLE
    clock.advance(100)
    a.runners["gpu"].look()
    assert a.state.last_activity_at == START + 100
    assert a.state.last_activity_source == "gpu"
    assert a.idle_deadline() == START + 100 + IDLE
    clock.advance(100)
    a.runners["gpu"].look()  # idle now: the deadline stays where the activity put it
    assert a.idle_deadline() == START + 100 + IDLE
    report = a.status()["activity"]["sources"]["gpu"]
    assert report["state"] == "idle" and report["detail"] == "scripted idle"
    assert report["last_active_at"] == START + 100 and report["looks"] == 2


@pytest.mark.parametrize("state", [ActivityState.IDLE, ActivityState.UNAVAILABLE,
                                   ActivityState.UNHEALTHY])
def test_no_other_state_is_activity(tmp_path: Path, state: ActivityState) -> None:
    clock = ManualClock(START)
    a = agent(tmp_path, clock, cfg=idle_config(tmp_path), sources=[("x", Scripted(state))])
    clock.advance(100)
    a.runners["x"].look()
    assert a.state.last_activity_at is None
    assert a.idle_deadline() == START + IDLE


def test_a_source_claiming_activity_in_the_future_counts_only_up_to_now(tmp_path: Path) -> None:
    class Future(ActivitySource):
        def sample(self, now: float) -> ActivitySample:
            return ActivitySample(ActivityState.ACTIVE, last_activity=now + 10 * IDLE)

    clock = ManualClock(START)
    a = agent(tmp_path, clock, cfg=idle_config(tmp_path), sources=[("future", Future())])
    clock.advance(50)
    a.runners["future"].look()
    assert a.state.last_activity_at == START + 50


def test_a_source_that_raises_is_unhealthy_and_warned_about(tmp_path: Path) -> None:
    clock = ManualClock(START)
    log = Lines()
    a = agent(tmp_path, clock, cfg=idle_config(tmp_path), log=log,
              sources=[("broken", Scripted(RuntimeError("no\nway")))])
    a.runners["broken"].look()
    a.runners["broken"].look()
    status = a.status()
    report = status["activity"]["sources"]["broken"]
    assert report["state"] == "unhealthy"
    assert report["detail"] == "the source failed: RuntimeError: no way"
    assert "activity source broken is unhealthy: the source failed: RuntimeError: no way" \
        in status["warnings"]
    assert status["health"]["sources"] == {"broken": "unhealthy"}
    assert a.state.last_activity_at is None
    assert sum("activity source broken: unhealthy" in line for line in log) == 1  # on change


def test_a_source_returning_nonsense_is_unhealthy(tmp_path: Path) -> None:
    class Wrong(ActivitySource):
        def sample(self, now: float) -> Any:
            return True

    a = agent(tmp_path, ManualClock(START), cfg=idle_config(tmp_path),
              sources=[("wrong", Wrong())])
    assert a.runners["wrong"].look().state is ActivityState.UNHEALTHY


def test_health_that_json_cannot_carry_is_replaced(tmp_path: Path) -> None:
    source = Scripted(ActivityState.IDLE, health={"gpus": [{"temperature_c": float("nan")}]})
    a = agent(tmp_path, ManualClock(START), cfg=idle_config(tmp_path), sources=[("gpu", source)])
    a.runners["gpu"].look()
    assert "error" in a.status()["activity"]["sources"]["gpu"]["health"]


def test_source_health_warnings_gpus_and_models_reach_status(tmp_path: Path) -> None:
    gpu = Scripted(ActivityState.IDLE, health={"gpus": [{"index": 0, "ecc_uncorrected": 2}],
                                               "warnings": ["GPU 0: 2 uncorrected ECC errors"]})
    engine = Scripted(ActivityState.ACTIVE, health={"models": ["meta-llama/Llama-3.1-8B"]})
    a = agent(tmp_path, ManualClock(START), cfg=idle_config(tmp_path),
              sources=[("gpu", gpu), ("prometheus", engine)])
    for runner in a.runners.values():
        runner.look()
    status = a.status()
    assert status["health"]["gpus"] == [{"index": 0, "ecc_uncorrected": 2}]
    assert status["health"]["models"] == ["meta-llama/Llama-3.1-8B"]
    assert "gpu: GPU 0: 2 uncorrected ECC errors" in status["warnings"]


def test_post_activity_goes_through_the_api_source(tmp_path: Path) -> None:
    clock = ManualClock(START)
    a = agent(tmp_path, clock, cfg=idle_config(tmp_path))
    clock.advance(30)
    a.activity("trainer")
    assert a.state.last_activity_source == "api (trainer)"
    assert a.runners["api"].look().state is ActivityState.ACTIVE
    assert a.runners["api"].look().state is ActivityState.IDLE  # nothing since the last look


def test_post_activity_is_refused_when_the_api_source_is_off(tmp_path: Path) -> None:
    cfg = idle_config(tmp_path, activity={"sources": {"api": {"enabled": False}}})
    a = agent(tmp_path, ManualClock(START), cfg=cfg)
    assert "api" not in a.runners
    with pytest.raises(ApiError) as refused:
        a.activity()
    assert refused.value.status == 409 and refused.value.code == "source_disabled"


def test_the_built_in_sources_are_registered_and_switchable(tmp_path: Path) -> None:
    loaded = load_plugins(config(tmp_path))
    assert [name for name, _ in loaded.sources] == ["api", "sessions", "gpu", "prometheus"]
    assert loaded.problems == []
    off = config(tmp_path, activity={"sources": {"gpu": {"enabled": False},
                                                 "sessions": {"enabled": False}}})
    assert [name for name, _ in load_plugins(off).sources] == ["api", "prometheus"]


def test_a_configured_source_nobody_registers_is_a_problem(tmp_path: Path) -> None:
    cfg = config(tmp_path, activity={"sources": {"jupyter": {"url": "http://127.0.0.1:1"}}})
    problems = load_plugins(cfg).problems
    assert problems == ["activity source jupyter: configured, but no plugin registers it "
                        "(is its module in plugins and in the agent's bundle?)"]
    cfg = config(tmp_path, activity={"sources": {"jupyter": {"enabled": False}}})
    assert load_plugins(cfg).problems == []


def test_sampling_is_never_coarser_than_a_quarter_of_the_idle_timeout(tmp_path: Path) -> None:
    from soong_core.clock import AcceleratedClock

    a = agent(tmp_path, StepClock(START), cfg=idle_config(tmp_path), sources=[])
    assert a.sample_interval() == 30
    fast = agent(tmp_path, AcceleratedClock(60.0), cfg=idle_config(tmp_path), sources=[])
    assert fast.sample_interval() == pytest.approx(IDLE / 4 / 60)  # 7.5 wall seconds


# -- the last look ------------------------------------------------------------------------


def test_an_idle_stop_looks_at_every_source_once_more_first(tmp_path: Path) -> None:
    """A busy machine whose latest look is stale is not stopped: the last look finds it
    busy and the idle deadline moves on; when the last look finds nobody, it stops."""
    clock = StepClock(START)
    # idle for the regular looks the test makes, active at the last look, then idle
    source = Scripted(ActivityState.IDLE, ActivityState.ACTIVE, ActivityState.IDLE)
    log = Lines()
    a = agent(tmp_path, clock, cfg=idle_config(tmp_path), sources=[("gpu", source)], log=log)
    a.runners["gpu"].look()  # idle
    looks_before = len(source.calls)
    clock.set(START + IDLE)
    waits: list[Any] = []

    def wait(condition: threading.Condition, timeout: float | None) -> None:
        waits.append(timeout)
        clock.advance(timeout if timeout is not None else 0)

    a._wait = wait
    a._start_threads = lambda: None  # no regular looks: only the last ones
    FakeTerminator.instances.clear()
    thread, codes = run_in_thread(a)
    thread.join(30)
    assert codes == [0]
    assert len(source.calls) == looks_before + 2  # a last look per idle deadline
    assert a.state.terminating["reason"] == "idle_timeout"
    # the first last look was active at START + IDLE: the stop came IDLE later
    assert a.state.last_activity_at == START + IDLE
    assert a.state.terminating["at"] == pytest.approx(START + 2 * IDLE)
    assert sum("every activity source looks once more" in line for line in log) == 2


class Hangs(ActivitySource):
    """A look that does not end until ``release`` is set (30 s at most), then says
    ``state``."""

    def __init__(self, release: threading.Event, state: ActivityState) -> None:
        self.release, self.state = release, state

    def sample(self, now: float) -> ActivitySample:
        self.release.wait(30)
        return ActivitySample(self.state)


def test_the_last_look_is_not_held_up_by_a_hanging_source(tmp_path: Path) -> None:
    release = threading.Event()
    clock = StepClock(START + IDLE)
    cfg = idle_config(tmp_path, activity={"final_look_seconds": 0.3})
    log = Lines()
    a = agent(tmp_path, clock, cfg=cfg, sources=[("hangs", Hangs(release, ActivityState.ACTIVE))],
              log=log)
    a._start_threads = lambda: None
    thread, codes = run_in_thread(a)
    thread.join(20)
    release.set()
    assert codes == [0] and a.state.terminating["reason"] == "idle_timeout"
    assert any("no answer within 0.3 s from hangs (not activity)" in line for line in log)


def test_a_lease_stop_does_not_wait_for_a_look(tmp_path: Path) -> None:
    source = Scripted(ActivityState.ACTIVE)
    cfg = config(tmp_path, instance={"idle_timeout_seconds": None})
    clock = StepClock(cfg["instance"]["lease_deadline"])
    a = agent(tmp_path, clock, cfg=cfg, sources=[("gpu", source)])
    a._start_threads = lambda: None
    thread, codes = run_in_thread(a)
    thread.join(20)
    assert codes == [0] and a.state.terminating["reason"] == "lease_expired"
    assert source.calls == []


# -- heartbeats -----------------------------------------------------------------------------


WATCHDOG = {"url": "http://127.0.0.1:9/", "token": "watchdog-token-0123456789"}
HEARTBEAT_KEYS = {"schema_version", "instance_id", "launch_id", "sent_at", "lease_deadline",
                  "hard_deadline", "next_stop", "health", "version", "final", "reason"}


def test_the_heartbeat_carries_the_documented_fields(tmp_path: Path) -> None:
    sent: list[tuple[str, str, dict[str, Any]]] = []

    def post(url: str, token: str, body: dict[str, Any], timeout: float) -> int:
        sent.append((url, token, body))
        return 204

    clock = ManualClock(START + 10)
    a = agent(tmp_path, clock, cfg=idle_config(tmp_path, watchdog=WATCHDOG),
              sources=[("gpu", Scripted(ActivityState.IDLE))], heartbeat_post=post)
    a.runners["gpu"].look()
    assert a.heartbeat is not None and a.heartbeat.send()
    url, token, body = sent[0]
    assert url == "http://127.0.0.1:9/heartbeat" and token == WATCHDOG["token"]
    assert set(body) == HEARTBEAT_KEYS
    assert body["schema_version"] == 1 and body["final"] is False and body["reason"] is None
    assert body["sent_at"] == START + 10 and body["launch_id"] == "example-launch-id"
    assert body["next_stop"]["reason"] == "idle_timeout"
    assert body["health"]["sources"] == {"gpu": "idle"}
    status = a.status()["heartbeat"]
    assert status["sent"] == 1 and status["failures"] == 0 and status["last_ok_at"] == START + 10
    assert WATCHDOG["token"] not in str(a.status())


def test_the_watchdog_token_is_required_with_its_url(tmp_path: Path) -> None:
    from agent_units import document

    with pytest.raises(ConfigError) as error:
        validate(document(watchdog={"url": "http://127.0.0.1:9"}),
                 environ={"SOONG_ROOT": str(tmp_path)})
    assert error.value.problems == ["watchdog.token: required when watchdog.url is set"]


def test_a_failing_and_slow_watchdog_never_delays_the_termination(tmp_path: Path) -> None:
    """The final heartbeat goes out beside the termination: a watchdog that hangs and
    then refuses still sees the agent terminate first, and the reason is in the body."""
    order: list[str] = []
    bodies: list[dict[str, Any]] = []

    def post(url: str, token: str, body: dict[str, Any], timeout: float) -> int:
        bodies.append(body)
        time.sleep(0.3)
        order.append("heartbeat")
        return 503

    class Recording(FakeTerminator):
        def terminate(self, reason: str) -> bool:
            order.append("terminate")
            return super().terminate(reason)

    cfg = config(tmp_path, instance={"idle_timeout_seconds": None},
                 watchdog={**WATCHDOG, "timeout_seconds": 0.2})
    clock = StepClock(cfg["instance"]["lease_deadline"])
    log = Lines()
    a = agent(tmp_path, clock, cfg=cfg, sources=[], heartbeat_post=post,
              terminator_factory=Recording, log=log)
    thread, codes = run_in_thread(a)
    thread.join(30)
    assert codes == [0]
    assert order[0] == "terminate"
    final = [b for b in bodies if b["final"]]
    assert final and final[0]["reason"] == "lease_expired"
    assert "heartbeat to http://127.0.0.1:9/heartbeat failed: the watchdog answered HTTP 503" \
        in log.text()
    assert "the final heartbeat did not reach the watchdog" in log.text()


def test_a_plugin_source_that_hangs_holds_up_no_other_source(tmp_path: Path) -> None:
    """Bounded sources (the built-in ones) share one thread; any other gets its own."""
    from instance_agent.activity import threads_for

    release = threading.Event()

    class Quick(Scripted):
        bounded = True

    quick, other = Quick(ActivityState.IDLE), Quick(ActivityState.IDLE)
    cfg = idle_config(tmp_path, activity={"sample_seconds": 0.2})
    a = agent(tmp_path, StepClock(START), cfg=cfg,
              sources=[("hangs", Hangs(release, ActivityState.IDLE)), ("quick", quick),
                       ("other", other)])
    groups = [[r.name for r in group] for group in threads_for(list(a.runners.values()))]
    assert groups == [["quick", "other"], ["hangs"]]
    try:
        a._start_threads()
        deadline = time.monotonic() + 20
        while len(quick.calls) < 3 and time.monotonic() < deadline:
            time.sleep(0.05)
        assert len(quick.calls) >= 3 and len(other.calls) >= 2
        assert a.runners["hangs"].looks == 0
    finally:
        a._stop_threads.set()
        release.set()
