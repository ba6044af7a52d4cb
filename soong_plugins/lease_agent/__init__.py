"""Built-in plugin ``lease_agent``: ships the on-instance agent in user_data and reads
its view into ``status``."""

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
                "meta": {"help": "Port the agent listens on (127.0.0.1 on the instance)."},
            },
            "api_key": {
                "type": "string", "nullable": True, "default": None,
                "meta": {"secret": True,
                         "help": "Separate provider API key for the agent to terminate its "
                                 "instance; null: the main key (with a warning in `start`)."},
            },
        },
    }
