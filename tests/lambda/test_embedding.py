"""End to end against the simulator: the embedding API and the CLI with provider ``lambda``."""

from __future__ import annotations

import json
from typing import Any, Callable

import pytest

from soong_core.api import Soong
from soong_core.clock import ManualClock
from soong_core.config import profile_path
from soong_core.errors import SoongError
from soong_core.models import EventKind, InstanceState
from soong_core.plugins import Plugins
from soong_core.testing import CliResult
from soong_plugins.lambda_labs.provider import LambdaProvider
from soong_plugins.lambda_labs.simulator.testing import DEFAULT_PUBLIC_KEY, SimHarness


def config_for(cloud: SimHarness, **defaults: Any) -> dict[str, Any]:
    return {"defaults": {"provider": "lambda", **defaults},
            "lambda": {"api_url": cloud.api_url, "api_key": cloud.api_key}}


def test_list_types_launch_see_it_active_terminate_it(
        cloud_factory: Callable[..., SimHarness], plugins: Plugins, sim_clock: ManualClock,
        api_log: Callable[..., Any]) -> None:
    cloud = cloud_factory(boot_seconds=30, terminate_seconds=5)
    LambdaProvider(cloud.api_url, cloud.api_key).add_ssh_key("soong", DEFAULT_PUBLIC_KEY)
    with Soong(config_for(cloud, region="us-east-1"), plugins=plugins, clock=sim_clock,
               sleep=sim_clock.sleep) as soong:
        assert isinstance(soong.provider, LambdaProvider)
        names = {t.name for t in soong.instance_types()}
        assert {"gpu_1x_a10", "gpu_8x_h100_sxm5"} <= names
        seen: list[InstanceState] = []
        instance = soong.launch("gpu_1x_a10", hours=2, name="e2e")
        ready = soong.wait_until_ready(instance.id, on_state=lambda i: seen.append(i.state))
        assert seen == [InstanceState.BOOTING, InstanceState.ACTIVE]
        assert ready.ip and ready.region == "us-east-1" and ready.managed
        [status] = soong.status()
        assert status.instance.id == instance.id and status.decision is not None
        assert status.cost_so_far is not None and status.cost_so_far > 0
        soong.stop([instance.id])
        soong.wait_until_gone([instance.id])
        kinds = [e.kind for e in soong.history.events()]
        assert kinds == [EventKind.LAUNCH_INTENT, EventKind.LAUNCH, EventKind.TERMINATE]
        assert soong.history.namespace.endswith(cloud.api_url)
    bill = cloud.control("GET", "/billing")
    assert [i["status"] for i in bill["instances"]] == ["terminated"]


def test_the_cli_start_status_stop_against_the_simulator(
        cloud_factory: Callable[..., SimHarness], run_cli: Callable[..., CliResult]) -> None:
    cloud = cloud_factory(boot_seconds=0, terminate_seconds=0, profile_path=profile_path("sim"))
    LambdaProvider(cloud.api_url, cloud.api_key).add_ssh_key("soong", DEFAULT_PUBLIC_KEY)
    started = run_cli("--sim start -y --gpu gpu_1x_a10 --region us-east-1 --hours 2")
    assert started.exit_code == 0, started.stderr
    assert "is active at 198.18." in started.stdout and "in us-east-1" in started.stdout
    status = run_cli("--sim status --json")
    assert status.exit_code == 0, status.stderr
    [shown] = json.loads(status.stdout)["instances"]
    assert (shown["state"], shown["type"], shown["region"], shown["managed"]) == \
        ("active", "gpu_1x_a10", "us-east-1", True)
    assert shown["price_per_hour"] == "0.75"
    stopped = run_cli("--sim stop --all -y")
    assert stopped.exit_code == 0, stopped.stderr
    assert "terminated" in stopped.stdout


def test_the_cli_says_what_to_do_when_things_are_missing(
        cloud_factory: Callable[..., SimHarness], run_cli: Callable[..., CliResult]) -> None:
    from soong_core.config import write_config_file

    cloud = cloud_factory(profile_path=profile_path("sim"))
    no_key = run_cli("--sim start -y --gpu gpu_1x_a10 --region us-east-1")
    assert no_key.exit_code == 1
    assert "SSH key 'soong' does not exist" in no_key.stderr and "Traceback" not in no_key.stderr
    url = cloud.api_url
    cloud.stop()
    down = run_cli("--sim status")
    assert down.exit_code == 1
    assert down.stderr.splitlines()[0] == "error: simulator not running: run `soong sim up`"
    profile_path("sim").unlink()
    from soong_core.config import default_config_path

    write_config_file(default_config_path(), {"lambda": {"api_url": url}})
    missing = run_cli("status")
    assert missing.exit_code == 2
    assert missing.stderr.splitlines()[0] == ("error: no Lambda Cloud API key: run `soong "
                                              "configure` or set LAMBDA_API_KEY")


@pytest.mark.parametrize("fault, state", [("unhealthy", "unhealthy"), ("preempted", "preempted")])
def test_unhealthy_or_preempted_ends_the_wait_with_what_to_do(
        cloud: SimHarness, provider: LambdaProvider, ssh_key: str, plugins: Plugins,
        sim_clock: ManualClock, fault: str, state: str) -> None:
    with Soong(config_for(cloud, region="us-east-1"), plugins=plugins, clock=sim_clock,
               sleep=sim_clock.sleep) as soong:
        instance = soong.launch("gpu_1x_a10", hours=2)
        cloud.control("POST", f"/instances/{instance.id}/fault", {"fault": fault})
        with pytest.raises(SoongError) as caught:
            soong.wait_until_ready(instance.id)
    assert caught.value.message == f"instance {instance.id} is {state} instead of becoming active"
    assert ("soong stop" in caught.value.hints[0]) is (state == "unhealthy")


def test_wait_for_capacity_polls_the_live_catalogue(
        cloud: SimHarness, plugins: Plugins, sim_clock: ManualClock) -> None:
    cloud.control("PUT", "/capacity", {"instance_type": "gpu_1x_a10", "region": "*", "capacity": 0})
    wall = [2_000_000_000.0]
    polls: list[int] = []

    def sleep(seconds: float) -> None:  # the wait's sleep: moves the cache's clock too
        wall[0] += seconds
        if len(polls) == 2:
            cloud.control("PUT", "/capacity", {"instance_type": "gpu_1x_a10",
                                               "region": "us-west-1", "capacity": 2})

    with Soong(config_for(cloud), plugins=plugins, clock=sim_clock, sleep=sleep) as soong:
        assert isinstance(soong.provider, LambdaProvider)
        soong.provider.cache.now = lambda: wall[0]
        found = soong.wait_for_capacity("gpu_1x_a10", timeout=600, on_poll=polls.append)
    assert found == ["us-west-1"] and polls == [1, 2]


def test_start_creates_a_missing_filesystem_then_launches_there(
        cloud_factory: Callable[..., SimHarness], run_cli: Callable[..., CliResult]) -> None:
    cloud = cloud_factory(boot_seconds=0, profile_path=profile_path("sim"))
    provider = LambdaProvider(cloud.api_url, cloud.api_key)
    provider.add_ssh_key("soong", DEFAULT_PUBLIC_KEY)
    started = run_cli("--sim start -y --gpu gpu_1x_a10 --region us-west-1 --filesystem data")
    assert started.exit_code == 0, started.stderr
    [filesystem] = provider.list_filesystems()
    assert (filesystem.name, filesystem.region, filesystem.in_use) == ("data", "us-west-1", True)
    [instance] = provider.list_instances()
    assert instance.filesystem_names == ("data",) and instance.region == "us-west-1"


def test_a_just_launched_instance_the_api_does_not_list_yet_is_still_booting(
        provider: LambdaProvider, ssh_key: str, monkeypatch: pytest.MonkeyPatch) -> None:
    from soong_core.models import LaunchRequest

    instance = provider.launch(LaunchRequest("gpu_1x_a10", ("us-east-1",), ssh_key_names=("soong",)))
    monkeypatch.setattr(provider.client, "instance", lambda instance_id: None)  # a lagging API
    assert provider.get_instance(instance.id) == instance
    assert provider.get_instance("0123456789abcdef0123456789abcdef") is None
