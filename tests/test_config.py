"""The configuration library: schema assembly, layering, validation messages, writing."""

from __future__ import annotations

import logging
import os
import stat
import subprocess
import sys
import types
from decimal import Decimal
from pathlib import Path
from typing import Any, Callable

import pytest
from hypothesis import given
from hypothesis import strategies as st

from soong_core import hookimpl
from soong_core.config import (
    CORE_SCHEMA,
    Config,
    build_schema,
    config_path,
    default_config_path,
    load_config,
    make_config,
    mask_secret,
    parse_text,
    save_values,
    set_value,
)
from soong_core.errors import ConfigError, PluginError
from soong_core.plugins import Plugins
from soong_core.testing import SoongEnv


def write(path: Path, text: str | bytes, mode: int = 0o600) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    if isinstance(text, bytes):
        path.write_bytes(text)
    else:
        path.write_text(text)
    path.chmod(mode)
    return path


def problems(error: ConfigError) -> list[str]:
    """Every problem line of an error: the message, then the hints."""
    return [error.message, *error.hints]


def schema_plugin(sections: dict[str, Any]) -> types.ModuleType:
    module = types.ModuleType("schema_plugin")
    module.soong_config_schema = hookimpl(lambda: sections)  # type: ignore[attr-defined]
    return module


# -- where the file is -----------------------------------------------------------------


def test_default_path_follows_xdg(soong_env: SoongEnv) -> None:
    assert default_config_path() == soong_env.config_file
    assert config_path() == soong_env.config_file


def test_default_path_without_xdg_is_under_home(tmp_path: Path) -> None:
    expected = tmp_path / ".config" / "soong" / "config.yaml"
    assert default_config_path({"HOME": str(tmp_path)}) == expected
    relative = {"HOME": str(tmp_path), "XDG_CONFIG_HOME": "relative/dir"}
    assert default_config_path(relative) == expected  # XDG says: ignore relative paths


def test_explicit_path_replaces_the_default(tmp_path: Path) -> None:
    assert config_path(tmp_path / "other.yaml") == tmp_path / "other.yaml"


# -- defaults, file, environment, overrides ------------------------------------------


def test_missing_file_gives_schema_defaults(plugins: Plugins) -> None:
    config = load_config(plugins=plugins)
    assert not config.exists
    for section, rules in CORE_SCHEMA.items():
        for key, key_rules in rules.items():
            assert config[section][key] == _frozen(key_rules["default"])
            assert config.source_of(f"{section}.{key}").kind == "default"
    assert config.get("defaults.lease_hours") == 4
    assert config.get("budget.period") == "month"
    assert config.get("lambda.api_url") == "https://cloud.lambda.ai/api/v1"
    assert config.get("agent.port") == 8765
    assert config.get("ssh.user") == "ubuntu"


def _frozen(value: Any) -> Any:
    return tuple(value) if isinstance(value, list) else value


def test_file_values_are_read_and_attributed(soong_env: SoongEnv, plugins: Plugins) -> None:
    write(soong_env.config_file, "defaults:\n  lease_hours: 6\n  gpu: gpu_1x_a100\n"
                                 "budget:\n  max_dollars: 120.5\n  period: week\n")
    config = load_config(plugins=plugins)
    assert config.exists and config.path == soong_env.config_file
    assert (config["defaults"]["lease_hours"], config["defaults"]["gpu"]) == (6, "gpu_1x_a100")
    assert (config.get("budget.max_dollars"), config.get("budget.period")) == (120.5, "week")
    assert config.get("defaults.idle_timeout_minutes") == 30  # untouched keys keep defaults
    assert config.source_of("defaults.lease_hours").kind == "file"
    assert str(config.source_of("defaults.lease_hours")) == str(soong_env.config_file)


def test_empty_file_and_empty_section_mean_defaults(soong_env: SoongEnv) -> None:
    write(soong_env.config_file, "")
    assert load_config().get("defaults.lease_hours") == 4
    write(soong_env.config_file, "defaults:\nbudget: {}\n")
    assert load_config().get("budget.period") == "month"


@pytest.mark.parametrize(("var", "text", "key", "value"), [
    ("SOONG_DEFAULTS_LEASE_HOURS", "6", "defaults.lease_hours", 6),
    ("SOONG_DEFAULTS_LEASE_HOURS", "1.5", "defaults.lease_hours", 1.5),
    ("SOONG_BUDGET_MAX_DOLLARS", "50", "budget.max_dollars", 50),
    ("SOONG_BUDGET_MAX_DOLLARS", "null", "budget.max_dollars", None),
    ("SOONG_DEFAULTS_IDLE_TIMEOUT_MINUTES", "45", "defaults.idle_timeout_minutes", 45),
    ("SOONG_DEFAULTS_FALLBACK_REGIONS", "us-east-1, us-west-2,", "defaults.fallback_regions",
     ("us-east-1", "us-west-2")),
    ("SOONG_AGENT_PORT", "9000", "agent.port", 9000),
    ("SOONG_SSH_KEY_PATH", "/keys/id", "ssh.key_path", "/keys/id"),
    ("LAMBDA_API_KEY", "secret_from_env_0123456789", "lambda.api_key",
     "secret_from_env_0123456789"),
])
def test_environment_overrides(monkeypatch: pytest.MonkeyPatch, plugins: Plugins,
                               var: str, text: str, key: str, value: Any) -> None:
    monkeypatch.setenv(var, text)
    config = load_config(plugins=plugins)
    assert config.get(key) == value
    assert (config.source_of(key).kind, config.source_of(key).name) == ("env", var)


def test_soong_variable_wins_over_an_alias(monkeypatch: pytest.MonkeyPatch,
                                           plugins: Plugins) -> None:
    monkeypatch.setenv("LAMBDA_API_KEY", "from-the-alias")
    monkeypatch.setenv("SOONG_LAMBDA_API_KEY", "from-soong")
    assert load_config(plugins=plugins).get("lambda.api_key") == "from-soong"


def test_unknown_variables_are_ignored(monkeypatch: pytest.MonkeyPatch, plugins: Plugins) -> None:
    monkeypatch.setenv("SOONG_DEFAULTS_NO_SUCH_KEY", "1")
    monkeypatch.setenv("SOONG_DISABLE_PLUGINS", "nothing")
    monkeypatch.setenv("SOONG_NOSECTION_X", "1")
    assert load_config(plugins=plugins).get("defaults.lease_hours") == 4


@pytest.mark.parametrize(("var", "text", "expected"), [
    ("SOONG_DEFAULTS_LEASE_HOURS", "six", 'defaults.lease_hours: "six" is not a number'),
    ("SOONG_AGENT_PORT", "8765.5", 'agent.port: "8765.5" is not an integer'),
    ("SOONG_AGENT_PORT", "80", "agent.port: 80 is below the minimum 1024"),
    ("SOONG_BUDGET_PERIOD", "year", 'budget.period: "year" is not one of day, week, month, none'),
    ("SOONG_DEFAULTS_LEASE_HOURS", "nan", 'defaults.lease_hours: "nan" is not a number'),
])
def test_bad_environment_value_names_the_variable(monkeypatch: pytest.MonkeyPatch,
                                                  plugins: Plugins, var: str, text: str,
                                                  expected: str) -> None:
    monkeypatch.setenv(var, text)
    with pytest.raises(ConfigError) as caught:
        load_config(plugins=plugins)
    assert problems(caught.value) == [f"{expected} (from ${var})"]


@pytest.mark.parametrize(("in_file", "in_env", "override", "wins"), [
    (None, None, None, 4),
    (5, None, None, 5),
    (5, 6, None, 6),
    (None, 6, None, 6),
    (5, 6, 7, 7),
    (5, None, 7, 7),
    (None, None, "7", 7),
])
def test_precedence_flags_env_file_defaults(soong_env: SoongEnv, monkeypatch: pytest.MonkeyPatch,
                                            in_file: int | None, in_env: int | None,
                                            override: Any, wins: int) -> None:
    if in_file is not None:
        write(soong_env.config_file, f"defaults:\n  lease_hours: {in_file}\n")
    if in_env is not None:
        monkeypatch.setenv("SOONG_DEFAULTS_LEASE_HOURS", str(in_env))
    config = load_config(overrides={"defaults.lease_hours": override})
    assert config.get("defaults.lease_hours") == wins


def test_overrides_are_never_saved(soong_env: SoongEnv) -> None:
    write(soong_env.config_file, "defaults:\n  lease_hours: 5\n")
    before = soong_env.config_file.read_bytes()
    config = load_config(overrides={"defaults.lease_hours": 7})
    assert config.source_of("defaults.lease_hours").kind == "override"
    assert soong_env.config_file.read_bytes() == before
    assert load_config().get("defaults.lease_hours") == 5


def test_unknown_or_bad_override_is_an_error() -> None:
    with pytest.raises(ConfigError, match=r"unknown key defaults\.lease_hour \(did you mean "
                                          r"defaults\.lease_hours\?\)"):
        load_config(overrides={"defaults.lease_hour": 5})
    with pytest.raises(ConfigError, match="from the command line"):
        load_config(overrides={"defaults.lease_hours": "lots"})


def test_make_config_needs_no_file_or_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SOONG_DEFAULTS_LEASE_HOURS", "6")
    config = make_config({"defaults.hard_timeout_hours": 12})
    assert (config.get("defaults.lease_hours"), config.get("defaults.hard_timeout_hours")) == (4, 12)


# -- one line per problem -----------------------------------------------------------------

INVALID_FILES = [
    ("bad type", "defaults:\n  lease_hours: six\n",
     'defaults.lease_hours: "six" is not a number (in {path})'),
    ("bool is no number", "defaults:\n  lease_hours: true\n",
     "defaults.lease_hours: true is not a number (in {path})"),
    ("below min", "defaults:\n  lease_hours: 0.5\n",
     "defaults.lease_hours: 0.5 is below the minimum 1 (in {path})"),
    ("above max", "agent:\n  port: 70000\n",
     "agent.port: 70000 is above the maximum 65535 (in {path})"),
    ("negative budget", "budget:\n  max_dollars: -1\n",
     "budget.max_dollars: -1 is below the minimum 0 (in {path})"),
    ("unknown key", "budget:\n  max_dolars: 50\n",
     "unknown key budget.max_dolars (did you mean budget.max_dollars?) (in {path})"),
    ("key in the wrong section", "budget:\n  lease_hours: 5\n",
     "unknown key budget.lease_hours (did you mean defaults.lease_hours?) (in {path})"),
    ("unknown section", "defualts:\n  lease_hours: 5\n",
     "unknown section defualts (did you mean defaults?) (in {path})"),
    ("key at top level", "lease_hours: 5\n",
     "unknown section lease_hours (did you mean defaults.lease_hours?) (in {path})"),
    ("bad period", "budget:\n  period: yearly\n",
     'budget.period: "yearly" is not one of day, week, month, none (in {path})'),
    ("lease past hard timeout", "defaults:\n  lease_hours: 10\n",
     "defaults.lease_hours: 10 is more than defaults.hard_timeout_hours (8); a lease cannot "
     "outlast the hard timeout (in {path})"),
    ("section not a mapping", "defaults: 5\n", "defaults: 5 is not a mapping (in {path})"),
    ("not a number", "budget:\n  max_dollars: .nan\n",
     "budget.max_dollars: NaN is not a finite number (in {path})"),
    ("infinite lease", "defaults:\n  idle_timeout_minutes: .inf\n",
     "defaults.idle_timeout_minutes: Infinity is not a finite number (in {path})"),
    ("list item type", "defaults:\n  fallback_regions: [us-east-1, 3]\n",
     "defaults.fallback_regions[1]: 3 is not a string (in {path})"),
    ("list given a string", "defaults:\n  fallback_regions: us-east-1\n",
     'defaults.fallback_regions: "us-east-1" is not a list (in {path})'),
    ("malformed YAML", "defaults:\n  lease_hours: 4\n gpu: x\n",
     "config file {path}: malformed YAML at line 3, column 2: expected <block end>, but found "
     "'<block mapping start>'"),
    ("unclosed bracket", "defaults: {lease_hours: 4\n",
     "config file {path}: malformed YAML at line 2, column 1: expected ',' or '}', but got "
     "'<stream end>'"),
    ("duplicate key", "defaults:\n  gpu: a\n  gpu: b\n",
     "config file {path}: malformed YAML at line 3, column 3: duplicate key 'gpu' (first set "
     "at line 2)"),
    ("top level is a list", "- defaults\n- budget\n",
     "config file {path}: the top level must be a mapping of sections (like `defaults:`), "
     "not a list"),
    ("top level is a string", "just some words\n",
     "config file {path}: the top level must be a mapping of sections (like `defaults:`), "
     "not a string"),
]


@pytest.mark.parametrize(("text", "expected"), [case[1:] for case in INVALID_FILES],
                         ids=[case[0] for case in INVALID_FILES])
def test_each_invalid_file_gives_exactly_one_line(soong_env: SoongEnv, plugins: Plugins,
                                                  text: str, expected: str) -> None:
    path = write(soong_env.config_file, text)
    with pytest.raises(ConfigError) as caught:
        load_config(plugins=plugins)
    assert problems(caught.value) == [expected.replace("{path}", str(path))]
    assert caught.value.exit_code == 2


@pytest.mark.parametrize(("content", "expected"), [
    (b"\xff\xfe\x00garbage\x80", "config file {path} is not UTF-8 text (byte 0xff at offset 0)"),
    (b"defaults:\n  gpu: \x00\x01\n",
     "config file {path}: line 2, column 8: not text (character #x0000 is not allowed in YAML)"),
])
def test_binary_garbage_is_one_line(soong_env: SoongEnv, content: bytes, expected: str) -> None:
    path = write(soong_env.config_file, content)
    with pytest.raises(ConfigError) as caught:
        load_config()
    assert problems(caught.value) == [expected.replace("{path}", str(path))]


def test_a_directory_in_place_of_the_file(soong_env: SoongEnv) -> None:
    soong_env.config_file.mkdir(parents=True)
    with pytest.raises(ConfigError) as caught:
        load_config()
    assert problems(caught.value) == [
        f"config file {soong_env.config_file} is a directory, not a file"]


def test_every_problem_is_reported_once_in_one_line(soong_env: SoongEnv, plugins: Plugins,
                                                    monkeypatch: pytest.MonkeyPatch) -> None:
    write(soong_env.config_file, "defaults:\n  lease_hours: 0\n  gpu: 3\n"
                                 "budget:\n  period: yearly\n  max_dolars: 1\n")
    monkeypatch.setenv("SOONG_AGENT_PORT", "x")
    with pytest.raises(ConfigError) as caught:
        load_config(plugins=plugins)
    lines = problems(caught.value)
    assert len(lines) == 5
    assert all("\n" not in line for line in lines)
    for fragment in ("agent.port", "budget.max_dolars", "budget.period", "defaults.gpu",
                     "defaults.lease_hours"):
        assert sum(fragment in line for line in lines) == 1


def test_missing_explicit_file_is_an_error(tmp_path: Path) -> None:
    missing = tmp_path / "nope.yaml"
    with pytest.raises(ConfigError) as caught:
        load_config(missing)
    assert caught.value.message == f"config file {missing} does not exist"
    assert any(f"`soong --config {missing} configure`" in hint for hint in caught.value.hints)


def test_explicit_file_is_read(tmp_path: Path) -> None:
    path = write(tmp_path / "mine.yaml", "budget:\n  period: day\n")
    config = load_config(path)
    assert (config.path, config.get("budget.period")) == (path, "day")


def test_secrets_never_appear_in_problems(soong_env: SoongEnv, plugins: Plugins) -> None:
    secret = "lambda_secret_value_0123456789"
    write(soong_env.config_file, f"lambda:\n  api_key: [{secret}]\n")
    with pytest.raises(ConfigError) as caught:
        load_config(plugins=plugins)
    assert problems(caught.value) == [
        f'lambda.api_key: "********" is not a string (in {soong_env.config_file})']


# -- permissions -------------------------------------------------------------------------


def test_a_file_others_can_read_gets_a_warning(soong_env: SoongEnv,
                                               caplog: pytest.LogCaptureFixture) -> None:
    write(soong_env.config_file, "budget:\n  period: day\n", mode=0o644)
    with caplog.at_level(logging.WARNING, logger="soong.config"):
        load_config()
    assert [r.getMessage() for r in caplog.records] == [
        f"config file {soong_env.config_file} has mode 0644: others may read its secrets; "
        f"run `chmod 600 {soong_env.config_file}`"]


def test_a_private_file_gets_no_warning(soong_env: SoongEnv,
                                        caplog: pytest.LogCaptureFixture) -> None:
    write(soong_env.config_file, "budget:\n  period: day\n", mode=0o600)
    with caplog.at_level(logging.WARNING, logger="soong.config"):
        load_config()
    assert caplog.records == []


# -- plugins ---------------------------------------------------------------------------


def test_builtin_plugins_contribute_their_sections(plugins: Plugins) -> None:
    schema = build_schema(plugins)
    assert {schema.owner(s) for s in ("lambda", "ssh", "agent")} == {
        "lambda_labs", "fabric_tunnel", "lease_agent"}
    assert schema.sections[:2] == ["defaults", "budget"]
    assert schema.is_secret("lambda.api_key") and schema.is_secret("agent.api_key")
    assert not schema.is_secret("lambda.api_url")


def test_core_schema_alone_without_plugins() -> None:
    assert build_schema().sections == ["defaults", "budget", "clock"]


def test_a_plugin_adds_a_section(register_plugin: Callable[..., str], plugins: Plugins,
                                 soong_env: SoongEnv, monkeypatch: pytest.MonkeyPatch) -> None:
    register_plugin(schema_plugin({"night_watch": {
        "quiet_hour": {"type": "integer", "min": 0, "max": 23, "default": 19},
        "notify_url": {"type": "string", "nullable": True, "default": None},
    }}), "curfew")
    assert load_config(plugins=plugins).get("night_watch.quiet_hour") == 19
    monkeypatch.setenv("SOONG_NIGHT_WATCH_QUIET_HOUR", "21")  # underscores in both parts
    config = load_config(plugins=plugins)
    assert config.get("night_watch.quiet_hour") == 21
    assert config.schema.owner("night_watch") == "curfew"
    path = write(soong_env.config_file, "night_watch:\n  quiet_hour: 30\n")
    monkeypatch.delenv("SOONG_NIGHT_WATCH_QUIET_HOUR")
    with pytest.raises(ConfigError) as caught:
        load_config(plugins=plugins)
    assert problems(caught.value) == [
        f"night_watch.quiet_hour: 30 is above the maximum 23 (in {path})"]


def test_a_plugin_cannot_take_a_core_section(register_plugin: Callable[..., str],
                                             plugins: Plugins) -> None:
    register_plugin(schema_plugin({"budget": {"x": {"type": "integer"}}}), "greedy")
    with pytest.raises(PluginError, match=r"plugin 'greedy' contributes config section "
                                          r"'budget', which is a core section"):
        load_config(plugins=plugins)


def test_two_plugins_cannot_share_a_section(register_plugin: Callable[..., str],
                                            plugins: Plugins) -> None:
    register_plugin(schema_plugin({"ssh": {"x": {"type": "integer"}}}), "copycat")
    with pytest.raises(PluginError, match="'copycat'"):
        load_config(plugins=plugins)


def test_an_invalid_plugin_schema_names_the_plugin(register_plugin: Callable[..., str],
                                                   plugins: Plugins) -> None:
    register_plugin(schema_plugin({"broken": {"x": {"type": "integr"}}}), "sloppy")
    with pytest.raises(PluginError, match=r"plugin 'sloppy': config section 'broken' is not "
                                          r"a valid cerberus schema"):
        load_config(plugins=plugins)


def test_sections_of_plugins_not_loaded_are_kept_with_a_warning(
        soong_env: SoongEnv, caplog: pytest.LogCaptureFixture) -> None:
    write(soong_env.config_file, "curfew:\n  hour: 19\nbudget:\n  period: day\n")
    with pytest.raises(ConfigError, match="unknown section curfew"):
        load_config()
    with caplog.at_level(logging.WARNING, logger="soong.config"):
        config = load_config(partial_plugins=True)
    assert "curfew" not in config and config.get("budget.period") == "day"
    assert "unknown to the loaded plugins" in caplog.text


# -- the result --------------------------------------------------------------------------


def test_config_is_read_only(plugins: Plugins) -> None:
    config = load_config(plugins=plugins)
    with pytest.raises(TypeError):
        config["defaults"]["lease_hours"] = 1  # type: ignore[index]
    assert isinstance(config["defaults"]["fallback_regions"], tuple)
    plain = config.to_dict()
    plain["defaults"]["lease_hours"] = 99
    assert config.get("defaults.lease_hours") == 4
    assert plain["defaults"]["fallback_regions"] == []


def test_get_reads_sections_and_keys(plugins: Plugins) -> None:
    config = load_config(plugins=plugins)
    assert config.get("budget")["period"] == "month"
    assert config.get("nope.key", "fallback") == "fallback"
    assert isinstance(config, Config) and set(config) >= {"defaults", "budget", "lambda"}
    with pytest.raises(ConfigError, match="unknown key"):
        config.source_of("defaults.nope")


@pytest.mark.parametrize(("secret", "shown"), [
    ("secret_0123456789abcdefWXYZ", "****WXYZ"),
    ("short", "********"),
    (12345, "********"),
    (None, None),
])
def test_mask_secret(secret: Any, shown: Any) -> None:
    assert mask_secret(secret) == shown


def test_repr_masks_secrets(monkeypatch: pytest.MonkeyPatch, plugins: Plugins) -> None:
    monkeypatch.setenv("LAMBDA_API_KEY", "secret_do_not_print_me_0123")
    config = load_config(plugins=plugins)
    assert "do_not_print" not in repr(config)
    assert "do_not_print" not in str(config.to_dict(mask_secrets=True))


# -- parsing text ------------------------------------------------------------------------


@pytest.mark.parametrize(("text", "rules", "value"), [
    ("6", {"type": "number"}, 6),
    ("6.5", {"type": "number"}, 6.5),
    ("7", {"type": "integer"}, 7),
    ("yes", {"type": "boolean"}, True),
    ("Off", {"type": "boolean"}, False),
    ("a, b ,c", {"type": "list", "schema": {"type": "string"}}, ["a", "b", "c"]),
    ("1,2", {"type": "list", "schema": {"type": "integer"}}, [1, 2]),
    ("", {"type": "list"}, []),
    ("null", {"type": "string", "nullable": True}, None),
    ("null", {"type": "string"}, "null"),
    ("x", {"type": ["integer", "string"]}, "x"),
    ("{a: 1}", {"type": "dict"}, {"a": 1}),
])
def test_parse_text_by_type(text: str, rules: dict[str, Any], value: Any) -> None:
    assert parse_text(text, rules) == value


@pytest.mark.parametrize(("text", "rules", "message"), [
    ("x", {"type": "integer"}, "is not an integer"),
    ("inf", {"type": "number"}, "is not a number"),
    ("maybe", {"type": "boolean"}, "is not true or false"),
    ("1,x", {"type": "list", "schema": {"type": "integer"}}, "is not a list"),
])
def test_parse_text_refuses(text: str, rules: dict[str, Any], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        parse_text(text, rules)


@given(st.integers(min_value=1, max_value=10**6))
def test_any_integer_lease_round_trips_through_text(hours: int) -> None:
    config = make_config({"defaults.lease_hours": str(hours),
                          "defaults.hard_timeout_hours": str(hours)})
    assert config.get("defaults.lease_hours") == hours


@given(st.one_of(st.text(max_size=12),
                 st.sampled_from(["4", "4.0", " 2.5 ", "1e3", "-0", "nan", "inf", "1_000",
                                  "0x10"])))
def test_config_values_and_flags_read_numbers_alike(text: str) -> None:
    """A number key reads text as every numeric flag does (soong_core.numbers): one parser."""
    from soong_core.numbers import parse_number

    try:
        flag: Any = parse_number(text, "--x")
    except ValueError:
        flag = ValueError
    try:
        value: Any = parse_text(text, {"type": "number"})
    except ValueError:
        value = ValueError
    assert (value, type(value)) == (flag, type(flag))


# -- the package's parts -----------------------------------------------------------------


def test_one_pipeline_layers_records_sources_and_collects_problems() -> None:
    from soong_core.config import OVERRIDE, Layer, Source, resolve

    schema = build_schema()
    file = Source("file", "/etc/x.yaml")
    env = Layer({"defaults.lease_hours": (3, Source("env", "SOONG_DEFAULTS_LEASE_HOURS"))},
                ["first problem"])
    flags = Layer({"defaults.lease_hours": (2, OVERRIDE), "budget.period": ("year", OVERRIDE)},
                  ["second problem"])
    resolved = resolve(schema, {"budget": {"max_dollars": 9}}, file, [env, flags])
    assert resolved.document["defaults"]["lease_hours"] == 2
    assert resolved.document["budget"]["max_dollars"] == 9
    assert resolved.sources["budget.max_dollars"] == file
    assert resolved.sources["defaults.lease_hours"] == OVERRIDE
    assert resolved.problems == [
        "first problem", "second problem",
        'budget.period: "year" is not one of day, week, month, none (from the command line)']
    with pytest.raises(ConfigError) as raised:
        resolved.config(path=Path("/etc/x.yaml"))
    assert problems(raised.value) == resolved.problems


def test_problems_come_from_a_cerberus_error_handler() -> None:
    from cerberus.errors import BasicErrorHandler

    from soong_core.config.messages import problem_handler

    schema = build_schema()
    handler = problem_handler(schema, lambda keys: f" (keys {', '.join(keys)})")
    assert isinstance(handler, BasicErrorHandler)
    validator = schema.validator(error_handler=handler)
    assert not validator.validate({"defaults": {"lease_hours": 0, "gpu": 5}, "bugdet": {}})
    assert validator.errors == [
        "unknown section bugdet (did you mean budget?) (keys bugdet)",
        "defaults.gpu: 5 is not a string (keys defaults.gpu)",
        "defaults.lease_hours: 0 is below the minimum 1 (keys defaults.lease_hours)",
    ]


def test_the_config_package_reads_no_private_cerberus_state() -> None:
    package = Path(__file__).resolve().parent.parent / "soong_core" / "config"
    modules = sorted(package.glob("*.py"))
    assert len(modules) > 1, "soong_core/config is a package of modules"
    for module in modules:
        assert "._errors" not in module.read_text(), f"{module.name} reads validator._errors"


def test_budget_periods_are_the_schemas() -> None:
    from soong_core import budget
    from soong_core.config import BUDGET_PERIODS

    assert budget.PERIODS is BUDGET_PERIODS
    assert CORE_SCHEMA["budget"]["period"]["allowed"] == list(BUDGET_PERIODS)
    assert budget.DEFAULT_PERIOD == CORE_SCHEMA["budget"]["period"]["default"]


@pytest.mark.parametrize("section, key", [({"period": "fortnight"}, "budget.period"),
                                          ({"max_dollars": "lots"}, "budget.max_dollars"),
                                          ({"max_dollars": -1}, "budget.max_dollars"),
                                          ({"max_dollars": float("nan")}, "budget.max_dollars"),
                                          ({"cap": 3}, "budget.cap")])
def test_budget_settings_refuse_a_plain_mapping_the_schema_refuses(section: dict[str, Any],
                                                                   key: str) -> None:
    """An embedding program's (or the agent's) plain mapping is checked by the budget
    module itself, without the config machinery, and refused where the schema is."""
    from soong_core.budget import budget_settings

    with pytest.raises(ConfigError) as schema_says:
        make_config({f"budget.{k}": value for k, value in section.items()})
    with pytest.raises(ConfigError) as budget_says:
        budget_settings({"budget": section})
    assert key in str(schema_says.value) and key in budget_says.value.message


def test_budget_settings_read_a_validated_config_as_it_is(
        monkeypatch: pytest.MonkeyPatch) -> None:
    from soong_core import budget
    from soong_core.budget import BudgetSettings, budget_settings

    config = make_config({"budget.max_dollars": "12.5", "budget.period": "week"})

    def checked_again(*args: Any, **kwargs: Any) -> Any:
        raise AssertionError("checked twice")

    monkeypatch.setattr(budget, "Decimal", checked_again)  # only the plain-mapping check uses it
    assert budget_settings(config) == BudgetSettings(Decimal("12.5"), "week")
    with pytest.raises(AssertionError, match="checked twice"):
        budget_settings({"budget": {"max_dollars": 12.5}})


# -- writing -------------------------------------------------------------------------------


def test_set_value_creates_a_private_file_in_a_private_dir(soong_env: SoongEnv) -> None:
    config = set_value(None, "defaults.lease_hours", "6")
    path = soong_env.config_file
    assert config.get("defaults.lease_hours") == 6 and config.path == path
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert stat.S_IMODE(path.parent.stat().st_mode) == 0o700
    assert load_config().get("defaults.lease_hours") == 6
    assert os.listdir(path.parent) == ["config.yaml"]  # no temporary file left behind


def test_writing_keeps_every_other_key(soong_env: SoongEnv, plugins: Plugins) -> None:
    write(soong_env.config_file, "# my notes\ndefaults:\n  gpu: gpu_1x_h100\n  region: us-east-1\n"
                                 "budget:\n  max_dollars: 40\nlambda:\n  api_key: abc\n",
          mode=0o644)
    set_value(None, "defaults.lease_hours", "5", plugins=plugins)
    config = load_config(plugins=plugins)
    assert (config.get("defaults.gpu"), config.get("defaults.region")) == ("gpu_1x_h100",
                                                                          "us-east-1")
    assert (config.get("budget.max_dollars"), config.get("lambda.api_key")) == (40, "abc")
    assert config.get("defaults.lease_hours") == 5
    assert stat.S_IMODE(soong_env.config_file.stat().st_mode) == 0o600
    assert "idle_timeout_minutes" not in soong_env.config_file.read_text()  # no defaults dumped


def test_set_value_refuses_bad_values_and_leaves_the_file_alone(soong_env: SoongEnv,
                                                                plugins: Plugins) -> None:
    path = write(soong_env.config_file, "defaults:\n  lease_hours: 6\n")
    before = path.read_bytes()
    cases = [("defaults.lease_hours", "0.5", "is below the minimum 1"),
             ("defaults.lease_hours", "six", 'defaults.lease_hours: "six" is not a number'),
             ("defaults.hard_timeout_hours", "5", "a lease cannot outlast the hard timeout"),
             ("budget.period", "yearly", "is not one of"),
             ("budget.max_dolars", "5", "did you mean budget.max_dollars?")]
    for key, text, fragment in cases:
        with pytest.raises(ConfigError) as caught:
            set_value(None, key, text, plugins=plugins)
        assert fragment in caught.value.message
        assert path.read_bytes() == before


def test_set_value_refuses_to_overwrite_a_broken_file(soong_env: SoongEnv) -> None:
    path = write(soong_env.config_file, "defaults: [unclosed\n")
    with pytest.raises(ConfigError, match="malformed YAML"):
        set_value(None, "defaults.lease_hours", "5")
    assert path.read_text() == "defaults: [unclosed\n"


def test_set_value_can_unset_a_nullable_key(soong_env: SoongEnv) -> None:
    set_value(None, "budget.max_dollars", "25")
    assert load_config().get("budget.max_dollars") == 25
    set_value(None, "budget.max_dollars", "null")
    assert load_config().get("budget.max_dollars") is None


def test_save_values_writes_through_a_symlink(tmp_path: Path) -> None:
    real = write(tmp_path / "dotfiles" / "soong.yaml", "budget:\n  period: day\n")
    link = tmp_path / "link.yaml"
    link.symlink_to(real)
    save_values(link, {"defaults.fallback_regions": ["us-east-1"]})
    assert link.is_symlink()
    config = load_config(link)
    assert (config.get("budget.period"), config.get("defaults.fallback_regions")) == (
        "day", ("us-east-1",))


# -- import cost -------------------------------------------------------------------------


def test_importing_config_imports_neither_yaml_nor_cerberus() -> None:
    code = ("import sys, soong_core.config, soong_plugins.lambda_labs, "
            "soong_plugins.fabric_tunnel, soong_plugins.lease_agent; "
            "print(sorted(m for m in sys.modules if m.split('.')[0] in ('yaml', 'cerberus')))")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          check=True, timeout=60)
    assert done.stdout.strip() == "[]"
