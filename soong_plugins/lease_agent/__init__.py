"""Built-in plugin ``lease_agent``: its config section and ``soong agent build``, which
packages the on-instance agent (``instance_agent``) as a zipapp. By design it will ship
that zipapp in user_data (declaring the limits it enforces) and read the agent's view into
``status``; launches do not carry it yet, so it contributes nothing to a launch and
nothing on an instance enforces its limits."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Callable

from soong_core.cli import lazy_command
from soong_core.hookspecs import hookimpl

if TYPE_CHECKING:
    from cleo.commands.command import Command

AGENT_COMMANDS: dict[str, str] = {
    "agent build": "soong_plugins.lease_agent.build_command:AgentBuildCommand",
}
"""``soong agent ...`` -> ``module:Class``, imported only when listed or run."""


@hookimpl
def soong_register_commands(register: Callable[[str, Callable[[], Command]], None]) -> None:
    """``soong agent build``: write the agent's zipapp."""
    for name, target in AGENT_COMMANDS.items():
        register(name, lazy_command(target))


@hookimpl
def soong_config_schema() -> dict[str, dict[str, Any]]:
    """Section ``agent``: where the agent listens and the key it terminates with."""
    return {
        "agent": {
            "port": {
                "type": "integer", "min": 1024, "max": 65535, "default": 8765,
                "meta": {"help": "Port the lease agent is to listen on (127.0.0.1 on the "
                                  "instance); launches do not deploy the agent yet."},
            },
            "api_key": {
                "type": "string", "nullable": True, "default": None,
                "meta": {"secret": True,
                         "help": "Separate provider API key for the lease agent to "
                                 "terminate its instance with (launches do not deploy "
                                 "the agent yet); null: the main key."},
            },
        },
    }
