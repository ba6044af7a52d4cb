"""The base of every soong command: access to the application's plugins and config."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Callable, Mapping, TextIO, cast

from cleo.commands.command import Command

if TYPE_CHECKING:
    from cleo.io.io import IO

    from soong_core.api import Soong
    from soong_core.cli.application import SoongApplication
    from soong_core.config import Config
    from soong_core.plugins import Plugins


class SoongCommand(Command):
    """Subclass this for soong commands (plugins too): Ctrl-C reaches the application,
    which prints "interrupted" and exits 130, instead of cleo's silent exit 1."""

    def execute(self, io: IO) -> int:
        self._io = io
        try:
            return self.handle()
        finally:
            if self._soong is not None:
                self.note_reconciled()
                self._soong.close()  # the history database, if the command opened it

    def note_reconciled(self) -> None:
        """One stderr line per event the core's reconciliation recorded in history
        (an adopted launch, an instance that ended unseen), so none goes unnoticed."""
        from soong_core.text import cleo_literal

        if self._soong is None:
            return
        for event in self._soong.take_reconciled():
            self.io.write_error_line(cleo_literal(reconciled_note(event)))

    def line(self, text: str, style: str | None = None, verbosity: Any = None) -> None:
        """Write a report line; every backticked ``soong ...`` in it gets this run's
        global options (``--sim``, ``--profile``, ``--config``), so it acts where this
        command did when typed as shown."""
        from cleo.io.outputs.output import Verbosity

        super().line(self._localise(text), style,
                     Verbosity.NORMAL if verbosity is None else verbosity)

    def line_error(self, text: str, style: str | None = None, verbosity: Any = None) -> None:
        from cleo.io.outputs.output import Verbosity

        super().line_error(self._localise(text), style,
                           Verbosity.NORMAL if verbosity is None else verbosity)

    def command_line(self, words: str) -> str:
        """``soong WORDS`` as the user should type it to act where this command did:
        with this run's global options (``soong --sim status`` under ``--sim``)."""
        from soong_core.cli.application import SoongApplication

        application = self.application
        options = (application.global_options()
                   if isinstance(application, SoongApplication) else [])
        return " ".join(["soong", *options, words])

    def _localise(self, text: str) -> str:
        from soong_core.cli.application import SoongApplication

        application = self.application
        return application.localise(text) if isinstance(application, SoongApplication) else text

    @property
    def app(self) -> SoongApplication:
        from soong_core.cli.application import SoongApplication

        application = self.application
        if not isinstance(application, SoongApplication):
            raise RuntimeError(f"command {self.name!r} runs only inside the soong application")
        return cast("SoongApplication", application)

    @property
    def plugins(self) -> Plugins:
        return self.app.plugins

    _config: Config | None = None

    @property
    def config(self) -> Config:
        """The validated configuration, loaded on first use (a command that never reads
        it never imports yaml or cerberus): the global ``--config`` file or the default,
        the environment, then :meth:`config_overrides`."""
        if self._config is None:
            from soong_core.config import load_config

            self._config = load_config(self.app.config_path, plugins=self.plugins,
                                       overrides=self.run_overrides(),
                                       partial_plugins=self.app.no_plugins,
                                       profile=self.app.profile)
        return self._config

    _soong: Soong | None = None

    @property
    def soong(self) -> Soong:
        """The embedding API over this run's config and plugins (made on first use)."""
        if self._soong is None:
            from soong_core.api import Soong

            self._soong = Soong(self.config, plugins=self.plugins)
        return self._soong

    def confirm_or_exit(self, question: str, *, yes: bool) -> None:
        """Ask ``question`` (default no) unless ``yes``; refuse to guess when nobody can answer."""
        from soong_core.errors import SoongError, UsageError

        if yes:
            return
        if not self.io.is_interactive():
            raise UsageError(f"{asked_action(question)}: needs a confirmation",
                             hints=["pass -y to confirm without a prompt"])
        if not self.confirm(question, default=False):
            raise SoongError("cancelled: nothing was done", exit_code=1)

    def ask_secret(self, question: str) -> str:
        """Ask for a secret; the answer stripped, ``""`` when the user only pressed Enter.

        On a terminal the line is read with echo off (:func:`read_hidden_line`), never
        with a visible second try (cleo's ``secret()`` reads visibly after an empty
        hidden answer); otherwise one line of the input stream (piped input, tests).
        End of input (Ctrl-D) cancels: :class:`SoongError` "cancelled: nothing was
        saved", exit 1, so the caller needs no case of its own for it.
        """
        from soong_core.errors import SoongError

        stream = self.io.input.stream
        try:
            if stream is None:
                line = None
            elif stream.isatty():
                line = read_hidden_line(stream, lambda: self.io.write_error(question))
            else:
                self.io.write_error(question)
                line = stream.readline() or None
        finally:
            self.io.write_error_line("")  # the Enter was not echoed: end the prompt's line
        if line is None:
            raise SoongError("cancelled: nothing was saved", exit_code=1)
        return line.strip()

    def run_overrides(self) -> dict[str, Any]:
        """The global options that stand for config keys, then :meth:`config_overrides`."""
        overrides: dict[str, Any] = {"defaults.api_timeout_seconds": self.app.api_timeout}
        overrides.update(self.config_overrides())
        return overrides

    def config_overrides(self) -> Mapping[str, Any]:
        """Per-run values from this command's flags, ``{"section.key": value}``.

        Override in commands whose flags stand for config keys (``start --lease 6``
        gives ``{"defaults.lease_hours": 6}``); ``None`` means the flag was not given.
        They win over file and environment for this run and are never saved.
        """
        return {}


def read_hidden_line(stream: TextIO, prompt: Callable[[], None]) -> str | None:
    """One line typed on the terminal ``stream``, with echo off; ``None`` at end of input.

    Echo goes off (and what was typed ahead is discarded, as ``getpass`` does) before
    ``prompt()`` writes the question, so nothing typed after it appears; the terminal's
    settings come back in every case, Ctrl-C (``KeyboardInterrupt``) included. A
    terminal whose echo cannot be turned off is an error, never a visible read.
    """
    from soong_core.errors import SoongError

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


def reconciled_note(event: Any) -> str:
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

