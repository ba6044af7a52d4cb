"""Helpers of the agent's unit tests: a config in a temporary sandbox root, a fake
terminator, an agent on a ManualClock that never sleeps, an API server on port 0."""

from __future__ import annotations

import copy
import http.client
import json
import threading
from pathlib import Path
from typing import Any, Mapping, Sequence

from soong_core.clock import ManualClock

from instance_agent.config import example_config, validate

TOKEN = "test-token-0123456789abcdef"
API_KEY = "secret_sim-key_do-not-log-0123456789"
START = 1_800_000_000.0
HOUR = 3600.0


def document(**sections: Mapping[str, Any]) -> dict[str, Any]:
    """The example config with ``sections`` merged in (one level deep), sandbox-safe."""
    data = copy.deepcopy(example_config(START))
    data["api"]["token"] = TOKEN
    data["provider"]["api_key"] = API_KEY
    data["paths"]["wall"] = None
    data["paths"]["systemctl"] = None
    # no look at anything of the host's: the sandbox's own utmp and nvidia-smi (absent
    # unless a test writes them) and no serving engine's port
    data["activity"]["sources"]["prometheus"]["endpoints"] = []
    for name, values in sections.items():
        if isinstance(values, dict) and isinstance(data.get(name), dict):
            data[name].update(values)
        else:
            data[name] = values
    return data


def config(root: Path, **sections: Mapping[str, Any]) -> dict[str, Any]:
    return validate(document(**sections), environ={"SOONG_ROOT": str(root)})


class FakeTerminator:
    """Records what the agent asks of it; ``results`` are terminate's answers in turn."""

    instances: list[FakeTerminator] = []

    def __init__(self, provider: Mapping[str, Any], *, log: Any, wait: Any,
                 results: Sequence[bool] = (True,)) -> None:
        self.provider = dict(provider)
        self.log = log
        self.wait = wait
        self.pre_stop: list[Any] = []
        self.reasons: list[str] = []
        self.results = list(results)
        FakeTerminator.instances.append(self)

    def run_pre_stop(self, commands: Sequence[Mapping[str, Any]]) -> None:
        self.pre_stop.append(list(commands))

    def terminate(self, reason: str) -> bool:
        self.reasons.append(reason)
        return self.results.pop(0) if self.results else True


class Lines(list):  # type: ignore[type-arg]
    """A log that keeps its lines."""

    def __call__(self, line: str) -> None:
        self.append(line)

    def text(self) -> str:
        return "\n".join(self)


def agent(root: Path, clock: ManualClock | None = None, *, cfg: dict[str, Any] | None = None,
          **options: Any) -> Any:
    from instance_agent.daemon import Agent

    options.setdefault("log", Lines())
    options.setdefault("terminator_factory", FakeTerminator)
    options.setdefault("poweroff", lambda: False)
    return Agent(cfg or config(root), clock=clock or ManualClock(START), **options)


class Api:
    """An :class:`AgentServer` on 127.0.0.1:0 serving from a thread; raw requests."""

    def __init__(self, the_agent: Any, *, timeout: float = 5.0, max_connections: int = 32
                 ) -> None:
        from instance_agent.server import AgentServer

        self.server = AgentServer(the_agent, "127.0.0.1", 0, TOKEN, timeout=timeout,
                                  max_connections=max_connections)
        self.port = self.server.port
        self.thread = self.server.start()

    def request(self, method: str, path: str, body: Any = None, *, token: str | None = TOKEN,
                headers: Mapping[str, str] | None = None, raw: bytes | None = None
                ) -> tuple[int, Any, http.client.HTTPResponse]:
        connection = http.client.HTTPConnection("127.0.0.1", self.port, timeout=10)
        sent = dict(headers or {})
        if token is not None:
            sent.setdefault("Authorization", f"Bearer {token}")
        data = raw if raw is not None else (None if body is None else json.dumps(body).encode())
        try:
            connection.request(method, path, body=data, headers=sent)
            answer = connection.getresponse()
            payload = answer.read()
        finally:
            connection.close()
        try:
            parsed = json.loads(payload) if payload else None
        except ValueError:
            parsed = payload
        return answer.status, parsed, answer

    def close(self) -> None:
        self.server.stop()
        self.thread.join(10)
        self.server.server_close()


def run_in_thread(the_agent: Any) -> tuple[threading.Thread, list[int]]:
    """``the_agent.run()`` in a thread; the list receives its exit code."""
    codes: list[int] = []
    thread = threading.Thread(target=lambda: codes.append(the_agent.run()), daemon=True)
    thread.start()
    return thread, codes
