"""The command-line skeleton: global options, exit codes, error rendering, laziness."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import types
from typing import Any

import pytest
from cleo.commands.command import Command

from soong_core import __version__, hookimpl
from soong_core.cli.command import SoongCommand
from soong_core.errors import SoongError
from soong_core.plugins import Plugins
from soong_core.testing import SoongEnv, run_soong


class Hello(Command):
    name = "hello"
    description = "Says hello (from a plugin)."

    def handle(self) -> int:
        self.line("hello from a plugin")
        return 0


class Fails(SoongCommand):
    name = "fails"
    description = "Raises what the test tells it to."
    error: BaseException = RuntimeError("boom")

    def handle(self) -> int:
        raise self.error


def commands_plugin(**factories: Any) -> types.ModuleType:
    module = types.ModuleType("cmds")

    def soong_register_commands(register: Any) -> None:
        for name, factory in factories.items():
            register(name.replace("_", " "), factory)

    module.soong_register_commands = hookimpl(soong_register_commands)
    return module


def test_version(run_cli: Any) -> None:
    result = run_cli("--version")
    assert (result.exit_code, result.stdout.strip()) == (0, f"soong {__version__}")


def test_help_lists_core_and_plugin_commands(run_cli: Any, register_plugin: Any) -> None:
    register_plugin(commands_plugin(hello=Hello), "cmds")
    result = run_cli("--help")
    assert result.exit_code == 0
    for text in ("plugins", "hello", "--config", "--no-plugins", "-n, --no-interaction",
                 "--no-ansi", "-v|vv|vvv"):
        assert text in result.stdout
    listed = run_cli("list")
    assert "Says hello (from a plugin)." in listed.stdout


def test_plugin_command_runs_and_cannot_shadow_a_core_one(run_cli: Any, register_plugin: Any) -> None:
    register_plugin(commands_plugin(hello=Hello, plugins=Hello), "cmds")
    result = run_cli("hello")
    assert (result.exit_code, result.stdout) == (0, "hello from a plugin\n")
    assert run_cli("plugins").stdout.startswith("NAME")  # the core command, not Hello
    listed = run_cli("list")
    assert "plugin 'cmds' adds command 'plugins', which is a core command: ignored" in listed.stderr


@pytest.mark.parametrize("args, message", [
    ("nope", "error: unknown command 'nope'"),
    ("plugins --bogus", 'error: The option "--bogus" does not exist'),
    ("plugins extra", 'error: No arguments expected for "plugins" command, got "extra"'),
])
def test_usage_errors_exit_2_with_one_line_and_a_hint(run_cli: Any, args: str, message: str) -> None:
    result = run_cli(args)
    assert result.exit_code == 2
    lines = result.stderr.splitlines()
    assert lines[0] == message
    assert len(lines) == 2 and "soong" in lines[1]
    assert "Traceback" not in result.stderr
    assert result.stdout == ""


@pytest.mark.parametrize("error, code", [
    (SoongError("capacity gone in us-east-1", hints=["try --region us-west-1 or --wait-for-capacity"]), 1),
    (SoongError("bad value", exit_code=2), 2),
])
def test_soong_errors_print_message_and_hints(run_cli: Any, register_plugin: Any,
                                              error: SoongError, code: int) -> None:
    command = type("F", (Fails,), {"error": error})
    register_plugin(commands_plugin(fails=command), "cmds")
    result = run_cli("fails")
    assert result.exit_code == code
    assert result.stderr.splitlines() == [f"error: {error.message}", *(f"  {h}" for h in error.hints)]


def test_unexpected_errors_have_no_traceback_unless_vvv(run_cli: Any, register_plugin: Any) -> None:
    register_plugin(commands_plugin(fails=Fails), "cmds")
    plain = run_cli("fails")
    assert plain.exit_code == 1
    assert plain.stderr.splitlines()[0] == "error: unexpected RuntimeError: boom"
    assert "Traceback" not in plain.stderr
    for flag in ("-v", "-vv"):
        assert "Traceback" not in run_cli(f"fails {flag}").stderr
    debug = run_cli("fails -vvv")
    assert debug.exit_code == 1
    assert "Traceback (most recent call last)" in debug.stderr
    assert 'raise self.error' in debug.stderr


def test_soong_error_detail_only_with_vvv(run_cli: Any, register_plugin: Any) -> None:
    command = type("F", (Fails,), {"error": SoongError("it failed", detail="HTTP 503 from upstream")})
    register_plugin(commands_plugin(fails=command), "cmds")
    assert "HTTP 503" not in run_cli("fails").stderr
    assert "HTTP 503" in run_cli("fails -vvv").stderr


def test_error_text_is_not_read_as_markup(run_cli: Any, register_plugin: Any) -> None:
    command = type("F", (Fails,), {"error": SoongError("value <error>x</error> is <b>bad</b>")})
    register_plugin(commands_plugin(fails=command), "cmds")
    assert run_cli("fails").stderr.splitlines()[0] == "error: value <error>x</error> is <b>bad</b>"


def test_keyboard_interrupt_exits_130(run_cli: Any, register_plugin: Any) -> None:
    command = type("F", (Fails,), {"error": KeyboardInterrupt()})
    register_plugin(commands_plugin(fails=command), "cmds")
    result = run_cli("fails")
    assert (result.exit_code, result.stderr.strip()) == (130, "interrupted")


def test_plugins_command_lists_name_distribution_version_hooks(
        run_cli: Any, register_plugin: Any) -> None:
    register_plugin(commands_plugin(hello=Hello), "cmds")
    table = run_cli("plugins").stdout.splitlines()
    assert table[0].split() == ["NAME", "DISTRIBUTION", "VERSION", "STATUS", "REGISTERS",
                                "HOOKS"]
    assert any(line.split()[:4] == ["policies", "soong", __version__, "loaded"] for line in table)
    rows = json.loads(run_cli("plugins --json").stdout)
    [cmds] = [r for r in rows if r["name"] == "cmds"]
    assert cmds["hooks"] == ["soong_register_commands"] and cmds["builtin"] is False


def test_plugin_that_fails_to_import_warns_once_and_cli_works(soong_env: SoongEnv, tmp_path: Any) -> None:
    """A real broken third-party distribution on sys.path: one warning line, exit 0."""
    dist = tmp_path / "site" / "broken_plugin-1.0.dist-info"
    dist.mkdir(parents=True)
    (dist / "METADATA").write_text("Metadata-Version: 2.1\nName: broken-plugin\nVersion: 1.0\n")
    (dist / "entry_points.txt").write_text("[soong]\nbroken = broken_plugin_module\n")
    (tmp_path / "site" / "broken_plugin_module.py").write_text("raise ImportError('needs libfoo')\n")
    result = run_soong("plugins", env=soong_env, extra_env={"PYTHONPATH": str(tmp_path / "site")})
    assert result.exit_code == 0
    warnings = [line for line in result.stderr.splitlines() if line]
    assert warnings == ["warning: plugin 'broken' (broken-plugin) failed to load: "
                        "ImportError: needs libfoo"]
    assert "broken" in result.stdout and "failed" in result.stdout
    quiet = run_soong("--no-plugins", "plugins", env=soong_env,
                      extra_env={"PYTHONPATH": str(tmp_path / "site")})
    assert quiet.stderr == "" and "broken" not in quiet.stdout


def run_on_tty(*args: str, env: SoongEnv, extra_env: dict[str, str] | None = None) -> str:
    """stdout of ``soong ARGS`` written to a pseudo-terminal, as a user would see it."""
    import pty

    controller, terminal = pty.openpty()
    environ = {**os.environ, **env.environ(), "TERM": "xterm-256color"}
    environ.pop("NO_COLOR", None)
    environ.update(extra_env or {})
    with subprocess.Popen([sys.executable, "-m", "soong_core", *args], stdout=terminal,
                          stderr=subprocess.DEVNULL, env=environ) as process:
        os.close(terminal)
        chunks = []
        while True:
            try:
                chunk = os.read(controller, 4096)
            except OSError:  # EIO: the child closed the terminal
                break
            if not chunk:
                break
            chunks.append(chunk)
        process.wait(timeout=60)
    os.close(controller)
    return b"".join(chunks).decode()


def test_colour_only_on_a_terminal_and_never_with_no_ansi_or_no_color(soong_env: SoongEnv) -> None:
    assert "\x1b[" in run_on_tty("plugins", env=soong_env)
    assert "\x1b[" not in run_on_tty("--no-ansi", "plugins", env=soong_env)
    assert "\x1b[" not in run_on_tty("plugins", env=soong_env, extra_env={"NO_COLOR": "1"})
    assert "\x1b[" not in run_soong("plugins", env=soong_env).stdout  # a pipe: plain


HEAVY = ("fabric", "paramiko", "invoke", "requests", "urllib3", "rich.table", "rich.console",
         "yaml", "cerberus", "sqlite3")


@pytest.mark.parametrize("args", [["--help"], ["--version"], ["list"]])
def test_startup_imports_nothing_heavy(soong_env: SoongEnv, args: list[str]) -> None:
    code = (
        "import sys\n"
        "from soong_core.cli.application import SoongApplication\n"
        "app = SoongApplication(); app.auto_exits(False)\n"
        f"sys.argv = ['soong', *{args!r}]\n"
        "code = app.run()\n"
        f"heavy = sorted(m for m in sys.modules if m.split('.')[0] in {HEAVY!r} or m in {HEAVY!r})\n"
        "print('HEAVY=' + ','.join(heavy)); sys.exit(code)\n"
    )
    environ = {**os.environ, **soong_env.environ()}
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          env=environ, timeout=60)
    assert done.returncode == 0, done.stderr
    assert done.stdout.splitlines()[-1] == "HEAVY="


LAZY = ("soong_core.cli.render", "soong_core.cli.prompt", "soong_core.cli.credentials",
        "soong_core.cli.words", "soong_core.plugin_calls")
"""Modules only some runs need. An editable install run under PYTHONDONTWRITEBYTECODE
compiles every module it imports on every run, so listing the commands must not import
them (tests/benchmarks/bench_cli_startup.py measures it)."""


@pytest.mark.parametrize("args, code, needed, loads_plugins", [
    (["--help"], 0, (), True),
    (["list"], 0, (), True),
    (["--version"], 0, (), False),
    (["status"], 2, ("soong_core.cli.credentials", "soong_core.cli.render"), True),
])
def test_startup_imports_only_what_the_run_needs(soong_env: SoongEnv, args: list[str], code: int,
                                                 needed: tuple[str, ...],
                                                 loads_plugins: bool) -> None:
    script = (
        "import json, sys\n"
        "from soong_core.cli.application import SoongApplication\n"
        "app = SoongApplication(); app.auto_exits(False)\n"
        f"sys.argv = ['soong', *{args!r}]\n"
        "code = app.run()\n"
        "metadata = 'importlib.metadata' in sys.modules\n"
        "from soong_core.plugins import may_declare_entry_points\n"
        f"lazy = sorted(m for m in {LAZY!r} if m in sys.modules)\n"
        "print(json.dumps([code, lazy, metadata, may_declare_entry_points('soong')]))\n"
    )
    environ = {**os.environ, **soong_env.environ()}
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True,
                          env=environ, timeout=60)
    exit_code, lazy, metadata, declares = json.loads(done.stdout.splitlines()[-1])
    assert exit_code == code, done.stderr
    assert lazy == sorted(needed)
    # importlib.metadata (about 20 ms) only when an installed distribution may declare a plugin
    assert metadata is (declares and loads_plugins)


def dist_info(site: Any, name: str, entry_points: str | bytes | None) -> None:
    folder = site / f"{name}-1.0.dist-info"
    folder.mkdir(parents=True)
    (folder / "METADATA").write_text(f"Metadata-Version: 2.1\nName: {name}\nVersion: 1.0\n")
    if isinstance(entry_points, str):
        (folder / "entry_points.txt").write_text(entry_points)
    elif entry_points is not None:
        (folder / "entry_points.txt").write_bytes(entry_points)


@pytest.mark.parametrize("text, declares", [
    (None, False),
    ("[console_scripts]\nsoong = soong_core.cli.application:main\n", False),
    ("[soong-extra]\nx = x_module\n", False),
    ("# [soong]\n[other]\nx = x_module\n", False),
    ("[soong]\nx = x_module\n", True),
    ("[console_scripts]\nx = y:main\n  [soong]  \nx = x_module\n", True),
    ("[[soong]]\nx = x_module\n", True),  # importlib.metadata reads the group "soong"
])
def test_the_entry_point_look_agrees_with_importlib_metadata(tmp_path: Any, monkeypatch: Any,
                                                             text: str | None,
                                                             declares: bool) -> None:
    from importlib.metadata import entry_points

    from soong_core.plugins import may_declare_entry_points

    dist_info(tmp_path / "site", "some_dist", text)
    dist_info(tmp_path / "site", "plain", None)
    (tmp_path / "site" / "old.egg-info").write_text("Name: old\n")  # a file: nothing to read
    monkeypatch.setattr(sys, "path", [str(tmp_path / "site"), str(tmp_path / "missing")])
    assert bool(list(entry_points(group="soong"))) is declares
    assert may_declare_entry_points("soong") is declares


def test_the_entry_point_look_leaves_what_it_cannot_settle_to_importlib_metadata(
        tmp_path: Any, monkeypatch: Any) -> None:
    import zipfile

    from soong_core.plugins import may_declare_entry_points

    site = tmp_path / "site"
    dist_info(site, "plain", "[console_scripts]\nx = y:main\n")
    monkeypatch.setattr(sys, "path", [str(site)])
    assert may_declare_entry_points("soong") is False
    with zipfile.ZipFile(tmp_path / "plugins.zip", "w") as archive:
        archive.writestr("z-1.0.dist-info/entry_points.txt", "[soong]\nz = z_module\n")
    for entry in (str(tmp_path / "plugins.zip"), str(tmp_path / "x.egg")):
        monkeypatch.setattr(sys, "path", [str(site), entry])
        assert may_declare_entry_points("soong") is True, entry
    monkeypatch.setattr(sys, "path", [str(site)])
    dist_info(site, "undecodable", b"[soong]\n\xff\n")
    assert may_declare_entry_points("soong") is True
    (site / "undecodable-1.0.dist-info" / "entry_points.txt").unlink()
    assert may_declare_entry_points("soong") is False

    class Finder:  # a finder of distributions of its own: only importlib.metadata asks it
        @staticmethod
        def find_distributions(*args: Any, **kwargs: Any) -> list[Any]:
            return []

    monkeypatch.setattr(sys, "meta_path", [*sys.meta_path, Finder()])
    assert may_declare_entry_points("soong") is True


@pytest.mark.parametrize("token", ["-1", "-0.5", "-.5", "-12.", "-\u0661", "-1e3", "-\u00b2",
                                   "--", "-v", "--hours", "-", "1", ".5", "-x1"])
def test_the_negative_number_check_misses_none(token: str) -> None:
    """The check that spares a run soong_core.cli.words is true of every negative number
    it would rewrite, and false of options."""
    from soong_core.cli.application import _may_be_negative_number
    from soong_core.cli.words import NEGATIVE_NUMBER

    if NEGATIVE_NUMBER.match(token):
        assert _may_be_negative_number(token)
    if token in ("--", "-v", "--hours", "-", "1", ".5", "-x1"):
        assert not _may_be_negative_number(token)


def test_console_script_is_declared(soong_env: SoongEnv) -> None:
    from importlib.metadata import entry_points

    [script] = [ep for ep in entry_points(group="console_scripts") if ep.name == "soong"]
    assert script.value == "soong_core.cli.application:main"


def test_two_applications_do_not_share_plugins(plugins: Plugins) -> None:
    from soong_core.cli.application import SoongApplication

    assert SoongApplication(plugins=plugins).plugins is plugins
    assert SoongApplication().plugins is not SoongApplication().plugins


@pytest.mark.parametrize("args", ["config", "config -h", "--no-ansi config"])
def test_a_bare_namespace_lists_its_commands(run_cli: Any, args: str) -> None:
    result = run_cli(args)
    assert result.exit_code == 0
    assert 'Available commands for the "config" namespace' in result.stdout
    commands = result.stdout.split('namespace:', 1)[1]
    assert "config show" in commands and "plugins" not in commands
