"""The provider's operations against the simulator, and the mapping onto soong's models."""

from __future__ import annotations

from typing import Any, Callable

import pytest

from soong_core.errors import UnsupportedError
from soong_core.interfaces import Capability
from soong_core.models import TAG_LAUNCH_ID, InstanceState, LaunchRequest
from soong_core.plugins import Plugins
from soong_plugins.lambda_labs import convert, errors
from soong_plugins.lambda_labs.provider import LambdaProvider
from soong_plugins.lambda_labs.simulator.testing import DEFAULT_PUBLIC_KEY, SimHarness
from soong_plugins.lambda_labs.spec import load_spec


def launch(provider: LambdaProvider, launch_id: str = "id-1", region: str = "us-east-1") -> str:
    request = LaunchRequest("gpu_1x_a10", (region,), ssh_key_names=("soong",),
                            tags={TAG_LAUNCH_ID: launch_id}, name=f"box-{launch_id}")
    return provider.launch(request).id


def test_registered_as_provider_lambda_from_config(plugins: Plugins, cloud: SimHarness) -> None:
    from soong_core.config import make_config

    config = make_config({"lambda.api_url": cloud.api_url + "/", "lambda.api_key": cloud.api_key,
                          "lambda.filesystem_name": "data"}, plugins=plugins)
    provider = plugins.providers().create("lambda", config)
    assert isinstance(provider, LambdaProvider)
    assert provider.name == "lambda" and provider.endpoint == cloud.api_url
    assert provider.credential_key == "lambda.api_key"
    assert provider.filesystem_key == "lambda.filesystem_name"
    assert provider.default_filesystem == "data"
    assert cloud.api_key not in repr(provider) and cloud.api_key not in repr(provider.client)


def test_from_config_paces_by_account_and_honours_the_api_timeout(
        plugins: Plugins, cloud: SimHarness) -> None:
    from soong_core.config import make_config

    from soong_plugins.lambda_labs.pacing import account_hash

    config = make_config({"lambda.api_url": cloud.api_url, "lambda.api_key": cloud.api_key,
                          "lambda.account_id": "sim-acct-7",
                          "defaults.api_timeout_seconds": 12}, plugins=plugins)
    provider = plugins.providers().create("lambda", config)
    assert isinstance(provider, LambdaProvider)
    transport = provider.client.transport
    assert transport.account == account_hash("", None, "sim-acct-7")
    assert transport.budget.seconds == 12
    plain = plugins.providers().create("lambda", make_config(
        {"lambda.api_url": cloud.api_url, "lambda.api_key": cloud.api_key}, plugins=plugins))
    assert isinstance(plain, LambdaProvider)
    assert plain.client.transport.account == account_hash(cloud.api_url, cloud.api_key)
    assert plain.client.transport.budget.seconds == 60


def test_plugin_module_stays_import_light() -> None:
    import subprocess
    import sys

    code = ("import sys; from soong_core.plugins import make_plugins; "
            "p = make_plugins(entry_points=False); p.providers(); "
            "print(sorted(m for m in ('requests', 'urllib3', "
            "'soong_plugins.lambda_labs.transport') if m in sys.modules))")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert done.stdout.strip() == "[]"


def test_cannot_stop_only_terminate(provider: LambdaProvider) -> None:
    assert not provider.supports(Capability.STOP)
    with pytest.raises(UnsupportedError, match="can only terminate"):
        provider.stop(["x"])
    for capability in (Capability.TAGS, Capability.USER_DATA, Capability.FILESYSTEMS,
                       Capability.BATCH_TERMINATE, Capability.RESTART, Capability.IMAGES,
                       Capability.SSH_KEY_GENERATION):
        assert provider.supports(capability)


def test_regions_are_every_code_the_spec_accepts_without_a_request(
        provider: LambdaProvider, cloud: SimHarness, api_log: Callable[..., Any]) -> None:
    spec = load_spec()
    codes = set(spec["components"]["schemas"]["PublicRegionCode"]["enum"])
    assert {r.name for r in provider.list_regions()} == codes
    assert api_log(cloud) == []
    provider.list_instance_types()
    described = {r.name: r.description for r in provider.list_regions()}
    assert described["us-west-1"] == "California, USA"


def test_types_carry_prices_specs_and_capacity(provider: LambdaProvider) -> None:
    types = {t.name: t for t in provider.list_instance_types()}
    a10 = types["gpu_1x_a10"]
    assert (a10.price_cents_per_hour, a10.gpus, a10.vcpus) == (75, 1, 30)
    assert "us-east-1" in a10.regions_with_capacity
    assert provider.catalogue_source == "live"


def test_list_get_and_wait_states(provider: LambdaProvider, cloud: SimHarness, ssh_key: str) -> None:
    instance_id = launch(provider)
    booting = provider.get_instance(instance_id)
    assert booting is not None and booting.state is InstanceState.BOOTING and booting.ip is None
    cloud.clock.advance(120)
    [active] = provider.list_instances()
    assert active.state is InstanceState.ACTIVE and active.ip and active.hostname
    assert active.name == "box-id-1" and active.region == "us-east-1"
    assert active.type_name == "gpu_1x_a10" and active.price_cents_per_hour == 75
    assert active.tags[TAG_LAUNCH_ID] == "id-1" and active.ssh_key_names == ("soong",)
    assert active.extra["private_ip"].startswith("10.")
    for fault, state in (("unhealthy", InstanceState.UNHEALTHY),
                         ("preempted", InstanceState.PREEMPTED)):
        cloud.control("POST", f"/instances/{instance_id}/fault", {"fault": fault})
        faulted = provider.get_instance(instance_id)
        assert faulted is not None and faulted.state is state
    assert provider.get_instance("0123456789abcdef0123456789abcdef") is None


def test_terminate_is_one_call_and_a_stale_id_is_dropped_then_the_rest_retried(
        provider: LambdaProvider, cloud: SimHarness, ssh_key: str,
        api_log: Callable[..., Any]) -> None:
    cloud.control("PATCH", "/knobs", {"terminate_ended": "404"})  # the 404 path
    first, second, third = (launch(provider, f"id-{n}") for n in range(3))
    provider.terminate([first])
    cloud.clock.advance(60)  # the first is terminated now: the API 404s a batch naming it
    ended = provider.terminate([first, second, third])
    assert sorted(i.id for i in ended) == sorted([second, third])
    assert {i.state for i in ended} == {InstanceState.TERMINATING}
    operations = [e["operation"] for e in api_log(cloud)][-3:]
    assert operations == ["terminateInstance", "listInstances", "terminateInstance"]
    assert [e["status"] for e in api_log(cloud)][-3:] == [404, 200, 200]
    assert provider.terminate([]) == []


def test_terminating_twice_is_harmless(provider: LambdaProvider, ssh_key: str) -> None:
    instance_id = launch(provider)
    provider.terminate([instance_id])
    [again] = provider.terminate([instance_id])
    assert again.state is InstanceState.TERMINATING


def test_restart(provider: LambdaProvider, cloud: SimHarness, ssh_key: str) -> None:
    instance_id = launch(provider)
    cloud.clock.advance(120)
    [restarted] = provider.restart([instance_id])
    assert restarted.state is InstanceState.BOOTING
    with pytest.raises(errors.NotFoundError):
        provider.restart(["0123456789abcdef0123456789abcdef"])


def test_ssh_keys_add_list_generate_delete(provider: LambdaProvider) -> None:
    added = provider.add_ssh_key("laptop", DEFAULT_PUBLIC_KEY)
    assert added.private_key is None and added.public_key == DEFAULT_PUBLIC_KEY
    assert provider.add_ssh_key("laptop", DEFAULT_PUBLIC_KEY + " other-comment") == added
    generated = provider.add_ssh_key("made")
    assert generated.private_key and "PRIVATE KEY" in generated.private_key
    assert {k.name for k in provider.list_ssh_keys()} == {"laptop", "made"}
    assert all(k.private_key is None for k in provider.list_ssh_keys())
    with pytest.raises(errors.DuplicateError, match="already has an SSH key named made"):
        provider.add_ssh_key("made", DEFAULT_PUBLIC_KEY)
    provider.delete_ssh_key(added.id)
    assert [k.name for k in provider.list_ssh_keys()] == ["made"]


def test_filesystems_create_list_delete(provider: LambdaProvider, cloud: SimHarness,
                                       ssh_key: str) -> None:
    created = provider.create_filesystem("data", "us-west-1")
    assert (created.name, created.region, created.in_use) == ("data", "us-west-1", False)
    assert created.mount_point == "/lambda/nfs/data"
    assert provider.create_filesystem("data", "us-west-1") == created  # a retry finds it
    with pytest.raises(errors.DuplicateError):
        provider.create_filesystem("data", "us-east-1")
    request = LaunchRequest("gpu_1x_a10", ("us-west-1",), ssh_key_names=("soong",),
                            filesystem_names=("data",))
    instance_id = provider.launch(request).id
    [mounted] = provider.list_filesystems()
    assert mounted.in_use
    with pytest.raises(errors.FilesystemInUseError):
        provider.delete_filesystem(created.id)
    provider.terminate([instance_id])
    cloud.clock.advance(60)  # terminated: the filesystem is free
    provider.delete_filesystem(created.id)
    assert provider.list_filesystems() == []
    with pytest.raises(errors.NotFoundError):
        provider.delete_filesystem(created.id)


def test_images(provider: LambdaProvider) -> None:
    images = provider.list_images()
    families = {i.name for i in images if i.region == "us-east-1"}
    assert "lambda-stack-24-04" in families
    assert all(i.id and i.region for i in images)


def test_replies_with_unknown_and_missing_fields_never_crash() -> None:
    sparse = {"id": "abc", "status": "booting"}
    instance = convert.instance(sparse)
    assert (instance.ip, instance.name, instance.type_name, instance.region) == (None,) * 4
    assert instance.tags == {} and instance.ssh_key_names == () and instance.price_cents_per_hour is None
    rich = {"id": "def", "status": "hibernating", "ip": "203.0.113.9", "name": None,
            "instance_type": {"name": "gpu_1x_a10"}, "region": "us-east-1",
            "tags": {"soong:launch-id": "x"}, "new_field": [1, 2], "jupyter_token": "t0ken",
            "jupyter_url": "https://x/?token=t0ken", "ssh_key_names": "not-a-list"}
    odd = convert.instance(rich, prices={"gpu_1x_a10": 75})
    assert odd.state is InstanceState.UNHEALTHY and odd.extra["lambda_status"] == "hibernating"
    assert odd.price_cents_per_hour == 75 and odd.region == "us-east-1"
    assert odd.tags == {"soong:launch-id": "x"} and odd.extra["new_field"] == [1, 2]
    assert "t0ken" not in repr(odd) and odd.ssh_key_names == ()
    assert [i.id for i in convert.instances([sparse, {"status": "active"}, "junk"])] == ["abc"]
    types = convert.instance_types({"a": {"instance_type": {"name": "a"}},  # no price: left out
                                    "b": {"instance_type": {"name": "b", "price_cents_per_hour": 9},
                                          "regions_with_capacity_available": [{"name": "r"}, 3]},
                                    "c": "junk"})
    assert [(t.name, t.regions_with_capacity, t.gpus) for t in types] == [("b", ("r",), 0)]


def test_launch_body_is_what_the_spec_calls_InstanceLaunchRequest() -> None:
    request = LaunchRequest("gpu_1x_a10", ("us-east-1",), ssh_key_names=("k",),
                            filesystem_names=("fs",), firewall_rulesets=("r1",),
                            image="0f3a2c1e-9b8d-4c7a-a6e5-d4c3b2a19080",
                            user_data_parts=("#!/bin/sh\necho x",))
    body = convert.launch_body(request, "us-east-1", {"soong:launch-id": "id"})
    assert body["image"] == {"id": "0f3a2c1e-9b8d-4c7a-a6e5-d4c3b2a19080"}
    assert body["firewall_rulesets"] == [{"id": "r1"}] and body["file_system_names"] == ["fs"]
    assert body["tags"] == [{"key": "soong:launch-id", "value": "id"}]
    from soong_plugins.lambda_labs.simulator.testing import spec_validator

    assert spec_validator().validate_request("POST", "/api/v1/instance-operations/launch",
                                             body) == []


@pytest.mark.parametrize("terminate_ended", ["return", "404"])
def test_terminate_gives_the_same_answer_whether_an_ended_id_is_returned_or_404(
        cloud_factory: Callable[..., SimHarness], api_log: Callable[..., Any],
        terminate_ended: str) -> None:
    cloud = cloud_factory(terminate_ended=terminate_ended)
    provider = LambdaProvider(cloud.api_url, cloud.api_key)
    provider.add_ssh_key("soong", DEFAULT_PUBLIC_KEY)
    ended, live, booting = (launch(provider, f"id-{n}") for n in range(3))
    cloud.clock.advance(60)
    provider.terminate([ended])
    cloud.clock.advance(60)  # ended is terminated now, still listed
    listed = [i.id for i in provider.list_instances()]
    assert sorted(listed) == sorted([ended, live, booting])
    done = provider.terminate(listed)  # terminate everything listed
    assert sorted(i.id for i in done) == sorted([live, booting])
    assert {i.state for i in done} == {InstanceState.TERMINATING}
    assert not [i for i in provider.list_instances() if i.state.billing]
    operations = [e["operation"] for e in api_log(cloud)
                  if e["operation"] == "terminateInstance"]
    assert len(operations) == (2 if terminate_ended == "return" else 3)  # 404: one retry
