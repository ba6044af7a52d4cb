"""Fixtures of the SSH tests: a real sshd on 127.0.0.1 and a service behind it, and the
in-process simulator whose instances are pointed at it."""

from soong_plugins.fabric_tunnel.testing import instance_service, sshd
from soong_plugins.lambda_labs.simulator.testing import sim, sim_clock, sim_factory

__all__ = ["sshd", "instance_service", "sim", "sim_clock", "sim_factory"]
