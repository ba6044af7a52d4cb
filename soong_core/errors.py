"""One error type for everything a user can act on.

The CLI prints ``message`` and each hint on stderr, with no traceback; ``detail`` and
the traceback appear only with ``-vvv``. Embedding programs catch :class:`SoongError`.
"""

from __future__ import annotations

from typing import Iterable

EXIT_OK = 0
EXIT_RUNTIME = 1
EXIT_USAGE = 2


class SoongError(Exception):
    """An error with a one-line reason, what to do next, and an exit code.

    >>> raise SoongError("no instance named 'x'", hints=["run `soong status` to list them"])
    """

    exit_code: int = EXIT_RUNTIME
    nothing_launched: bool = False
    """Set by a provider's ``launch`` when it is certain no instance was created (the
    API refused the request): the core then closes the launch intent at once instead
    of leaving it for reconciliation to settle by listing."""

    def __init__(
        self,
        message: str,
        *,
        hints: Iterable[str] = (),
        detail: str | None = None,
        exit_code: int | None = None,
        nothing_launched: bool | None = None,
    ) -> None:
        super().__init__(message)
        self.message = message
        self.hints = tuple(hints)
        self.detail = detail
        if exit_code is not None:
            self.exit_code = exit_code
        if nothing_launched is not None:
            self.nothing_launched = nothing_launched

    def __str__(self) -> str:
        return self.message


class UsageError(SoongError):
    """Bad flags or arguments: exit code 2."""

    exit_code = EXIT_USAGE


class ConfigError(SoongError):
    """Invalid or unreadable configuration: exit code 2."""

    exit_code = EXIT_USAGE


class UnsupportedError(SoongError):
    """The provider declared it cannot do this (see ``Capability``)."""


class PluginError(SoongError):
    """A plugin broke its contract (duplicate name, bad return value, ...)."""
