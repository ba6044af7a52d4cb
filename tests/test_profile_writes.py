"""Profiles hold what differs: `config set/path/show` under `--sim`/`--profile` act on the
profile, a write there drops what only copies the main file, and every problem with a
profile's content names its file."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Callable

import pytest
import yaml

from soong_core.config import (
    load_config,
    profile_path,
    same_value,
    save_profile_values,
    write_config_file,
)
from soong_core.errors import ConfigError
from soong_core.plugins import Plugins
from soong_core.testing import CliResult, SoongEnv

RunCli = Callable[..., CliResult]

KEY = "soong-sim-secret-key-0123456789"
URL = "http://127.0.0.1:9999/api/v1"
CLOCK = {"mode": "accelerated", "factor": 60.0, "sim_anchor": 1000.0, "wall_anchor": 1000.0}
SIM = {"lambda": {"api_url": URL, "api_key": KEY}, "clock": CLOCK}


@pytest.fixture
def sim_profile(soong_env: SoongEnv) -> Path:
    """The sim profile as `soong sim up` writes it."""
    path = profile_path("sim")
    write_config_file(path, SIM)
    return path


def read(path: Path) -> Any:
    return yaml.safe_load(path.read_text())


def warnings(result: CliResult) -> list[str]:
    return [line for line in result.stderr.splitlines() if line.startswith("warning:")]


# -- config set ---------------------------------------------------------------------------


def test_set_under_sim_writes_the_profile_and_names_it(run_cli: RunCli, soong_env: SoongEnv,
                                                      plugins: Plugins,
                                                      sim_profile: Path) -> None:
    result = run_cli("--sim config set defaults.gpu gpu_1x_a100")
    assert result.exit_code == 0, result.stderr
    assert result.stdout == f"defaults.gpu = \"gpu_1x_a100\" (saved in {sim_profile})\n"
    assert read(sim_profile) == {**SIM, "defaults": {"gpu": "gpu_1x_a100"}}
    assert not soong_env.config_file.exists()
    assert load_config(plugins=plugins, profile="sim").get("defaults.gpu") == "gpu_1x_a100"
    assert load_config(plugins=plugins).get("defaults.gpu") is None  # other clouds never see it


def test_set_under_a_named_profile(run_cli: RunCli, soong_env: SoongEnv) -> None:
    write_config_file(profile_path("work"), {"budget": {"period": "week"}})
    result = run_cli("--profile work config set budget.max_dollars 40")
    assert result.exit_code == 0, result.stderr
    assert f"(saved in {profile_path('work')})" in result.stdout
    assert read(profile_path("work")) == {"budget": {"period": "week", "max_dollars": 40}}


def test_set_under_a_missing_profile_is_the_one_line_error(run_cli: RunCli,
                                                            soong_env: SoongEnv) -> None:
    result = run_cli("--sim config set defaults.gpu gpu_1x_a10")
    assert result.exit_code == 2
    assert result.stderr.splitlines()[0] == (f"error: no profile 'sim': {profile_path('sim')} "
                                             "does not exist")
    assert not profile_path("sim").exists() and not soong_env.config_file.exists()


def test_set_in_the_profile_is_validated_over_the_main_file(run_cli: RunCli,
                                                            soong_env: SoongEnv,
                                                            sim_profile: Path) -> None:
    write_config_file(soong_env.config_file, {"defaults": {"hard_timeout_hours": 24}})
    assert run_cli("--sim config set defaults.lease_hours 12").exit_code == 0
    before = sim_profile.read_text()
    result = run_cli("--sim config set defaults.lease_hours 30")
    assert result.exit_code == 2
    assert result.stderr.splitlines()[0].startswith(
        "error: defaults.lease_hours: 30 is more than defaults.hard_timeout_hours (24)")
    assert sim_profile.read_text() == before


def test_set_in_the_main_file_says_which_profile_outranks_it(run_cli: RunCli,
                                                             sim_profile: Path) -> None:
    write_config_file(sim_profile, {**SIM, "budget": {"max_dollars": 500}})
    result = run_cli("config set budget.max_dollars 20")
    assert result.exit_code == 0, result.stderr
    assert warnings(result) == ["warning: profile sim sets budget.max_dollars too, which wins "
                                "under --sim: add --sim to this command to change it there"]
    assert run_cli("config set budget.period week").stderr == ""


def test_set_under_sim_does_not_warn_about_the_environment(run_cli: RunCli, sim_profile: Path,
                                                           monkeypatch: pytest.MonkeyPatch
                                                           ) -> None:
    monkeypatch.setenv("SOONG_DEFAULTS_LEASE_HOURS", "6")
    result = run_cli("--sim config set defaults.lease_hours 2")  # the profile wins over it
    assert result.exit_code == 0 and result.stderr == ""
    assert run_cli("config set defaults.lease_hours 2").stderr.startswith(
        "warning: $SOONG_DEFAULTS_LEASE_HOURS is set")


# -- cleaning copies ------------------------------------------------------------------------


OLD_CONFIGURE = {  # what `soong --sim configure -n --gpu gpu_1x_a10` used to write
    "lambda": {"api_url": URL, "api_key": KEY, "filesystem_name": None},
    "clock": CLOCK,
    "defaults": {"provider": "lambda", "ssh_key_name": "soong", "gpu": "gpu_1x_a10",
                 "region": None, "fallback_regions": [], "model": None, "lease_hours": 4,
                 "idle_timeout_minutes": 30},
    "ssh": {"key_path": "~/.ssh/id_ed25519"},
    "budget": {"max_dollars": None, "period": "month"},
}


def test_a_write_to_the_profile_drops_copies_with_one_warning(run_cli: RunCli,
                                                              soong_env: SoongEnv,
                                                              sim_profile: Path) -> None:
    write_config_file(soong_env.config_file, {"defaults": {"lease_hours": 2},
                                              "budget": {"max_dollars": 1}})
    write_config_file(sim_profile, OLD_CONFIGURE)
    result = run_cli("--sim config set defaults.model llama")
    assert result.exit_code == 0, result.stderr
    assert read(sim_profile) == {
        "lambda": {"api_url": URL, "api_key": KEY},
        "clock": CLOCK,
        # gpu: not in the main file; lease 4 and no cap differ from it (2, $1): kept
        "defaults": {"gpu": "gpu_1x_a10", "lease_hours": 4, "model": "llama"},
        "budget": {"max_dollars": None}}
    assert warnings(result) == [
        "warning: removed lambda.filesystem_name, defaults.provider, defaults.ssh_key_name, "
        "defaults.region, defaults.fallback_regions, defaults.idle_timeout_minutes, "
        f"ssh.key_path, budget.period from {sim_profile}: the main file "
        f"({soong_env.config_file}) or the defaults give the same, and a copy in the profile "
        "would outrank a later change there"]
    again = run_cli("--sim config set defaults.model llama")
    assert again.exit_code == 0 and warnings(again) == []  # nothing left to clean


def test_the_clouds_keys_the_clock_and_the_key_set_are_never_dropped(
        run_cli: RunCli, soong_env: SoongEnv, plugins: Plugins, sim_profile: Path) -> None:
    default_url = load_config(plugins=plugins).get("lambda.api_url")
    clock = {"mode": "real", "factor": 1}
    write_config_file(soong_env.config_file, {"lambda": {"api_key": KEY},
                                              "defaults": {"region": "us-east-1"}})
    write_config_file(sim_profile, {"lambda": {"api_url": default_url, "api_key": KEY},
                                    "clock": clock})
    result = run_cli("--sim config set defaults.region us-east-1")  # as the main file has it
    assert result.exit_code == 0, result.stderr
    assert warnings(result) == []
    assert read(sim_profile) == {"lambda": {"api_url": default_url, "api_key": KEY},
                                 "clock": clock, "defaults": {"region": "us-east-1"}}


def test_a_broken_profile_can_be_fixed_and_loses_nothing(run_cli: RunCli,
                                                         sim_profile: Path) -> None:
    write_config_file(sim_profile, {**SIM, "defaults": {"lease_hours": 0, "provider": "lambda"}})
    assert run_cli("--sim status").exit_code == 2  # lease_hours 0 is below the minimum
    result = run_cli("--sim config set defaults.lease_hours 3")
    assert result.exit_code == 0, result.stderr
    # the provider could not be made from the broken profile: nothing was removed
    assert read(sim_profile)["defaults"] == {"lease_hours": 3, "provider": "lambda"}


def test_save_profile_values_without_a_provider_drops_nothing(soong_env: SoongEnv,
                                                              plugins: Plugins,
                                                              sim_profile: Path) -> None:
    write_config_file(sim_profile, OLD_CONFIGURE)
    config = save_profile_values("sim", {"defaults.model": "m"}, keep=None, plugins=plugins)
    assert read(sim_profile) == {**OLD_CONFIGURE,
                                 "defaults": {**OLD_CONFIGURE["defaults"], "model": "m"}}
    assert config.path == sim_profile and config.get("defaults.model") == "m"


@pytest.mark.parametrize("a, b, same", [
    ([], (), True), (["x"], ("x",), True), (4, 4.0, True), (True, 1, False), (None, None, True),
    (None, "", False), ("~/.ssh/id_ed25519", "$HOME/.ssh/id_ed25519", True),
    ({"a": [1]}, {"a": (1,)}, True), ("us-east-1", "us-west-1", False),
])
def test_same_value(a: Any, b: Any, same: bool) -> None:
    if isinstance(b, str):
        b = b.replace("$HOME", str(Path.home()))
    assert same_value(a, b) is same


# -- config path, config show ---------------------------------------------------------------


def test_path_under_a_profile_prints_the_profiles_file(run_cli: RunCli,
                                                       soong_env: SoongEnv) -> None:
    assert run_cli("--sim config path").stdout == f"{profile_path('sim')}\n"
    assert run_cli("--profile work config path").stdout == f"{profile_path('work')}\n"
    assert run_cli("config path").stdout == f"{soong_env.config_file}\n"
    help_text = run_cli("config path --help").stdout
    assert "Without a profile" in help_text and "config.yaml" in help_text


def test_show_under_a_profile_says_which_keys_it_sets(run_cli: RunCli, soong_env: SoongEnv,
                                                      sim_profile: Path) -> None:
    write_config_file(soong_env.config_file, {"budget": {"max_dollars": 5}})
    write_config_file(sim_profile, {**SIM, "defaults": {"gpu": "gpu_1x_a10"}})
    result = run_cli("--sim config show")
    assert result.exit_code == 0, result.stderr
    lines = result.stdout.splitlines()
    assert lines[:2] == [
        f"# profile sim: {sim_profile}",
        "# it sets: defaults.gpu, clock.mode, clock.factor, clock.sim_anchor, "
        f"clock.wall_anchor, lambda.api_key, lambda.api_url (the rest: "
        f"{soong_env.config_file}, the environment, the defaults)"]
    shown = yaml.safe_load(result.stdout)
    assert shown["budget"]["max_dollars"] == 5 and shown["defaults"]["gpu"] == "gpu_1x_a10"
    assert KEY not in result.stdout
    plain = json.loads(run_cli("--sim config show --json").stdout)
    assert plain == shown  # --json: the same shape, no comment
    assert not run_cli("config show").stdout.startswith("#")


def test_validate_under_a_profile_names_it(run_cli: RunCli, sim_profile: Path) -> None:
    result = run_cli("--sim config validate")
    assert result.exit_code == 0, result.stderr
    assert result.stdout.endswith(f", profile {sim_profile}\n")


# -- errors name the profile's file ----------------------------------------------------------


@pytest.mark.parametrize("content, message", [
    ("lambda:\n  api_ulr: x\n", "unknown key lambda.api_ulr (did you mean lambda.api_url?)"),
    ("lambdaa:\n  api_url: x\n", "unknown key lambdaa.api_url: no section lambdaa (did you "
                                   "mean lambda?)"),
    ("nosuch: {}\n", "unknown section nosuch"),
    ("lambda: x\n", "profile 'sim': section lambda must be a mapping"),
    ("defaults:\n  lease_hours: soon\n", 'defaults.lease_hours: "soon" is not a number'),
    ("budget:\n  period: yearly\n", 'budget.period: "yearly" is not one of'),
    ("defaults: [oops\n", "malformed YAML"),
    ("- a\n- b\n", "the top level must be a mapping"),
    ("defaults:\n  gpu: a\n  gpu: b\n", "duplicate key 'gpu'"),
])
def test_every_problem_in_a_profile_names_its_file(soong_env: SoongEnv, plugins: Plugins,
                                                   run_cli: RunCli, content: str,
                                                   message: str) -> None:
    path = profile_path("sim")
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(content)
    path.chmod(0o600)
    with pytest.raises(ConfigError) as caught:
        load_config(plugins=plugins, profile="sim")
    assert message in caught.value.message and str(path) in caught.value.message
    result = run_cli("--sim config show")
    assert result.exit_code == 2
    [line] = [line for line in result.stderr.splitlines() if line.startswith("error:")]
    assert message in line and str(path) in line


def test_every_unknown_key_of_a_profile_is_reported_at_once(soong_env: SoongEnv,
                                                            plugins: Plugins) -> None:
    write_config_file(profile_path("sim"), {"lambda": {"api_ulr": "x"},
                                            "budget": {"max_dolars": 1}})
    with pytest.raises(ConfigError) as caught:
        load_config(plugins=plugins, profile="sim")
    lines = [caught.value.message, *caught.value.hints]
    assert [line.split(" (")[0] for line in lines] == ["unknown key lambda.api_ulr",
                                                       "unknown key budget.max_dolars"]
    assert all(str(profile_path("sim")) in line for line in lines)


def test_an_empty_section_in_a_profile_sets_nothing(soong_env: SoongEnv,
                                                    plugins: Plugins) -> None:
    write_config_file(profile_path("sim"), {"budget": None})
    assert load_config(plugins=plugins, profile="sim").get("budget.period") == "month"


def test_each_bad_section_of_a_profile_names_the_profile(soong_env: SoongEnv,
                                                         plugins: Plugins) -> None:
    path = profile_path("work")
    write_config_file(path, {"nosuch": {"a": 1}, "lambda": "x", "budget": "y"})
    with pytest.raises(ConfigError) as caught:
        load_config(plugins=plugins, profile="work")
    assert [caught.value.message, *caught.value.hints] == [
        f"unknown key nosuch.a: no section nosuch (known sections: defaults, budget, clock, "
        f"lambda, tunnel, ssh, agent) (in {path})",
        f"profile 'work': section lambda must be a mapping (in {path})",
        f"profile 'work': section budget must be a mapping (in {path})"]
