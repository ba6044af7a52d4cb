"""The ``soong`` command line (cleo). Commands are thin: they call the core and render."""

from __future__ import annotations

from importlib import import_module
from typing import TYPE_CHECKING, Callable

if TYPE_CHECKING:
    from cleo.commands.command import Command


def lazy_command(target: str) -> Callable[[], Command]:
    """A factory for the command class at ``"module:Class"``, imported only when called:
    how the core and plugins list commands without importing them."""
    module, _, attr = target.partition(":")

    def factory() -> Command:
        command: Command = getattr(import_module(module), attr)()
        return command

    return factory
