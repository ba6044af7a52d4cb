"""Built-in plugin ``lambda_labs``: the Lambda Cloud provider and its simulator."""

from __future__ import annotations

from typing import Any

from soong_core.hookspecs import hookimpl


@hookimpl
def soong_config_schema() -> dict[str, dict[str, Any]]:
    """Section ``lambda``: the account's API key (also ``$LAMBDA_API_KEY``) and endpoint."""
    return {
        "lambda": {
            "api_key": {
                "type": "string", "nullable": True, "default": None,
                "meta": {"secret": True, "env": "LAMBDA_API_KEY",
                         "help": "Lambda Cloud API key (prefer $LAMBDA_API_KEY or "
                                 "`soong configure`)."},
            },
            "api_url": {
                "type": "string", "default": "https://cloud.lambda.ai/api/v1",
                "meta": {"help": "Base URL of the Lambda Cloud API (the simulator's for "
                                 "`soong sim`)."},
            },
            "filesystem_name": {
                "type": "string", "nullable": True, "default": None,
                "meta": {"help": "Persistent filesystem to attach at launch."},
            },
        },
    }
