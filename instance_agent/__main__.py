"""``python3 -m instance_agent`` (or ``python3 -I agent.pyz``): run, check or describe the agent.

``--config PATH`` runs it (``--override PATH``: the simulator's file, default
``agent.override.json`` beside the config); ``--check`` only validates; ``--example-config``
prints a complete commented config; ``--self-test`` proves this copy works in isolation.
A bad config is one line per problem on stderr and exit 2, never a traceback.
"""

from __future__ import annotations

import sys
from typing import Any, Mapping, Sequence

from instance_agent.config import DEFAULT_CONFIG_PATH

PROG = "soong-agent"
EXIT_CONFIG = 2


def _parser() -> Any:
    import argparse

    parser = argparse.ArgumentParser(prog=PROG, description="soong's lease agent: stops this "
                                     "instance when its lease, hard limit or idle timeout ends.")
    parser.add_argument("--config", default=None,
                        help=f"the agent config (JSON; default {DEFAULT_CONFIG_PATH} under "
                             "$SOONG_ROOT)")
    parser.add_argument("--override", default=None,
                        help="a JSON file merged over the config (default: "
                             "agent.override.json beside it, when present)")
    parser.add_argument("--check", action="store_true", help="validate the config and exit")
    parser.add_argument("--example-config", action="store_true",
                        help="print a complete commented config and exit")
    parser.add_argument("--self-test", action="store_true",
                        help="check this copy of the agent works, print 'self-test ok'")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    if args.example_config:
        import json

        from instance_agent.config import example_config

        print(json.dumps(example_config(), indent=2))
        return 0
    if args.self_test:
        return self_test()
    import os

    from instance_agent.config import ConfigError, load

    path = args.config or os.environ.get("SOONG_ROOT", "") + DEFAULT_CONFIG_PATH
    try:
        config = load(path, args.override)
        if args.check:
            from instance_agent.daemon import load_plugins

            problems = load_plugins(config).problems
            for problem in problems:
                print(f"{PROG}: {problem}", file=sys.stderr)
            if problems:
                return EXIT_CONFIG
            print(f"{PROG}: config {path} is valid")
            return 0
        return run(config)
    except ConfigError as error:
        for problem in error.problems:
            print(f"{PROG}: {problem}", file=sys.stderr)
        return EXIT_CONFIG


def run(config: Mapping[str, Any], **agent_options: Any) -> int:
    """Start the API and enforce until the instance is terminating or a signal says stop."""
    import signal

    from instance_agent.daemon import Agent
    from instance_agent.server import AgentServer

    agent = Agent(config, **agent_options)
    api = config["api"]
    try:
        server = AgentServer(agent, api["bind"], api["port"], api["token"],
                             timeout=float(api["request_timeout_seconds"]),
                             max_connections=int(api["max_connections"]))
    except OSError as exc:
        agent.log(f"ERROR: cannot listen on {api['bind']}:{api['port']}: "
                  f"{exc.strerror or exc}; enforcing without the API")
        server = None

    def on_signal(signum: int, frame: Any) -> None:
        agent.request_signal(signum)

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)
    if server is not None:
        server.start()
        agent.log(f"api: listening on {api['bind']}:{server.port}")
    agent.log(f"agent {_version()} started: lease deadline {agent.state.lease_deadline:.3f}, "
              f"hard deadline {agent.hard_deadline:.3f} (clock {type(agent.clock).__name__})")
    try:
        code = agent.run()
    finally:
        if server is not None:
            server.stop()
            server.server_close()
    agent.log(f"agent exiting ({code})")
    return code


def _version() -> str:
    from instance_agent.daemon import version

    return version()


def self_test() -> int:
    """Imports, the example config, one policy evaluation and a loopback round trip.
    Prints ``self-test ok`` (exit 0) or the first failure (exit 1)."""
    try:
        for line in _self_test_steps():
            print(f"{PROG} self-test: {line}")
    except Exception as exc:
        print(f"{PROG} self-test FAILED: {type(exc).__name__}: {' '.join(str(exc).split())}",
              file=sys.stderr)
        return 1
    print("self-test ok")
    return 0


def _self_test_steps() -> Any:
    import importlib
    import json
    import os
    import tempfile
    import urllib.request

    modules = ["json", "hmac", "http.server", "urllib.request", "pluggy",
               "soong_core.models", "soong_core.clock", "soong_core.policy",
               "soong_core.hookspecs", "soong_plugins.policies", "soong_plugins.activity",
               "soong_plugins.activity.api", "soong_plugins.activity.sessions",
               "soong_plugins.activity.gpu", "soong_plugins.activity.prometheus",
               "instance_agent.config", "instance_agent.activity", "instance_agent.heartbeat",
               "instance_agent.daemon", "instance_agent.server", "instance_agent.state",
               "instance_agent.logs"]
    for name in modules:
        importlib.import_module(name)
    yield f"imports ok ({len(modules)} modules, python {sys.version.split()[0]})"

    from soong_core.clock import ManualClock

    from instance_agent.config import example_config, validate
    from instance_agent.daemon import Agent
    from instance_agent.server import AgentServer

    with tempfile.TemporaryDirectory(prefix="soong-agent-self-test-") as root:
        config = validate(example_config(), environ={"SOONG_ROOT": root})
        yield "example config valid"
        config["paths"]["wall"] = config["paths"]["systemctl"] = None
        config["instance"]["idle_timeout_seconds"] = None  # the lease alone, to check it
        start = config["instance"]["launched_at"]
        clock = ManualClock(start)
        agent = Agent(config, clock=clock, log=lambda line: None, poweroff=lambda: False)
        first = agent.step()
        clock.set(config["instance"]["lease_deadline"])
        last = agent.step()
        if first.kind != "wait" or last.kind != "terminate" or last.reason != "lease_expired":
            raise RuntimeError(f"policy evaluation gave {first} then {last}")
        yield "policies ok (lease_expired at the lease deadline)"
        agent.state.terminating = None
        server = AgentServer(agent, "127.0.0.1", 0, config["api"]["token"], timeout=5)
        server.start()
        try:
            url = f"http://127.0.0.1:{server.port}/health"
            request = urllib.request.Request(url, headers={
                "Authorization": f"Bearer {config['api']['token']}"})
            with urllib.request.urlopen(request, timeout=5) as answer:
                body = json.loads(answer.read())
            if not body.get("ok"):
                raise RuntimeError(f"GET /health answered {body}")
            try:
                urllib.request.urlopen(url, timeout=5)
            except urllib.error.HTTPError as refused:
                if refused.code != 401:
                    raise RuntimeError(f"GET /health without a token: {refused.code}") from None
            else:
                raise RuntimeError("GET /health without a token was answered")
        finally:
            server.stop()
            server.server_close()
        yield "loopback API ok"
        del os


if __name__ == "__main__":
    sys.exit(main())
