"""The base of every soong command: access to the application's plugins and config."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Mapping, cast

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
        from cleo.formatters.formatter import Formatter

        if self._soong is None:
            return
        for event in self._soong.take_reconciled():
            self.io.write_error_line(Formatter.escape(reconciled_note(event)))

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
            raise UsageError(f"{question.rstrip('?')}: needs a confirmation",
                             hints=["pass -y to confirm without a prompt"])
        if not self.confirm(question, default=False):
            raise SoongError("cancelled: nothing was done", exit_code=1)

    def ask_secret(self, question: str) -> str:
        """Ask for a secret: hidden on a terminal; from the input stream otherwise (piped
        input, tests). Never echoed either way."""
        stream = self.io.input.stream
        if stream is not None and stream.isatty():
            return (self.secret(question) or "").strip()
        self.io.write_error(question)
        line = stream.readline() if stream is not None else ""
        self.io.write_error_line("")
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

