"""Reaching an instance's agent from the laptop: the client's one-line errors, the
``direct`` URL the simulator reports, a managed tunnel's agent port, and a short forward
over the real test sshd. A stand-in agent (a LocalServer checking the bearer token)
answers; the real agent is exercised end to end elsewhere."""

from __future__ import annotations

import json
from typing import Any

import pytest

from soong_core.errors import SoongError, UnsupportedError
from soong_core.files import write_private
from soong_core.files import soong_dir
from soong_core.models import Instance, InstanceState, PortForward
from soong_core.testing import Answer, LocalServer, Request, SoongEnv
from soong_plugins.fabric_tunnel import tunnels
from soong_plugins.fabric_tunnel.testing import SshServer
from soong_plugins.lease_agent.client import AgentClient, AgentError
from soong_plugins.lease_agent.reach import DirectTunnels, agent_client, agent_url

TOKEN = "t0ken-for-the-test-agent-0123456789"


def agent_answer(request: Request) -> Answer:
    if request.headers.get("Authorization") != f"Bearer {TOKEN}":
        return Answer(json.dumps({"error": {"code": "unauthorized", "message": "bad token"}}),
                      status=401, content_type="application/json")
    if request.path == "/health":
        return Answer(json.dumps({"ok": True, "version": "test"}),
                      content_type="application/json")
    if request.path == "/extend":
        return Answer(json.dumps({"error": {"code": "deadline_moved",
                                            "message": "the lease deadline is now 1700"}}),
                      status=409, content_type="application/json")
    if request.path == "/status":
        return Answer("<html>not json</html>", content_type="text/html")
    return Answer(json.dumps({"error": {"code": "not_found", "message": "no"}}), status=404,
                  content_type="application/json")


@pytest.fixture
def stand_in() -> Any:
    with LocalServer(agent_answer) as server:
        yield server


def keep_token(instance_id: str) -> None:
    write_private(soong_dir("data") / "agents" / f"{instance_id}.token", TOKEN + "\n")


def test_the_client_says_each_failure_in_one_line(stand_in: LocalServer,
                                                  soong_env: SoongEnv) -> None:
    client = AgentClient(stand_in.url, TOKEN, instance_id="i-1")
    assert client.health()["ok"] is True
    with pytest.raises(AgentError, match="refused POST /extend: the lease deadline is now "
                                         "1700") as moved:
        client.extend(1, 1600)
    assert (moved.value.code, moved.value.status) == ("deadline_moved", 409)
    with pytest.raises(AgentError, match="something other than a JSON object"):
        client.status()
    with pytest.raises(AgentError, match="refused the token soong keeps for it"):
        AgentClient(stand_in.url, "wrong-token-0123456789", instance_id="i-1").health()
    stand_in.close()
    with pytest.raises(AgentError, match="the agent of i-1 does not answer"):
        client.health()
    assert TOKEN not in repr(client)


def test_a_redirect_is_never_followed_with_the_token(soong_env: SoongEnv) -> None:
    with LocalServer(lambda request: "elsewhere") as elsewhere, LocalServer(
            lambda request: Answer("", status=307,
                                   headers={"Location": elsewhere.url + "/health"})) as agent:
        with pytest.raises(AgentError, match="HTTP 307"):
            AgentClient(agent.url, TOKEN, instance_id="i-1").health()
        assert elsewhere.requests == []


def test_a_reported_agent_url_is_used_directly(stand_in: LocalServer,
                                               soong_env: SoongEnv) -> None:
    instance = Instance("sim-1", InstanceState.ACTIVE, extra={"agent_url": stand_in.url})
    keep_token("sim-1")
    with agent_client(instance, {}) as client:
        assert client.base_url == stand_in.url and client.health()["ok"]
    backend = DirectTunnels({})
    assert backend.open(instance, []).extra == {"agent_url": stand_in.url}
    with pytest.raises(UnsupportedError, match="reaches only the agent"):
        backend.open(instance, [PortForward(8888, 8888)])
    far = Instance("sim-2", InstanceState.ACTIVE, extra={"agent_url": "http://10.0.0.5:8765"})
    with pytest.raises(SoongError, match="does not reach directly"):
        with agent_url(far, {}):
            pass


def test_no_token_says_what_to_do(soong_env: SoongEnv, stand_in: LocalServer) -> None:
    instance = Instance("nokey-1", InstanceState.ACTIVE, extra={"agent_url": stand_in.url})
    with pytest.raises(SoongError, match="soong keeps no agent token for nokey-1") as caught:
        with agent_client(instance, {}):
            pass
    assert "soong cannot tell whether its limits are enforced" in caught.value.hints[0]
    assert "`soong agent install nokey-1`" in caught.value.hints[0]


def test_without_a_url_a_short_forward_over_ssh_reaches_it(
        sshd: SshServer, stand_in: LocalServer, soong_env: SoongEnv) -> None:
    """The agent listens on 127.0.0.1 "on the instance": the sshd's machine, here."""
    instance = Instance("ssh-1", InstanceState.ACTIVE, ip=sshd.host,
                        extra={"ssh_port": sshd.port})
    config = {"ssh": {"user": "root", "key_path": str(sshd.client_key)},
              "agent": {"port": stand_in.port}}
    keep_token("ssh-1")
    trusted: list[str] = []
    with agent_client(instance, config, on_trust=trusted.append) as client:
        assert client.base_url != stand_in.url  # a local port of the forward
        assert client.health()["ok"]
    assert trusted == [sshd.host_fingerprint]  # first contact: trusted, and said
    with agent_client(instance, config, on_trust=trusted.append) as client:
        assert client.health()["ok"]
    assert len(trusted) == 1


def test_a_running_tunnel_s_agent_port_is_used(sshd: SshServer, stand_in: LocalServer,
                                               soong_env: SoongEnv) -> None:
    from soong_plugins.fabric_tunnel.connect import check_login
    from soong_plugins.fabric_tunnel.settings import target_for

    instance = Instance("tun-1", InstanceState.ACTIVE, ip=sshd.host,
                        extra={"ssh_port": sshd.port})
    config = {"ssh": {"user": "root", "key_path": str(sshd.client_key)},
              "agent": {"port": stand_in.port}}
    target = target_for(instance, config["ssh"])
    check_login(target)
    state = tunnels.start(target, [], agent_port=stand_in.port)
    try:
        local = state.port_of("agent")
        with agent_url(instance, config) as url:
            assert url == f"http://127.0.0.1:{local}"
    finally:
        tunnels.stop(state)


def test_start_waits_for_the_first_health_answer(soong_env: SoongEnv) -> None:
    from soong_plugins.lease_agent.ready import wait_for_agent

    answers = iter([Answer("starting", status=503), Answer("starting", status=503)])

    def booting(request: Request) -> Answer:
        return next(answers, None) or agent_answer(request)

    slept: list[float] = []
    phases: list[str] = []
    with LocalServer(booting) as agent:
        instance = Instance("boot-1", InstanceState.ACTIVE, extra={"agent_url": agent.url})
        keep_token("boot-1")
        health = wait_for_agent(instance, {}, on_phase=phases.append, sleep=slept.append)
    assert health["ok"] and slept == [2.0, 2.0]
    assert phases == ["waiting for the lease agent of boot-1"]


def test_no_answer_within_the_limit_says_the_limits_are_not_enforced(
        soong_env: SoongEnv) -> None:
    from soong_plugins.lease_agent.ready import wait_for_agent

    clock = [0.0]

    def sleep(seconds: float) -> None:
        clock[0] += seconds

    with LocalServer(lambda request: Answer("down", status=502)) as agent:
        instance = Instance("dead-1", InstanceState.ACTIVE, extra={"agent_url": agent.url})
        keep_token("dead-1")
        with pytest.raises(SoongError) as caught:
            wait_for_agent(instance, {"agent": {"ready_timeout_seconds": 30}}, sleep=sleep,
                           monotonic=lambda: clock[0])
    message = caught.value.message
    assert message.startswith("the lease agent of dead-1 did not answer within 30s")
    assert "NOT enforced on the instance" in message and "HTTP 502" in message
    assert "soong stop dead-1" in caught.value.hints[0]
    assert 30 <= clock[0] <= 34  # bounded by the limit, in injected time
