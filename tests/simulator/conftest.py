"""Fixtures of the simulator tests: an in-process simulator whose every response is
validated against the Lambda Cloud spec (see soong_plugins.lambda_labs.simulator.testing)."""

from __future__ import annotations

from soong_plugins.lambda_labs.simulator.testing import sim, sim_clock, sim_factory

__all__ = ["sim", "sim_clock", "sim_factory"]
