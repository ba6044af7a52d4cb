"""The application's renderer: hints that act where the command did, mistyped command
names, negative numbers as option values, output that cannot be written."""

from __future__ import annotations

import re
from typing import Any

import pytest

from soong_core.config import profile_path, write_config_file
from soong_core.testing import run_soong


@pytest.fixture
def fake_profile(fake_provider: Any, soong_env: Any) -> Any:
    """A profile ``work`` that makes the fake provider the default."""
    write_config_file(profile_path("work"), {"defaults": {"provider": "fake"}})
    write_config_file(profile_path("sim"), {"defaults": {"provider": "fake"}})
    return fake_provider


def _backticked(text: str) -> list[str]:
    return re.findall(r"`(soong[^`]*)`", text)


@pytest.mark.parametrize("flags, expected", [
    ("--sim", "soong --sim config set defaults.gpu TYPE"),
    ("--profile work", "soong --profile work config set defaults.gpu TYPE"),
    ("--config {file} --sim", "soong --config {file} --sim config set defaults.gpu TYPE"),
])
def test_hints_carry_the_global_options_in_effect(run_cli: Any, fake_profile: Any, flags: str,
                                                  expected: str, tmp_path: Any) -> None:
    other = tmp_path / "other.yaml"
    write_config_file(other, {})
    result = run_cli(flags.format(file=other) + " start -y")
    assert result.exit_code == 2
    assert "no GPU type given" in result.stderr
    assert expected.format(file=other) in _backticked(result.stderr), result.stderr


def test_hints_without_global_options_are_left_as_written(run_cli: Any, fake_provider: Any,
                                                          soong_env: Any) -> None:
    write_config_file(soong_env.config_file, {"defaults": {"provider": "fake"}})
    result = run_cli("start -y")
    assert result.exit_code == 2
    assert "soong config set defaults.gpu TYPE" in _backticked(result.stderr)


def test_report_lines_carry_the_global_options(fake_profile: Any, run_cli: Any) -> None:
    """A hint that names its own profile is not given a second one."""
    from soong_core.cli.application import SoongApplication

    app = SoongApplication()
    app.profile, app.sim_flag = "sim", True
    assert app.localise("run `soong status`") == "run `soong --sim status`"
    assert app.localise("run `soong`") == "run `soong --sim`"
    assert app.localise("run `soong --sim COMMAND` or `soong --profile x status`") == (
        "run `soong --sim COMMAND` or `soong --profile x status`")
    assert app.localise("soong status, unquoted") == "soong status, unquoted"
    app.profile, app.sim_flag, app.config_path = "my work", False, "/a b/c.yaml"
    assert app.localise("`soong stop --all`") == (
        "`soong --config '/a b/c.yaml' --profile 'my work' stop --all`")


@pytest.mark.parametrize("typed, suggested", [
    ("strat", "soong start"),
    ("stpo", "soong stop"),
    ("config shwo", "soong config show"),
    ("confgi set", "soong config set"),
    ("sim upp", "soong sim up"),
])
def test_a_mistyped_command_gets_a_suggestion(run_cli: Any, typed: str, suggested: str) -> None:
    result = run_cli(typed)
    assert result.exit_code == 2
    lines = result.stderr.splitlines()
    assert lines[0] == f"error: unknown command {typed!r}"
    assert suggested in _backticked(lines[1]), result.stderr


def test_an_unknown_command_with_no_near_name_lists_none(run_cli: Any) -> None:
    result = run_cli("xyzzy")
    assert result.exit_code == 2
    assert "did you mean" not in result.stderr
    assert "`soong list`" in result.stderr


@pytest.mark.parametrize("args, message", [
    ("start --gpu g --hours -1 -y", "a lease of -1 hours"),
    ("start --gpu g --hours=-1 -y", "a lease of -1 hours"),
    ("start --gpu g --hours -0.5 -y", "a lease of -0.5 hours"),
])
def test_negative_numbers_reach_the_option(run_cli: Any, fake_profile: Any, args: str,
                                           message: str) -> None:
    result = run_cli(f"--sim {args}")
    assert result.exit_code == 2
    assert "requires a value" not in result.stderr
    assert "does not exist" not in result.stderr
    first = result.stderr.splitlines()[0]
    assert message in first and "out of range" in first, result.stderr


def test_a_negative_number_after_a_flag_stays_an_argument(run_cli: Any) -> None:
    """``config set KEY -1``: the number is the value, reaching the range check."""
    result = run_cli("config set defaults.lease_hours -1")
    assert result.exit_code == 2
    assert "does not exist" not in result.stderr
    assert "defaults.lease_hours" in result.stderr.splitlines()[0]


def test_output_that_cannot_be_written_is_not_called_a_bug(soong_env: Any) -> None:
    import subprocess
    import sys

    with open("/dev/full", "w") as full:
        done = subprocess.run([sys.executable, "-m", "soong_core", "config", "show"],
                              stdout=full, stderr=subprocess.PIPE, text=True,
                              env={**__import__("os").environ, **soong_env.environ()},
                              timeout=60)
    assert done.returncode == 1
    assert done.stderr.splitlines()[0] == "error: cannot write the output: No space left on device"
    assert "bug" not in done.stderr


def test_a_subprocess_hint_under_sim_names_sim(soong_env: Any) -> None:
    """The real console path (a fresh interpreter) renders the same way."""
    write_config_file(profile_path("sim"), {})
    result = run_soong("--sim", "start", "-y", env=soong_env)
    assert result.exit_code == 2
    assert all("--sim" in hint for hint in _backticked(result.stderr)), result.stderr


@pytest.mark.parametrize("value", ["0", "abc", "-5", "inf", "nan"])
def test_a_bad_api_timeout_is_one_line_naming_the_option(run_cli: Any, value: str) -> None:
    result = run_cli(f"--api-timeout {value} config show")
    assert result.exit_code == 2
    assert result.stderr.splitlines()[0] == (
        f"error: --api-timeout must be a number of seconds >= 1, got {value!r}")


def test_the_api_timeout_reaches_the_config(run_cli: Any) -> None:
    result = run_cli("--api-timeout 7.5 config show --json")
    assert result.exit_code == 0
    assert __import__("json").loads(result.stdout)["defaults"]["api_timeout_seconds"] == 7.5


def test_global_options_with_an_equals_sign_keep_their_whole_value(run_cli: Any, tmp_path: Any
                                                                   ) -> None:
    """``--config=PATH`` once read only the first character of PATH (cleo's
    ``parameter_option``)."""
    path = tmp_path / "other.yaml"
    write_config_file(path, {"defaults": {"lease_hours": 3}})
    result = run_cli(f"--config={path} config validate")
    assert result.exit_code == 0, result.stderr
    assert str(path) in result.stdout
    result = run_cli("--api-timeout=12 config show --json")
    assert __import__("json").loads(result.stdout)["defaults"]["api_timeout_seconds"] == 12
