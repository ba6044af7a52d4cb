"""The ``soong`` command line: a table of lazy commands, global options, error rendering.

Start-up cost matters (``soong --help`` is typed often): this module imports cleo and
nothing heavy; each command's module is imported only when that command is listed or
run, and heavy libraries only inside ``handle()``.
"""

from __future__ import annotations

import logging
import sys
from typing import TYPE_CHECKING, Callable

from cleo.application import Application
from cleo.exceptions import CleoCommandNotFoundError, CleoError, CleoLogicError
from cleo.formatters.formatter import Formatter
from cleo.io.inputs.option import Option
from cleo.io.outputs.output import Verbosity
from cleo.loaders.command_loader import CommandLoader

from soong_core import __version__
from soong_core.cli import lazy_command
from soong_core.errors import EXIT_RUNTIME, EXIT_USAGE, SoongError, UsageError

if TYPE_CHECKING:
    from cleo.commands.command import Command
    from cleo.io.inputs.definition import Definition
    from cleo.io.io import IO

    from soong_core.plugins import Plugins

EXIT_INTERRUPTED = 130

COMMANDS: dict[str, str] = {
    "configure": "soong_core.cli.commands.configure:ConfigureCommand",
    "start": "soong_core.cli.commands.start:StartCommand",
    "stop": "soong_core.cli.commands.stop:StopCommand",
    "status": "soong_core.cli.commands.status:StatusCommand",
    "plugins": "soong_core.cli.commands.plugins:PluginsCommand",
    "config show": "soong_core.cli.commands.config.show:ConfigShowCommand",
    "config validate": "soong_core.cli.commands.config.validate:ConfigValidateCommand",
    "config path": "soong_core.cli.commands.config.path:ConfigPathCommand",
    "config set": "soong_core.cli.commands.config.set:ConfigSetCommand",
}
"""Core command name -> ``module:Class``; the module is imported only when needed."""


class SoongCommandLoader(CommandLoader):
    """Core commands from :data:`COMMANDS`; plugin commands asked for only when needed.

    Running a core command never loads plugins for the command table; listing commands
    or naming an unknown one does.
    """

    def __init__(self, app: SoongApplication) -> None:
        self._app = app
        self._core = {name: lazy_command(target) for name, target in COMMANDS.items()}

    def _plugin_factories(self) -> dict[str, Callable[[], Command]]:
        registry = self._app.plugins.commands()
        factories = {}
        for entry in registry:
            if entry.name in self._core:
                logging.getLogger("soong.plugins").warning(
                    "plugin %r adds command %r, which is a core command: ignored",
                    entry.plugin, entry.name)
                continue
            factories[entry.name] = entry.factory
        return factories

    @property
    def names(self) -> list[str]:
        return [*self._core, *self._plugin_factories()]

    def has(self, name: str) -> bool:
        return name in self._core or name in self._plugin_factories()

    def get(self, name: str) -> Command:
        factory = self._core.get(name) or self._plugin_factories().get(name)
        if factory is None:
            raise CleoCommandNotFoundError(name)
        return factory()


class IOLogHandler(logging.Handler):
    """Sends soong's log records to the command's stderr: warnings always, the rest
    by verbosity (``-v`` info, ``-vv`` debug)."""

    def __init__(self, io: IO) -> None:
        super().__init__()
        self.io = io

    def emit(self, record: logging.LogRecord) -> None:
        try:
            text = Formatter.escape(record.getMessage())
        except Exception:  # a broken log call must not break the command
            text = Formatter.escape(str(record.msg))
        if record.levelno >= logging.WARNING:
            self.io.write_error_line(f"<comment>warning:</comment> {text}")
        else:
            self.io.write_error_line(f"<fg=default;options=dark>{record.levelname.lower()}: {text}</>")


def _log_level(io: IO) -> int:
    if io.is_very_verbose():
        return logging.DEBUG
    if io.is_verbose():
        return logging.INFO
    if io.output.is_quiet():
        return logging.ERROR
    return logging.WARNING


class SoongApplication(Application):
    """The ``soong`` application. Pass ``plugins`` to run against a given plugin manager
    (tests, embedding); by default one is built on first use, honouring ``--no-plugins``."""

    def __init__(self, plugins: Plugins | None = None) -> None:
        super().__init__("soong", __version__)
        self._plugins = plugins
        self.no_plugins = False
        self.config_path: str | None = None
        self.profile: str | None = None
        self.api_timeout: str | None = None
        """``--api-timeout`` as typed; commands pass it on as ``defaults.api_timeout_seconds``."""
        self.set_command_loader(SoongCommandLoader(self))

    @property
    def plugins(self) -> Plugins:
        if self._plugins is None:
            from soong_core.plugins import make_plugins

            self._plugins = make_plugins(entry_points=not self.no_plugins)
        return self._plugins

    @property
    def long_version(self) -> str:
        return f"soong {self.version}"

    @property
    def _default_definition(self) -> Definition:
        definition = super()._default_definition
        definition.add_option(Option("--config", flag=False, requires_value=True,
                                     description="Read the configuration from this file."))
        definition.add_option(Option("--profile", flag=False, requires_value=True,
                                     description="Layer the named config profile "
                                     "($XDG_CONFIG_HOME/soong/profiles/NAME.yaml)."))
        definition.add_option(Option("--sim", flag=True,
                                     description="Use the local simulated cloud "
                                     "(the profile `soong sim up` writes): no account, no money."))
        definition.add_option(Option("--api-timeout", flag=False, requires_value=True,
                                     description="Give up on the provider's API after this "
                                     "many seconds in all [default: 60]."))
        definition.add_option(Option("--no-plugins", flag=True,
                                     description="Load no third-party plugins (built-ins only)."))
        return definition

    def _run(self, io: IO) -> int:
        self.no_plugins = io.input.has_parameter_option("--no-plugins", True)
        self.config_path = io.input.parameter_option("--config", None, True) or None
        self.profile = io.input.parameter_option("--profile", None, True) or None
        self.api_timeout = io.input.parameter_option("--api-timeout", None, True) or None
        handler = IOLogHandler(io)
        logger = logging.getLogger("soong")
        logger.addHandler(handler)
        previous = logger.level, logger.propagate
        logger.setLevel(_log_level(io))
        logger.propagate = False
        try:
            if io.input.has_parameter_option("--sim", True):
                if self.profile not in (None, "sim"):
                    raise UsageError(f"--sim and --profile {self.profile} contradict each other",
                                     hints=["--sim is short for --profile sim: give one"])
                self.profile = "sim"
            self._route_to_list(io)
            return super()._run(io)
        except SoongError as error:
            self._render_soong_error(error, io)
            return error.exit_code
        except CleoLogicError as error:
            self._render_unexpected(error, io)
            return EXIT_RUNTIME
        except CleoError as error:
            self._render_usage_error(error, io)
            return EXIT_USAGE
        except BrokenPipeError:
            raise  # cleo's run() quietly handles a reader that went away (`soong ... | head`)
        except KeyboardInterrupt:
            io.write_error_line("<error>interrupted</error>", verbosity=Verbosity.QUIET)
            return EXIT_INTERRUPTED
        except Exception as error:
            self._render_unexpected(error, io)
            return EXIT_RUNTIME
        finally:
            logger.removeHandler(handler)
            logger.setLevel(previous[0])
            logger.propagate = previous[1]

    def _route_to_list(self, io: IO) -> None:
        """``soong --help`` lists every command and ``soong config`` (a namespace, not a
        command) lists its group; cleo would describe ``list`` itself or fail."""
        from cleo.io.inputs.argument import Argument
        from cleo.io.inputs.argv_input import ArgvInput
        from cleo.io.inputs.definition import Definition

        if not isinstance(io.input, ArgvInput):
            return
        # What cleo's _run does to find the command: bind the global definition with a
        # list-valued "command" argument, so option values are not taken for names.
        definition = Definition([Argument("command", required=False, is_list=True)])
        definition.set_options(self.definition.options)
        try:
            io.input.bind(definition)
        except CleoError:
            return
        words = io.input.argument("command") or []
        if not words and io.input.has_parameter_option(["--help", "-h"], True):
            namespace = []
        elif len(words) == 1 and self._is_namespace_only(words[0]):
            namespace = words  # `soong config` -> `soong list config`
        else:
            return
        tokens = [t for t in io.input._tokens if t not in ("--help", "-h", *namespace)]
        stream, interactive = io.input.stream, io.input.is_interactive()
        io.set_input(ArgvInput([io.input.script_name or "soong", "list", *tokens, *namespace]))
        io.input.set_stream(stream)
        io.input.interactive(interactive)

    def _is_namespace_only(self, name: str) -> bool:
        if name in COMMANDS:
            return False
        if any(command.startswith(name + " ") for command in COMMANDS):
            return True
        loader_names = self._command_loader.names if self._command_loader else []
        return name not in loader_names and any(n.startswith(name + " ") for n in loader_names)

    # -- error rendering ------------------------------------------------------------

    def _write_error(self, io: IO, message: str, hints: list[str]) -> None:
        io.write_error_line(f"<error>error:</error> {Formatter.escape(message)}",
                            verbosity=Verbosity.QUIET)
        for hint in hints:
            io.write_error_line(f"  <comment>{Formatter.escape(hint)}</comment>",
                                verbosity=Verbosity.QUIET)

    def _write_traceback(self, io: IO, error: BaseException) -> None:
        import traceback

        if io.is_debug():
            text = "".join(traceback.format_exception(type(error), error, error.__traceback__))
            io.write_error_line(Formatter.escape(text.rstrip()), verbosity=Verbosity.DEBUG)

    def _render_soong_error(self, error: SoongError, io: IO) -> None:
        self._write_error(io, error.message, list(error.hints))
        if error.detail and io.is_debug():
            io.write_error_line(Formatter.escape(error.detail), verbosity=Verbosity.DEBUG)
        self._write_traceback(io, error)

    def _render_usage_error(self, error: CleoError, io: IO) -> None:
        lines = [line.strip() for line in str(error).splitlines() if line.strip()]
        message = lines[0].rstrip(".") if lines else type(error).__name__
        hints = [" ".join(lines[1:])] if len(lines) > 1 else []
        if isinstance(error, CleoCommandNotFoundError):
            hints.append("run `soong list` to see every command")
        elif self._running_command is not None and self._running_command.name:
            hints.append(f"run `soong help {self._running_command.name}` for its usage")
        self._write_error(io, message, hints)
        self._write_traceback(io, error)

    def _render_unexpected(self, error: BaseException, io: IO) -> None:
        message = " ".join(f"{type(error).__name__}: {error}".split())
        self._write_error(io, f"unexpected {message}",
                          ["this is a bug in soong or a plugin; rerun with -vvv for the "
                           "traceback and report it"])
        self._write_traceback(io, error)


def main() -> int:
    return SoongApplication().run()


if __name__ == "__main__":  # `python -m soong_core.cli.application`: use the real module's class
    from soong_core.cli.application import main as _main

    sys.exit(_main())
