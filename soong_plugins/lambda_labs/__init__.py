"""Built-in plugin ``lambda_labs``: the Lambda Cloud provider and its simulator.

Import-light on purpose: this module is loaded whenever soong starts, so requests,
urllib3 and the client are imported only inside the provider factory, when a command
first needs the provider (see docs/lambda.md).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Callable

from soong_core.cli import lazy_command
from soong_core.hookspecs import hookimpl

if TYPE_CHECKING:
    from cleo.commands.command import Command

    from soong_core.interfaces import Provider

SIM_COMMANDS: dict[str, str] = {
    "sim up": "soong_plugins.lambda_labs.commands.sim_up:SimUpCommand",
    "sim status": "soong_plugins.lambda_labs.commands.sim_status:SimStatusCommand",
    "sim down": "soong_plugins.lambda_labs.commands.sim_down:SimDownCommand",
}
"""``soong sim ...`` -> ``module:Class``; a module is imported only when its command is
listed or run, so ``soong --help`` stays fast."""

MISSING_KEY_MESSAGE = "no Lambda Cloud API key: run `soong configure` or set LAMBDA_API_KEY"
"""What a command that needs the API says when no key is configured: raised by the
client (:class:`~.errors.MissingApiKeyError`), and by the core before it loads anything
when no key can be configured at all (``meta: {credential: ...}`` below)."""


def _make_provider(config: Any) -> Provider:
    from soong_plugins.lambda_labs.provider import LambdaProvider

    return LambdaProvider.from_config(config)


@hookimpl
def soong_register_providers(register: Callable[[str, Callable[[Any], Provider]], None]) -> None:
    """Provider ``lambda``: Lambda Cloud's API (or the simulator's, with ``--sim``)."""
    register("lambda", _make_provider)


@hookimpl
def soong_register_commands(register: Callable[[str, Callable[[], Command]], None]) -> None:
    """The simulator's commands: ``soong sim up``, ``sim status``, ``sim down``."""
    for name, target in SIM_COMMANDS.items():
        register(name, lazy_command(target))


@hookimpl
def soong_config_schema() -> dict[str, dict[str, Any]]:
    """Section ``lambda``: the account's API key (also ``$LAMBDA_API_KEY``), endpoint and
    account id."""
    return {
        "lambda": {
            "api_key": {
                "type": "string", "nullable": True, "default": None,
                "meta": {"secret": True, "env": "LAMBDA_API_KEY",
                         "credential": {"provider": "lambda",
                                        "missing": MISSING_KEY_MESSAGE},
                         "help": "Lambda Cloud API key (prefer $LAMBDA_API_KEY or "
                                 "`soong configure`)."},
            },
            "api_url": {
                "type": "string", "default": "https://cloud.lambda.ai/api/v1",
                "meta": {"help": "Base URL of the Lambda Cloud API (the simulator's for "
                                 "`soong sim`)."},
            },
            "account_id": {
                "type": "string", "nullable": True, "default": None,
                "meta": {"help": "The account this key belongs to, when the API can say "
                                 "(`soong sim up` writes the simulator's; Lambda Cloud's "
                                 "API names none, so it stays empty there). History and "
                                 "budget are kept per account when it is set, else per "
                                 "api_url."},
            },
            "filesystem_name": {
                "type": "string", "nullable": True, "default": None,
                "meta": {"help": "Persistent filesystem to attach at launch."},
            },
        },
    }
