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
