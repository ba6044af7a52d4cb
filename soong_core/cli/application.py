"""The ``soong`` command line: a table of lazy commands, global options, error handling.

Start-up cost matters (``soong --help`` is typed often, and an editable install run
under ``PYTHONDONTWRITEBYTECODE`` compiles every module it imports on every run): this
module imports cleo and nothing heavy, and holds only what every run executes. Each
command's module is imported only when that command is listed or run, heavy libraries
only inside ``handle()``; how errors and hints are worded is in
:mod:`soong_core.cli.render`, imported when something is printed or fails, and the
rewriting of negative numbers in :mod:`soong_core.cli.words`.
"""

from __future__ import annotations

import logging
import sys
from typing import TYPE_CHECKING, Callable

from cleo.application import Application
from cleo.exceptions import CleoCommandNotFoundError, CleoError, CleoLogicError
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
    "extend": "soong_core.cli.commands.extend:ExtendCommand",
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

    def __init__(self, io: IO, localise: Callable[[str], str] = str) -> None:
        super().__init__()
        self.io = io
        self.localise = localise

    def emit(self, record: logging.LogRecord) -> None:
        from soong_core.text import cleo_literal

        try:
            text = cleo_literal(self.localise(record.getMessage()))
        except Exception:  # a broken log call must not break the command
            text = cleo_literal(str(record.msg))
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
        self.sim_flag = False
        self._words: list[str] = []
        """The command words typed (what an unknown command is compared with)."""
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
                                     description="Give up when the provider's API has not "
                                     "answered for this many seconds [default: 60]."))
        definition.add_option(Option("--no-plugins", flag=True,
                                     description="Load no third-party plugins (built-ins only)."))
        return definition

    def _run(self, io: IO) -> int:
        self.no_plugins = io.input.has_parameter_option("--no-plugins", True)
        self._join_negative_numbers(io)
        self.config_path = _option_value(io, "--config")
        self.profile = _option_value(io, "--profile")
        self.api_timeout = _option_value(io, "--api-timeout")
        self.sim_flag = io.input.has_parameter_option("--sim", True)
        handler = IOLogHandler(io, self.localise)
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
            _check_api_timeout(self.api_timeout)
            self._route_to_list(io)
            return super()._run(io)
        except SoongError as error:
            from soong_core.cli.render import render_soong_error

            render_soong_error(self, error, io)
            return error.exit_code
        except CleoLogicError as error:
            from soong_core.cli.render import render_unexpected

            render_unexpected(self, error, io)
            return EXIT_RUNTIME
        except CleoError as error:
            from soong_core.cli.render import render_usage_error

            render_usage_error(self, error, io)
            return EXIT_USAGE
        except BrokenPipeError:
            raise  # cleo's run() quietly handles a reader that went away (`soong ... | head`)
        except OSError as error:
            from soong_core.cli.render import render_os_error

            render_os_error(self, error, io)
            return EXIT_RUNTIME
        except KeyboardInterrupt:
            io.write_error_line("<error>interrupted</error>", verbosity=Verbosity.QUIET)
            return EXIT_INTERRUPTED
        except Exception as error:
            from soong_core.cli.render import render_unexpected

            render_unexpected(self, error, io)
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
        self._words = [str(word) for word in words]
        if not words and io.input.has_parameter_option(["--help", "-h"], True):
            namespace: list[str] = []
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

    def global_options(self) -> list[str]:
        """The global options of this run that choose the config and the cloud, as they
        would be typed: what a suggested command needs to act where this one did."""
        from soong_core.cli.render import global_options

        return global_options(self)

    def localise(self, text: str) -> str:
        """Add :meth:`global_options` to every backticked ``soong ...`` in ``text`` that
        names none of its own, so a hint typed as shown acts on the same config and cloud
        (under ``--sim``, `` `soong status` `` becomes `` `soong --sim status` ``)."""
        if "`soong" not in text:
            return text
        from soong_core.cli.render import localise

        return localise(self, text)

    def _join_negative_numbers(self, io: IO) -> None:
        """``--hours -1`` reaches the command as ``--hours=-1``: cleo would read ``-1``
        as an option and say ``--hours`` has no value, hiding the real problem (the
        value is out of range). Flags (options without a value) are left alone; a
        negative number among the trailing arguments (``config set KEY -1``) gets a
        ``--`` before it, after which cleo reads no options."""
        from cleo.io.inputs.argv_input import ArgvInput

        if not isinstance(io.input, ArgvInput):
            return
        tokens = list(io.input._tokens)
        if not any(_may_be_negative_number(token) for token in tokens):
            return
        from soong_core.cli.words import join_negative_numbers

        joined = join_negative_numbers(self, tokens)
        if joined != tokens:
            io.input._tokens = joined


def _option_value(io: IO, name: str) -> str | None:
    """The value of the global option ``name`` (``--name VALUE`` or ``--name=VALUE``),
    ``None`` when absent or empty. cleo's ``parameter_option`` returns only the first
    character of an ``=`` value."""
    tokens = list(getattr(io.input, "_tokens", None) or [])
    if not tokens:
        value = io.input.parameter_option(name, None, True)
        return str(value) if value else None
    for index, token in enumerate(tokens):
        if token == "--":
            break
        if token == name:
            return tokens[index + 1] if index + 1 < len(tokens) and tokens[index + 1] else None
        if token.startswith(name + "="):
            return token[len(name) + 1:] or None
    return None


def _may_be_negative_number(token: str) -> bool:
    """Whether ``token`` may be a negative number (``-1``, ``-.5``): true of every one
    :data:`soong_core.cli.words.NEGATIVE_NUMBER` matches, so a run whose words are all
    false here needs none of that module."""
    return token[:1] == "-" and (token[1:2].isdigit() or token[1:2] == ".")


def _check_api_timeout(text: str | None) -> None:
    if text is None:
        return
    from soong_core.numbers import parse_number

    try:
        parse_number(text, "--api-timeout", unit="seconds", minimum=1)
    except ValueError as exc:
        raise UsageError(str(exc), hints=["the default is 60 (defaults.api_timeout_seconds)"]
                         ) from None


def main() -> int:
    return SoongApplication().run()


if __name__ == "__main__":  # `python -m soong_core.cli.application`: use the real module's class
    from soong_core.cli.application import main as _main

    sys.exit(_main())
