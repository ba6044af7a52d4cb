"""Core settings do not live in plugin sections, and profiles tolerate missing plugins.

``ssh.key_name`` (a key of fabric_tunnel's section) became the core's
``defaults.ssh_key_name``: launch needs it with or without that plugin. Files that still
hold the old key load (with a warning) and are renamed when soong writes them. A profile
with a section of a plugin that is not loaded warns, as the main file does.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any, Callable

import pytest
import yaml

from soong_core.config import (
    build_schema,
    load_config,
    profile_path,
    save_values,
    set_value,
    write_config_file,
)
from soong_core.errors import ConfigError
from soong_core.plugins import Plugins, make_plugins
from soong_core.testing import CliResult, SoongEnv, run_application, run_soong

RENAMED = "config key ssh.key_name is now defaults.ssh_key_name: use that name"


def without(*names: str) -> Plugins:
    return make_plugins(entry_points=False, disabled=names)


def warnings(caplog: pytest.LogCaptureFixture) -> list[str]:
    return [r.getMessage() for r in caplog.records
            if r.name == "soong.config" and r.levelno == logging.WARNING]


def read(path: Path) -> dict[str, Any]:
    return yaml.safe_load(path.read_text())


def cli(plugins: Plugins) -> Callable[[str], CliResult]:
    from soong_core.cli.application import SoongApplication

    return lambda args: run_application(SoongApplication(plugins=plugins), args)


# -- the old key in the main file --------------------------------------------------------


@pytest.mark.parametrize("disabled", [(), ("fabric_tunnel",)], ids=["all", "no-fabric_tunnel"])
def test_old_key_loads_as_the_new_one_with_one_warning(soong_env: SoongEnv, caplog: Any,
                                                       disabled: tuple[str, ...]) -> None:
    write_config_file(soong_env.config_file, {"ssh": {"key_name": "mykey"}})
    caplog.set_level(logging.WARNING, logger="soong")
    config = load_config(plugins=without(*disabled))
    assert config["defaults"]["ssh_key_name"] == "mykey"
    assert str(config.source_of("defaults.ssh_key_name")) == str(soong_env.config_file)
    [warning] = warnings(caplog)
    assert str(soong_env.config_file) in warning and "defaults.ssh_key_name" in warning
    assert "ssh.key_name" in warning


def test_the_new_key_wins_and_the_warning_says_the_old_is_ignored(soong_env: SoongEnv,
                                                                 plugins: Plugins,
                                                                 caplog: Any) -> None:
    write_config_file(soong_env.config_file, {"defaults": {"ssh_key_name": "new"},
                                              "ssh": {"key_name": "old", "user": "me"}})
    caplog.set_level(logging.WARNING, logger="soong")
    config = load_config(plugins=plugins)
    assert config["defaults"]["ssh_key_name"] == "new" and config["ssh"]["user"] == "me"
    [warning] = warnings(caplog)
    assert "ssh.key_name" in warning and "ignored" in warning
    assert str(soong_env.config_file) in warning


def test_the_default_key_name_is_a_core_setting(plugins: Plugins) -> None:
    assert load_config(plugins=without("fabric_tunnel"))["defaults"]["ssh_key_name"] == "soong"
    schema = build_schema(plugins)
    assert schema.owner("defaults") == "core" and "ssh.key_name" not in schema.keys()
    assert {"ssh.key_path", "ssh.user"} <= set(schema.keys())


def test_the_old_environment_variable_is_read_as_the_new_key(soong_env: SoongEnv,
                                                            plugins: Plugins,
                                                            caplog: Any) -> None:
    caplog.set_level(logging.WARNING, logger="soong")
    environ = {**soong_env.environ(), "SOONG_SSH_KEY_NAME": "envkey"}
    config = load_config(plugins=plugins, environ=environ)
    assert config["defaults"]["ssh_key_name"] == "envkey"
    assert config.source_of("defaults.ssh_key_name").name == "SOONG_SSH_KEY_NAME"
    assert any("$SOONG_DEFAULTS_SSH_KEY_NAME" in w for w in warnings(caplog))
    newer = load_config(plugins=plugins,
                        environ={**environ, "SOONG_DEFAULTS_SSH_KEY_NAME": "newer"})
    assert newer["defaults"]["ssh_key_name"] == "newer"


def test_naming_the_old_key_is_one_line_saying_where_it_went(soong_env: SoongEnv,
                                                             plugins: Plugins) -> None:
    for manager in (plugins, without("fabric_tunnel")):
        with pytest.raises(ConfigError) as error:
            build_schema(manager).rules("ssh.key_name")
        assert error.value.message == RENAMED and not error.value.hints
    write_config_file(soong_env.config_file, {"defaults": {"lease_hours": 2}})
    before = soong_env.config_file.read_text()
    with pytest.raises(ConfigError, match="is now defaults.ssh_key_name"):
        set_value(None, "ssh.key_name", "x", plugins=plugins)
    result = cli(plugins)("config set ssh.key_name laptop")
    assert result.exit_code == 2
    assert result.stderr.strip().splitlines() == [f"error: {RENAMED}"]
    assert soong_env.config_file.read_text() == before


# -- writing renames the old key ------------------------------------------------------------


def test_config_set_renames_the_old_key_in_the_file(soong_env: SoongEnv, plugins: Plugins
                                                    ) -> None:
    write_config_file(soong_env.config_file, {"ssh": {"key_name": "mykey", "user": "me"}})
    result = cli(plugins)("config set defaults.lease_hours 5")
    assert result.exit_code == 0, result.stderr
    [line] = result.stderr.strip().splitlines()
    assert line.startswith("warning: config key ssh.key_name in ")
    assert "defaults.ssh_key_name" in line and "renamed in the file" in line
    assert read(soong_env.config_file) == {
        "ssh": {"user": "me"}, "defaults": {"ssh_key_name": "mykey", "lease_hours": 5}}
    again = cli(plugins)("config set defaults.lease_hours 6")
    assert again.exit_code == 0 and again.stderr == ""


@pytest.mark.parametrize("disabled", [(), ("fabric_tunnel",)], ids=["all", "no-fabric_tunnel"])
def test_save_values_renames_with_or_without_the_tunnel_plugin(
        soong_env: SoongEnv, caplog: Any, disabled: tuple[str, ...]) -> None:
    write_config_file(soong_env.config_file, {"ssh": {"key_name": "mykey"}})
    caplog.set_level(logging.WARNING, logger="soong")
    saved = save_values(None, {"budget.max_dollars": 20}, plugins=without(*disabled))
    assert saved["defaults"]["ssh_key_name"] == "mykey"
    assert read(soong_env.config_file) == {"defaults": {"ssh_key_name": "mykey"},
                                           "budget": {"max_dollars": 20}}
    [warning] = warnings(caplog)
    assert "renamed in the file" in warning and str(soong_env.config_file) in warning


def test_saving_drops_the_old_key_when_the_new_one_is_set(soong_env: SoongEnv,
                                                          plugins: Plugins, caplog: Any) -> None:
    write_config_file(soong_env.config_file, {"defaults": {"ssh_key_name": "new"},
                                              "ssh": {"key_name": "old"}})
    caplog.set_level(logging.WARNING, logger="soong")
    set_value(None, "defaults.gpu", "gpu_1x_a10", plugins=plugins)
    assert read(soong_env.config_file) == {"defaults": {"ssh_key_name": "new",
                                                        "gpu": "gpu_1x_a10"}}
    [warning] = warnings(caplog)
    assert "removed from the file" in warning


def test_a_failed_save_renames_nothing(soong_env: SoongEnv, plugins: Plugins,
                                       caplog: Any) -> None:
    write_config_file(soong_env.config_file, {"ssh": {"key_name": "mykey"}})
    before = soong_env.config_file.read_text()
    caplog.set_level(logging.WARNING, logger="soong")
    with pytest.raises(ConfigError, match="defaults.lease_hours") as error:
        save_values(None, {"defaults.lease_hours": 0}, plugins=plugins)
    assert not error.value.hints  # the only problem: the old key is no longer one
    assert soong_env.config_file.read_text() == before
    assert warnings(caplog) == []


# -- profiles ----------------------------------------------------------------------------


def test_a_profile_with_the_old_key_loads_it_as_the_new_one(soong_env: SoongEnv,
                                                            caplog: Any) -> None:
    write_config_file(soong_env.config_file, {"defaults": {"ssh_key_name": "main"}})
    write_config_file(profile_path("sim"), {"ssh": {"key_name": "simkey"}})
    caplog.set_level(logging.WARNING, logger="soong")
    for disabled in [(), ("fabric_tunnel",)]:
        config = load_config(plugins=without(*disabled), profile="sim")
        assert config["defaults"]["ssh_key_name"] == "simkey"
        assert str(config.source_of("defaults.ssh_key_name")) == str(profile_path("sim"))
    [warning] = warnings(caplog)  # said once per process, however often it is read
    assert str(profile_path("sim")) in warning and "defaults.ssh_key_name" in warning


def test_a_profile_section_of_a_disabled_plugin_is_one_warning(soong_env: SoongEnv,
                                                               caplog: Any) -> None:
    write_config_file(profile_path("sim"), {
        "lambda": {"api_url": "http://127.0.0.1:9/api/v1", "api_key": "sim-key-0123456789abc"},
        "defaults": {"gpu": "gpu_1x_a10"}})
    caplog.set_level(logging.WARNING, logger="soong")
    config = load_config(plugins=without("lambda_labs"), profile="sim")
    assert config["defaults"]["gpu"] == "gpu_1x_a10" and "lambda" not in config
    [warning] = warnings(caplog)
    assert "section lambda" in warning and str(profile_path("sim")) in warning
    assert "ignored" in warning
    assert read(profile_path("sim"))["lambda"]["api_url"] == "http://127.0.0.1:9/api/v1"


def test_no_plugins_flag_also_tolerates_unknown_profile_sections(soong_env: SoongEnv,
                                                                 plugins: Plugins,
                                                                 caplog: Any) -> None:
    write_config_file(profile_path("work"), {"curfew": {"hour": 20}})
    caplog.set_level(logging.WARNING, logger="soong")
    load_config(plugins=plugins, profile="work", partial_plugins=True)
    assert any("section curfew" in w for w in warnings(caplog))
    with pytest.raises(ConfigError, match="unknown key curfew.hour: no section curfew"):
        load_config(plugins=plugins, profile="work")


@pytest.mark.parametrize("content, message", [
    ({"defaults": {"gppu": "x"}}, "unknown key defaults.gppu"),
    ({"ssh": {"user": "me", "port": 2}}, "unknown key ssh.port"),
])
def test_unknown_keys_of_known_sections_stay_errors(soong_env: SoongEnv, content: Any,
                                                    message: str) -> None:
    write_config_file(profile_path("sim"), content)
    with pytest.raises(ConfigError, match=message):
        load_config(plugins=without("lambda_labs"), profile="sim")


def test_cli_status_with_lambda_disabled_is_not_stopped_by_the_profile(soong_env: SoongEnv
                                                                       ) -> None:
    write_config_file(profile_path("sim"), {
        "lambda": {"api_url": "http://127.0.0.1:9/api/v1", "api_key": "sim-key-0123456789abc"}})
    result = cli(without("lambda_labs"))("--sim status")
    assert result.exit_code == 2
    lines = result.stderr.strip().splitlines()
    assert lines[0].startswith("warning: config section lambda in ")
    errors = [line for line in lines if line.startswith("error:")]
    assert errors == ["error: unknown provider 'lambda' (known: none)"]


# -- the whole thing, as a user runs it -------------------------------------------------------


@pytest.mark.slow
def test_start_without_the_tunnel_plugin_launches_with_the_registered_key(
        soong_env: SoongEnv) -> None:
    import json

    from soong_plugins.lambda_labs.simulator.client import SimClient

    def soong(*args: str, disabled: str | None = None) -> CliResult:
        extra = {"SOONG_DISABLE_PLUGINS": disabled} if disabled else None
        return run_soong(*args, env=soong_env, extra_env=extra, timeout=120)

    up = soong("sim", "up", "--json", "--speed", "100", "--no-rate-limit")
    try:
        assert up.exit_code == 0, up.stderr
        sim = json.loads(up.stdout)
        configured = soong("--sim", "configure", "-n", "--gpu", "gpu_1x_a10",
                           "--key-name", "laptop")
        assert configured.exit_code == 0, configured.stderr
        assert "registered SSH key laptop" in configured.stdout
        profile = read(profile_path("sim"))
        assert profile["defaults"]["ssh_key_name"] == "laptop"
        assert "key_name" not in profile.get("ssh", {})

        started = soong("--sim", "start", "-y", "--no-wait", disabled="fabric_tunnel")
        assert started.exit_code == 0, started.stderr
        instances = SimClient(sim["url"], sim["api_key"]).request("GET", "/api/v1/instances").data
        assert [i["ssh_key_names"] for i in instances] == [["laptop"]]
        assert instances[0]["instance_type"]["name"] == "gpu_1x_a10"

        status = soong("--sim", "status", disabled="lambda_labs")
        lines = status.stderr.strip().splitlines()
        assert any(line.startswith("warning: config section lambda in ") for line in lines)
        errors = [line for line in lines if line.startswith("error:")]
        assert status.exit_code == 2 and errors == [
            "error: unknown provider 'lambda' (known: none)"], status.stderr
    finally:
        down = soong("sim", "down")
    assert down.exit_code == 0, down.stderr
