"""The interfaces plugins implement: providers, cost policies, tunnels, reporters, activity.

Each is an abstract base class: a plugin subclasses it, and registers a factory for it
through the matching ``soong_register_*`` hook. Factories receive the validated config
(a mapping) and are called only when the object is first needed.

Standard library only: policies and activity sources travel to instances with the agent.
"""

from __future__ import annotations

import enum
from abc import ABC, abstractmethod
from typing import TYPE_CHECKING, ClassVar, Mapping, Sequence, TextIO

from soong_core.errors import UnsupportedError

if TYPE_CHECKING:
    from soong_core.models import (
        ActivitySample,
        Admission,
        Decision,
        Filesystem,
        Image,
        Instance,
        InstanceStatus,
        InstanceType,
        InstanceView,
        LaunchRequest,
        PortForward,
        Region,
        SshKey,
        Timestamp,
        Tunnel,
    )


class Capability(str, enum.Enum):
    """Things a provider may be unable to do. Providers list what they lack, with why.

    Each value's note says where soong checks it. ``TAGS`` and ``USER_DATA`` are what
    soong needs to manage an instance at all (:data:`MANAGED_NEEDS`): a provider lacking
    either is refused before a launch is planned. The others guard the methods that
    need them, except ``SSH_KEY_GENERATION``, ``BATCH_TERMINATE`` and ``FIREWALL``:
    nothing in soong needs those, so they inform the user only.
    """

    STOP = "stop"
    """Stop an instance and keep its disk, to start it again later (:meth:`Provider.stop`)."""
    RESTART = "restart"
    """Restart an instance (:meth:`Provider.restart`)."""
    TAGS = "tags"
    """Attach tags at launch. Without them soong cannot manage an instance's limits:
    refused before a launch (:func:`require_manageable`)."""
    USER_DATA = "user_data"
    """Run a cloud-init script at boot. Without it the lease agent cannot travel:
    refused before a launch (:func:`require_manageable`)."""
    FILESYSTEMS = "filesystems"
    """Persistent filesystems (``start --filesystem`` requires it before the panel)."""
    SSH_KEY_GENERATION = "ssh_key_generation"
    """Generate a key pair in ``add_ssh_key`` (soong itself always sends a public key)."""
    BATCH_TERMINATE = "batch_terminate"
    """Terminate several ids in one call (``terminate`` takes several either way)."""
    FIREWALL = "firewall"
    """Manage firewall rules (soong manages none)."""
    IMAGES = "images"
    """List images (:meth:`Provider.list_images`)."""

    @property
    def phrase(self) -> str:
        """What the capability lets a provider do: "provider 'x' cannot <phrase>"."""
        return _PHRASES[self]


_PHRASES = {
    Capability.STOP: "stop an instance and keep its disk",
    Capability.RESTART: "restart an instance",
    Capability.TAGS: "tag instances",
    Capability.USER_DATA: "run a user_data script at boot",
    Capability.FILESYSTEMS: "manage persistent filesystems",
    Capability.SSH_KEY_GENERATION: "generate SSH keys",
    Capability.BATCH_TERMINATE: "terminate several instances in one call",
    Capability.FIREWALL: "manage firewall rules",
    Capability.IMAGES: "list images",
}

MANAGED_NEEDS: Mapping[Capability, str] = {
    Capability.TAGS: "its launch time and deadlines travel in its tags",
    Capability.USER_DATA: "soong's lease agent travels in the launch's user_data",
}
"""What soong needs of a provider to manage the instances it launches there, each with
why (ending "soong cannot manage an instance launched there: <why>")."""


def require_manageable(provider: Provider) -> None:
    """Raise :class:`UnsupportedError` when ``provider`` lacks a capability of
    :data:`MANAGED_NEEDS`: one line naming the provider, the capability, the provider's
    reason and soong's. The core calls it before planning a launch (and before waiting
    for capacity for one), so the user hears it before anything else."""
    for capability, why in MANAGED_NEEDS.items():
        if not provider.supports(capability):
            reason = " ".join(str(provider.unsupported[capability]).split())
            raise UnsupportedError(
                f"provider {provider.name!r} cannot {capability.phrase} ({reason}): soong "
                f"cannot manage an instance launched there: {why}",
                hints=["choose a provider that can, with `soong configure --provider NAME` "
                       "(`soong plugins` lists the loaded ones)"])


class Provider(ABC):
    """A cloud that sells instances. Verb-noun methods; states mapped onto InstanceState.

    ``unsupported`` declares what this provider cannot do and why; the core checks it
    with :meth:`require` before starting anything, so a user hears "Lambda Cloud cannot
    stop an instance: only terminate" instead of a failure halfway through.
    """

    name: ClassVar[str] = ""
    unsupported: ClassVar[Mapping[Capability, str]] = {}
    endpoint: str | None = None
    """Where this provider's API lives (a URL), when it has one. History and budget are
    kept per provider and :attr:`identity`, or per endpoint when it has none, so a
    simulated cloud never mixes with the real one."""
    default_filesystem: str | None = None
    """The filesystem ``start`` attaches when given none (from the provider's config)."""
    credential_key: ClassVar[str | None] = None
    """The config key holding this provider's API key (``"lambda.api_key"``): ``soong
    configure`` asks for it, hidden, and proves it with one call before saving."""
    filesystem_key: ClassVar[str | None] = None
    """The config key naming the filesystem to attach by default, if the provider has one."""
    name_max_length: ClassVar[int | None] = None
    """The longest instance name the provider accepts, in characters (``None``: no known
    limit): ``start --name`` refuses a longer one at once, before the panel."""
    profile_keys: ClassVar[tuple[str, ...]] = ()
    """The config keys that say which cloud and account this provider talks to (its
    endpoint, key, account id): what ``soong configure`` under a profile writes there,
    beside the core's clock keys and the keys given as flags. Everything else a profile
    would hold is a copy of the main file that outranks it."""
    identity: str | None = None
    """The account this provider talks to, stable when its endpoint moves (the simulator's
    account id; a cloud's account): history and budget are kept per identity when there is
    one, else per endpoint. ``None``: the endpoint is the identity."""

    def supports(self, capability: Capability) -> bool:
        return capability not in self.unsupported

    def require(self, capability: Capability) -> None:
        """Raise :class:`UnsupportedError` with the provider's reason if it lacks ``capability``."""
        if capability in self.unsupported:
            raise UnsupportedError(
                f"provider {self.name!r} cannot {capability.phrase}: "
                f"{self.unsupported[capability]}"
            )

    @abstractmethod
    def list_instance_types(self) -> list[InstanceType]:
        """Every type on sale, with price and the regions that have capacity now."""

    def list_regions(self) -> list[Region] | None:
        """Every region the provider has (with capacity or not), or ``None`` if it cannot
        say; lets ``start`` tell an unknown region from one that is merely full."""
        return None

    def server_time(self) -> float | None:
        """The provider's own clock as of now (POSIX seconds), estimated from its latest
        API answer (an HTTP provider: that answer's ``Date`` plus the time elapsed since
        it came), or ``None`` when it cannot tell (no request made yet, no ``Date``).

        Makes no request. ``start`` compares it with this machine's clock before a
        launch (:func:`soong_core.clock.check_skew`): deadlines in tags are written
        from this machine's clock. Default: ``None`` (nothing is compared).
        """
        return None

    @abstractmethod
    def launch(self, request: LaunchRequest) -> Instance:
        """Launch one instance in the first of ``request.regions`` with capacity.

        Must not launch twice for one request: a provider that retries reconciles by
        the ``soong:launch-id`` tag first.
        """

    @abstractmethod
    def list_instances(self) -> list[Instance]:
        """Every instance the provider lists for the account. Recently ended ones may
        appear with an ended state (``terminated``, ``preempted``): callers filter on
        ``state.billing``, and history learns from ``preempted``."""

    def get_instance(self, instance_id: str) -> Instance | None:
        """One instance, or ``None`` when the provider no longer knows it."""
        for instance in self.list_instances():
            if instance.id == instance_id:
                return instance
        return None

    @abstractmethod
    def terminate(self, instance_ids: Sequence[str]) -> list[Instance]:
        """Terminate all of ``instance_ids`` (in one call where the API allows)."""

    @abstractmethod
    def list_ssh_keys(self) -> list[SshKey]: ...

    @abstractmethod
    def add_ssh_key(self, name: str, public_key: str | None = None) -> SshKey:
        """Add a public key; with none, generate a pair (see ``SSH_KEY_GENERATION``)."""

    @abstractmethod
    def delete_ssh_key(self, key_id: str) -> None: ...

    def restart(self, instance_ids: Sequence[str]) -> list[Instance]:
        self.require(Capability.RESTART)
        raise NotImplementedError

    def stop(self, instance_ids: Sequence[str]) -> list[Instance]:
        self.require(Capability.STOP)
        raise NotImplementedError

    def list_filesystems(self) -> list[Filesystem]:
        self.require(Capability.FILESYSTEMS)
        raise NotImplementedError

    def create_filesystem(self, name: str, region: str) -> Filesystem:
        self.require(Capability.FILESYSTEMS)
        raise NotImplementedError

    def delete_filesystem(self, filesystem_id: str) -> None:
        self.require(Capability.FILESYSTEMS)
        raise NotImplementedError

    def list_images(self) -> list[Image]:
        self.require(Capability.IMAGES)
        raise NotImplementedError


class CostPolicy(ABC):
    """A pure function of (instance view, now) to a decision; optionally an admission check.

    Policies must import nothing beyond the standard library and the core's pure
    modules (``models``, ``clock``, ``interfaces``): the agent carries them to the
    instance and runs exactly the code the CLI runs.
    """

    name: ClassVar[str] = ""

    @abstractmethod
    def evaluate(self, view: InstanceView, now: Timestamp) -> Decision | None:
        """The verdict for ``view`` at ``now``; ``None`` when this policy has no opinion."""

    def admit(self, admission: Admission) -> str | None:
        """Check a launch or an extension before it happens.

        Returns ``None`` to allow it, or the reason for refusing it as one line that
        names the numbers involved (a budget refusal names spend, cap and period).
        """
        return None


class TunnelBackend(ABC):
    """Reaches an instance: port forwards and an interactive shell."""

    name: ClassVar[str] = ""

    @abstractmethod
    def open(self, instance: Instance, forwards: Sequence[PortForward]) -> Tunnel:
        """Start forwarding ``forwards`` to ``instance``; returns once they listen."""

    @abstractmethod
    def close(self, tunnel: Tunnel) -> None: ...

    @abstractmethod
    def list(self) -> list[Tunnel]:
        """Tunnels this backend holds open (across processes, where it can tell)."""

    def shell(self, instance: Instance, command: Sequence[str] = ()) -> int:
        """Run an interactive shell (or ``command``) on the instance; returns its exit code."""
        raise UnsupportedError(f"tunnel backend {self.name!r} cannot open a shell")


class StatusReporter(ABC):
    """Renders instance statuses (a table, JSON, ...). Events reach plugins through
    the ``soong_lifecycle_event`` hook instead."""

    name: ClassVar[str] = ""

    @abstractmethod
    def render(self, statuses: Sequence[InstanceStatus], out: TextIO) -> None: ...


class ActivitySource(ABC):
    """A signal on the instance that somebody is using it (runs inside the agent).

    The agent creates each enabled source once, from ``factory(settings)`` (the source's
    own section of the agent config, ``activity.sources.<name>``, without ``enabled``),
    and calls :meth:`sample` from one thread of its own, never two calls at once, every
    ``activity.sample_seconds`` (wall) and once more before an idle stop. Standard
    library only: sources travel to the instance with the agent.
    """

    name: ClassVar[str] = ""
    bounded: ClassVar[bool] = False
    """True when every look ends by the source's own timeouts (a subprocess killed, a
    request given up): such sources may share one sampling thread. Otherwise the
    source gets a thread of its own, so a look that hangs delays nobody else."""

    @abstractmethod
    def sample(self, now: Timestamp) -> ActivitySample:
        """Look once: is the machine in use at ``now`` (the agent's clock)?

        Must return within a few seconds (give every subprocess and request a timeout)
        and should not raise: a source that cannot look says ``unavailable`` or
        ``unhealthy`` with the reason in ``detail``. An exception is reported as
        ``unhealthy`` and never counts as activity.
        """
