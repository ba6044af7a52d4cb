"""`soong configure`: the wizard and its scripted form, against the fake provider."""

from __future__ import annotations

import json
from typing import Any

import pytest
import yaml

from soong_core import hookimpl
from soong_core.clock import RealClock
from soong_core.config import write_config_file
from soong_core.errors import SoongError
from soong_core.fake import FakeProvider
from soong_core.testing import SoongEnv

SECRET = "fake-api-key-0123456789abcdef"


class KeyedFake(FakeProvider):
    """A fake cloud that wants an API key, like a real one."""

    credential_key = "fakecloud.api_key"

    def __init__(self, key: str | None) -> None:
        super().__init__(RealClock(), boot_seconds=0)
        self.key = key

    def list_instance_types(self) -> list[Any]:
        if self.key != SECRET:
            raise SoongError("invalid API key (global/invalid-api-key)",
                             hints=["check the key at the provider's dashboard"])
        return super().list_instance_types()


class KeyedFakePlugin:
    def __init__(self) -> None:
        self.providers: list[KeyedFake] = []
        self.keys: dict[str, Any] = {}

    @hookimpl
    def soong_config_schema(self) -> dict[str, Any]:
        return {"fakecloud": {"api_key": {"type": "string", "nullable": True, "default": None,
                                          "meta": {"secret": True}}}}

    @hookimpl
    def soong_register_providers(self, register: Any) -> None:
        def factory(config: Any) -> KeyedFake:
            provider = KeyedFake(config["fakecloud"]["api_key"])
            provider._keys = self.keys  # one account, whichever client asks
            self.providers.append(provider)
            return provider

        register("fakecloud", factory)


@pytest.fixture
def cloud(register_plugin: Any, soong_env: SoongEnv) -> KeyedFakePlugin:
    plugin = KeyedFakePlugin()
    register_plugin(plugin, "fakecloud")
    ssh = soong_env.home / ".ssh"
    ssh.mkdir(mode=0o700)
    (ssh / "id_ed25519").write_text("PRIVATE\n")
    (ssh / "id_ed25519.pub").write_text("ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIlocal me@laptop\n")
    return plugin


def saved(env: SoongEnv) -> dict[str, Any]:
    return yaml.safe_load(env.config_file.read_text())


FLAGS = ("configure -n --provider fakecloud --api-key-stdin --gpu gpu_1x_a10 --region us-east-1 "
         "--fallback-region us-west-1 --hours 3 --idle-minutes 20 --budget 50 --budget-period week")


def test_scripted_configure_checks_the_key_registers_ssh_and_saves(
        run_cli: Any, cloud: KeyedFakePlugin, soong_env: SoongEnv) -> None:
    result = run_cli(FLAGS, inputs=SECRET + "\n")
    assert result.exit_code == 0, result.stderr
    assert SECRET not in result.stdout + result.stderr
    config = saved(soong_env)
    assert config["fakecloud"]["api_key"] == SECRET
    assert config["defaults"] == {"provider": "fakecloud", "gpu": "gpu_1x_a10", "region": "us-east-1",
                                  "fallback_regions": ["us-west-1"], "model": None,
                                  "lease_hours": 3, "idle_timeout_minutes": 20,
                                  "ssh_key_name": "soong"}
    assert config["budget"] == {"max_dollars": 50, "period": "week"}
    assert oct(soong_env.config_file.stat().st_mode & 0o777) == "0o600"
    [key] = cloud.keys.values()
    assert key.name == "soong" and key.public_key.startswith("ssh-ed25519 AAAAC3")
    again = run_cli(FLAGS, inputs=SECRET + "\n")  # idempotent: the key is already there
    assert again.exit_code == 0 and "SSH key soong is registered" in again.stdout
    assert len(cloud.keys) == 1


def test_a_bad_key_is_refused_and_nothing_is_written(run_cli: Any, cloud: KeyedFakePlugin,
                                                     soong_env: SoongEnv) -> None:
    result = run_cli(FLAGS, inputs="wrong-key\n")
    assert result.exit_code == 1
    assert result.stderr.splitlines()[0] == ("error: the API key does not work: invalid API key "
                                             "(global/invalid-api-key)")
    assert "wrong-key" not in result.stdout + result.stderr
    assert not soong_env.config_file.exists()


@pytest.mark.parametrize("change, message", [
    ("--gpu gpu_9x_nope", "error: unknown GPU type 'gpu_9x_nope'"),
    ("--region mars-1", "error: unknown region 'mars-1'"),
    ("--hours 12", "error: defaults.lease_hours: 12 is more than defaults.hard_timeout_hours"),
    ("--budget lots", "error: --budget must be a number, got 'lots'"),
    ("--budget inf", "error: --budget must be a number, got 'inf'"),
    ("--budget-period year", "error: budget.period"),
])
def test_bad_flags_are_one_line_and_keep_the_old_file(run_cli: Any, cloud: KeyedFakePlugin,
                                                      soong_env: SoongEnv, change: str,
                                                      message: str) -> None:
    write_config_file(soong_env.config_file, {"defaults": {"lease_hours": 2}})
    before = soong_env.config_file.read_text()
    result = run_cli(f"{FLAGS} {change}", inputs=SECRET + "\n")
    assert result.exit_code == 2, result.stderr
    assert result.stderr.splitlines()[0].startswith(message), result.stderr
    assert soong_env.config_file.read_text() == before


def test_no_key_anywhere_with_n(run_cli: Any, cloud: KeyedFakePlugin) -> None:
    result = run_cli("configure -n --provider fakecloud")
    assert result.exit_code == 2 and result.stderr.startswith("error: no API key")


def test_the_wizard_asks_hidden_key_then_each_setting(run_cli: Any, cloud: KeyedFakePlugin,
                                                      soong_env: SoongEnv) -> None:
    answers = [SECRET, "gpu_1x_a100", "us-west-2", "", "llama-3-8b", "2", "15", "none", "month"]
    result = run_cli("configure --provider fakecloud", inputs="\n".join(answers) + "\n")
    assert result.exit_code == 0, result.stderr
    assert SECRET not in result.stdout
    assert "$1.29/hr" in result.stdout  # the catalogue with prices
    config = saved(soong_env)
    assert config["defaults"]["gpu"] == "gpu_1x_a100"
    assert config["defaults"]["model"] == "llama-3-8b"
    assert config["defaults"]["idle_timeout_minutes"] == 15
    assert config["budget"] == {"max_dollars": None, "period": "month"}


def test_a_missing_ssh_key_is_generated(run_cli: Any, cloud: KeyedFakePlugin,
                                        soong_env: SoongEnv) -> None:
    import os
    import shutil

    if shutil.which("ssh-keygen") is None:
        if os.environ.get("CI"):
            pytest.fail("ssh-keygen missing under CI: .ci/run installs openssh-client")
        pytest.skip("ssh-keygen is not installed")
    result = run_cli(f"{FLAGS} --key-path {soong_env.home}/.ssh/soong_key --key-name laptop",
                     inputs=SECRET + "\n")
    assert result.exit_code == 0, result.stderr
    assert (soong_env.home / ".ssh" / "soong_key.pub").read_text().startswith("ssh-ed25519 ")
    config = saved(soong_env)
    assert config["defaults"]["ssh_key_name"] == "laptop"
    assert config["ssh"] == {"key_path": f"{soong_env.home}/.ssh/soong_key"}


def test_under_a_profile_settings_go_to_the_profile(run_cli: Any, cloud: KeyedFakePlugin,
                                                    soong_env: SoongEnv) -> None:
    from soong_core.config import profile_path

    write_config_file(profile_path("sim"), {"fakecloud": {"api_key": SECRET}})
    result = run_cli("--sim configure -n --provider fakecloud --gpu gpu_1x_a10")
    assert result.exit_code == 0, result.stderr
    assert not soong_env.config_file.exists()  # the main file never sees the profile's key
    profile = yaml.safe_load(profile_path("sim").read_text())
    assert profile["fakecloud"]["api_key"] == SECRET
    assert profile["defaults"]["gpu"] == "gpu_1x_a10"


CLOCK = {"mode": "accelerated", "factor": 60, "sim_anchor": 1000.0, "wall_anchor": 1000.0}


class ProfiledFake(KeyedFake):
    """A fake cloud whose profile keys are an endpoint and the key, like Lambda's."""

    profile_keys = ("fakecloud.api_url", "fakecloud.api_key")


class ProfiledFakePlugin(KeyedFakePlugin):
    @hookimpl
    def soong_config_schema(self) -> dict[str, Any]:
        return {"fakecloud": {
            "api_key": {"type": "string", "nullable": True, "default": None,
                        "meta": {"secret": True}},
            "api_url": {"type": "string", "default": "https://fake.example/api"},
        }}

    @hookimpl
    def soong_register_providers(self, register: Any) -> None:
        def factory(config: Any) -> KeyedFake:
            provider = ProfiledFake(config["fakecloud"]["api_key"])
            provider._keys = self.keys
            return provider

        register("fakecloud", factory)


@pytest.fixture
def profiled(register_plugin: Any, soong_env: SoongEnv) -> Any:
    """A sim profile as `soong sim up` writes it (endpoint, key, clock) for ProfiledFake,
    and a main file that chooses that provider."""
    from soong_core.config import profile_path

    register_plugin(ProfiledFakePlugin(), "fakecloud")
    ssh = soong_env.home / ".ssh"
    ssh.mkdir(mode=0o700)
    (ssh / "id_ed25519").write_text("PRIVATE\n")
    (ssh / "id_ed25519.pub").write_text("ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIlocal me@laptop\n")
    write_config_file(soong_env.config_file, {"defaults": {"provider": "fakecloud"}})
    write_config_file(profile_path("sim"), {
        "fakecloud": {"api_url": "http://127.0.0.1:9/api", "api_key": SECRET},
        "clock": dict(CLOCK)})
    return profile_path("sim")


def test_under_a_profile_only_the_clouds_keys_and_the_flags_land_there(
        run_cli: Any, profiled: Any, soong_env: SoongEnv) -> None:
    result = run_cli("--sim configure -n --gpu gpu_1x_a10")
    assert result.exit_code == 0, result.stderr
    assert f"saved 2 settings in {profiled} (mode 0600)" in result.stdout
    assert yaml.safe_load(profiled.read_text()) == {
        "fakecloud": {"api_url": "http://127.0.0.1:9/api", "api_key": SECRET},
        "clock": CLOCK, "defaults": {"gpu": "gpu_1x_a10"}}
    assert saved(soong_env) == {"defaults": {"provider": "fakecloud"}}  # untouched
    assert "removed" not in result.stderr  # nothing to clean in a fresh profile
    # the main file now binds the simulated cloud too
    assert run_cli("config set budget.max_dollars 1").exit_code == 0
    shown = json.loads(run_cli("--sim config show --json").stdout)
    assert shown["budget"]["max_dollars"] == 1 and shown["defaults"]["gpu"] == "gpu_1x_a10"


def test_the_wizard_under_a_profile_saves_only_the_answers_that_changed(
        run_cli: Any, profiled: Any, soong_env: SoongEnv) -> None:
    write_config_file(soong_env.config_file, {"defaults": {"provider": "fakecloud",
                                                           "lease_hours": 3}})
    # key: Enter keeps it; GPU changed; region, fallbacks, model kept; the lease typed
    # as it already is; idle, budget and period kept
    answers = ["", "gpu_1x_a100", "", "", "", "3", "", "", ""]
    result = run_cli("--sim configure", inputs="\n".join(answers) + "\n")
    assert result.exit_code == 0, result.stderr
    profile = yaml.safe_load(profiled.read_text())
    assert profile["defaults"] == {"gpu": "gpu_1x_a100"}
    assert f"saved 2 settings in {profiled}" in result.stdout  # the key and the GPU


def test_configure_under_a_profile_cleans_copies_of_the_main_file(
        run_cli: Any, profiled: Any, soong_env: SoongEnv) -> None:
    write_config_file(soong_env.config_file, {"defaults": {"provider": "fakecloud"},
                                              "budget": {"period": "week"}})
    old = yaml.safe_load(profiled.read_text())
    old["fakecloud"]["api_url"] = "https://fake.example/api"  # the default, yet the cloud's
    old["clock"] = {"mode": "real", "factor": 1}  # defaults, yet the cloud's clock
    old["defaults"] = {"provider": "fakecloud", "gpu": "gpu_1x_a10", "region": None,
                       "fallback_regions": [], "lease_hours": 4, "ssh_key_name": "soong"}
    old["budget"] = {"max_dollars": None, "period": "month"}
    write_config_file(profiled, old)  # what the old `configure -n` wrote
    result = run_cli("--sim configure -n --hours 2")
    assert result.exit_code == 0, result.stderr
    assert yaml.safe_load(profiled.read_text()) == {
        "fakecloud": {"api_url": "https://fake.example/api", "api_key": SECRET},
        "clock": {"mode": "real", "factor": 1},
        "defaults": {"gpu": "gpu_1x_a10", "lease_hours": 2},  # differs from the main file
        "budget": {"period": "month"}}  # the main file says week: the profile's own choice
    warnings = [line for line in result.stderr.splitlines() if "removed" in line]
    assert warnings == [
        "warning: removed defaults.provider, defaults.region, defaults.fallback_regions, "
        f"defaults.ssh_key_name, budget.max_dollars from {profiled}: the main file "
        f"({soong_env.config_file}) or the defaults give the same, and a copy in the "
        "profile would outrank a later change there"]


def test_configure_creates_a_missing_config_file(run_cli: Any, cloud: KeyedFakePlugin,
                                                 soong_env: SoongEnv, tmp_path: Any) -> None:
    new = tmp_path / "team" / "soong.yaml"
    refused = run_cli(f"--config {new} config show")
    assert refused.exit_code == 2
    # the hint names a command that works, as typed
    hint = refused.stderr.split("create it with `", 1)[1].split("`", 1)[0]
    assert hint == f"soong --config {new} configure"
    result = run_cli(f"{hint.removeprefix('soong ')} {FLAGS.removeprefix('configure ')}",
                     inputs=SECRET + "\n")
    assert result.exit_code == 0, result.stderr
    assert f"saved 12 settings in {new} (mode 0600)" in result.stdout
    assert yaml.safe_load(new.read_text())["defaults"]["gpu"] == "gpu_1x_a10"
    assert not soong_env.config_file.exists()
    assert run_cli(f"--config {new} config show").exit_code == 0


def test_without_the_tunnel_plugin_the_key_name_is_still_saved(
        run_cli: Any, cloud: KeyedFakePlugin, plugins: Any, soong_env: SoongEnv) -> None:
    plugins.unregister("fabric_tunnel")  # no ssh section: nothing to save ssh.key_path in
    result = run_cli(f"{FLAGS} --key-name laptop", inputs=SECRET + "\n")
    assert result.exit_code == 0, result.stderr
    config = saved(soong_env)
    assert config["defaults"]["ssh_key_name"] == "laptop" and "ssh" not in config
    assert [key.name for key in cloud.keys.values()] == ["laptop"]
