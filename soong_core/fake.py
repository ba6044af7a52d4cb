"""An in-memory provider: no network, deterministic, driven by an injected clock.

Used by the test suite, by the examples and by anyone writing a plugin who wants a
cloud to point it at. It behaves like a small Lambda-like cloud: instances boot for
``boot_seconds`` and then become active with an IP, capacity is per type and region,
termination is immediate and batched (an unknown id fails the whole call).
"""

from __future__ import annotations

import itertools
import threading
from dataclasses import replace
from typing import Any, Mapping, Sequence

from soong_core.clock import Clock, RealClock
from soong_core.errors import SoongError
from soong_core.hookspecs import hookimpl
from soong_core.interfaces import Capability, Provider
from soong_core.models import (
    TAG_LAUNCH_ID,
    Instance,
    InstanceState,
    InstanceType,
    LaunchContribution,
    LaunchRequest,
    Region,
    SshKey,
    validate_tag,
)

DEFAULT_TYPES: tuple[InstanceType, ...] = (
    InstanceType("gpu_1x_a10", 75, "1x A10 (24 GB PCIe)", "A10 (24 GB PCIe)", 1, 30, 200, 1400,
                 ("us-east-1", "us-west-1")),
    InstanceType("gpu_1x_a100", 129, "1x A100 (40 GB SXM4)", "A100 (40 GB SXM4)", 1, 30, 200, 512,
                 ("us-west-2",)),
    InstanceType("gpu_1x_h100_pcie", 249, "1x H100 (80 GB PCIe)", "H100 (80 GB PCIe)", 1, 26, 200,
                 1000, ()),
)


class FakeProvider(Provider):
    """A provider held in memory. ``capacity`` maps ``(type, region)`` to instances left
    (absent: unlimited where the type lists the region)."""

    name = "fake"
    unsupported = {
        Capability.STOP: "like Lambda Cloud, instances can only be terminated",
        Capability.FILESYSTEMS: "the fake cloud has no persistent filesystems",
        Capability.IMAGES: "the fake cloud has one image",
    }

    def __init__(self, clock: Clock | None = None, *, types: Sequence[InstanceType] = DEFAULT_TYPES,
                 boot_seconds: float = 60.0,
                 capacity: Mapping[tuple[str, str], int] | None = None,
                 server_offset: float | None = None) -> None:
        self.clock = clock or RealClock()
        self.types = {t.name: t for t in types}
        self.boot_seconds = boot_seconds
        self.capacity = dict(capacity or {})
        self.calls: list[tuple[str, Any]] = []
        self.server_offset = server_offset
        """Seconds the fake cloud's clock runs ahead of ``clock`` (negative: behind), for
        tests of the clock-skew check: :meth:`server_time` is ``clock.now() + server_offset``.
        ``None`` (the default): the fake cannot tell its time, so no check happens (tests
        often drive soong's clock apart from the fake's)."""
        self._instances: dict[str, tuple[Instance, float]] = {}
        self._keys: dict[str, SshKey] = {}
        self._ids = itertools.count(1)
        self._lock = threading.Lock()

    # -- catalogue ------------------------------------------------------------------

    def list_instance_types(self) -> list[InstanceType]:
        self.calls.append(("list_instance_types", None))
        return [replace(t, regions_with_capacity=tuple(r for r in t.regions_with_capacity
                                                       if self._capacity_left(t.name, r)))
                for t in self.types.values()]

    def list_regions(self) -> list[Region]:
        names = sorted({r for t in self.types.values() for r in t.regions_with_capacity})
        return [Region(name) for name in names]

    def _capacity_left(self, type_name: str, region: str) -> bool:
        return self.capacity.get((type_name, region), 1) > 0

    def server_time(self) -> float | None:
        """The fake cloud's clock: the injected clock shifted by ``server_offset``, or
        ``None`` when no offset is set."""
        if self.server_offset is None:
            return None
        return self.clock.now() + self.server_offset

    # -- instances ------------------------------------------------------------------

    def launch(self, request: LaunchRequest) -> Instance:
        self.calls.append(("launch", request))
        itype = self.types.get(request.type_name)
        if itype is None:
            raise SoongError(f"unknown instance type {request.type_name!r}",
                             hints=[f"known: {', '.join(self.types)}"], nothing_launched=True)
        for key, value in request.tags.items():
            validate_tag(key, value)
        for key_name in request.ssh_key_names:
            if not any(k.name == key_name for k in self._keys.values()):
                raise SoongError(f"unknown SSH key {key_name!r}", nothing_launched=True)
        with self._lock:
            for region in request.regions:
                if region in itype.regions_with_capacity and self._capacity_left(itype.name, region):
                    if (itype.name, region) in self.capacity:
                        self.capacity[itype.name, region] -= 1
                    break
            else:
                raise SoongError(
                    f"no capacity for {itype.name} in {', '.join(request.regions) or 'any region'}",
                    hints=["try another region or type"], nothing_launched=True)
            number = next(self._ids)
            instance = Instance(
                id=f"fake-{number:04d}", state=InstanceState.BOOTING, provider=self.name,
                name=request.name, type_name=itype.name, region=region,
                price_cents_per_hour=itype.price_cents_per_hour, hostname=request.hostname,
                ssh_key_names=tuple(request.ssh_key_names),
                filesystem_names=tuple(request.filesystem_names), tags=dict(request.tags),
                extra={"user_data": request.user_data},
            )
            self._instances[instance.id] = (instance, self.clock.now())
        return instance

    def _current(self, instance: Instance, launched: float) -> Instance:
        if instance.state is InstanceState.BOOTING and self.clock.now() - launched >= self.boot_seconds:
            number = int(instance.id.rsplit("-", 1)[1])
            return replace(instance, state=InstanceState.ACTIVE, ip=f"198.51.100.{number % 250 + 1}")
        return instance

    def list_instances(self) -> list[Instance]:
        self.calls.append(("list_instances", None))
        with self._lock:
            return [self._current(i, t) for i, t in self._instances.values()
                    if i.state is not InstanceState.TERMINATED]

    def terminate(self, instance_ids: Sequence[str]) -> list[Instance]:
        self.calls.append(("terminate", tuple(instance_ids)))
        with self._lock:
            unknown = [i for i in instance_ids if i not in self._instances
                       or self._instances[i][0].state is InstanceState.TERMINATED]
            if unknown:
                raise SoongError(f"unknown instance {unknown[0]!r}: nothing terminated")
            ended = []
            for instance_id in instance_ids:
                instance, launched = self._instances[instance_id]
                done = replace(self._current(instance, launched), state=InstanceState.TERMINATED)
                self._instances[instance_id] = (done, launched)
                ended.append(done)
            return ended

    def set_state(self, instance_id: str, state: InstanceState) -> None:
        """Fault injection: mark an instance ``unhealthy``, ``preempted``..."""
        with self._lock:
            instance, launched = self._instances[instance_id]
            self._instances[instance_id] = (replace(instance, state=state), launched)

    # -- SSH keys -------------------------------------------------------------------

    def list_ssh_keys(self) -> list[SshKey]:
        return list(self._keys.values())

    def add_ssh_key(self, name: str, public_key: str | None = None) -> SshKey:
        if any(k.name == name for k in self._keys.values()):
            raise SoongError(f"an SSH key named {name!r} already exists")
        key_id = f"key-{len(self._keys) + 1}"
        if public_key is None:
            key = SshKey(name, key_id, f"ssh-ed25519 FAKE{key_id} {name}",
                         private_key="-----BEGIN OPENSSH PRIVATE KEY-----\nfake\n")
        else:
            key = SshKey(name, key_id, public_key)
        self._keys[key_id] = replace(key, private_key=None)
        return key

    def delete_ssh_key(self, key_id: str) -> None:
        if self._keys.pop(key_id, None) is None:
            raise SoongError(f"unknown SSH key id {key_id!r}")


class FakeProviderPlugin:
    """Registers one shared :class:`FakeProvider` as provider ``fake``.

    ``plugins.register(FakeProviderPlugin(provider), "fake")`` puts it in a manager.
    """

    def __init__(self, provider: FakeProvider | None = None) -> None:
        self.provider = provider or FakeProvider()

    @hookimpl
    def soong_register_providers(self, register: Any) -> None:
        register("fake", lambda config: self.provider)


class DeclaringPlugin:
    """A launch contribution that *declares* it enforces ``limits`` and does nothing else.

    For tests of what depends on the declaration (the start panel, how history infers
    why an unseen instance ended) without a real agent. ``finish`` adds the tag
    ``test:finished`` with the launch id, so tests can see that it ran at launch.
    ``plugins.register(DeclaringPlugin(("lease", "hard")), "enforcer")``.
    """

    def __init__(self, limits: Sequence[str] = ("lease", "idle", "hard")) -> None:
        self.limits = tuple(limits)
        self.finished: list[LaunchRequest] = []

    def _finish(self, request: LaunchRequest) -> LaunchContribution:
        self.finished.append(request)
        return LaunchContribution(tags={"test:finished": request.tags.get(TAG_LAUNCH_ID, "?")})

    @hookimpl
    def soong_prepare_launch(self, request: LaunchRequest) -> LaunchContribution:
        return LaunchContribution(enforces=self.limits, finish=self._finish)
