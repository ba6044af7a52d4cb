"""Fixtures of the SSH tests: a real sshd on 127.0.0.1 and a service behind it, and the
in-process simulator whose instances are pointed at it."""

from __future__ import annotations

from typing import Any, Callable

import pytest

from soong_core.clock import AcceleratedClock
from soong_core.config import write_config_file
from soong_core.testing import SoongEnv
from soong_plugins.fabric_tunnel.testing import SshServer, echo_service, instance_service, sshd
from soong_plugins.lambda_labs.simulator.testing import sim, sim_clock, sim_factory

__all__ = ["sshd", "instance_service", "echo_service", "sim", "sim_clock", "sim_factory"]


@pytest.fixture
def instance(sim_factory: Callable[..., Any], sshd: SshServer, soong_env: SoongEnv) -> str:
    """An active simulated instance reached at the test sshd, and a config for it."""
    cloud = sim_factory(clock=AcceleratedClock(50.0), boot_seconds=0)
    instance_id: str = cloud.launch(name="trainer")
    cloud.control("POST", f"/instances/{instance_id}/network",
                  {"ip": sshd.host, "ssh_port": sshd.port})
    write_config_file(soong_env.config_file, {
        "lambda": {"api_url": cloud.api_url, "api_key": cloud.api_key,
                   "account_id": "sim-account"},
        "ssh": {"user": "root", "key_path": str(sshd.client_key),
                "connect_timeout_seconds": 5},
    })
    return instance_id


@pytest.fixture
def extra_config() -> dict[str, Any]:
    """Sections :func:`lambda_sim` adds to its config (a test module overrides it)."""
    return {}


@pytest.fixture
def lambda_sim(sim_factory: Callable[..., Any], soong_env: SoongEnv,
               extra_config: dict[str, Any]) -> Any:
    """An in-process simulator on a real-speed clock with the key ``soong``, and a config
    whose launches go there with the lease agent (given 30 s to answer), plus
    ``extra_config``."""
    from soong_plugins.lambda_labs.provider import LambdaProvider
    from soong_plugins.lambda_labs.simulator.testing import DEFAULT_PUBLIC_KEY

    harness = sim_factory(clock=AcceleratedClock(1.0), boot_seconds=0, terminate_seconds=0)
    LambdaProvider(harness.api_url, harness.api_key).add_ssh_key("soong", DEFAULT_PUBLIC_KEY)
    write_config_file(soong_env.config_file, {
        "defaults": {"provider": "lambda", "region": "us-east-1", "gpu": "gpu_1x_a10"},
        "lambda": {"api_url": harness.api_url, "api_key": harness.api_key,
                   "account_id": harness.simulator.account_id},
        "agent": {"ready_timeout_seconds": 30}, **extra_config})
    return harness
