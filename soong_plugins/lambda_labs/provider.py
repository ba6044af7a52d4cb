"""``LambdaProvider``: soong's Provider interface over the Lambda Cloud API.

What it adds to the client (:mod:`.client`):

* the catalogue through the disk cache (:mod:`.cache`), with the fallbacks that keep
  estimates working when the pricing call fails: the last cached catalogue, else the
  bundled price list, each marked in the types' descriptions and in a warning;
* capacity failover: a launch tries ``request.regions`` in order, only those where
  every requested filesystem lives, moving on when one answers "insufficient capacity",
  and says where it landed;
* the mapping of everything onto soong's models (:mod:`.convert`).

Lambda Cloud cannot stop an instance (only terminate it, which deletes its disk), and
soong does not manage its firewall: both are declared in ``unsupported``.
"""

from __future__ import annotations

import time
import uuid
from dataclasses import replace
from pathlib import Path
from typing import Any, ClassVar, Mapping, Sequence

from soong_core.errors import SoongError
from soong_core.interfaces import Capability, Provider
from soong_core.models import (
    TAG_LAUNCH_ID,
    Filesystem,
    Image,
    Instance,
    InstanceState,
    InstanceType,
    LaunchRequest,
    Region,
    SshKey,
    format_timestamp,
    same_public_key,
)
from soong_plugins.lambda_labs import bundled, convert, errors
from soong_plugins.lambda_labs.cache import CAPACITY_TTL, TypeCache
from soong_plugins.lambda_labs.checks import NAME_MAX, check_launch
from soong_plugins.lambda_labs.client import LambdaClient, Launched
from soong_plugins.lambda_labs.redact import get_logger
from soong_plugins.lambda_labs.transport import API_TIMEOUT, ProcessState, Transport

log = get_logger()

DEFAULT_API_URL = "https://cloud.lambda.ai/api/v1"
FALLBACK_ERRORS = (errors.ProviderUnavailableError, errors.RateLimitedError,
                   errors.ApiTimeoutError, errors.UnexpectedReplyError)
"""Failures of the pricing call after which estimates use a cached or bundled price
list. Not among them: a refused key or an inactive account (``configure`` proves a key
by listing types, and must hear it), and an unreachable host (nothing else would work
either, and saying so is more useful than stale prices)."""


LAUNCH_GRACE_SECONDS = 60.0
"""How long after launching it a 404 for an instance means "not listed yet" (wall s)."""


class LambdaProvider(Provider):
    """Lambda Cloud. Build it with :meth:`from_config` (what the plugin's factory does)."""

    name = "lambda"
    credential_key = "lambda.api_key"
    filesystem_key = "lambda.filesystem_name"
    profile_keys: ClassVar[tuple[str, ...]] = ("lambda.api_url", "lambda.api_key",
                                               "lambda.account_id")
    name_max_length = NAME_MAX
    unsupported: ClassVar[Mapping[Capability, str]] = {
        Capability.STOP: "Lambda Cloud can only terminate an instance, which deletes its "
                         "local disk (attach a filesystem to keep files)",
        Capability.FIREWALL: "soong does not manage Lambda Cloud firewall rules: edit them in "
                             "the dashboard (a launch may name existing rulesets)",
    }

    endpoint: str

    def __init__(self, api_url: str = DEFAULT_API_URL, api_key: str | None = None, *,
                 filesystem_name: str | None = None, cache_dir: Path | None = None,
                 state: ProcessState | None = None,
                 api_timeout: float | None = API_TIMEOUT) -> None:
        self.endpoint = api_url.rstrip("/")
        self.default_filesystem = filesystem_name
        self._key = api_key
        # The pacing is the account's: the identity, once from_config has set it, names it.
        self.client = LambdaClient(Transport(self.endpoint, api_key, state=state,
                                             api_timeout=api_timeout,
                                             identity=lambda: self.identity))
        self.cache = TypeCache(self.endpoint, cache_dir)
        self._types: list[InstanceType] | None = None
        self._types_data: dict[str, Any] | None = None
        self._types_at = float("-inf")
        self._recent: dict[str, tuple[float, Instance]] = {}
        self.clock_rate = 1.0
        """Cloud seconds per wall second: the factor of an accelerated ``clock`` (a
        simulator's), so the API's clock is carried forward at its own pace."""
        self.catalogue_source = "none"
        """Where the last catalogue came from: ``live``; ``cache`` (the disk cache, its
        capacity within :data:`~.cache.CAPACITY_TTL`; or, the call having failed, its
        prices within :data:`~.cache.CATALOGUE_TTL` and capacity unknown); ``stale-cache``
        (older) or ``bundled`` (the pricing call failed)."""
        self.catalogue_error: errors.LambdaError | None = None
        """Why the last catalogue is not live (``stale-cache``, ``bundled``), else ``None``."""

    @classmethod
    def from_config(cls, config: Mapping[str, Any]) -> LambdaProvider:
        section = config.get("lambda") or {}
        provider = cls(section.get("api_url") or DEFAULT_API_URL, section.get("api_key"),
                       filesystem_name=section.get("filesystem_name"),
                       api_timeout=_api_timeout(config))
        account = section.get("account_id")  # the simulator's; Lambda Cloud names none
        provider.identity = account.strip() if isinstance(account, str) and account.strip() \
            else None
        clock = config.get("clock") or {}
        if clock.get("mode") == "accelerated" and isinstance(clock.get("factor"), (int, float)):
            provider.clock_rate = float(clock["factor"])
        return provider

    def __repr__(self) -> str:
        return f"LambdaProvider({self.endpoint!r})"

    def server_time(self) -> float | None:
        """Lambda Cloud's clock now, from the ``Date`` of the latest answer this provider
        had (see :meth:`.transport.Transport.server_time`); ``None`` before any (a
        catalogue from the disk cache makes no request). Makes no request."""
        return self.client.transport.server_time(self.clock_rate)

    # -- catalogue -------------------------------------------------------------------------

    def list_instance_types(self) -> list[InstanceType]:
        """Types with prices and capacity no older than :data:`~.cache.CAPACITY_TTL`:
        this process's last answer, else the disk cache's, else a live one (so the
        several questions of one command cost one request, and each poll of
        ``--wait-for-capacity`` is live)."""
        if self._types is not None and self.cache.now() - self._types_at < CAPACITY_TTL:
            return list(self._types)  # a fallback too: one command waits for retries once
        cached = self.cache.with_capacity(self._key)
        if cached is not None:
            self._keep(cached.data, "cache", convert.instance_types(cached.data),
                       at=cached.fetched_at)
            return list(self._types or [])
        return self._fetch_types()

    def _fetch_types(self) -> list[InstanceType]:
        try:
            data = self.client.instance_types()
        except FALLBACK_ERRORS as exc:
            return self._fallback_types(exc)
        if not isinstance(data, dict):
            data = {}
        self.cache.save(data, self._key)
        self._keep(data, "live", convert.instance_types(data))
        return list(self._types or [])

    def _keep(self, data: dict[str, Any], source: str, types: list[InstanceType],
              error: errors.LambdaError | None = None, *, at: float | None = None) -> None:
        """Remember a catalogue as of ``at``, the time of its answer (default now: a live
        answer, or a fallback, which then stands as long so that retries are not redone)."""
        self._types_data, self.catalogue_source, self._types = data, source, types
        self.catalogue_error = error
        self._types_at = self.cache.now() if at is None else at

    def _expire_types(self) -> None:
        """Capacity just proved wrong: the next question about it asks the API, in this
        process and the next (the catalogue stays good for prices)."""
        self.cache.invalidate_capacity()
        self._types_at = float("-inf")

    def _fallback_types(self, exc: errors.LambdaError) -> list[InstanceType]:
        current = self.cache.catalogue(self._key)
        cached = current or self.cache.load()
        if current is not None:
            when = format_timestamp(current.fetched_at)
            log.warning("could not get Lambda Cloud's catalogue (%s): its prices of %s still "
                        "stand; capacity unknown", exc.message, when)
            self._keep(current.data, "cache",
                       convert.instance_types(current.data, "capacity unknown"), exc)
        elif cached is not None:
            when = format_timestamp(cached.fetched_at)
            note = f"cached price list from {when}; capacity unknown"
            log.warning("could not get Lambda Cloud's prices (%s): estimates use the price "
                        "list cached at %s", exc.message, when)
            self._keep(cached.data, "stale-cache", convert.instance_types(cached.data, note),
                       exc)
        else:
            data = bundled.instance_types_payload()
            note = f"bundled price list of {bundled.PRICES_AS_OF}; capacity unknown"
            log.warning("could not get Lambda Cloud's prices (%s): estimates use soong's "
                        "bundled price list of %s", exc.message, bundled.PRICES_AS_OF)
            self._keep(data, "bundled", convert.instance_types(data, note), exc)
        return list(self._types or [])

    def _prices(self) -> dict[str, int]:
        """Type -> cents per hour from whatever catalogue is at hand, with no request."""
        if self._types is None:
            cached = self.cache.load()
            types = convert.instance_types(cached.data if cached else
                                           bundled.instance_types_payload())
        else:
            types = self._types
        return {t.name: t.price_cents_per_hour for t in types}

    def list_regions(self) -> list[Region]:
        """Every region code the API accepts (no request), with descriptions from the
        last catalogue where it named them."""
        return convert.regions(bundled.REGIONS, convert.regions_seen(self._types_data or {}))

    def list_images(self) -> list[Image]:
        return convert.images(self.client.images())

    # -- instances -------------------------------------------------------------------------

    def list_instances(self) -> list[Instance]:
        """Everything the API lists, ended instances included (they stay listed a while,
        and ``preempted`` there is how soong learns the provider ended one)."""
        found = convert.instances(self.client.instances(), self._prices())
        return self._with_network(found, "/instances") if found else found

    def get_instance(self, instance_id: str) -> Instance | None:
        """``GET /instances/{id}``; ``None`` when the API does not know it (404), except
        right after this provider launched it: an API may list a new instance a moment
        after answering the launch, and "vanished while booting" would be a false alarm."""
        data = self.client.instance(instance_id)
        if isinstance(data, dict) and data.get("id"):
            instance = convert.instance(data, self._prices())
            return self._with_network([instance], f"/instances/{instance.id}")[0]
        launched = self._recent.get(instance_id)
        if launched is not None and time.monotonic() - launched[0] < LAUNCH_GRACE_SECONDS:
            log.debug("instance %s is not listed yet, %.0fs after its launch", instance_id,
                      time.monotonic() - launched[0])
            return launched[1]
        return None

    @property
    def talks_to_simulator(self) -> bool:
        """Only ``soong sim up``'s profile names an account (``lambda.account_id``)."""
        return self.identity is not None

    def _with_network(self, instances: list[Instance], sim_path: str) -> list[Instance]:
        """``instances`` with ``extra["ssh_port"]`` (22, as on every real instance) and,
        from a simulator's ``GET /_sim{sim_path}``, the port its sshd really listens on
        and its ``agent_url`` when it has one (DESIGN Interfaces: simulator-only facts).
        A simulator that cannot say leaves port 22, with a warning in the log."""
        facts: dict[str, Mapping[str, Any]] = {}
        if self.talks_to_simulator:
            facts = self._simulator_facts(sim_path)
        result = []
        for instance in instances:
            known = facts.get(instance.id, {})
            port = known.get("ssh_port")
            extra = {**instance.extra, "ssh_port": port if _is_port(port) else 22}
            agent_url = known.get("agent_url")
            if isinstance(agent_url, str) and agent_url:
                extra["agent_url"] = agent_url
            result.append(replace(instance, extra=extra))
        return result

    def _simulator_facts(self, sim_path: str) -> dict[str, Mapping[str, Any]]:
        try:
            reply = self.client.transport.simulator_control(sim_path)
        except errors.LambdaError as exc:
            log.warning("the simulator's instance facts (GET /_sim%s) are not readable: %s; "
                        "assuming SSH port 22", sim_path, exc)
            return {}
        body = reply.body if reply.status == 200 else None
        data = body.get("data") if isinstance(body, dict) else None
        entries: list[Any] = data if isinstance(data, list) else [data] \
            if isinstance(data, dict) else []
        facts: dict[str, Mapping[str, Any]] = {str(e["id"]): e for e in entries if isinstance(e, dict) and e.get("id")}
        if reply.status != 200:
            log.warning("the simulator answered GET /_sim%s with HTTP %d; assuming SSH port "
                        "22", sim_path, reply.status)
        return facts

    def launch(self, request: LaunchRequest) -> Instance:
        """Launch in the first of ``request.regions`` that has capacity (see the module)."""
        tags = dict(request.tags)
        launch_id = tags.setdefault(TAG_LAUNCH_ID, uuid.uuid4().hex)
        try:
            check_launch(request, tags)
            regions = self._regions_for(request)
        except SoongError as exc:
            exc.nothing_launched = True  # refused before any launch request was sent
            raise
        tried: list[str] = []
        certain = True  # every region tried so far surely launched nothing
        for region in regions:
            body = convert.launch_body(request, region, tags)
            action = f"launching {request.type_name} in {region}"
            try:
                launched = self.client.launch(body, launch_id, action=action, region=region)
            except errors.NotFoundError as exc:
                error = errors.NotFoundError(
                    exc.message, code=exc.code, status=exc.status, detail=exc.detail,
                    hints=["something the launch names does not exist: `soong configure` "
                           "registers your SSH key (defaults.ssh_key_name); "
                           "`soong start --filesystem` creates a filesystem"])
                error.nothing_launched = certain and exc.nothing_launched
                raise error from None
            except errors.InsufficientCapacityError as exc:
                certain = certain and exc.nothing_launched
                tried.append(region)
                self._expire_types()
                if region != regions[-1]:
                    log.info("no capacity for %s in %s: trying %s", request.type_name, region,
                             regions[regions.index(region) + 1])
                continue
            if tried:
                log.warning("no capacity for %s in %s: launched in %s instead",
                            request.type_name, ", ".join(tried), region)
            return self._launched(request, launched, region, tags, tried)
        gone = self._no_capacity(request.type_name, tried)
        gone.nothing_launched = certain
        raise gone

    def _regions_for(self, request: LaunchRequest) -> list[str]:
        """``request.regions`` in order, keeping only those where every requested
        filesystem lives (a filesystem is bound to its region)."""
        regions = list(dict.fromkeys(request.regions))
        if not regions:
            wanted = [t for t in self.list_instance_types() if t.name == request.type_name]
            if wanted and not wanted[0].capacity_known:
                raise self._capacity_unknown(request.type_name)
            regions = list(wanted[0].regions_with_capacity) if wanted else []
            if not regions:
                raise self._no_capacity(request.type_name, [])
        if not request.filesystem_names:
            return regions
        found = {fs.name: fs for fs in self.list_filesystems()}
        for name in request.filesystem_names:
            if name not in found:
                raise errors.NotFoundError(
                    f"no filesystem named {name} on Lambda Cloud",
                    hints=[f"create it with `soong start --filesystem {name}` (it offers to), "
                           "or attach none"])
        usable = [r for r in regions
                  if all(found[name].region == r for name in request.filesystem_names)]
        if not usable:
            name = request.filesystem_names[0]
            raise errors.FilesystemWrongRegionError(
                f"filesystem {name} is in {found[name].region}, not in {', '.join(regions)}",
                hints=[f"launch there with --region {found[name].region}, or without the "
                       "filesystem"])
        skipped = [r for r in regions if r not in usable]
        if skipped:
            log.info("skipping %s: the filesystem is not there", ", ".join(skipped))
        return usable

    def _launched(self, request: LaunchRequest, launched: Launched, region: str,
                  tags: Mapping[str, str], tried: Sequence[str]) -> Instance:
        """The new instance as far as known without another request (the launch answer
        holds only its id); waiting for it fetches the rest."""
        extra: dict[str, Any] = {"launch_attempts": launched.attempts}
        if launched.adopted:
            extra["adopted"] = True
        if tried:
            extra["regions_without_capacity"] = list(tried)
        instance = Instance(
            id=launched.instance_id, state=InstanceState.BOOTING, provider=self.name,
            name=request.name, type_name=request.type_name, region=region,
            price_cents_per_hour=self._prices().get(request.type_name),
            hostname=request.hostname, ssh_key_names=tuple(request.ssh_key_names),
            filesystem_names=tuple(request.filesystem_names), tags=dict(tags), extra=extra)
        self._recent[instance.id] = (time.monotonic(), instance)
        return instance

    def _capacity_unknown(self, type_name: str) -> errors.LambdaError:
        """No region asked for, and no live catalogue to say where there is capacity: the
        reason is the catalogue's failure (an outage is reported as one, not as "no
        capacity")."""
        cause = self.catalogue_error or errors.LambdaError("the catalogue is not live")
        return type(cause)(f"cannot tell where {type_name} has capacity: {cause.message}",
                           hints=[*cause.hints, "name a region with --region to try it anyway"],
                           detail=cause.detail, code=getattr(cause, "code", None),
                           status=getattr(cause, "status", None))

    def _no_capacity(self, type_name: str, tried: Sequence[str]) -> errors.InsufficientCapacityError:
        where = ", ".join(tried) if tried else "any region"
        elsewhere: list[str] = []
        try:
            types = self._fetch_types()
            elsewhere = [r for t in types if t.name == type_name
                         for r in t.regions_with_capacity if r not in tried]
        except errors.LambdaError:
            pass
        hint = (f"try --region {elsewhere[0]}" + (f" (also: {', '.join(elsewhere[1:])})"
                                                  if elsewhere[1:] else "")
                if elsewhere else "try --region with another region")
        error = errors.InsufficientCapacityError(
            f"capacity gone in {where}: no {type_name} could be launched",
            hints=[f"{hint}, or --wait-for-capacity"],
            code="instance-operations/launch/insufficient-capacity", status=400)
        error.regions = tuple(tried)
        return error

    def terminate(self, instance_ids: Sequence[str]) -> list[Instance]:
        """One batched call; ids that ended meanwhile are dropped and the rest retried.
        An API that answers an ended id with the instance unchanged instead of a 404
        (the simulator's default) gives the same result: only what is terminating."""
        if not instance_ids:
            return []
        answered = convert.instances(self.client.terminate(instance_ids), self._prices())
        return [instance for instance in answered if not instance.state.ended]

    def restart(self, instance_ids: Sequence[str]) -> list[Instance]:
        return convert.instances(self.client.restart(instance_ids), self._prices())

    # -- SSH keys --------------------------------------------------------------------------

    def list_ssh_keys(self) -> list[SshKey]:
        return convert.ssh_keys(self.client.ssh_keys())

    def add_ssh_key(self, name: str, public_key: str | None = None) -> SshKey:
        """Add ``public_key`` (or have Lambda generate a pair: the private key is in the
        result, once). A key of that name with the same public key counts as added: it
        is what a retried request whose first answer was lost finds."""
        try:
            data = self.client.add_ssh_key(name, public_key)
        except (errors.DuplicateError, errors.InvalidParametersError) as exc:
            # The simulator answers a taken name with invalid-parameters, the API may say
            # duplicate: either way, look at what is there.
            existing = [k for k in self.list_ssh_keys() if k.name == name]
            if public_key and existing and same_public_key(existing[0].public_key, public_key):
                return existing[0]
            if existing:
                raise errors.DuplicateError(
                    f"Lambda Cloud already has an SSH key named {name}",
                    hints=["choose another name, or delete the old key first"],
                    code=exc.code) from None
            raise
        return convert.ssh_key(data if isinstance(data, dict) else {})

    def delete_ssh_key(self, key_id: str) -> None:
        self.client.delete_ssh_key(key_id)

    # -- filesystems -----------------------------------------------------------------------

    def list_filesystems(self) -> list[Filesystem]:
        return convert.filesystems(self.client.filesystems())

    def create_filesystem(self, name: str, region: str) -> Filesystem:
        """Create ``name`` in ``region``; one that already exists there counts as created
        (a retried request whose first answer was lost finds it)."""
        try:
            data = self.client.create_filesystem(name, region)
        except errors.DuplicateError:
            for filesystem in self.list_filesystems():
                if filesystem.name == name and filesystem.region == region:
                    return filesystem
            raise
        return convert.filesystem(data if isinstance(data, dict) else {})

    def delete_filesystem(self, filesystem_id: str) -> None:
        self.client.delete_filesystem(filesystem_id)


def _api_timeout(config: Mapping[str, Any]) -> float:
    """``defaults.api_timeout_seconds`` (``--api-timeout``), else the default."""
    value = (config.get("defaults") or {}).get("api_timeout_seconds")
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not value > 0 \
            or value == float("inf"):
        return API_TIMEOUT
    return float(value)


def _is_port(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and 1 <= value <= 65535
