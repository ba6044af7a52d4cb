"""Built-in plugin ``lease_agent``: its config section only, for now. By design it will
ship the on-instance agent in user_data (declaring the limits it enforces) and read the
agent's view into ``status``; until then it contributes nothing to a launch."""

from __future__ import annotations

from typing import Any

from soong_core.hookspecs import hookimpl


@hookimpl
def soong_config_schema() -> dict[str, dict[str, Any]]:
    """Section ``agent``: where the agent listens and the key it terminates with."""
    return {
        "agent": {
            "port": {
                "type": "integer", "min": 1024, "max": 65535, "default": 8765,
                "meta": {"help": "Port the lease agent is to listen on (127.0.0.1 on the "
                                  "instance); the agent is not yet built."},
            },
            "api_key": {
                "type": "string", "nullable": True, "default": None,
                "meta": {"secret": True,
                         "help": "Separate provider API key for the lease agent (not yet "
                                 "built) to terminate its instance with; null: the main key."},
            },
        },
    }
