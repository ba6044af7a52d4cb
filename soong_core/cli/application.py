"""The ``soong`` command line: a table of lazy commands, global options, error rendering.

Start-up cost matters (``soong --help`` is typed often): this module imports cleo and
nothing heavy; each command's module is imported only when that command is listed or
run, and heavy libraries only inside ``handle()``.
"""

from __future__ import annotations

import logging
import re
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
        self.sim_flag = False
        self._words: list[str] = []
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
        except OSError as error:
            if not _raised_writing_output(error):
                self._render_unexpected(error, io)
                return EXIT_RUNTIME
            self._write_error(io, f"cannot write the output: {error.strerror or error}",
                              ["check where standard output goes (a full disk, a closed "
                               "file)"])
            return EXIT_RUNTIME
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
        import shlex

        words = []
        if self.config_path:
            words += ["--config", shlex.quote(self.config_path)]
        if self.profile == "sim" and self.sim_flag:
            words.append("--sim")
        elif self.profile:
            words += ["--profile", shlex.quote(self.profile)]
        return words

    def localise(self, text: str) -> str:
        """Add :meth:`global_options` to every backticked ``soong ...`` in ``text`` that
        names none of its own, so a hint typed as shown acts on the same config and cloud
        (under ``--sim``, `` `soong status` `` becomes `` `soong --sim status` ``)."""
        words = self.global_options()
        if not words or "`soong" not in text:
            return text
        prefix = " ".join(words)

        def add(match: re.Match[str]) -> str:
            rest = match.group(1) or ""
            if re.match(r"\s+--(sim|profile|config)\b", rest):
                return match.group(0)
            if self.sim_flag and re.match(r"\s+sim\b", rest):
                return match.group(0)  # `soong sim up` is what makes --sim work
            return f"`soong {prefix}{rest}`"

        return _SOONG_COMMAND.sub(add, text)

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
        if not any(_NEGATIVE_NUMBER.match(t) for t in tokens):
            return
        flags = self._flag_names(tokens)
        joined: list[str] = []
        for index, token in enumerate(tokens):
            previous = joined[-1] if joined else ""
            if not _NEGATIVE_NUMBER.match(token) or "--" in joined:
                joined.append(token)
            elif previous.startswith("--") and "=" not in previous and previous[2:] not in flags:
                joined[-1] = f"{previous}={token}"
            elif not any(t.startswith("-") and not _NEGATIVE_NUMBER.match(t)
                         for t in tokens[index:]):
                joined += ["--", token]  # an argument (`config set KEY -1`): options end here
            else:
                joined.append(token)
        if joined != tokens:
            io.input._tokens = joined

    def _flag_names(self, tokens: list[str]) -> set[str]:
        """Names of the options that take no value, global and of the command named in
        ``tokens`` (when it can be found)."""
        flags = {o.name for o in self.definition.options if o.is_flag()}
        words = [t for t in tokens if not t.startswith("-")]
        for count in (2, 1):
            name = " ".join(words[:count])
            if len(words) >= count and self._command_loader and self._command_loader.has(name):
                try:
                    command = self._command_loader.get(name)
                except Exception:  # a broken plugin command: cleo reports it later
                    break
                flags |= {o.name for o in command.definition.options if o.is_flag()}
                break
        return flags

    # -- error rendering ------------------------------------------------------------

    def _write_error(self, io: IO, message: str, hints: list[str]) -> None:
        from soong_core.text import cleo_literal

        io.write_error_line(f"<error>error:</error> {cleo_literal(self.localise(message))}",
                            verbosity=Verbosity.QUIET)
        for hint in hints:
            io.write_error_line(f"  <comment>{cleo_literal(self.localise(hint))}</comment>",
                                verbosity=Verbosity.QUIET)

    def _write_traceback(self, io: IO, error: BaseException) -> None:
        import traceback

        from soong_core.text import cleo_literal

        if io.is_debug():
            text = "".join(traceback.format_exception(type(error), error, error.__traceback__))
            io.write_error_line(cleo_literal(text.rstrip(), multiline=True),
                                verbosity=Verbosity.DEBUG)

    def _render_soong_error(self, error: SoongError, io: IO) -> None:
        from soong_core.text import cleo_literal

        self._write_error(io, error.message, list(error.hints))
        if error.detail and io.is_debug():
            io.write_error_line(cleo_literal(error.detail, multiline=True),
                                verbosity=Verbosity.DEBUG)
        self._write_traceback(io, error)

    def _render_usage_error(self, error: CleoError, io: IO) -> None:
        lines = [line.strip() for line in str(error).splitlines() if line.strip()]
        message = lines[0].rstrip(".") if lines else type(error).__name__
        hints = [" ".join(lines[1:])] if len(lines) > 1 else []
        if isinstance(error, CleoCommandNotFoundError):
            message, hints = self._unknown_command()
        elif self._running_command is not None and self._running_command.name:
            hints.append(f"run `soong help {self._running_command.name}` for its usage")
        self._write_error(io, message, hints)
        self._write_traceback(io, error)

    def _unknown_command(self) -> tuple[str, list[str]]:
        """A mistyped command name (``strat``): the closest command names, as a hint."""
        import difflib

        names = sorted({*(self._command_loader.names if self._command_loader else []),
                        *(n for n, c in self._commands.items() if not c.hidden)})
        typed = " ".join(self._words[:2]) or "?"
        guesses: list[str] = []
        for count in (2, 1):
            candidates = [n for n in names if n.count(" ") == count - 1]
            wanted = " ".join(self._words[:count])
            if len(self._words) >= count:
                guesses += [g for g in difflib.get_close_matches(wanted, candidates, n=3,
                                                                   cutoff=0.6)
                            if g not in guesses]
        if len(self._words) >= 1:
            guesses += [n for n in names if n.startswith(self._words[0] + " ")
                        and n not in guesses and not guesses]
        hints = []
        if guesses:
            shown = " or ".join(f"`soong {g}`" for g in guesses[:3])
            hints.append(f"did you mean {shown}?")
        hints.append("run `soong list` to see every command")
        return f"unknown command {typed!r}", hints

    def _render_unexpected(self, error: BaseException, io: IO) -> None:
        message = " ".join(f"{type(error).__name__}: {error}".split())
        self._write_error(io, f"unexpected {message}",
                          ["this is a bug in soong or a plugin; rerun with -vvv for the "
                           "traceback and report it"])
        self._write_traceback(io, error)


_SOONG_COMMAND = re.compile(r"`soong(\s[^`]*)?`")
_NEGATIVE_NUMBER = re.compile(r"^-(\d+\.?\d*|\.\d+)$")


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


def _check_api_timeout(text: str | None) -> None:
    import math

    if text is None:
        return
    try:
        seconds = float(text)
    except ValueError:
        seconds = math.nan
    if not seconds >= 1 or math.isinf(seconds):
        raise UsageError(f"--api-timeout {text!r}: give a number of seconds, at least 1",
                         hints=["the default is 60 (defaults.api_timeout_seconds)"])


def _raised_writing_output(error: OSError) -> bool:
    """Whether ``error`` came from writing the command's output (``> /dev/full``)."""
    traceback = error.__traceback__
    while traceback is not None:
        if traceback.tb_frame.f_code.co_filename.endswith(
                ("stream_output.py", "buffered_output.py")):
            return True
        traceback = traceback.tb_next
    return False


def main() -> int:
    return SoongApplication().run()


if __name__ == "__main__":  # `python -m soong_core.cli.application`: use the real module's class
    from soong_core.cli.application import main as _main

    sys.exit(_main())
