"""The in-memory provider that tests and examples use."""

from __future__ import annotations

import pytest

from soong_core.clock import ManualClock
from soong_core.errors import SoongError, UnsupportedError
from soong_core.fake import FakeProvider
from soong_core.interfaces import Capability
from soong_core.models import InstanceState, LaunchRequest


def test_boots_then_becomes_active_with_an_ip(clock: ManualClock, fake_provider: FakeProvider) -> None:
    launched = fake_provider.launch(LaunchRequest("gpu_1x_a10", ("us-east-1",), tags={"soong:x": "1"}))
    assert launched.state is InstanceState.BOOTING and launched.ip is None
    clock.advance(59)
    assert fake_provider.get_instance(launched.id).state is InstanceState.BOOTING
    clock.advance(1)
    active = fake_provider.get_instance(launched.id)
    assert active.state is InstanceState.ACTIVE and active.ip
    assert active.tags == {"soong:x": "1"} and active.region == "us-east-1"


def test_regions_are_tried_in_order_and_capacity_runs_out(clock: ManualClock) -> None:
    provider = FakeProvider(clock, capacity={("gpu_1x_a10", "us-east-1"): 1})
    first = provider.launch(LaunchRequest("gpu_1x_a10", ("us-east-1", "us-west-1")))
    second = provider.launch(LaunchRequest("gpu_1x_a10", ("us-east-1", "us-west-1")))
    assert (first.region, second.region) == ("us-east-1", "us-west-1")
    [a10] = [t for t in provider.list_instance_types() if t.name == "gpu_1x_a10"]
    assert a10.regions_with_capacity == ("us-west-1",)
    with pytest.raises(SoongError, match="no capacity for gpu_1x_h100_pcie"):
        provider.launch(LaunchRequest("gpu_1x_h100_pcie", ("us-east-1",)))


def test_batch_terminate_is_all_or_nothing(fake_provider: FakeProvider) -> None:
    a = fake_provider.launch(LaunchRequest("gpu_1x_a10", ("us-east-1",)))
    b = fake_provider.launch(LaunchRequest("gpu_1x_a10", ("us-east-1",)))
    with pytest.raises(SoongError, match="unknown instance 'nope'"):
        fake_provider.terminate([a.id, "nope"])
    assert len(fake_provider.list_instances()) == 2
    ended = fake_provider.terminate([a.id, b.id])
    assert {i.state for i in ended} == {InstanceState.TERMINATED}
    assert fake_provider.list_instances() == []


def test_capabilities_are_declared_with_reasons(fake_provider: FakeProvider) -> None:
    assert not fake_provider.supports(Capability.STOP)
    with pytest.raises(UnsupportedError, match="cannot stop an instance and keep its disk: like Lambda Cloud"):
        fake_provider.stop(["x"])
    assert fake_provider.supports(Capability.TAGS)


def test_ssh_keys(fake_provider: FakeProvider) -> None:
    generated = fake_provider.add_ssh_key("laptop")
    assert generated.private_key  # shown once...
    assert fake_provider.list_ssh_keys()[0].private_key is None  # ...never kept
    with pytest.raises(SoongError, match="already exists"):
        fake_provider.add_ssh_key("laptop", "ssh-ed25519 AAAA")
    fake_provider.delete_ssh_key(generated.id)
    assert fake_provider.list_ssh_keys() == []
