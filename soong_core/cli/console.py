"""rich output that obeys cleo's decisions: ``--no-ansi``, ``NO_COLOR``, non-TTY, -q.

Import this module only inside ``handle()``: it imports rich.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, TextIO, cast

from cleo.io.outputs.output import Type
from rich.console import Console

if TYPE_CHECKING:
    from cleo.io.io import IO


class _CleoStream:
    """A text stream that writes through cleo, so in-process tests capture it too."""

    def __init__(self, io: IO, error: bool) -> None:
        self._io = io
        self._error = error

    def write(self, text: str) -> int:
        if self._error:
            self._io.write_error(text, type=Type.RAW)
        else:
            self._io.write(text, type=Type.RAW)
        return len(text)

    def flush(self) -> None:
        output = self._io.error_output if self._error else self._io.output
        output.flush()

    def isatty(self) -> bool:
        output = self._io.error_output if self._error else self._io.output
        return output.is_decorated()


def make_console(io: IO, *, error: bool = False) -> Console:
    """A rich console on stdout (or stderr) that is coloured exactly when cleo's output is."""
    output = io.error_output if error else io.output
    decorated = output.is_decorated()
    stream = cast("TextIO", _CleoStream(io, error))  # rich needs only write, flush, isatty
    return Console(file=stream, force_terminal=decorated, no_color=not decorated,
                   color_system="auto" if decorated else None, highlight=False,
                   quiet=io.output.is_quiet(), width=None if decorated else 100)


class Phases:
    """Names the phase of a long wait: a spinner on a terminal, a line per phase otherwise.

    Used as a context manager; ``update("booting")`` changes the phase. A phase is
    plain text, printed as it is (it names a provider's ids and types: no markup, and
    control characters shown as escapes).
    """

    def __init__(self, io: IO, first: str) -> None:
        from soong_core.text import printable

        self.console = make_console(io, error=True)
        self._status: Any = None
        self._phase = printable(first)

    def __enter__(self) -> Phases:
        from rich.text import Text

        if self.console.is_terminal:
            self._status = self.console.status(Text(self._phase))
            self._status.__enter__()
        else:
            self.console.print(f"{self._phase}...", markup=False)
        return self

    def update(self, phase: str) -> None:
        from rich.text import Text

        from soong_core.text import printable

        phase = printable(phase)
        if phase == self._phase:
            return
        self._phase = phase
        if self._status is not None:
            self._status.update(Text(phase))
        else:
            self.console.print(f"{phase}...", markup=False)

    def follow(self, instance: Any) -> None:
        """Name an instance's state as the phase while it is not yet active."""
        if instance.state.value != "active":
            self.update(f"{instance.state.value} {instance.id}")

    def __exit__(self, *exc: object) -> None:
        if self._status is not None:
            self._status.__exit__(None, None, None)

