"""Declared capabilities that soong needs are checked before a launch: a provider that
cannot tag instances or run user_data is refused first, in one line naming it."""

from __future__ import annotations

from typing import Any

import pytest

from soong_core import Soong
from soong_core.clock import ManualClock, RealClock
from soong_core.config import write_config_file
from soong_core.errors import UnsupportedError
from soong_core.fake import FakeProvider, FakeProviderPlugin
from soong_core.interfaces import MANAGED_NEEDS, Capability, require_manageable
from soong_core.plugins import Plugins
from soong_core.testing import SoongEnv

CONFIG = {"defaults": {"provider": "fake", "gpu": "gpu_1x_a10", "region": "us-east-1",
                       "lease_hours": 2}}


class TaglessProvider(FakeProvider):
    """A fake cloud whose API has no tags."""

    unsupported = {**FakeProvider.unsupported, Capability.TAGS: "its API has no tags"}


class ScriptlessProvider(FakeProvider):
    """A fake cloud that runs no script at boot."""

    unsupported = {**FakeProvider.unsupported,
                   Capability.USER_DATA: "its images run no cloud-init\nat boot"}


def provider_calls(provider: FakeProvider) -> list[str]:
    return [call for call, _ in provider.calls]


@pytest.mark.parametrize("cls, capability, phrase, reason, why", [
    (TaglessProvider, Capability.TAGS, "tag instances", "its API has no tags",
     "its launch time and deadlines travel in its tags"),
    (ScriptlessProvider, Capability.USER_DATA, "run a user_data script at boot",
     "its images run no cloud-init at boot", "soong's lease agent travels in the launch's user_data"),
])
def test_plan_launch_refuses_first_a_provider_soong_cannot_manage(
        plugins: Plugins, register_plugin: Any, clock: ManualClock, cls: type[FakeProvider],
        capability: Capability, phrase: str, reason: str, why: str) -> None:
    provider = cls(clock)
    register_plugin(FakeProviderPlugin(provider), "fake")
    soong = Soong(CONFIG, plugins=plugins, clock=clock)
    with pytest.raises(UnsupportedError) as err:
        soong.plan_launch()
    assert err.value.message == (f"provider 'fake' cannot {phrase} ({reason}): soong cannot "
                                 f"manage an instance launched there: {why}")
    assert "\n" not in err.value.message  # the provider's reason, made one line
    assert err.value.exit_code == 1
    assert any("soong configure --provider NAME" in hint for hint in err.value.hints)
    with pytest.raises(UnsupportedError, match=f"cannot {phrase}"):
        soong.launch(hours=3)
    # refused before anything else: no catalogue, no listing, no launch
    assert provider_calls(provider) == []
    assert MANAGED_NEEDS[capability] == why


def test_waiting_for_capacity_refuses_such_a_provider_before_the_first_check(
        plugins: Plugins, register_plugin: Any, clock: ManualClock) -> None:
    provider = TaglessProvider(clock, capacity={("gpu_1x_a10", "us-east-1"): 0,
                                                ("gpu_1x_a10", "us-west-1"): 0})
    register_plugin(FakeProviderPlugin(provider), "fake")
    soong = Soong(CONFIG, plugins=plugins, clock=clock, sleep=clock.sleep)
    with pytest.raises(UnsupportedError, match="provider 'fake' cannot tag instances"):
        soong.wait_for_capacity("gpu_1x_a10", timeout=60)
    assert provider_calls(provider) == []


def test_a_provider_lacking_neither_passes_and_every_need_has_its_phrase(
        clock: ManualClock) -> None:
    require_manageable(FakeProvider(clock))  # the fake can tag and run user_data
    assert set(MANAGED_NEEDS) == {Capability.TAGS, Capability.USER_DATA}
    for capability in Capability:
        assert capability.phrase  # every value can be named in a refusal


@pytest.mark.parametrize("args", ["start -y", "start -y --wait-for-capacity --timeout 1"])
def test_start_says_so_in_one_line_before_the_panel(
        run_cli: Any, soong_env: SoongEnv, register_plugin: Any, args: str) -> None:
    provider = ScriptlessProvider(RealClock(), boot_seconds=0)
    register_plugin(FakeProviderPlugin(provider), "fake")
    write_config_file(soong_env.config_file, CONFIG)
    result = run_cli(args)
    assert result.exit_code == 1
    assert result.stdout == ""  # no panel, nothing launched
    first = result.stderr.splitlines()[0]  # the first thing the user hears
    assert first.startswith("error: provider 'fake' cannot run a user_data script at boot "
                            "(its images run no cloud-init at boot): "), result.stderr
    assert "Traceback" not in result.stderr
    assert provider_calls(provider) == []
