"""``soong config show|validate|path|set``, in-process and as a real subprocess."""

from __future__ import annotations

import json
import stat
from pathlib import Path
from typing import Any, Callable

import pytest
import yaml

from soong_core.plugins import Plugins
from soong_core.testing import CliResult, SoongEnv, run_soong

SECRET = "secret_lambda_key_do_not_leak_0123456789"

RunCli = Callable[..., CliResult]


def write(path: Path, text: str, mode: int = 0o600) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    path.chmod(mode)
    return path


def error_lines(result: CliResult) -> list[str]:
    return [line for line in result.stderr.splitlines() if line.strip()]


# -- path --------------------------------------------------------------------------------


def test_path_prints_the_default(run_cli: RunCli, soong_env: SoongEnv) -> None:
    result = run_cli("config path")
    assert (result.exit_code, result.stdout) == (0, f"{soong_env.config_file}\n")


def test_path_honours_the_global_option(run_cli: RunCli, tmp_path: Path) -> None:
    result = run_cli(["--config", str(tmp_path / "x.yaml"), "config", "path"])
    assert result.stdout == f"{tmp_path / 'x.yaml'}\n"


# -- show ---------------------------------------------------------------------------------


def test_show_prints_the_effective_config_as_yaml(run_cli: RunCli, soong_env: SoongEnv,
                                                  monkeypatch: pytest.MonkeyPatch) -> None:
    write(soong_env.config_file, "defaults:\n  lease_hours: 5\n")
    monkeypatch.setenv("SOONG_BUDGET_MAX_DOLLARS", "75")
    result = run_cli("config show")
    assert result.exit_code == 0, result.stderr
    shown = yaml.safe_load(result.stdout)
    assert shown["defaults"]["lease_hours"] == 5
    assert shown["defaults"]["hard_timeout_hours"] == 8
    assert shown["budget"] == {"max_dollars": 75, "period": "month"}
    assert list(shown)[:2] == ["defaults", "budget"]
    assert {"lambda", "ssh", "agent"} <= set(shown)


def test_show_json(run_cli: RunCli) -> None:
    result = run_cli("config show --json")
    assert json.loads(result.stdout)["agent"]["port"] == 8765


@pytest.mark.parametrize("where", ["file", "env"])
def test_show_masks_secrets(run_cli: RunCli, soong_env: SoongEnv,
                            monkeypatch: pytest.MonkeyPatch, where: str) -> None:
    if where == "file":
        write(soong_env.config_file, f"lambda:\n  api_key: {SECRET}\nagent:\n  api_key: {SECRET}\n")
    else:
        monkeypatch.setenv("LAMBDA_API_KEY", SECRET)
        monkeypatch.setenv("SOONG_AGENT_API_KEY", SECRET)
    for args in ("config show", "config show --json", "-vvv config show"):
        result = run_cli(args)
        assert result.exit_code == 0
        assert SECRET not in result.stdout + result.stderr
        assert SECRET[:-4] not in result.stdout + result.stderr
    shown = yaml.safe_load(run_cli("config show").stdout)
    assert shown["lambda"]["api_key"] == shown["agent"]["api_key"] == "****" + SECRET[-4:]


# -- validate -----------------------------------------------------------------------------


def test_validate_ok_without_a_file(run_cli: RunCli, soong_env: SoongEnv) -> None:
    result = run_cli("config validate")
    assert result.exit_code == 0
    assert result.stdout == f"config OK: {soong_env.config_file} (no file: defaults apply)\n"


def test_validate_ok_with_a_file(run_cli: RunCli, soong_env: SoongEnv) -> None:
    write(soong_env.config_file, "budget:\n  max_dollars: 100\n  period: week\n")
    result = run_cli("config validate")
    assert (result.exit_code, result.stdout) == (0, f"config OK: {soong_env.config_file}\n")


@pytest.mark.parametrize(("text", "fragment"), [
    ("defaults:\n  lease_hours: abc\n", 'defaults.lease_hours: "abc" is not a number'),
    ("defaults:\n  lease_hours: 0.5\n", "defaults.lease_hours: 0.5 is below the minimum 1"),
    ("budget:\n  max_dolars: 5\n", "unknown key budget.max_dolars (did you mean budget.max_dollars?)"),
    ("budget:\n  period: yearly\n", "is not one of day, week, month, none"),
    ("defaults:\n  lease_hours: 9\n", "a lease cannot outlast the hard timeout"),
    ("defaults:\n  lease_hours: [\n", "malformed YAML at line 3, column 1"),
    ("- a\n- b\n", "the top level must be a mapping"),
    ("ssh:\n  user: 7\n", "ssh.user: 7 is not a string"),
])
def test_validate_reports_one_line_and_exits_2(run_cli: RunCli, soong_env: SoongEnv,
                                               text: str, fragment: str) -> None:
    write(soong_env.config_file, text)
    result = run_cli("config validate")
    assert result.exit_code == 2
    [line] = error_lines(result)
    assert line.startswith("error: ") and fragment in line
    assert str(soong_env.config_file) in line
    assert "Traceback" not in result.stderr and result.stdout == ""


def test_validate_lists_every_problem_one_per_line(run_cli: RunCli, soong_env: SoongEnv) -> None:
    write(soong_env.config_file, "defaults:\n  lease_hours: 0\n  gpu: 1\nbudget:\n  period: x\n")
    result = run_cli("config validate")
    assert result.exit_code == 2
    lines = error_lines(result)
    assert len(lines) == 3
    assert lines[0].startswith("error: ")
    assert all(str(soong_env.config_file) in line for line in lines)


@pytest.mark.parametrize("kind", ["directory", "binary"])
def test_validate_unreadable_files(run_cli: RunCli, soong_env: SoongEnv, kind: str) -> None:
    if kind == "directory":
        soong_env.config_file.mkdir(parents=True)
    else:
        soong_env.config_file.parent.mkdir(parents=True)
        soong_env.config_file.write_bytes(bytes(range(256)) * 4)
        soong_env.config_file.chmod(0o600)
    result = run_cli("config validate")
    assert result.exit_code == 2
    assert len(error_lines(result)) == 1
    assert str(soong_env.config_file) in result.stderr


def test_bad_environment_value_fails_validation(run_cli: RunCli,
                                                monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SOONG_DEFAULTS_IDLE_GRACE_MINUTES", "soon")
    result = run_cli("config validate")
    assert result.exit_code == 2
    assert error_lines(result) == [
        'error: defaults.idle_grace_minutes: "soon" is not a number '
        "(from $SOONG_DEFAULTS_IDLE_GRACE_MINUTES)"]


@pytest.mark.parametrize("command", ["config validate", "config show"])
def test_missing_explicit_config_exits_2(run_cli: RunCli, tmp_path: Path, command: str) -> None:
    missing = tmp_path / "missing.yaml"
    result = run_cli(["--config", str(missing), *command.split()])
    assert result.exit_code == 2
    lines = error_lines(result)
    assert lines[0] == f"error: config file {missing} does not exist"
    assert f"create it with `soong --config {missing} configure`" in result.stderr


def test_explicit_config_is_used(run_cli: RunCli, tmp_path: Path) -> None:
    path = write(tmp_path / "team.yaml", "budget:\n  period: day\n")
    result = run_cli(["--config", str(path), "config", "show", "--json"])
    assert json.loads(result.stdout)["budget"]["period"] == "day"


def test_world_readable_file_warns(run_cli: RunCli, soong_env: SoongEnv) -> None:
    write(soong_env.config_file, "budget:\n  period: day\n", mode=0o644)
    result = run_cli("config validate")
    assert result.exit_code == 0
    assert f"warning: config file {soong_env.config_file} has mode 0644" in result.stderr
    assert f"chmod 600 {soong_env.config_file}" in result.stderr


def test_plugin_section_is_validated_too(run_cli: RunCli, register_plugin: Callable[..., str],
                                         soong_env: SoongEnv) -> None:
    import types

    from soong_core import hookimpl

    plugin = types.ModuleType("curfew")
    plugin.soong_config_schema = hookimpl(  # type: ignore[attr-defined]
        lambda: {"curfew": {"hour": {"type": "integer", "min": 0, "max": 23, "default": 19}}})
    register_plugin(plugin, "curfew")
    assert json.loads(run_cli("config show --json").stdout)["curfew"] == {"hour": 19}
    write(soong_env.config_file, "curfew:\n  hour: 25\n")
    result = run_cli("config validate")
    assert result.exit_code == 2
    assert error_lines(result)[0].startswith("error: curfew.hour: 25 is above the maximum 23")


# -- set ------------------------------------------------------------------------------------


def test_set_writes_a_private_file(run_cli: RunCli, soong_env: SoongEnv) -> None:
    result = run_cli("config set defaults.lease_hours 6")
    assert result.exit_code == 0, result.stderr
    assert result.stdout == f"defaults.lease_hours = 6 (saved in {soong_env.config_file})\n"
    assert stat.S_IMODE(soong_env.config_file.stat().st_mode) == 0o600
    assert yaml.safe_load(soong_env.config_file.read_text()) == {"defaults": {"lease_hours": 6}}


def test_set_keeps_other_keys(run_cli: RunCli, soong_env: SoongEnv) -> None:
    write(soong_env.config_file, "defaults:\n  gpu: gpu_1x_a10\nssh:\n  user: me\n")
    assert run_cli("config set defaults.fallback_regions us-east-1,us-west-1").exit_code == 0
    assert yaml.safe_load(soong_env.config_file.read_text()) == {
        "defaults": {"gpu": "gpu_1x_a10", "fallback_regions": ["us-east-1", "us-west-1"]},
        "ssh": {"user": "me"}}


@pytest.mark.parametrize(("args", "fragment"), [
    ("defaults.lease_hours 0.5", "defaults.lease_hours: 0.5 is below the minimum 1"),
    ("defaults.lease_hours six", 'defaults.lease_hours: "six" is not a number'),
    ("agent.port 99999", "agent.port: 99999 is above the maximum 65535"),
    ("budget.period yearly", 'budget.period: "yearly" is not one of day, week, month, none'),
    ("budget.max_dolars 5", "unknown key budget.max_dolars (did you mean budget.max_dollars?)"),
    ("defaults.hard_timeout_hours 2", "a lease cannot outlast the hard timeout"),
])
def test_set_refuses_invalid_values_without_touching_the_file(
        run_cli: RunCli, soong_env: SoongEnv, args: str, fragment: str) -> None:
    path = write(soong_env.config_file, "defaults:\n  lease_hours: 3\n")
    before = path.read_bytes()
    result = run_cli(f"config set {args}")
    assert result.exit_code == 2
    assert len(error_lines(result)) == 1 and fragment in result.stderr
    assert path.read_bytes() == before


def test_set_does_not_create_a_file_for_an_invalid_value(run_cli: RunCli,
                                                        soong_env: SoongEnv) -> None:
    assert run_cli("config set defaults.lease_hours 0").exit_code == 2
    assert not soong_env.config_file.exists()


def run_with_stdin(plugins: Plugins, args: str, stdin: str) -> CliResult:
    """Like ``run_cli(args, inputs=...)``, with a stream the command can read from."""
    from io import StringIO

    from cleo.io.buffered_io import BufferedIO
    from cleo.io.inputs.argv_input import ArgvInput

    from soong_core.cli.application import SoongApplication

    io = BufferedIO(ArgvInput(["soong", *args.split()]))
    io.input.set_stream(StringIO(stdin))
    app = SoongApplication(plugins=plugins)
    app.auto_exits(False)
    exit_code = app.run(io.input, io.output, io.error_output)
    return CliResult(exit_code, io.fetch_output(), io.fetch_error())


def test_set_secret_from_stdin_is_never_echoed(plugins: Plugins, soong_env: SoongEnv) -> None:
    result = run_with_stdin(plugins, "config set lambda.api_key", f"{SECRET}\n")
    assert result.exit_code == 0, result.stderr
    assert SECRET not in result.stdout + result.stderr
    assert "****" + SECRET[-4:] in result.stdout
    assert yaml.safe_load(soong_env.config_file.read_text())["lambda"]["api_key"] == SECRET


def test_set_secret_as_argument_warns(run_cli: RunCli) -> None:
    result = run_cli(f"config set agent.api_key {SECRET}")
    assert result.exit_code == 0
    assert "visible in process lists" in result.stderr
    assert SECRET not in result.stdout + result.stderr


def test_set_without_a_value_and_no_input_is_a_usage_error(run_cli: RunCli) -> None:
    result = run_cli("config set defaults.gpu")
    assert result.exit_code == 2
    assert "no value given for defaults.gpu" in result.stderr


def test_set_warns_when_the_environment_overrides_it(run_cli: RunCli,
                                                     monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SOONG_DEFAULTS_LEASE_HOURS", "2")
    result = run_cli("config set defaults.lease_hours 6")
    assert result.exit_code == 0
    assert "$SOONG_DEFAULTS_LEASE_HOURS is set and overrides defaults.lease_hours" in result.stderr


def test_set_to_the_explicit_config(run_cli: RunCli, tmp_path: Path, soong_env: SoongEnv) -> None:
    path = tmp_path / "elsewhere" / "soong.yaml"
    assert run_cli(["--config", str(path), "config", "set", "budget.period", "day"]).exit_code == 0
    assert yaml.safe_load(path.read_text()) == {"budget": {"period": "day"}}
    assert not soong_env.config_file.exists()


# -- the real console script --------------------------------------------------------------


def test_subprocess_show_validate_and_set(soong_env: SoongEnv) -> None:
    result = run_soong("config", "set", "budget.max_dollars", "30", env=soong_env)
    assert result.exit_code == 0, result.stderr
    result = run_soong("config", "show", "--json", env=soong_env, extra_env={"LAMBDA_API_KEY": SECRET})
    assert result.exit_code == 0, result.stderr
    shown: dict[str, Any] = json.loads(result.stdout)
    assert shown["budget"]["max_dollars"] == 30
    assert SECRET not in result.stdout + result.stderr
    write(soong_env.config_file, "budget:\n  max_dollars: lots\n")
    result = run_soong("config", "validate", env=soong_env)
    assert result.exit_code == 2
    assert error_lines(result) == [
        f'error: budget.max_dollars: "lots" is not a number (in {soong_env.config_file})']
