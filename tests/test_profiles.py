"""Config profiles: `--profile NAME` and `--sim` layer a small YAML file over the config."""

from __future__ import annotations

from typing import Any

import pytest

from soong_core.config import load_config, profile_path, write_config_file
from soong_core.errors import ConfigError

SIM = {"lambda": {"api_url": "http://127.0.0.1:9999/api/v1", "api_key": "sim-secret-key-0123456789"}}


def test_profile_sits_above_env_and_below_flags(soong_env: Any, plugins: Any) -> None:
    write_config_file(soong_env.config_file, {"lambda": {"api_url": "https://file.example/api/v1"}})
    write_config_file(profile_path("sim"), SIM)
    environ = {**soong_env.environ(), "LAMBDA_API_KEY": "real-key-abcdefghijklmnop"}
    real = load_config(plugins=plugins, environ=environ)
    assert real["lambda"]["api_key"] == "real-key-abcdefghijklmnop"
    sim = load_config(plugins=plugins, environ=environ, profile="sim")
    assert sim["lambda"]["api_key"] == SIM["lambda"]["api_key"]
    assert sim["lambda"]["api_url"] == SIM["lambda"]["api_url"]
    assert str(sim.source_of("lambda.api_url")) == str(profile_path("sim"))
    flagged = load_config(plugins=plugins, environ=environ, profile="sim",
                          overrides={"lambda.api_url": "http://127.0.0.1:1/api/v1"})
    assert flagged["lambda"]["api_url"] == "http://127.0.0.1:1/api/v1"


@pytest.mark.parametrize("name, content, message", [
    ("missing", None, "no profile 'missing'"),
    ("../etc", None, "invalid profile name '../etc'"),
    ("typo", {"lambda": {"api_ulr": "x"}}, "unknown key lambda.api_ulr"),
    ("flat", {"lambda": "x"}, "section lambda must be a mapping"),
])
def test_bad_profiles_are_one_line_errors(soong_env: Any, plugins: Any, name: str,
                                          content: Any, message: str) -> None:
    if content is not None:
        write_config_file(profile_path(name), content)
    with pytest.raises(ConfigError, match=message):
        load_config(plugins=plugins, profile=name)


def test_cli_sim_flag_uses_the_sim_profile(run_cli: Any, soong_env: Any) -> None:
    missing = run_cli("--sim config show")
    assert missing.exit_code == 2
    assert missing.stderr.splitlines()[0].startswith("error: no profile 'sim'")
    assert "soong sim up" in missing.stderr
    write_config_file(profile_path("sim"), SIM)
    shown = run_cli("--sim config show --json")
    assert shown.exit_code == 0 and "127.0.0.1:9999" in shown.stdout
    assert SIM["lambda"]["api_key"] not in shown.stdout
    clash = run_cli("--sim --profile other config show")
    assert clash.exit_code == 2 and "contradict" in clash.stderr
