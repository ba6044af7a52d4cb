"""The base of every soong command: access to the application's plugins and config.

Every command module imports this one, so it holds only what a command's definition
needs; what a method does beyond a line or two lives in the module it names, imported
when the method runs (:mod:`soong_core.cli.prompt`, :mod:`soong_core.cli.credentials`,
:mod:`soong_core.cli.render`), so listing the commands compiles none of it.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, ClassVar

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

    needs_credential: ClassVar[bool] = False
    """True for a command that can do nothing without the provider's credential (it
    lists or changes instances). When no credential can be configured at all, its
    :attr:`soong` fails at once with the provider's own error, before the configuration
    is validated and the provider built (yaml, cerberus, requests): see
    :func:`missing_credential`."""

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
        if self._soong is None:
            return
        events = self._soong.take_reconciled()
        if events:
            from soong_core.cli.render import reconciled_note
            from soong_core.text import cleo_literal

            for event in events:
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
        return application

    @property
    def plugins(self) -> Plugins:
        return self.app.plugins

    _config: Config | None = None

    @property
    def config(self) -> Config:
        """The validated configuration, loaded on first use (a command that never reads
        it never imports yaml or cerberus): the global ``--config`` file or the default,
        the environment, then :meth:`run_overrides`."""
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
            if self.needs_credential and self._config is None:
                self._fail_without_credential()
            from soong_core.api import Soong

            self._soong = Soong(self.config, plugins=self.plugins)
        return self._soong

    def _fail_without_credential(self) -> None:
        """Raise the provider's "no credential" error when nothing can hold one (see
        :func:`soong_core.cli.credentials.fail_without_credential`)."""
        from soong_core.cli.credentials import fail_without_credential

        fail_without_credential(self)

    def confirm_or_exit(self, question: str, *, yes: bool) -> None:
        """Ask ``question`` (default no) unless ``yes``; refuse to guess when nobody can answer."""
        from soong_core.cli.prompt import confirm_or_exit

        confirm_or_exit(self, question, yes=yes)

    def ask_secret(self, question: str) -> str:
        """Ask for a secret; the answer stripped, ``""`` when the user only pressed Enter.

        On a terminal the line is read with echo off (:func:`read_hidden_line`), never
        with a visible second try (cleo's ``secret()`` reads visibly after an empty
        hidden answer); otherwise one line of the input stream (piped input, tests).
        End of input (Ctrl-D) cancels: :class:`SoongError` "cancelled: nothing was
        saved", exit 1, so the caller needs no case of its own for it.
        """
        from soong_core.cli.prompt import ask_secret

        return ask_secret(self, question)

    def run_overrides(self) -> dict[str, Any]:
        """The config values this run's global options stand for, ``{"section.key":
        value}``: ``--api-timeout`` as typed (the config coerces and checks it) at
        ``defaults.api_timeout_seconds``, ``None`` when not given. They win over file
        and environment for this run and are never saved."""
        return {"defaults.api_timeout_seconds": self.app.api_timeout}

