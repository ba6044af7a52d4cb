"""Activity and heartbeats with the agent as a real process against the simulator.

Each agent runs in a sandbox root on the simulator's accelerated clock: its utmp is a
file the test writes with ``struct``, its ``nvidia-smi`` a stub script printing the real
format, its serving engine a Prometheus endpoint the test serves on 127.0.0.1, its
watchdog a receiver the test runs. Nothing reads the developer's sessions, terminals or
GPU. Idle timeouts are a few wall seconds; every wait is bounded (agent_harness).
"""

from __future__ import annotations

import json
import secrets
import sys
import threading
import time
from pathlib import Path
from typing import Any, Callable, Iterator

import pytest
from agent_harness import (ENDED, AgentProcess, agent_config, launch, require_component,
                           status_of, wait_for)

from soong_core.clock import AcceleratedClock
from soong_core.testing import Answer, LocalServer, Request

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "activity"))
from stubs import (  # noqa: E402
    gpu_row,
    port_forward,
    session,
    set_nvidia_smi,
    write_nvidia_smi_stub,
    write_utmp,
)

pytestmark = pytest.mark.slow

FACTOR = 30.0
IDLE_S = 60.0
"""Simulated seconds without activity before an idle stop: 2 wall seconds."""
SAMPLE_S = 0.25


@pytest.fixture(autouse=True)
def _components() -> None:
    for module in ("instance_agent.activity", "instance_agent.heartbeat",
                   "soong_plugins.activity.sessions", "soong_plugins.activity.gpu",
                   "soong_plugins.activity.prometheus"):
        require_component(module)


@pytest.fixture
def cloud(sim_factory: Callable[..., Any]) -> Any:
    return sim_factory(clock=AcceleratedClock(FACTOR), boot_seconds=0, terminate_seconds=5)


def idle_agent(cloud: Any, *, lease_in: float = 3000, sources: dict[str, Any] | None = None,
               **sections: Any) -> tuple[str, dict[str, Any], dict[str, Any]]:
    """(instance id, config, override) of an agent that idles out after IDLE_S."""
    instance_id, launch_id = launch(cloud)
    config, override = agent_config(cloud, launch_id, lease_in=lease_in, hard_in=6000,
                                    token=secrets.token_urlsafe(24))
    config["instance"].update({"idle_timeout_seconds": IDLE_S, "idle_grace_seconds": 0,
                               "warn_before_seconds": 0})
    config["activity"] = {"sample_seconds": SAMPLE_S, "sources": sources or {}}
    config.update(sections)
    return instance_id, config, override


def termination(agent: AgentProcess) -> dict[str, Any]:
    assert agent.wait_exit() == 0
    state = json.loads(agent.state_path.read_text())
    assert isinstance(state["terminating"], dict), state
    return state["terminating"]


def stays_alive(agent: AgentProcess, cloud: Any, instance_id: str, idle_timeouts: float = 2
                ) -> dict[str, Any]:
    """Watch ``idle_timeouts`` idle timeouts of simulated time pass with the agent alive
    and the instance billing; the agent's /status at the end."""
    until = cloud.clock.now() + idle_timeouts * IDLE_S
    wait_for(lambda: cloud.clock.now() >= until, "simulated time to pass")
    assert agent.process is not None and agent.process.poll() is None, agent.output()
    assert status_of(cloud, instance_id) == "active"
    return agent.status()


def source_state(agent: AgentProcess, name: str) -> str | None:
    return agent.status()["activity"]["sources"][name]["state"]


def test_post_activity_keeps_it_alive_until_the_lease_ends_it(cloud: Any,
                                                              agent_process: Any) -> None:
    instance_id, config, override = idle_agent(cloud, lease_in=3 * IDLE_S)
    agent: AgentProcess = agent_process(config, override)
    stop = threading.Event()

    def busy() -> None:
        while not stop.is_set():
            try:
                agent.request("POST", "/activity", {"source": "trainer"})
            except OSError:
                return  # the agent has gone
            stop.wait(0.3)

    worker = threading.Thread(target=busy, daemon=True)
    worker.start()
    try:
        ended = termination(agent)
    finally:
        stop.set()
        worker.join(10)
    assert ended["reason"] == "lease_expired"
    assert status_of(cloud, instance_id) in ENDED
    assert "terminating: idle_timeout" not in agent.log_text()
    assert "looks once more" not in agent.log_text()  # never even near the idle deadline


def test_an_interactive_session_keeps_it_alive_a_forward_only_one_does_not(
        cloud: Any, agent_process: Any, tmp_path: Path) -> None:
    root = tmp_path / "instance"
    utmp = write_utmp(root / "run" / "utmp", [session("root", "pts/3", "10.0.0.2")])
    instance_id, config, override = idle_agent(cloud)
    agent: AgentProcess = agent_process(config, override, root=root)
    status = stays_alive(agent, cloud, instance_id)
    report = status["activity"]["sources"]["sessions"]
    assert report["state"] == "active" and "pts/3" in report["detail"]
    write_utmp(utmp, [port_forward("ubuntu", "10.0.0.9")])  # the login ended; a tunnel stays
    wait_for(lambda: source_state(agent, "sessions") == "idle", "the session to be gone")
    assert termination(agent)["reason"] == "idle_timeout"


def test_a_busy_gpu_keeps_it_alive_an_idle_one_does_not(cloud: Any, agent_process: Any,
                                                         tmp_path: Path) -> None:
    root = tmp_path / "instance"
    stub = write_nvidia_smi_stub(root / "usr" / "bin" / "nvidia-smi",
                                 [gpu_row(0, utilization=80), gpu_row(1, utilization=None)])
    instance_id, config, override = idle_agent(cloud)
    agent: AgentProcess = agent_process(config, override, root=root)
    status = stays_alive(agent, cloud, instance_id)
    assert status["activity"]["sources"]["gpu"]["state"] == "active"
    assert [g["utilization_percent"] for g in status["health"]["gpus"]] == [80, None]
    set_nvidia_smi(stub, [gpu_row(0, utilization=0), gpu_row(1, utilization=None)])
    assert termination(agent)["reason"] == "idle_timeout"
    assert status_of(cloud, instance_id) in ENDED


def test_no_gpu_tool_means_the_other_sources_decide(cloud: Any, agent_process: Any) -> None:
    instance_id, config, override = idle_agent(cloud)  # the sandbox has no nvidia-smi
    agent: AgentProcess = agent_process(config, override)
    wait_for(lambda: source_state(agent, "gpu") == "unavailable", "the GPU source to look")
    code, _ = agent.request("POST", "/activity")
    assert code == 200
    stays_alive(agent, cloud, instance_id, idle_timeouts=0.5)  # the POST counts
    assert termination(agent)["reason"] == "idle_timeout"


class Engine:
    """A serving engine's /metrics on 127.0.0.1: ``grow`` makes each scrape see more
    generated tokens; ``stop()`` kills it."""

    def __init__(self) -> None:
        self.tokens = 0
        self.grow = True
        self.server = LocalServer(self.metrics)
        self.url = f"{self.server.url}/metrics"

    def metrics(self, request: Request) -> Answer:
        if self.grow:
            self.tokens += 17
        return Answer("# TYPE vllm:generation_tokens_total counter\n"
                      f'vllm:generation_tokens_total{{model_name="test/model-8b"}} '
                      f"{self.tokens}\n"
                      "# TYPE vllm:num_requests_running gauge\n"
                      'vllm:num_requests_running{model_name="test/model-8b"} 0\n',
                      content_type="text/plain; version=0.0.4")

    def stop(self) -> None:
        self.server.close()


@pytest.fixture
def engine() -> Iterator[Engine]:
    served = Engine()
    yield served
    served.stop()


def test_a_growing_counter_keeps_it_alive_a_still_one_idles_out(
        cloud: Any, agent_process: Any, engine: Engine) -> None:
    sources = {"prometheus": {"endpoints": [engine.url]}}
    instance_id, config, override = idle_agent(cloud, sources=sources)
    agent: AgentProcess = agent_process(config, override)
    status = stays_alive(agent, cloud, instance_id)
    assert status["activity"]["sources"]["prometheus"]["state"] == "active"
    assert status["health"]["models"] == ["test/model-8b"]
    engine.grow = False
    assert termination(agent)["reason"] == "idle_timeout"


def test_an_engine_that_dies_is_unhealthy_and_no_activity(cloud: Any, agent_process: Any,
                                                          engine: Engine) -> None:
    sources = {"prometheus": {"endpoints": [engine.url], "failures_unhealthy": 2}}
    instance_id, config, override = idle_agent(cloud, lease_in=3000, sources=sources)
    config["instance"]["idle_timeout_seconds"] = 20 * IDLE_S  # time to look at /status
    agent: AgentProcess = agent_process(config, override)
    wait_for(lambda: source_state(agent, "prometheus") == "active", "the engine to be seen")
    engine.stop()
    wait_for(lambda: source_state(agent, "prometheus") == "unhealthy", "the engine to be "
             "unhealthy")
    status = agent.status()
    assert any(w.startswith("activity source prometheus is unhealthy") for w in status["warnings"])
    last = status["idle"]["last_activity_at"]
    time.sleep(4 * SAMPLE_S)  # further failing looks: no activity comes of them
    assert agent.status()["idle"]["last_activity_at"] == last
    assert status_of(cloud, instance_id) == "active"


class Watchdog:
    """A heartbeat receiver on 127.0.0.1: keeps every (authorization, body) it gets."""

    def __init__(self, token: str) -> None:
        self.token = token
        self.server = LocalServer(lambda request: Answer(
            status=204 if request.path == "/heartbeat" else 404))
        self.url = self.server.url

    @property
    def beats(self) -> list[tuple[str, dict[str, Any]]]:
        return [(r.headers.get("Authorization", ""), json.loads(r.body))
                for r in self.server.requests]

    def close(self) -> None:
        self.server.close()


HEARTBEAT_KEYS = {"schema_version", "instance_id", "launch_id", "sent_at", "lease_deadline",
                  "hard_deadline", "next_stop", "health", "version", "final", "reason"}


def test_heartbeats_reach_the_watchdog_and_the_last_says_why(cloud: Any,
                                                             agent_process: Any) -> None:
    watchdog = Watchdog(secrets.token_urlsafe(24))
    try:
        instance_id, config, override = idle_agent(
            cloud, lease_in=2 * IDLE_S,
            watchdog={"url": watchdog.url, "token": watchdog.token, "heartbeat_seconds": 0.5})
        config["instance"]["idle_timeout_seconds"] = None
        agent: AgentProcess = agent_process(config, override)
        assert termination(agent)["reason"] == "lease_expired"
        wait_for(lambda: any(body["final"] for _, body in watchdog.beats), "the final heartbeat")
    finally:
        watchdog.close()
    regular = [body for _, body in watchdog.beats if not body["final"]]
    final = [body for _, body in watchdog.beats if body["final"]]
    assert len(regular) >= 2 and len(final) == 1
    assert {auth for auth, _ in watchdog.beats} == {f"Bearer {watchdog.token}"}
    for body in watchdog.beats:
        assert set(body[1]) == HEARTBEAT_KEYS
        assert body[1]["launch_id"] == config["instance"]["launch_id"]
        assert body[1]["schema_version"] == 1
    assert final[0]["reason"] == "lease_expired"
    assert final[0]["instance_id"] == instance_id
    assert regular[-1]["next_stop"]["reason"] == "lease_expired"
    assert regular[0]["sent_at"] < regular[-1]["sent_at"] <= final[0]["sent_at"]
    assert watchdog.token not in agent.log_text() + agent.output()


JUPYTER_EXAMPLE = Path(__file__).resolve().parents[2] / "examples" / "soong-jupyter-activity"


class Kernels:
    """A Jupyter server's ``/api/kernels`` on 127.0.0.1; ``busy`` is what it reports."""

    def __init__(self, token: str) -> None:
        self.busy = True
        self.token = token
        self.server = LocalServer(self.kernels)
        self.url = self.server.url

    def kernels(self, request: Request) -> Answer:
        if request.headers.get("Authorization") != f"token {self.token}":
            return Answer(status=403)
        return Answer(json.dumps([{
            "id": "k1", "name": "python3", "connections": 1,
            "last_activity": "2020-01-01T00:00:00.000000Z",
            "execution_state": "busy" if self.busy else "idle"}]),
            content_type="application/json")

    def close(self) -> None:
        self.server.close()


def test_a_third_party_source_travels_in_the_zipapp_and_runs_there(
        cloud: Any, agent_process: Any, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
        ) -> None:
    """examples/soong-jupyter-activity, bundled through soong_agent_bundle_modules the way
    `soong agent build` does, loaded by the zipapp agent from its config's plugins: a
    busy kernel keeps the instance alive, a forgotten notebook lets it idle out."""
    monkeypatch.syspath_prepend(str(JUPYTER_EXAMPLE))
    import soong_jupyter_activity

    from soong_plugins.lease_agent.bundle import build_zipapp

    modules = soong_jupyter_activity.soong_agent_bundle_modules()
    pyz = build_zipapp(tmp_path / "agent.pyz", modules)
    assert "soong_jupyter_activity.source" in pyz.modules

    root = tmp_path / "instance"
    token = secrets.token_urlsafe(16)
    (root / "etc" / "jupyter").mkdir(parents=True)
    (root / "etc" / "jupyter" / "token").write_text(token + "\n")
    notebook = Kernels(token)
    try:
        sources = {"jupyter": {"url": notebook.url, "token_file": "/etc/jupyter/token"}}
        instance_id, config, override = idle_agent(cloud, sources=sources)
        config["plugins"] = ["soong_jupyter_activity"]
        agent: AgentProcess = agent_process(config, override, root=root, zipapp=pyz.path)
        status = stays_alive(agent, cloud, instance_id)
        report = status["activity"]["sources"]["jupyter"]
        assert report["state"] == "active", report
        assert status["idle"]["last_activity_source"] == "jupyter"
        notebook.busy = False
        assert termination(agent)["reason"] == "idle_timeout"
    finally:
        notebook.close()
    assert status_of(cloud, instance_id) in ENDED
    assert token not in agent.log_text() + agent.output()
