"""Questions a command asks: a confirmation, a secret typed with echo off.

What :meth:`SoongCommand.confirm_or_exit <soong_core.cli.command.SoongCommand.confirm_or_exit>`
and :meth:`~soong_core.cli.command.SoongCommand.ask_secret` do; imported only when a
command asks, so listing commands never compiles it.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Callable, TextIO

from soong_core.errors import SoongError, UsageError

if TYPE_CHECKING:
    from soong_core.cli.command import SoongCommand


def confirm_or_exit(command: SoongCommand, question: str, *, yes: bool) -> None:
    """See :meth:`SoongCommand.confirm_or_exit`."""
    if yes:
        return
    if not command.io.is_interactive():
        raise UsageError(f"{asked_action(question)}: needs a confirmation",
                         hints=["pass -y to confirm without a prompt"])
    if not command.confirm(question, default=False):
        raise SoongError("cancelled: nothing was done", exit_code=1)


def ask_secret(command: SoongCommand, question: str) -> str:
    """See :meth:`SoongCommand.ask_secret`."""
    io = command.io
    stream = io.input.stream
    try:
        if stream is None:
            line = None
        elif stream.isatty():
            line = read_hidden_line(stream, lambda: io.write_error(question))
        else:
            io.write_error(question)
            line = stream.readline() or None
    finally:
        io.write_error_line("")  # the Enter was not echoed: end the prompt's line
    if line is None:
        raise SoongError("cancelled: nothing was saved", exit_code=1)
    return line.strip()


def read_hidden_line(stream: TextIO, prompt: Callable[[], None]) -> str | None:
    """One line typed on the terminal ``stream``, with echo off; ``None`` at end of input.

    Echo goes off (and what was typed ahead is discarded, as ``getpass`` does) before
    ``prompt()`` writes the question, so nothing typed after it appears; the terminal's
    settings come back in every case, Ctrl-C (``KeyboardInterrupt``) included. A
    terminal whose echo cannot be turned off is an error, never a visible read.
    """

    def unhideable(why: object) -> SoongError:
        return SoongError(f"cannot hide what is typed on this terminal ({why})",
                          hints=["pipe the value on standard input instead"])

    try:
        import termios
    except ImportError:  # not a POSIX system
        raise unhideable("no termios") from None
    try:
        fd = stream.fileno()
        saved = termios.tcgetattr(fd)
    except (OSError, ValueError, termios.error) as exc:
        raise unhideable(exc) from None
    hidden = list(saved)
    hidden[3] = saved[3] & ~termios.ECHO  # lflag
    try:
        termios.tcsetattr(fd, termios.TCSAFLUSH, hidden)
        prompt()
        line = stream.readline()
    finally:
        termios.tcsetattr(fd, termios.TCSADRAIN, saved)
    return line or None


def asked_action(question: str) -> str:
    """What a confirmation question asks to do, for the line saying it cannot be asked:
    its first sentence without the closing mark. ``"Terminate x? Their local disks are
    deleted."`` gives ``"Terminate x"``, ``"Launch it?"`` gives ``"Launch it"``."""
    import re

    first = re.split(r"(?<=[?.!])\s+", question.strip(), maxsplit=1)[0]
    return first.rstrip("?.!: ") or question.strip()
