"""How the command line words what goes wrong: errors, hints, suggestions, notes.

:class:`~soong_core.cli.application.SoongApplication` catches every error of a run and
hands it here; its :meth:`~soong_core.cli.application.SoongApplication.localise` (every
backticked ``soong ...`` gets this run's global options) is here too. Imported only when
a command prints or something fails, so ``soong --help`` never compiles it.
"""

from __future__ import annotations

import re
from typing import TYPE_CHECKING

from cleo.exceptions import CleoCommandNotFoundError
from cleo.io.outputs.output import Verbosity

from soong_core.text import cleo_literal

if TYPE_CHECKING:
    from cleo.exceptions import CleoError
    from cleo.io.io import IO

    from soong_core.cli.application import SoongApplication
    from soong_core.errors import SoongError
    from soong_core.models import Event

_SOONG_COMMAND = re.compile(r"`soong(\s[^`]*)?`")


def global_options(app: SoongApplication) -> list[str]:
    """See :meth:`SoongApplication.global_options`."""
    import shlex

    words = []
    if app.config_path:
        words += ["--config", shlex.quote(app.config_path)]
    if app.profile == "sim" and app.sim_flag:
        words.append("--sim")
    elif app.profile:
        words += ["--profile", shlex.quote(app.profile)]
    return words


def localise(app: SoongApplication, text: str) -> str:
    """See :meth:`SoongApplication.localise`."""
    words = global_options(app)
    if not words or "`soong" not in text:
        return text
    prefix = " ".join(words)

    def add(match: re.Match[str]) -> str:
        rest = match.group(1) or ""
        if re.match(r"\s+--(sim|profile|config)\b", rest):
            return match.group(0)
        if app.sim_flag and re.match(r"\s+sim\b", rest):
            return match.group(0)  # `soong sim up` is what makes --sim work
        return f"`soong {prefix}{rest}`"

    return _SOONG_COMMAND.sub(add, text)


def write_error(app: SoongApplication, io: IO, message: str, hints: list[str]) -> None:
    """``error: MESSAGE`` and one indented line per hint on stderr, even under ``-q``."""
    io.write_error_line(f"<error>error:</error> {cleo_literal(localise(app, message))}",
                        verbosity=Verbosity.QUIET)
    for hint in hints:
        io.write_error_line(f"  <comment>{cleo_literal(localise(app, hint))}</comment>",
                            verbosity=Verbosity.QUIET)


def write_traceback(io: IO, error: BaseException) -> None:
    """The traceback of ``error``, only with ``-vvv``."""
    import traceback

    if io.is_debug():
        text = "".join(traceback.format_exception(type(error), error, error.__traceback__))
        io.write_error_line(cleo_literal(text.rstrip(), multiline=True),
                            verbosity=Verbosity.DEBUG)


def render_soong_error(app: SoongApplication, error: SoongError, io: IO) -> None:
    """A :class:`SoongError`: its message and hints; its detail and traceback with ``-vvv``."""
    write_error(app, io, error.message, list(error.hints))
    if error.detail and io.is_debug():
        io.write_error_line(cleo_literal(error.detail, multiline=True),
                            verbosity=Verbosity.DEBUG)
    write_traceback(io, error)


def render_usage_error(app: SoongApplication, error: CleoError, io: IO) -> None:
    """cleo's usage error (an unknown option, a missing argument) as soong's one line,
    with a hint naming the command's help, or the closest command names."""
    lines = [line.strip() for line in str(error).splitlines() if line.strip()]
    message = lines[0].rstrip(".") if lines else type(error).__name__
    hints = [" ".join(lines[1:])] if len(lines) > 1 else []
    running = app._running_command
    if isinstance(error, CleoCommandNotFoundError):
        message, hints = unknown_command(app)
    elif running is not None and running.name:
        hints.append(f"run `soong help {running.name}` for its usage")
    write_error(app, io, message, hints)
    write_traceback(io, error)


def unknown_command(app: SoongApplication) -> tuple[str, list[str]]:
    """A mistyped command name (``strat``): the closest command names, as a hint."""
    import difflib

    loader = app._command_loader
    names = sorted({*(loader.names if loader else []),
                    *(n for n, c in app._commands.items() if not c.hidden)})
    typed_words = app._words
    typed = " ".join(typed_words[:2]) or "?"
    guesses: list[str] = []
    for count in (2, 1):
        candidates = [n for n in names if n.count(" ") == count - 1]
        wanted = " ".join(typed_words[:count])
        if len(typed_words) >= count:
            guesses += [g for g in difflib.get_close_matches(wanted, candidates, n=3, cutoff=0.6)
                        if g not in guesses]
    if len(typed_words) >= 1:
        guesses += [n for n in names if n.startswith(typed_words[0] + " ")
                    and n not in guesses and not guesses]
    hints = []
    if guesses:
        shown = " or ".join(f"`soong {g}`" for g in guesses[:3])
        hints.append(f"did you mean {shown}?")
    hints.append("run `soong list` to see every command")
    return f"unknown command {typed!r}", hints


def render_unexpected(app: SoongApplication, error: BaseException, io: IO) -> None:
    """An error nobody anticipated: one line saying it is a bug, the traceback with ``-vvv``."""
    message = " ".join(f"{type(error).__name__}: {error}".split())
    write_error(app, io, f"unexpected {message}",
                ["this is a bug in soong or a plugin; rerun with -vvv for the traceback and "
                 "report it"])
    write_traceback(io, error)


def render_os_error(app: SoongApplication, error: OSError, io: IO) -> None:
    """An ``OSError``: the output could not be written (``> /dev/full``), or unexpected."""
    if not raised_writing_output(error):
        render_unexpected(app, error, io)
        return
    write_error(app, io, f"cannot write the output: {error.strerror or error}",
                ["check where standard output goes (a full disk, a closed file)"])


def raised_writing_output(error: OSError) -> bool:
    """Whether ``error`` came from writing the command's output (``> /dev/full``)."""
    traceback = error.__traceback__
    while traceback is not None:
        if traceback.tb_frame.f_code.co_filename.endswith(
                ("stream_output.py", "buffered_output.py")):
            return True
        traceback = traceback.tb_next
    return False


def reconciled_note(event: Event) -> str:
    """The note for one event reconciliation recorded."""
    from soong_core.costs import format_money_range
    from soong_core.models import EventKind
    from soong_core.reconcile import cost_min

    if event.kind is EventKind.LAUNCH:
        return (f"note: adopted instance {event.instance_id}: its launch was not recorded "
                "when it happened; recorded in history now")
    if event.kind is EventKind.LAUNCH_FAILED:
        return (f"note: launch {event.instance_id} left no instance (none carries its launch "
                "id): recorded as failed")
    how = " (inferred)" if event.inferred else ""
    cost = format_money_range(cost_min(event.detail), event.cost)
    return (f"note: instance {event.instance_id} ended: {event.reason}{how}, cost {cost}; "
            "recorded in history")
