"""The Lambda plugin's SSH port: 22 on a real instance; from a simulator, what its
POST /_sim/instances/{id}/network set (DESIGN Interfaces: simulator-only facts)."""

from __future__ import annotations

import logging

import pytest

from soong_core.config import make_config
from soong_core.plugins import Plugins
from soong_plugins.lambda_labs.provider import LambdaProvider
from soong_plugins.lambda_labs.simulator.testing import SimHarness


def provider(plugins: Plugins, cloud: SimHarness, *, simulator: bool) -> LambdaProvider:
    values = {"lambda.api_url": cloud.api_url, "lambda.api_key": cloud.api_key}
    if simulator:
        values["lambda.account_id"] = "sim-account"  # what `soong sim up` writes
    made = plugins.providers().create("lambda", make_config(values, plugins=plugins))
    assert isinstance(made, LambdaProvider)
    return made


def test_talking_to_a_simulator_the_port_is_the_test_sshd_s(plugins: Plugins,
                                                           sim: SimHarness) -> None:
    pointed, plain = sim.launch(), sim.launch()
    sim.control("POST", f"/instances/{pointed}/network", {"ip": "127.0.0.1",
                                                         "ssh_port": 2222})
    lam = provider(plugins, sim, simulator=True)
    ports = {i.id: i.extra["ssh_port"] for i in lam.list_instances()}
    assert ports == {pointed: 2222, plain: 22}
    one = lam.get_instance(pointed)
    assert one is not None and one.extra["ssh_port"] == 2222
    assert "agent_url" not in one.extra  # the simulator boots no agent yet


def test_a_real_api_is_never_asked_and_the_port_is_22(plugins: Plugins,
                                                      sim: SimHarness) -> None:
    instance_id = sim.launch()
    sim.control("POST", f"/instances/{instance_id}/network", {"ssh_port": 2222})
    before = len(sim.control("GET", "/requests")["entries"])
    lam = provider(plugins, sim, simulator=False)  # as Lambda Cloud: no account named
    assert [i.extra["ssh_port"] for i in lam.list_instances()] == [22]
    paths = [e["path"] for e in sim.control("GET", "/requests")["entries"][before:]]
    assert not any(path.startswith("/_sim/instances") for path in paths)
    assert any(path.startswith("/api/v1/instances") for path in paths)  # the log works


def test_a_simulator_that_cannot_say_leaves_22_with_a_warning(
        plugins: Plugins, sim: SimHarness, monkeypatch: pytest.MonkeyPatch,
        caplog: pytest.LogCaptureFixture) -> None:
    from soong_plugins.lambda_labs import errors

    sim.launch()
    lam = provider(plugins, sim, simulator=True)

    def unanswered(path: str) -> None:
        raise errors.LambdaError("no answer from the simulator")

    monkeypatch.setattr(lam.client.transport, "simulator_control", unanswered)
    with caplog.at_level(logging.WARNING):
        assert [i.extra["ssh_port"] for i in lam.list_instances()] == [22]
    assert "assuming SSH port 22" in caplog.text
