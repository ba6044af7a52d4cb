"""The simulated cloud's behaviour: what each API operation does to the state.

Every public method takes a request body as parsed JSON, validates it as the API does,
and returns the response's ``data`` payload or raises :class:`ApiError`. No HTTP here:
the server maps paths to these methods, and unit tests call them directly with a
:class:`~soong_core.clock.ManualClock`.

Changes happen under one lock and are persisted (through ``persist``) before the method
returns, so an answer the client saw is never lost by a restart.
"""

from __future__ import annotations

import contextlib
import hashlib
import ipaddress
import secrets
import threading
import uuid
from datetime import datetime
from typing import Any, Callable, Iterator, Mapping

from soong_core.clock import Clock
from soong_core.models import HOUR, InstanceState
from soong_plugins.lambda_labs.simulator import billing, catalogue, errors, validation, views
from soong_plugins.lambda_labs.simulator.errors import invalid_parameters
from soong_plugins.lambda_labs.simulator.state import (
    TERMINATE_ENDED_404,
    AuditEventRecord,
    CloudState,
    FilesystemRecord,
    FirewallRulesetRecord,
    InstanceRecord,
    SshKeyRecord,
)

PUBLIC_NET = ipaddress.IPv4Network("198.18.0.0/15")
"""RFC 2544's benchmarking range: 131,072 addresses no real host owns."""
PRIVATE_NET = ipaddress.IPv4Network("10.0.0.0/8")

AUDIT_PAGE_SIZE = 100
"""Events per page of ``GET /audit-events``; more come with ``page_token``."""

LaunchListener = Callable[[InstanceRecord, "str | None"], None]


def new_id() -> str:
    return uuid.uuid4().hex


class Cloud:
    """One simulated account: its instances, keys, filesystems and firewall, on a clock."""

    def __init__(self, state: CloudState, clock: Clock,
                 persist: Callable[[CloudState], None] | None = None) -> None:
        self.state = state
        self.clock = clock
        self._persist = persist
        self._lock = threading.RLock()
        self._launch_listeners: list[LaunchListener] = []
        self.agent_url: Callable[[str], str | None] = lambda instance_id: None
        """Where an instance's agent answers (the agent runner sets it)."""

    def now(self) -> float:
        return self.clock.now()

    @contextlib.contextmanager
    def locked(self) -> Iterator[CloudState]:
        """The state, for reading consistently (no persistence)."""
        with self._lock:
            yield self.state

    @contextlib.contextmanager
    def changing(self) -> Iterator[CloudState]:
        """The state, for changing; persisted when the block ends without an error."""
        with self._lock:
            yield self.state
            self.save()

    def save(self) -> None:
        with self._lock:
            if self._persist is not None:
                self._persist(self.state)

    def add_launch_listener(self, listener: LaunchListener) -> None:
        """Call ``listener(record, user_data)`` after each launch: how a later component
        (the agent runner) receives user_data, which the state never keeps."""
        self._launch_listeners.append(listener)

    # -- capacity -------------------------------------------------------------------

    def capacity(self, type_name: str, region: str) -> int:
        """Total slots for ``type_name`` in ``region`` (live instances use them)."""
        settings = self.state.settings
        override = settings.capacity.get(f"{type_name}:{region}")
        if override is not None:
            return override
        spec = catalogue.TYPES_BY_NAME.get(type_name)
        if spec is None or region not in spec.regions:
            return 0
        if settings.default_capacity is not None:
            return settings.default_capacity
        return catalogue.DEFAULT_CAPACITY

    def _used(self, now: float) -> dict[tuple[str, str], int]:
        used: dict[tuple[str, str], int] = {}
        for record in self.state.instances.values():
            if record.holds_capacity(now):
                key = (record.type_name, record.region)
                used[key] = used.get(key, 0) + 1
        return used

    def available(self, type_name: str, region: str, now: float | None = None) -> int:
        now = self.now() if now is None else now
        used = self._used(now).get((type_name, region), 0)
        return max(0, self.capacity(type_name, region) - used)

    def capacity_table(self) -> list[dict[str, Any]]:
        """Every (type, region) with slots or overrides: capacity, used, available."""
        with self._lock:
            now = self.now()
            used = self._used(now)
            rows = []
            for spec in catalogue.INSTANCE_TYPES:
                for region in catalogue.REGIONS:
                    key = f"{spec.name}:{region}"
                    if region not in spec.regions and key not in self.state.settings.capacity:
                        continue
                    total = self.capacity(spec.name, region)
                    in_use = used.get((spec.name, region), 0)
                    rows.append({"instance_type": spec.name, "region": region,
                                 "capacity": total, "used": in_use,
                                 "available": max(0, total - in_use)})
            return rows

    def set_capacity(self, type_name: str, region: str, slots: int) -> int:
        """Set the total slots; ``"*"`` for either means every type / every region that
        offers the type. Returns how many (type, region) pairs changed."""
        if type_name != "*" and type_name not in catalogue.TYPES_BY_NAME:
            raise invalid_parameters(f"unknown instance type {type_name!r}")
        if region != "*" and region not in catalogue.REGIONS:
            raise invalid_parameters(f"unknown region {region!r}")
        if isinstance(slots, bool) or not isinstance(slots, int) or slots < 0:
            raise invalid_parameters(f"capacity must be an integer >= 0, got {slots!r}")
        specs = (catalogue.INSTANCE_TYPES if type_name == "*"
                 else (catalogue.TYPES_BY_NAME[type_name],))
        with self.changing() as state:
            count = 0
            for spec in specs:
                regions = spec.regions if region == "*" else (region,)
                for name in regions:
                    state.settings.capacity[f"{spec.name}:{name}"] = slots
                    count += 1
            return count

    # -- instance types, images -------------------------------------------------------

    def list_instance_types(self) -> dict[str, Any]:
        with self._lock:
            now = self.now()
            used = self._used(now)
            result = {}
            for spec in catalogue.INSTANCE_TYPES:
                regions = [catalogue.region_api(region) for region in catalogue.REGIONS
                           if self.capacity(spec.name, region) > used.get((spec.name, region), 0)]
                result[spec.name] = {"instance_type": spec.to_api(),
                                     "regions_with_capacity_available": regions}
            return result

    def list_images(self) -> list[dict[str, Any]]:
        return catalogue.images()

    # -- instances --------------------------------------------------------------------

    def _visible(self, now: float) -> list[InstanceRecord]:
        keep = self.state.settings.ended_visible_seconds
        return sorted((r for r in self.state.instances.values() if r.visible(now, keep)),
                      key=lambda r: (r.launched_at, r.id))

    def _find(self, instance_id: str, now: float) -> InstanceRecord:
        record = self.state.instances.get(instance_id)
        if record is None or not record.visible(now, self.state.settings.ended_visible_seconds):
            raise errors.instance_not_found(instance_id)
        return record

    def list_instances(self, cluster_id: str | None = None) -> list[dict[str, Any]]:
        with self._lock:
            now = self.now()
            if cluster_id is not None:
                return []  # the simulator has no clusters
            return [views.instance(record, now) for record in self._visible(now)]

    def get_instance(self, instance_id: str) -> dict[str, Any]:
        with self._lock:
            now = self.now()
            return views.instance(self._find(instance_id, now), now)

    def rename_instance(self, instance_id: str, body: Any) -> dict[str, Any]:
        body = validation.require_object(body)
        name = validation.string(body, "name", max_length=64)
        with self.changing():
            now = self.now()
            record = self._find(instance_id, now)
            if name is not None:
                record.name = name
            return views.instance(record, now)

    def launch(self, body: Any, account_id: str | None = None) -> dict[str, Any]:
        """``POST /instance-operations/launch``: one instance, validated like the API,
        recorded in the audit log (``account_id``: the owner its event names)."""
        request = _LaunchRequest.parse(body)
        with self.changing() as state:
            now = self.now()
            spec = catalogue.TYPES_BY_NAME.get(request.type_name)
            if spec is None:
                raise errors.launch_resource_not_found(
                    f"Instance type {request.type_name!r} does not exist.",
                    "GET /instance-types lists the instance types.")
            for key_name in request.ssh_key_names:
                if not any(key.name == key_name for key in state.ssh_keys.values()):
                    raise errors.launch_resource_not_found(
                        f"SSH key {key_name!r} does not exist.",
                        "Add it with POST /ssh-keys, or GET /ssh-keys to list yours.")
            names, mounts = self._resolve_filesystems(request, now)
            self._check_image(request)
            self._check_firewall_rulesets(request)
            quota = state.settings.quota_instances
            if quota is not None:
                live = sum(1 for r in state.instances.values() if r.holds_capacity(now))
                if live >= quota:
                    raise errors.quota_exceeded(f"at most {quota} instances at a time")
            if request.region not in catalogue.REGIONS or self.available(
                    spec.name, request.region, now) <= 0:
                raise errors.insufficient_capacity(spec.name, request.region)
            record = self._new_instance(spec.name, request.region, now,
                                        self.state.settings.boot_seconds)
            record.name = request.name
            record.hostname = request.hostname
            record.ssh_key_names = list(request.ssh_key_names)
            record.file_system_names = names
            record.file_system_mounts = mounts
            record.image = request.image
            record.tags = request.tags
            record.firewall_rulesets = request.firewall_rulesets
            if request.user_data is not None:
                encoded = request.user_data.encode("utf-8")
                record.user_data_bytes = len(encoded)
                record.user_data_sha256 = hashlib.sha256(encoded).hexdigest()
            state.instances[record.id] = record
            self._audit(record, "launched", now, account_id)
        for listener in self._launch_listeners:
            listener(record, request.user_data)
        return {"instance_ids": [record.id]}

    def _new_instance(self, type_name: str, region: str, launched_at: float,
                      boot_seconds: float) -> InstanceRecord:
        index = self.state.next_address
        self.state.next_address += 1
        public = PUBLIC_NET.network_address + (index % (PUBLIC_NET.num_addresses - 2)) + 1
        private = PRIVATE_NET.network_address + (index % (PRIVATE_NET.num_addresses - 2)) + 1
        return InstanceRecord(id=new_id(), type_name=type_name, region=region,
                              launched_at=launched_at, active_at=launched_at + boot_seconds,
                              ip=str(public), private_ip=str(private),
                              first_active_at=launched_at + boot_seconds,
                              jupyter_token=secrets.token_hex(16))

    def _resolve_filesystems(self, request: _LaunchRequest, now: float
                             ) -> tuple[list[str], list[dict[str, str]]]:
        by_name = {fs.name: fs for fs in self.state.filesystems.values()}
        chosen: dict[str, str] = {}  # filesystem id -> mount point
        order: list[FilesystemRecord] = []
        for name in request.file_system_names:
            fs = by_name.get(name)
            if fs is None:
                raise errors.launch_resource_not_found(
                    f"Filesystem {name!r} does not exist.",
                    "GET /file-systems lists yours; create one with POST /filesystems.")
            if fs.id not in chosen:
                order.append(fs)
            chosen[fs.id] = f"/lambda/nfs/{fs.name}"
        for mount in request.file_system_mounts:
            fs = self.state.filesystems.get(mount["file_system_id"])
            if fs is None:
                raise errors.launch_resource_not_found(
                    f"Filesystem {mount['file_system_id']!r} does not exist.",
                    "GET /file-systems lists yours with their IDs.")
            if fs.id not in chosen:
                order.append(fs)
            chosen[fs.id] = mount["mount_point"]
        for fs in order:
            if fs.region != request.region:
                raise errors.file_system_in_wrong_region(fs.name, fs.region, request.region)
        mounts = ([{"mount_point": chosen[fs.id], "file_system_id": fs.id} for fs in order]
                  if order else [])
        return [fs.name for fs in order], mounts

    def _check_image(self, request: _LaunchRequest) -> None:
        image = request.image
        if image is None:
            return
        if "id" in image:
            known = {catalogue.image_id(f.family, region): region
                     for f in catalogue.IMAGE_FAMILIES for region in catalogue.REGIONS}
            if known.get(image["id"]) != request.region:
                raise errors.launch_resource_not_found(
                    f"Image {image['id']!r} does not exist in {request.region}.",
                    "GET /images lists the images of each region.")
        elif not any(f.family == image["family"] for f in catalogue.IMAGE_FAMILIES):
            raise errors.launch_resource_not_found(
                f"Image family {image['family']!r} does not exist.",
                "GET /images lists the image families.")

    def _check_firewall_rulesets(self, request: _LaunchRequest) -> None:
        for ruleset_id in request.firewall_rulesets:
            ruleset = self.state.firewall_rulesets.get(ruleset_id)
            if ruleset is None:
                raise errors.launch_resource_not_found(
                    f"Firewall ruleset {ruleset_id!r} does not exist.",
                    "GET /firewall-rulesets lists yours.")
            if ruleset.region != request.region:
                raise invalid_parameters(
                    f"Firewall ruleset {ruleset.name!r} is in {ruleset.region}, not in "
                    f"{request.region}.", "The firewall rulesets must exist in the same "
                    "region as the instance.")

    def _instance_ids(self, body: Any, *, allow_empty: bool = False) -> list[str]:
        body = validation.require_object(body)
        ids = validation.string_list(body, "instance_ids", required=True)
        if not ids and not allow_empty:
            raise invalid_parameters("Invalid request data: instance_ids is empty.")
        return list(dict.fromkeys(ids))

    def _live(self, ids: list[str], now: float) -> list[InstanceRecord]:
        """The records of ``ids``; any unknown or ended one fails the whole call (404)."""
        records = []
        for instance_id in ids:
            record = self._find(instance_id, now)
            if record.status(now).ended:
                raise errors.instance_not_found(instance_id)
            records.append(record)
        return records

    def terminate(self, body: Any, account_id: str | None = None) -> dict[str, Any]:
        """Batch terminate: one unknown id -> 404, nothing terminated. An instance
        already terminating is returned as it is (a retry is harmless), and so is one
        that has ended but is still listed, unless the ``terminate_ended`` setting is
        ``"404"``: then it fails the call like an unknown id. What a client lists, it
        can terminate. No ids: nothing to do, an empty answer."""
        ids = self._instance_ids(body, allow_empty=True)
        with self.changing() as state:
            now = self.now()
            if state.settings.terminate_ended == TERMINATE_ENDED_404:
                records = self._live(ids, now)
            else:
                records = [self._find(instance_id, now) for instance_id in ids]
            for record in records:
                if record.status(now).ended:
                    continue  # unchanged: no new request, no new end time
                if record.terminate_requested_at is None:
                    record.terminate_requested_at = now
                    record.terminated_at = now + self.state.settings.terminate_seconds
                    self._audit(record, "terminated", now, account_id)
            return {"terminated_instances": [views.instance(r, now) for r in records]}

    def restart(self, body: Any) -> dict[str, Any]:
        """Reboot: the instance boots again (``booting`` for the boot delay) and is healthy
        again. Unknown, ended or terminating ids fail the whole call (404)."""
        ids = self._instance_ids(body)
        with self.changing():
            now = self.now()
            records = self._live(ids, now)
            for record in records:
                if record.status(now) is InstanceState.TERMINATING:
                    raise errors.instance_not_found(record.id)
            for record in records:
                record.active_at = now + self.state.settings.boot_seconds
                record.unhealthy_since = None
                record.restarts += 1
            return {"restarted_instances": [views.instance(r, now) for r in records]}

    # -- SSH keys -----------------------------------------------------------------------

    def list_ssh_keys(self) -> list[dict[str, Any]]:
        with self._lock:
            return [views.ssh_key(key) for key in self.state.ssh_keys.values()]

    def add_ssh_key(self, body: Any) -> dict[str, Any]:
        body = validation.require_object(body)
        name = validation.string(body, "name", required=True, min_length=1, max_length=64)
        public_key = validation.string(body, "public_key", min_length=1, max_length=4096)
        assert name is not None
        if public_key is not None:
            public_key = public_key.strip()
            if not validation.PUBLIC_KEY.match(public_key):
                raise invalid_parameters("Invalid request data: public_key is not an OpenSSH "
                                         "public key.", "Give the content of a .pub file, "
                                         "or omit public_key to have a pair generated.")
        private_key = None
        with self.changing() as state:
            if any(key.name == name for key in state.ssh_keys.values()):
                raise invalid_parameters(f"An SSH key named {name!r} already exists.",
                                         "Choose another name, or delete the old key first.")
            if public_key is None:
                from soong_plugins.lambda_labs.simulator.keys import generate_keypair

                public_key, private_key = generate_keypair(name)
            record = SshKeyRecord(id=new_id(), name=name, public_key=public_key,
                                  created_at=self.now())
            state.ssh_keys[record.id] = record
        data = views.ssh_key(record)
        if private_key is not None:
            data["private_key"] = private_key  # returned once, never stored
        return data

    def delete_ssh_key(self, key_id: str) -> dict[str, Any]:
        with self.changing() as state:
            if key_id not in state.ssh_keys:
                # The spec lists no 404 here: an unknown id is an invalid parameter.
                raise invalid_parameters(f"SSH key {key_id!r} does not exist.",
                                         "GET /ssh-keys lists your keys with their IDs.")
            del state.ssh_keys[key_id]
            return {}

    # -- filesystems --------------------------------------------------------------------

    def _filesystem_in_use(self, fs: FilesystemRecord, now: float) -> bool:
        return any(r.holds_capacity(now) and fs.name in r.file_system_names
                   for r in self.state.instances.values())

    def _bytes_used(self, fs: FilesystemRecord, now: float) -> int:
        """``bytes_used``: what the record holds, plus the growth knob's rate over the
        simulated time at least one active instance had it mounted (overlapping mounts
        count once). Derived on read, so a changed rate applies to the past too."""
        rate = self.state.settings.filesystem_growth_bytes_per_hour
        if not rate:
            return fs.bytes_used
        spans = sorted(span for r in self.state.instances.values()
                       if fs.name in r.file_system_names
                       for span in [r.mounted_between(now)] if span is not None)
        seconds = 0.0
        reached = float("-inf")
        for start, end in spans:
            start = max(start, reached)
            if end > start:
                seconds += end - start
                reached = end
        return fs.bytes_used + int(rate * seconds / HOUR)

    def list_filesystems(self) -> list[dict[str, Any]]:
        with self._lock:
            now = self.now()
            return [views.filesystem(fs, self._filesystem_in_use(fs, now),
                                     self._bytes_used(fs, now))
                    for fs in self.state.filesystems.values()]

    def create_filesystem(self, body: Any) -> dict[str, Any]:
        body = validation.require_object(body)
        name = validation.string(body, "name", required=True, min_length=1, max_length=60,
                                 pattern=validation.FILESYSTEM_NAME)
        region = validation.region(body, "region")
        assert name is not None
        if region not in catalogue.REGIONS:
            raise invalid_parameters(f"Filesystems cannot be created in {region}.",
                                     f"Use one of {', '.join(catalogue.REGIONS)}.")
        with self.changing() as state:
            if any(fs.name == name for fs in state.filesystems.values()):
                raise errors.duplicate(f"A filesystem named {name!r} already exists.")
            record = FilesystemRecord(id=new_id(), name=name, region=region,
                                      created_at=self.now())
            state.filesystems[record.id] = record
            return views.filesystem(record, False, record.bytes_used)

    def delete_filesystem(self, filesystem_id: str) -> dict[str, Any]:
        with self.changing() as state:
            fs = state.filesystems.get(filesystem_id)
            if fs is None:
                raise errors.filesystem_not_found(filesystem_id)
            if self._filesystem_in_use(fs, self.now()):
                raise errors.filesystem_in_use(fs.name)
            del state.filesystems[filesystem_id]
            return {"deleted_ids": [filesystem_id]}

    # -- firewall ---------------------------------------------------------------------

    def get_firewall_rules(self) -> list[dict[str, Any]]:
        with self._lock:
            return [dict(rule) for rule in self.state.firewall_rules]

    def put_firewall_rules(self, body: Any) -> list[dict[str, Any]]:
        body = validation.require_object(body)
        if "data" not in body:
            raise invalid_parameters("Invalid request data: data is required.")
        rules = validation.firewall_rules(body["data"], "data")
        with self.changing() as state:
            state.firewall_rules = rules
            return [dict(rule) for rule in rules]

    def _ruleset_view(self, ruleset: FirewallRulesetRecord, now: float) -> dict[str, Any]:
        users = [r.id for r in self.state.instances.values()
                 if ruleset.id in r.firewall_rulesets and r.holds_capacity(now)]
        return views.firewall_ruleset(ruleset, users)

    def list_firewall_rulesets(self) -> list[dict[str, Any]]:
        with self._lock:
            now = self.now()
            return [self._ruleset_view(r, now) for r in self.state.firewall_rulesets.values()]

    def create_firewall_ruleset(self, body: Any) -> dict[str, Any]:
        body = validation.require_object(body)
        name = validation.string(body, "name", required=True, max_length=64)
        region = validation.region(body, "region")
        if "rules" not in body:
            raise invalid_parameters("Invalid request data: rules is required.")
        rules = validation.firewall_rules(body["rules"], "rules")
        assert name is not None
        if region not in catalogue.REGIONS:
            raise invalid_parameters(f"Firewall rulesets cannot be created in {region}.")
        with self.changing() as state:
            record = FirewallRulesetRecord(id=new_id(), name=name, region=region,
                                           created_at=self.now(), rules=rules)
            state.firewall_rulesets[record.id] = record
            return self._ruleset_view(record, self.now())

    def _ruleset(self, ruleset_id: str) -> FirewallRulesetRecord:
        record = self.state.firewall_rulesets.get(ruleset_id)
        if record is None:
            raise errors.firewall_ruleset_not_found()
        return record

    def get_firewall_ruleset(self, ruleset_id: str) -> dict[str, Any]:
        with self._lock:
            return self._ruleset_view(self._ruleset(ruleset_id), self.now())

    def patch_firewall_ruleset(self, ruleset_id: str, body: Any) -> dict[str, Any]:
        body = validation.require_object(body)
        name = validation.string(body, "name", max_length=64)
        rules = validation.firewall_rules(body["rules"], "rules") if "rules" in body else None
        with self.changing():
            record = self._ruleset(ruleset_id)
            if name is not None:
                record.name = name
            if rules is not None:
                record.rules = rules
            return self._ruleset_view(record, self.now())

    def delete_firewall_ruleset(self, ruleset_id: str) -> dict[str, Any]:
        with self.changing() as state:
            record = self._ruleset(ruleset_id)
            if self._ruleset_view(record, self.now())["instance_ids"]:
                raise errors.firewall_ruleset_in_use()
            del state.firewall_rulesets[ruleset_id]
            return {}

    def get_global_firewall_ruleset(self) -> dict[str, Any]:
        with self._lock:
            return {"id": "global", "name": "Global Firewall Rules",
                    "rules": [dict(rule) for rule in self.state.global_rules]}

    def patch_global_firewall_ruleset(self, body: Any) -> dict[str, Any]:
        body = validation.require_object(body)
        if "rules" in body:
            rules = validation.firewall_rules(body["rules"], "rules")
            with self.changing() as state:
                state.global_rules = rules
        return self.get_global_firewall_ruleset()

    # -- audit events -----------------------------------------------------------------

    def _audit(self, record: InstanceRecord, action: str, now: float,
               account_id: str | None) -> None:
        """Append an instance's event (under the lock, persisted with the change)."""
        self.state.audit_events.append(AuditEventRecord(
            id=new_id(), time=now, resource_name="instance", action=action,
            resource_ids=[record.id], owner=account_id,
            details={"instance_lrn": views.lrn("instance", record.id),
                     "instance_type": record.type_name, "region": record.region}))

    def audit_events(self, query: Mapping[str, str]) -> dict[str, Any]:
        """Instance launches and terminations, oldest first: ``start`` and ``end``
        (inclusive, ISO 8601) bound the time, ``resource_type`` (``cloud.instance``)
        filters, and a page of :data:`AUDIT_PAGE_SIZE` events names the next with
        ``page_token`` (``null`` on the last). A token belongs to the query it came
        from: the same filters give the next page."""
        start = _query_time(query, "start")
        end = _query_time(query, "end")
        if start is not None and end is not None and start > end:
            raise invalid_parameters("Invalid request data: start is after end.")
        offset = _page_offset(query.get("page_token"))
        resource_type = query.get("resource_type")
        with self._lock:
            chosen = [event for event in self.state.audit_events
                      if (start is None or event.time >= start)
                      and (end is None or event.time <= end)
                      and (resource_type is None or event.resource_type == resource_type)]
        page = chosen[offset:offset + AUDIT_PAGE_SIZE]
        following = offset + AUDIT_PAGE_SIZE
        token = _page_token(following) if following < len(chosen) else None
        return {"events": [views.audit_event(event) for event in page], "page_token": token}

    # -- simulator-only operations (the control endpoint) --------------------------------

    def set_fault(self, instance_id: str, fault: str) -> dict[str, Any]:
        """Mark an instance ``unhealthy``, ``healthy`` again, or ``preempted`` (ended by
        the provider: billing stops, capacity is freed)."""
        with self.changing():
            now = self.now()
            record = self._find(instance_id, now)
            status = record.status(now)
            if status.ended or status is InstanceState.TERMINATING:
                raise invalid_parameters(f"instance {instance_id} is {status.value}")
            if fault == "unhealthy":
                record.unhealthy_since = now
            elif fault == "healthy":
                record.unhealthy_since = None
            elif fault == "preempted":
                record.preempted_at = now
            else:
                raise invalid_parameters(f"unknown fault {fault!r}",
                                         "use unhealthy, healthy, preempted, agent_kill "
                                         "or agent_dead")
            return views.instance(record, now)

    def sim_instance(self, instance_id: str) -> dict[str, Any]:
        """What only the simulator knows of an instance (``GET /_sim/instances/{id}``)."""
        with self.locked():
            now = self.now()
            return views.sim_extras(self._find(instance_id, now), now,
                                    self.agent_url(instance_id))

    def sim_instances(self) -> list[dict[str, Any]]:
        """:meth:`sim_instance` of every instance the API lists."""
        with self.locked():
            now = self.now()
            return [views.sim_extras(record, now, self.agent_url(record.id))
                    for record in self._visible(now)]

    def set_network(self, instance_id: str, body: Any) -> dict[str, Any]:
        """Point an instance at a real address and SSH port (a test's sshd): ``{"ip"?,
        "ssh_port"?}``; the API then shows that ``ip``, and soong connects there."""
        body = validation.require_object(body)
        unknown = sorted(set(body) - {"ip", "ssh_port"})
        if unknown:
            raise invalid_parameters(f"unknown field(s) {', '.join(unknown)}: a network "
                                     "takes ip and ssh_port")
        if not body:
            raise invalid_parameters("give ip, ssh_port or both")
        ip = validation.string(body, "ip")
        if ip is not None:
            import ipaddress

            try:
                ip = str(ipaddress.IPv4Address(ip))
            except ValueError:
                raise invalid_parameters(f"ip must be an IPv4 address, got {ip!r}") from None
        port = body.get("ssh_port")
        if port is not None and (isinstance(port, bool) or not isinstance(port, int)
                                 or not 1 <= port <= 65535):
            raise invalid_parameters(f"ssh_port must be an integer from 1 to 65535, "
                                     f"got {port!r}")
        with self.changing():
            now = self.now()
            record = self._find(instance_id, now)
            if record.status(now).ended:
                raise invalid_parameters(f"instance {instance_id} is "
                                         f"{record.status(now).value}")
            if ip is not None:
                record.ip = ip
            if port is not None:
                record.ssh_port = port
            return views.sim_extras(record, now, self.agent_url(record.id))

    def seed(self, body: Any) -> dict[str, Any]:
        """Create instances directly, with no rate limit, capacity or quota: fleets for
        benchmarks. ``{i}`` in ``name`` and tag values is replaced by the instance's
        index (0-based) and ``{id}`` by its id, so each can carry a unique launch id."""
        body = validation.require_object(body)
        count = body.get("count", 1)
        if isinstance(count, bool) or not isinstance(count, int) or not 1 <= count <= 100_000:
            raise invalid_parameters(f"count must be an integer from 1 to 100000, got {count!r}")
        type_name = validation.string(body, "instance_type") or "gpu_1x_a10"
        spec = catalogue.TYPES_BY_NAME.get(type_name)
        if spec is None:
            raise invalid_parameters(f"unknown instance type {type_name!r}")
        region = validation.string(body, "region") or spec.regions[0]
        if region not in catalogue.REGIONS:
            raise invalid_parameters(f"unknown region {region!r}")
        status = validation.string(body, "status") or "active"
        if status not in ("active", "booting"):
            raise invalid_parameters(f"status must be active or booting, got {status!r}")
        ago = body.get("launched_seconds_ago", 0)
        if isinstance(ago, bool) or not isinstance(ago, (int, float)) or ago < 0:
            raise invalid_parameters(f"launched_seconds_ago must be a number >= 0, got {ago!r}")
        name = validation.string(body, "name", max_length=64)
        raw_tags = body.get("tags", [])
        if isinstance(raw_tags, Mapping):
            raw_tags = [{"key": k, "value": v} for k, v in raw_tags.items()]
        template_tags = validation.tags({"tags": raw_tags})
        ssh_key_names = validation.string_list(body, "ssh_key_names")
        ids = []
        with self.changing() as state:
            now = self.now()
            launched = now - float(ago)
            boot = state.settings.boot_seconds
            for index in range(count):
                record = self._new_instance(spec.name, region, launched,
                                            0.0 if status == "active" else boot + float(ago))
                record.seeded = True
                record.ssh_key_names = list(ssh_key_names)
                if name is not None:
                    record.name = _fill(name, index, record.id)[:64]
                record.tags = validation.tags({"tags": [
                    {"key": t["key"], "value": _fill(t["value"], index, record.id)}
                    for t in template_tags]})
                state.instances[record.id] = record
                ids.append(record.id)
        return {"instance_ids": ids}

    def billing(self, instance_id: str | None = None) -> dict[str, Any]:
        with self._lock:
            now = self.now()
            if instance_id is not None:
                record = self.state.instances.get(instance_id)
                if record is None:
                    raise errors.instance_not_found(instance_id)
                return billing.instance_bill(record, now)
            records = sorted(self.state.instances.values(), key=lambda r: (r.launched_at, r.id))
            return billing.report(records, now)

    def counts(self) -> dict[str, int]:
        """Visible instances by status, plus every instance ever launched (``total``)."""
        with self._lock:
            now = self.now()
            counts = {state.value: 0 for state in InstanceState}
            for record in self._visible(now):
                counts[record.status(now).value] += 1
            counts["total"] = len(self.state.instances)
            return counts


def _query_time(query: Mapping[str, str], key: str) -> float | None:
    """``start``/``end`` as simulated seconds; a time without an offset is UTC."""
    from datetime import timezone

    if key not in query:
        return None
    text = query[key]
    try:
        parsed = datetime.fromisoformat(text.strip().replace("Z", "+00:00"))
        if parsed.tzinfo is None:
            parsed = parsed.replace(tzinfo=timezone.utc)
        return parsed.timestamp()
    except (ValueError, OverflowError, OSError):
        raise invalid_parameters(f"Invalid request data: {key} {text!r} is not an ISO 8601 "
                                 "timestamp.", "Use a form like 2025-09-01T10:30:45Z.") from None


def _page_token(offset: int) -> str:
    """An opaque token, shaped like the spec's example (base64 of ``{"next": N}``)."""
    import base64
    import json

    return base64.b64encode(json.dumps({"next": offset}).encode()).decode()


def _page_offset(token: str | None) -> int:
    if token is None:
        return 0
    import base64
    import binascii
    import json

    try:
        offset = json.loads(base64.b64decode(token, validate=True).decode())["next"]
    except (binascii.Error, ValueError, UnicodeDecodeError, TypeError, KeyError):
        offset = None
    if isinstance(offset, bool) or not isinstance(offset, int) or offset < 0:
        raise invalid_parameters("Invalid request data: page_token is not a token this API "
                                 "returned.", "Leave it out to start from the first page.")
    return offset


def _fill(template: str, index: int, instance_id: str) -> str:
    return template.replace("{i}", str(index)).replace("{id}", instance_id)


class _LaunchRequest:
    """A launch body checked against ``InstanceLaunchRequest`` (types, patterns, sizes)."""

    def __init__(self) -> None:
        self.region = ""
        self.type_name = ""
        self.ssh_key_names: list[str] = []
        self.file_system_names: list[str] = []
        self.file_system_mounts: list[dict[str, str]] = []
        self.hostname: str | None = None
        self.name: str | None = None
        self.image: dict[str, str] | None = None
        self.user_data: str | None = None
        self.tags: list[dict[str, str]] = []
        self.firewall_rulesets: list[str] = []

    @classmethod
    def parse(cls, body: Any) -> _LaunchRequest:
        body = validation.require_object(body)
        request = cls()
        request.region = validation.region(body, "region_name")
        type_name = validation.string(body, "instance_type_name", required=True)
        assert type_name is not None
        request.type_name = type_name
        request.ssh_key_names = validation.string_list(body, "ssh_key_names", required=True)
        if len(request.ssh_key_names) != 1:
            raise invalid_parameters(
                f"Invalid request data: exactly one SSH key must be specified, got "
                f"{len(request.ssh_key_names)}.", "Give one name in ssh_key_names.")
        request.file_system_names = validation.string_list(body, "file_system_names")
        for index, mount in enumerate(validation.object_list(body, "file_system_mounts")):
            point = validation.string(mount, "mount_point", required=True, max_length=256,
                                      pattern=validation.MOUNT_POINT)
            fs_id = validation.string(mount, "file_system_id", required=True)
            assert point is not None and fs_id is not None, index
            request.file_system_mounts.append({"mount_point": point, "file_system_id": fs_id})
        request.hostname = validation.string(body, "hostname", min_length=1, max_length=63,
                                             pattern=validation.HOSTNAME)
        request.name = validation.string(body, "name", max_length=64)
        request.image = _image(body)
        request.user_data = validation.string(body, "user_data")
        if request.user_data is not None:
            size = len(request.user_data.encode("utf-8"))
            if size > validation.USER_DATA_MAX_BYTES:
                raise invalid_parameters(
                    f"Invalid request data: user_data is {size} bytes, more than 1MB "
                    f"({validation.USER_DATA_MAX_BYTES} bytes).", "Make the script smaller.")
        _check_quantity(body)
        request.tags = validation.tags(body)
        for entry in validation.object_list(body, "firewall_rulesets"):
            ruleset_id = validation.string(entry, "id", required=True)
            assert ruleset_id is not None
            request.firewall_rulesets.append(ruleset_id)
        return request


def _check_quantity(body: Mapping[str, Any]) -> None:
    """``quantity``, which the spec no longer defines: the API launches one instance per
    call and refuses more with this message (reproduced against it in SkyPilot issue
    7084). Zero, a negative count or a non-integer is the simulator's refusal."""
    if "quantity" not in body:
        return
    quantity = body["quantity"]
    if isinstance(quantity, bool) or not isinstance(quantity, int) or quantity < 1:
        raise invalid_parameters("Invalid request data: quantity must be 1.",
                                 "Leave quantity out: each launch starts one instance.")
    if quantity > 1:
        raise invalid_parameters("Requested too many instances.",
                                 "Launch one instance per request (leave quantity out).")


def _image(body: Mapping[str, Any]) -> dict[str, str] | None:
    if "image" not in body:
        return None
    image = body["image"]
    if isinstance(image, Mapping):
        if isinstance(image.get("id"), str):
            return {"id": image["id"]}
        if isinstance(image.get("family"), str):
            return {"family": image["family"]}
    raise invalid_parameters("Invalid request data: image must be {\"id\": ...} or "
                             "{\"family\": ...}.")
