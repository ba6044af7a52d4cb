"""The base of every soong command: access to the application's plugins and config."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Callable, ClassVar, Mapping, TextIO

from cleo.commands.command import Command

if TYPE_CHECKING:
    from cleo.io.io import IO

    from soong_core.api import Soong
    from soong_core.cli.application import SoongApplication
    from soong_core.config import Config, ConfigSchema
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
        """Raise the provider's "no credential" error when nothing can hold one: no
        config file, no profile, no per-run value, no config variable in the
        environment (see :attr:`needs_credential`). Otherwise return, and the full
        load decides: only it can read a file, and it reports every other problem."""
        import os

        from soong_core.config import CORE, CORE_SCHEMA, ConfigSchema, default_config_path
        from soong_core.errors import ConfigError

        app = self.app
        if app.profile is not None or app.config_path:
            return
        if any(value is not None for value in self.run_overrides().values()):
            return
        try:
            os.stat(default_config_path())
        except FileNotFoundError:
            pass
        except OSError:
            return  # unreadable: the full load says why
        else:
            return  # a file may hold the key
        try:
            sections: dict[str, Mapping[str, Mapping[str, Any]]] = dict(CORE_SCHEMA)
            owners = dict.fromkeys(sections, CORE)
            for section, (plugin, rules) in self.plugins.config_sections().items():
                if section in sections:
                    return  # a plugin takes a core section: the full load names it
                sections[section], owners[section] = rules, plugin
            message = missing_credential(ConfigSchema(sections, owners), os.environ)
        except Exception:  # a plugin's broken schema: the full load names it
            return
        if message is not None:
            raise ConfigError(message)

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
        """The config values this run's global options stand for, ``{"section.key":
        value}``: ``--api-timeout`` as typed (the config coerces and checks it) at
        ``defaults.api_timeout_seconds``, ``None`` when not given. They win over file
        and environment for this run and are never saved."""
        return {"defaults.api_timeout_seconds": self.app.api_timeout}


def missing_credential(schema: ConfigSchema, environ: Mapping[str, str]) -> str | None:
    """The message of the default provider's missing credential, when neither the
    defaults nor ``environ`` can give one (the caller knows no file or profile can);
    ``None`` when they may, or when the provider declares no credential.

    A provider declares its credential in its plugin's schema: the key whose rules say
    ``meta: {credential: {provider: NAME, missing: MESSAGE}}``. Any variable the config
    reads (``SOONG_...`` or an alias) counts as "may": it could hold the key, name
    another provider, or be invalid, which the full load reports first.
    """
    if any(name in environ for name in schema.env_names()):
        return None
    provider = schema.default("defaults.provider")
    for key in schema.keys():
        meta = schema.rules(key).get("meta")
        credential = meta.get("credential") if isinstance(meta, Mapping) else None
        if (isinstance(credential, Mapping) and credential.get("provider") == provider
                and isinstance(credential.get("missing"), str)
                and not schema.default(key)):
            return str(credential["missing"])
    return None


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

