"""Fixtures of the agent tests: the in-process simulator (every response checked
against the Lambda Cloud spec) and the agent as a real process (see agent_harness)."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Callable, Iterator

import pytest
from agent_harness import AgentProcess

from soong_plugins.lambda_labs.simulator.testing import sim, sim_clock, sim_factory

__all__ = ["sim", "sim_clock", "sim_factory", "agent_process"]


@pytest.fixture
def agent_process(tmp_path: Path) -> Iterator[Callable[..., AgentProcess]]:
    """``agent_process(config, override=None)``: write the config into a fresh sandbox
    root and start the agent there; every agent started is killed at teardown."""
    started: list[AgentProcess] = []
    counter = iter(range(1000))

    def make(config: dict[str, Any], override: dict[str, Any] | None = None,
             root: Path | None = None, python: str | None = None,
             zipapp: Path | None = None) -> AgentProcess:
        where = root or tmp_path / f"instance{next(counter)}"
        agent = AgentProcess(where, config, override, python, zipapp)
        started.append(agent)
        return agent.start()

    try:
        yield make
    finally:
        for agent in started:
            agent.kill()
