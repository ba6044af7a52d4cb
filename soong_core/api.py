"""The embedding API: launch, list, explain, extend and stop instances from Python.

    from soong_core import Soong

    soong = Soong.from_config()                     # the user's config file, env, plugins
    instance = soong.launch("gpu_1x_a10", hours=2)
    for status in soong.status():
        print(status.instance.id, status.decision.message)
    soong.stop([instance.id])

The CLI is a thin layer over this class. Each ``Soong`` owns its plugin manager, config,
clock and history, so several can live in one process (a test, a notebook, a service).
"""

from __future__ import annotations

import logging
import math
import time
import uuid
from dataclasses import dataclass
from decimal import Decimal
from functools import cached_property
from typing import TYPE_CHECKING, Any, Callable, Iterable, Mapping, Sequence

from soong_core import budget, costs, policy
from soong_core.clock import Clock, check_skew, clock_from_config
from soong_core.display import format_duration
from soong_core.errors import SoongError, UsageError
from soong_core.models import (
    HOUR,
    TAG_HARD_DEADLINE,
    Admission,
    TAG_LAUNCH_ID,
    TAG_LAUNCHED_AT,
    TAG_LEASE_DEADLINE,
    TAG_MODEL,
    Event,
    EventKind,
    Instance,
    InstanceState,
    InstanceStatus,
    InstanceType,
    InstanceView,
    LaunchContribution,
    LaunchRequest,
    LIMITS,
    Reason,
    ReportedView,
    format_timestamp,
)

if TYPE_CHECKING:
    from soong_core.history import History
    from soong_core.interfaces import Provider
    from soong_core.plugins import Plugins

log = logging.getLogger("soong.api")

POLL_SECONDS = 1.0
"""Between readiness polls: the Lambda API allows one request per second."""
CAPACITY_POLL_SECONDS = 10.0
STATUS_DETAILS_BUDGET_S = 2.0
"""Wall seconds ``status`` waits in all for the plugins' details (the agents' answers)."""


@dataclass(frozen=True)
class Extension:
    """What ``extend`` did: the lease moved from ``previous`` to ``deadline``."""

    instance_id: str
    hours: float
    previous: float
    deadline: float
    hard_deadline: float
    cost: Decimal


@dataclass(frozen=True)
class ExtensionPlan:
    """An extension checked but not done (:meth:`Soong.plan_extension`): the instance,
    the extension it would be, and the budget's view of it (for a confirmation)."""

    instance: Instance
    extension: Extension
    admission: Admission


class Soong:
    """One soong core: a provider, its policies, history and budget, over a config.

    :param config: the configuration: a :class:`~soong_core.config.Config`, or a plain
        mapping (``{"defaults": {"gpu": ...}}`` or ``{"defaults.gpu": ...}``) validated
        against the schema with defaults filled in; ``None``: defaults only.
    :param plugins: the plugin manager (default: a fresh one with entry points).
    :param clock: the clock (default: from the ``clock`` config section; real time).
    :param history: the history store (default: the one under ``$XDG_DATA_HOME`` in the
        provider's namespace).
    :param sleep: how to wait between polls (default ``time.sleep``).
    """

    def __init__(self, config: Mapping[str, Any] | None = None, *,
                 plugins: Plugins | None = None, clock: Clock | None = None,
                 history: History | None = None,
                 sleep: Callable[[float], None] | None = None) -> None:
        from soong_core.config import Config, make_config
        from soong_core.plugins import make_plugins

        self.plugins = plugins if plugins is not None else make_plugins()
        if isinstance(config, Config):
            self.config = config
        else:
            self.config = make_config(_flatten(config or {}), plugins=self.plugins)
        self.clock = clock if clock is not None else clock_from_config(self.config["clock"])
        self.sleep = sleep if sleep is not None else time.sleep
        """Waits between polls, in wall seconds (rate limits are real time): inject
        ``ManualClock.sleep`` in tests so that waiting moves simulated time instead."""
        if history is not None:
            self.__dict__["history"] = history
        self._reconciled: list[Event] = []
        self.status_details_budget_s = STATUS_DETAILS_BUDGET_S
        """Wall seconds :meth:`status` waits in all for ``soong_status_details`` (asked
        of every instance at once); what answers later is left out, with a warning."""

    @classmethod
    def from_config(cls, path: str | None = None, *, plugins: Plugins | None = None,
                    profile: str | None = None, overrides: Mapping[str, Any] | None = None,
                    clock: Clock | None = None) -> Soong:
        """Load the user's configuration (file, environment, ``profile``, ``overrides``)."""
        from soong_core.config import load_config
        from soong_core.plugins import make_plugins

        plugins = plugins if plugins is not None else make_plugins()
        config = load_config(path, plugins=plugins, overrides=overrides, profile=profile)
        return cls(config, plugins=plugins, clock=clock)

    # -- parts, made on first use ------------------------------------------------------

    @cached_property
    def provider(self) -> Provider:
        return self.plugins.providers().create(self.config["defaults"]["provider"], self.config)

    @cached_property
    def history(self) -> History:
        from soong_core.history import History, namespace_for

        # Per account when the provider names one (a simulator keeps its history when it
        # comes back on another port); rows recorded per endpoint before are adopted.
        by_endpoint = namespace_for(self.provider.name or "provider", self.provider.endpoint)
        if self.account == by_endpoint:
            return History.open(namespace=by_endpoint)
        return History.open(namespace=self.account, adopt=[by_endpoint])

    @cached_property
    def account(self) -> str:
        """Which provider account this core works on, as a stable key: the history
        namespace (the provider's identity when it has one, else its endpoint)."""
        from soong_core.history import namespace_for

        name, identity = self.provider.name or "provider", self.provider.identity
        if not identity:
            return namespace_for(name, self.provider.endpoint)
        return namespace_for(name, identity=identity)

    def close(self) -> None:
        if "history" in self.__dict__:
            self.history.close()

    def __enter__(self) -> Soong:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- catalogue and instances -----------------------------------------------------------

    def instance_types(self) -> list[InstanceType]:
        return self.provider.list_instance_types()

    def instance_type(self, name: str) -> InstanceType:
        types = self.instance_types()
        for itype in types:
            if itype.name == name:
                return itype
        known = ", ".join(sorted(t.name for t in types))
        raise UsageError(f"unknown GPU type {name!r}", hints=[f"known types: {known}"])

    def instances(self) -> list[Instance]:
        """Every instance the provider lists (soong's and others'; recently ended ones
        may appear with an ended state), after bringing history up to date with that
        list (:meth:`reconcile`): whatever reads instances here reads the same records.
        """
        return self._list_reconciled()

    def _list_reconciled(self, *, tolerant: bool = False) -> list[Instance]:
        """The provider's list, with history reconciled against it. ``tolerant``: a
        history that cannot be written is one warning, not an error (what only shows
        instances can do without the records; what commits money cannot)."""
        from soong_core.history import HistoryError

        listed = self.provider.list_instances()
        try:
            self.reconcile(listed)
        except HistoryError as exc:
            if not tolerant:
                raise
            log.warning("history not brought up to date: %s", exc.message)
        self.seen(listed, complete=True)
        return listed

    def seen(self, instances: Sequence[Instance], *, complete: bool = False) -> None:
        """Tell the plugins what was just seen of the provider's instances
        (``soong_instances_seen``); ``complete``: ``instances`` is the whole list, so
        what is absent has ended. The core calls it wherever it lists or waits; a
        program that gets instances some other way may call it too."""
        self.plugins.instances_seen(instances, complete=complete, account=self.account,
                                    config=self.config)

    def reconcile(self, instances: Sequence[Instance] | None = None) -> list[Event]:
        """Record in history what the provider's list shows happened unseen: launches
        whose answer was lost (adopted by launch id), instances that ended (with the
        reason and cost range they allow), when each was last seen billing. See
        :mod:`soong_core.reconcile`. The events recorded are returned, and kept for
        :meth:`take_reconciled` (the CLI prints a note for each)."""
        from soong_core.reconcile import reconcile

        recorded = reconcile(self, instances=instances)
        self._reconciled.extend(recorded)
        return recorded

    def take_reconciled(self) -> list[Event]:
        """The events reconciliation recorded since the last call, oldest first."""
        taken, self._reconciled = self._reconciled, []
        return sorted(taken, key=lambda e: e.at)

    def instance(self, instance_id: str) -> Instance:
        found = self.provider.get_instance(instance_id)
        if found is None:
            raise SoongError(f"no instance {instance_id!r}",
                             hints=["run `soong status` to list instances"])
        return found

    # -- launch ------------------------------------------------------------------------------

    def plan_launch(self, type_name: str | None = None, *, regions: Sequence[str] | None = None,
                    hours: float | None = None, name: str | None = None,
                    model: str | None = None, filesystem_names: Sequence[str] = (),
                    ssh_key_names: Sequence[str] | None = None,
                    hard_timeout_hours: float | None = None,
                    user_data: str | None = None) -> LaunchPlan:
        """Check a launch and price it without launching: what ``start`` shows first.

        Lists the provider's instances (reconciling history with them, so committed
        spend is current), checks this machine's clock against the provider's, and
        collects every plugin's launch contribution (which says what enforces each
        limit). Raises :class:`UnsupportedError` first when the provider cannot carry
        what soong manages an instance by (tags, user_data:
        :func:`~soong_core.interfaces.require_manageable`); :class:`UsageError` for a
        bad type, region or number of hours, or when no policy would limit the launch
        or a set budget cannot be checked; :class:`SoongError` when the budget refuses
        or the clock is off.

        ``user_data`` is the user's own cloud-init part (a ``#!`` script or a
        ``#cloud-config`` file): it joins the plugins' parts, after them, and never
        replaces one; a part of another kind is a :class:`UsageError`.
        """
        from soong_core.interfaces import require_manageable
        from soong_core.models import USER_PART, part_type

        require_manageable(self.provider)
        if user_data is not None:
            try:
                part_type(user_data)
            except ValueError as exc:
                raise UsageError(f"user data: {exc}") from None
        defaults = self.config["defaults"]
        type_name = type_name or defaults["gpu"]
        if not type_name:
            raise UsageError("no GPU type given", hints=["pass --gpu TYPE or set one with "
                                                         "`soong config set defaults.gpu TYPE`"])
        hard = float(hard_timeout_hours if hard_timeout_hours is not None
                     else defaults["hard_timeout_hours"])
        lease = float(hours if hours is not None else defaults["lease_hours"])
        if not 1 <= lease <= hard:
            raise UsageError(f"a lease of {lease:g} hours is out of range: from 1 to {hard:g} "
                             "(the hard limit)", hints=["pass --hours between those"])
        now = self.clock.now()
        self._require_limits("launch", InstanceView(
            instance_id="(new instance)", launched_at=now, lease_deadline=now + lease * HOUR,
            hard_deadline=now + hard * HOUR, idle_timeout_s=None,
            warn_before_s=defaults["warn_before_minutes"] * 60.0, settings=self.config))
        itype = self.instance_type(type_name)
        wanted = list(regions) if regions else [r for r in [defaults["region"],
                                                            *defaults["fallback_regions"]] if r]
        wanted = self._check_regions(itype, wanted)
        listed = self.instances()
        simulated = (self.config.get("clock") or {}).get("mode") == "accelerated"
        check_skew(self.clock.now(), self.provider.server_time(),
                   service=f"the {self.provider.name} API",
                   hints=["this clock is a simulated one, from the `clock` section that "
                          "`soong sim up` writes into the sim profile: `soong sim down` then "
                          "`soong sim up` writes it anew"] if simulated else None)
        now = self.clock.now()
        admission = budget.check_launch(
            self.plugins.policies().create_all(self.config), self.config, now=now,
            price_cents_per_hour=itype.price_cents_per_hour, hours=lease,
            ended_costs=lambda since: self.history.ended_cost(since=since),
            running=self._running_costs(listed), type_name=itype.name)
        if ssh_key_names is None:
            key_name = self.config.get("defaults.ssh_key_name")
            ssh_key_names = (key_name,) if key_name else ()
        request = LaunchRequest(
            type_name=itype.name, regions=tuple(dict.fromkeys(wanted)),
            ssh_key_names=tuple(ssh_key_names), name=name,
            filesystem_names=tuple(filesystem_names), lease_hours=lease,
            hard_timeout_hours=hard, model=model or defaults["model"],
            user_data_parts=(user_data,) if user_data is not None else (),
            user_data_names=(USER_PART,) if user_data is not None else ())
        contributions = tuple(self.plugins.launch_contributions(request, self.config))
        return LaunchPlan(request, itype, admission, now, contributions)

    def _require_limits(self, what: str, view: InstanceView) -> None:
        """Refuse (exit 2) what no policy would limit, or a budget nobody can check.

        Safety fails closed (DESIGN, "Who enforces what is declared"): with the policies
        switched off a launch would carry no deadline at all, and a cap would silently
        admit everything.
        """
        registry = self.plugins.policies()
        cap = budget.budget_settings(self.config).max_dollars
        if cap is not None and "budget" not in registry:
            raise UsageError(
                f"budget.max_dollars is set ({costs.format_money(cap)}) but no budget policy "
                f"is registered: this {what} cannot be checked against it",
                hints=["enable the plugin that registers it (`soong plugins` lists them), "
                       "or remove the cap with `soong config set budget.max_dollars null`"])
        policies = registry.create_all(self.config)
        decisions = policy.evaluate_each(policies, view, view.launched_at)
        if not any(decision.deadline is not None for _, decision in decisions):
            raise UsageError(
                f"no cost policy gives this {what} a deadline: nothing would ever stop it",
                hints=["enable the plugin that registers the lease and hard_timeout policies "
                       "(`soong plugins` lists them)"])

    def _check_regions(self, itype: InstanceType, wanted: list[str]) -> list[str]:
        """The regions to try, in order: unknown names are usage errors; when none of
        them has capacity now, say where there is some before anybody confirms."""
        known = self.provider.list_regions()
        if known is not None:
            names = {region.name for region in known}
            unknown = [r for r in wanted if r not in names]
            if unknown:
                raise UsageError(f"unknown region {unknown[0]!r}",
                                 hints=[f"known regions: {', '.join(sorted(names))}"])
        if not itype.capacity_known:
            return wanted  # the provider could not say (an outage?): its launch will
        available = list(itype.regions_with_capacity)
        if not wanted:
            wanted = available
        if not any(r in available for r in wanted):
            where = ", ".join(wanted) or "any region"
            hint = (f"try --region {available[0]}" + (f" (also: {', '.join(available[1:])})"
                                                      if available[1:] else "")
                    if available else "try another GPU type")
            raise SoongError(f"no capacity for {itype.name} in {where} right now",
                             hints=[hint + ", or --wait-for-capacity"])
        return wanted

    def launch(self, type_name: str | None = None, *, regions: Sequence[str] | None = None,
               hours: float | None = None, name: str | None = None, model: str | None = None,
               filesystem_names: Sequence[str] = (),
               ssh_key_names: Sequence[str] | None = None,
               hard_timeout_hours: float | None = None,
               user_data: str | None = None,
               plan: LaunchPlan | None = None) -> Instance:
        """Launch an instance with soong's tags and every plugin's contribution.

        Takes :meth:`plan_launch`'s arguments, or ``plan=`` a plan made earlier (the
        CLI shows it, asks, then launches exactly that), never both (a
        :class:`UsageError`: the plan already holds its arguments). The launch-time facts
        (launch id, launch time, lease and hard deadlines) go into tags, which cannot
        change afterwards.

        History first (DESIGN, "Launch intent first"): a ``launch_intent`` is recorded
        before the provider is asked, and the ``launch`` event after. If the intent
        cannot be written nothing is launched (:class:`~soong_core.history.HistoryError`);
        if the launch cannot be recorded the error names the billing instance, and the
        next reconciliation adopts it by its ``soong:launch-id`` tag.
        """
        from soong_core.history import HistoryError
        from soong_core.plugin_calls import finish_launch

        if plan is None:
            plan = self.plan_launch(type_name, regions=regions, hours=hours, name=name,
                                    model=model, filesystem_names=filesystem_names,
                                    ssh_key_names=ssh_key_names,
                                    hard_timeout_hours=hard_timeout_hours,
                                    user_data=user_data)
        elif filesystem_names or any(given is not None for given in (
                type_name, regions, hours, name, model, ssh_key_names, hard_timeout_hours,
                user_data)):
            raise UsageError("launch takes a plan or the launch's arguments, not both",
                             hints=["pass the arguments to plan_launch, then its plan to "
                                    "launch"])
        request = plan.request
        now = self.clock.now()
        launch_id = uuid.uuid4().hex
        # The deadlines are what the tags say (whole seconds), so that history, the
        # agent and the tags agree on when each limit falls (and which falls first).
        lease_deadline = float(math.floor(now + request.lease_hours * HOUR))
        hard_deadline = float(math.floor(now + request.hard_timeout_hours * HOUR))
        tags = {
            TAG_LAUNCH_ID: launch_id,
            TAG_LAUNCHED_AT: format_timestamp(now),
            TAG_LEASE_DEADLINE: format_timestamp(lease_deadline),
            TAG_HARD_DEADLINE: format_timestamp(hard_deadline),
        }
        if request.model:
            tags[TAG_MODEL] = request.model[:128]
        detail: dict[str, Any] = {
            "launch_id": launch_id, "name": request.name,
            "price_cents_per_hour": plan.instance_type.price_cents_per_hour,
            "lease_deadline": lease_deadline, "hard_deadline": hard_deadline,
            "regions": list(request.regions),
            "enforced": {limit: list(names) for limit, names in plan.enforcement.items()},
        }
        self.history.record(Event(EventKind.LAUNCH_INTENT, launch_id, now,
                                  provider=self.provider.name, type_name=request.type_name,
                                  cost=plan.admission.cost, detail=detail))
        try:
            request = finish_launch(_with_tags(request, tags), plan.contributions)
            instance = self.provider.launch(request)
        except BaseException as exc:
            self._launch_failed(launch_id, request.type_name, exc)
            raise
        event = Event(EventKind.LAUNCH, instance.id, now, provider=self.provider.name,
                      type_name=instance.type_name or request.type_name,
                      region=instance.region, cost=plan.admission.cost,
                      detail={**detail, "adopted": bool(instance.extra.get("adopted"))})
        try:
            self.history.record(event)
        except HistoryError as exc:
            raise HistoryError(
                f"instance {instance.id} is launched and billing, but history could not "
                f"record it: {exc.message}",
                hints=[f"stop it with `soong stop {instance.id}`, or keep it: the next soong "
                       "command adopts it by its launch id once history can be written",
                       *exc.hints]) from None
        self.plugins.emit(event, self.config)
        return instance

    def _launch_failed(self, launch_id: str, type_name: str, exc: BaseException) -> None:
        """Close the intent of a launch that surely created nothing (a plugin failed to
        finish it, or the provider says so); any other failure leaves it open for the
        next reconciliation to settle by listing."""
        from soong_core.errors import PluginError
        from soong_core.history import HistoryError

        if not (isinstance(exc, PluginError) or getattr(exc, "nothing_launched", False)):
            return
        message = exc.message if isinstance(exc, SoongError) else str(exc)
        try:
            self.history.record(Event(EventKind.LAUNCH_FAILED, launch_id, self.clock.now(),
                                      provider=self.provider.name, type_name=type_name,
                                      detail={"launch_id": launch_id, "error": message}))
        except HistoryError:
            pass  # the intent stays open; the next reconciliation settles it

    # -- waiting ---------------------------------------------------------------------------------

    def wait_until_ready(self, instance_id: str, *, timeout: float | None = None,
                         interval: float = POLL_SECONDS,
                         on_state: Callable[[Instance], None] | None = None) -> Instance:
        """Poll until the instance is ``active`` with an IP; return it.

        ``on_state`` hears each new state (a spinner names the phase). ``unhealthy``,
        ``terminated``, ``preempted`` or a vanished instance end the wait with an error
        saying what to do; so does ``timeout`` (wall seconds). Polls every ``interval``
        wall seconds: the API allows one request per second. A provider error while
        polling (the API went away) is raised with the instance named as launched and
        maybe billing, and how to check or stop it.
        """
        waited = 0.0  # counted in slept intervals, so an injected sleep makes it testable
        last = None
        launch_id = None
        while True:
            try:
                instance = self.provider.get_instance(instance_id)
            except SoongError as exc:
                raise _lost_while_waiting(instance_id, launch_id, exc) from None
            if instance is not None:
                launch_id = instance.launch_id
            if instance is None:
                raise SoongError(f"instance {instance_id} vanished while booting",
                                 hints=["run `soong status --history` to see why"])
            if instance.state is not last:
                last = instance.state
                if on_state is not None:
                    on_state(instance)
            if instance.state is InstanceState.ACTIVE and instance.ip:
                self.seen([instance])
                return instance
            if instance.state in (InstanceState.UNHEALTHY, InstanceState.TERMINATED,
                                  InstanceState.TERMINATING, InstanceState.PREEMPTED):
                hint = (f"it is billing: stop it with `soong stop {instance_id}`"
                        if instance.state.billing else "launch another with `soong start`")
                raise SoongError(f"instance {instance_id} is {instance.state.value} instead of "
                                 "becoming active", hints=[hint])
            if timeout is not None and waited >= timeout:
                raise SoongError(f"instance {instance_id} is still {instance.state.value} after "
                                 f"{timeout:g}s", hints=[f"it is billing: wait with `soong status`, "
                                                         f"or stop it with `soong stop {instance_id}`"])
            self.sleep(interval)
            waited += interval

    def wait_for_contributions(self, instance: Instance, plan: LaunchPlan, *,
                               on_phase: Callable[[str], None] | None = None) -> None:
        """Wait for what the plan's contributions installed on the active ``instance``
        (each one's ``ready``, in order: the lease agent's first answer). A plugin's
        SoongError says what is not enforced; anything else is a PluginError naming it."""
        from soong_core.errors import PluginError

        for plugin, contribution in plan.contributions:
            if contribution.ready is None:
                continue
            try:
                contribution.ready(instance, on_phase or (lambda phase: None))
            except SoongError:
                raise
            except Exception as exc:
                raise PluginError(f"plugin {plugin!r} failed while {instance.id} became "
                                  f"ready: {type(exc).__name__}: {exc}",
                                  hints=[f"{instance.id} is billing: stop it with "
                                         f"`soong stop {instance.id}`"]) from exc

    def wait_until_gone(self, instance_ids: Iterable[str], *, timeout: float | None = None,
                        interval: float = POLL_SECONDS,
                        on_poll: Callable[[list[Instance]], None] | None = None) -> None:
        """Poll until none of ``instance_ids`` is listed as billing any more (terminated,
        or gone from the list). ``on_poll`` hears those still there."""
        ids = set(instance_ids)
        waited = _Waited(self, timeout)
        while True:
            left = [i for i in self.provider.list_instances()
                    if i.id in ids and not i.state.ended]
            if not left:
                return
            if on_poll is not None:
                on_poll(left)
            if waited.over:
                raise SoongError(f"{len(left)} instance(s) still terminating after {waited}: "
                                 f"{', '.join(i.id for i in left)}",
                                 hints=["check again with `soong status`; the provider bills "
                                        "until they are terminated"])
            waited.pause(interval)

    def wait_for_capacity(self, type_name: str, regions: Sequence[str] = (), *,
                          timeout: float | None = None, interval: float = CAPACITY_POLL_SECONDS,
                          on_poll: Callable[[int], None] | None = None) -> list[str]:
        """Poll the catalogue until ``type_name`` has capacity (in one of ``regions``, if
        given); return the regions that have it. ``on_poll`` hears the number of checks
        made so far, after each that found none.

        ``timeout`` is in wall seconds: the last pause ends at it (never a whole
        ``interval`` past it), one more check follows, and the error says how long the
        wait really took (the checks' own time included, as the clock measures it).
        A provider :meth:`plan_launch` would refuse is refused before the first check.
        """
        from soong_core.interfaces import require_manageable

        require_manageable(self.provider)  # waiting would end in that refusal
        waited = _Waited(self, timeout)
        polls = 0
        while True:
            polls += 1
            itype = self.instance_type(type_name)
            ready = [r for r in itype.regions_with_capacity if not regions or r in regions]
            if ready:
                return ready
            if on_poll is not None:
                on_poll(polls)
            if waited.over:
                where = f" in {', '.join(regions)}" if regions else ""
                raise SoongError(f"no capacity for {type_name}{where} after {waited}",
                                 hints=["try other regions or GPU types, or wait longer (--timeout)"])
            waited.pause(interval)

    # -- status --------------------------------------------------------------------------------

    def view(self, instance: Instance, *, last_activity_at: float | None = None) -> InstanceView | None:
        """What the policies see of ``instance``; ``None`` for an instance soong did not launch.

        The laptop cannot see activity on the instance: unless ``last_activity_at`` is
        given (the agent's report), the idle policy is left out here rather than judged
        on no data; the agent enforces it where the activity is.
        """
        if not instance.managed:
            return None
        return self._view(instance, self.history.current_lease_deadline(instance.id),
                          last_activity_at=last_activity_at)

    def _views(self, instances: Sequence[Instance],
               reported: Sequence[ReportedView | None] | None = None
               ) -> list[InstanceView | None]:
        """:meth:`view` of each of ``instances`` (built on what each one ``reported``,
        where given), with one history read for the lease deadlines of all of them
        (not one per instance)."""
        managed = [i.id for i in instances if i.managed]
        extended = self.history.lease_deadlines(managed) if managed else {}
        reports = list(reported) if reported is not None else [None] * len(instances)
        return [self._view(i, extended.get(i.id), reported=report) if i.managed else None
                for i, report in zip(instances, reports)]

    def _view(self, instance: Instance, extended: float | None, *,
              last_activity_at: float | None = None,
              reported: ReportedView | None = None) -> InstanceView:
        """The view of a managed ``instance`` whose latest extension set the lease
        deadline ``extended`` (``None``: never extended, the launch tag holds). What the
        instance ``reported`` (its agent) wins: the lease it enforces, its activity and
        idle timeout."""
        launched = instance.launched_at
        hard = instance.hard_deadline
        lease = extended or instance.initial_lease_deadline
        assert launched is not None  # managed
        defaults = self.config["defaults"]
        hard = hard if hard is not None else launched + defaults["hard_timeout_hours"] * HOUR
        idle_timeout_s = (defaults["idle_timeout_minutes"] * 60.0
                          if last_activity_at is not None else None)
        if reported is not None:
            if reported.lease_deadline is not None:
                lease = min(reported.lease_deadline, hard)
            if reported.idle_known:
                last_activity_at = reported.last_activity_at
                idle_timeout_s = reported.idle_timeout_s
        return InstanceView(
            instance_id=instance.id, launched_at=launched,
            lease_deadline=lease if lease is not None else launched + defaults["lease_hours"] * HOUR,
            hard_deadline=hard,
            last_activity_at=last_activity_at,
            idle_timeout_s=idle_timeout_s,
            idle_grace_s=defaults["idle_grace_minutes"] * 60.0,
            warn_before_s=defaults["warn_before_minutes"] * 60.0,
            price_cents_per_hour=instance.price_cents_per_hour,
            settings=self.config)

    def status(self, instance_id: str | None = None, *,
               ended_since: float | None = None) -> list[InstanceStatus]:
        """Every instance (or one) with its decision, cost so far and estimated total.

        History is reconciled with the provider's list first. Instances the provider
        lists as ended carry their recorded final cost and ``ended`` (why and when
        they ended, :class:`~soong_core.models.Ended`). With ``ended_since``, instances whose recorded ending is at or after
        that time follow the listed ones (what ``status --stopped`` shows).
        """
        from soong_core.reconcile import ended_statuses, enforcement, with_history

        listed = self._list_reconciled(tolerant=True)  # history only adds to statuses
        if instance_id is not None:
            listed = [i for i in listed if i.id == instance_id]
            if not listed:
                raise SoongError(f"no instance {instance_id!r}",
                                 hints=["run `soong status` to list instances"])
        policies = self.plugins.policies().create_all(self.config)
        # What runs on the instances (their agents) is asked of all of them at once.
        details = self.plugins.status_details_many(listed, self.config,
                                                   budget_s=self.status_details_budget_s)
        reported = [reported_view(found) for found in details]
        now = self.clock.now()
        # One history read each for all instances: their leases, then their launches.
        views = self._views(listed, reported)
        launches = self.history.latest_events(EventKind.LAUNCH, [i.id for i in listed])
        statuses = []
        for instance, view, found, report in zip(listed, views, details, reported):
            decision = policy.evaluate(policies, view, now) if view else None
            price = instance.price_cents_per_hour
            launch = launches.get(instance.id)
            statuses.append(InstanceStatus(
                instance=instance, decision=decision,
                cost_so_far=costs.accrued(price, instance.launched_at, now),
                estimated_total=(costs.estimate_total(price, instance.launched_at,
                                                      decision.deadline, now)
                                 if decision and decision.deadline else None),
                details=found, view=view, as_of=now, enforcement=enforcement(launch),
                reported=report if view is not None else None))
        statuses = with_history(self, statuses)
        if ended_since is not None and instance_id is None:
            statuses += ended_statuses(self, since=ended_since,
                                       exclude=[s.instance.id for s in statuses])
        return statuses

    # -- extend --------------------------------------------------------------------------------

    def plan_extension(self, instance_id: str, hours: float, *, to_max: bool = False,
                       to_max_name: str = "to_max=True") -> ExtensionPlan:
        """What extending ``instance_id``'s lease by ``hours`` would do, checked (never
        past the hard deadline fixed at launch; with ``to_max`` an extension that would
        pass it stops at it; the budget admits its cost) but not done: nothing is
        asked of the instance or recorded. Raises what ``extend`` would; a refusal at the
        hard limit names ``to_max_name`` (the CLI's ``--to-max``)."""
        if not hours > 0:
            raise UsageError(f"cannot extend by {hours:g} hours: give a positive number")
        listed = self.instances()
        found = [i for i in listed if i.id == instance_id]
        if not found or not found[0].state.billing:
            raise SoongError(f"no running instance {instance_id!r}",
                             hints=["run `soong status` to list instances"])
        instance = found[0]
        view = self.view(instance)
        if view is None:
            raise SoongError(f"instance {instance_id} was not launched by soong: it has no lease "
                             "to extend")
        self._require_limits("extension", view)
        deadline = view.lease_deadline + hours * HOUR
        if deadline > view.hard_deadline:
            room = max(0.0, view.hard_deadline - view.lease_deadline)
            if not to_max or room <= 0:
                most = format_duration(room) if room > 0 else "nothing"
                raise SoongError(
                    f"extending {instance_id} by {hours:g}h would pass its hard limit at "
                    f"{format_timestamp(view.hard_deadline)}: at most {most} more",
                    hints=[f"extend by at most {most}, or with {to_max_name} to stop at the "
                           "hard limit"] if room > 0 else
                    ["the hard limit is fixed at launch; launch a new instance to go on"])
            deadline, hours = view.hard_deadline, room / HOUR
        price = instance.price_cents_per_hour or 0
        now = self.clock.now()
        admission = budget.check_extend(
            self.plugins.policies().create_all(self.config), self.config, now=now,
            instance_id=instance.id, price_cents_per_hour=price, hours=hours,
            ended_costs=lambda since: self.history.ended_cost(since=since),
            running=self._running_costs(listed), type_name=instance.type_name)
        return ExtensionPlan(instance, Extension(instance.id, hours, view.lease_deadline,
                                                 deadline, view.hard_deadline, admission.cost),
                             admission)

    def extend(self, instance_id: str, hours: float, *, to_max: bool = False,
               plan: ExtensionPlan | None = None) -> Extension:
        """Add ``hours`` to the lease; never past the hard deadline fixed at launch.

        With ``to_max`` an extension that would pass the hard deadline stops at it.
        The budget admits the extension's cost first (:meth:`plan_extension`; pass its
        ``plan`` to do that one). Then what enforces the lease on the instance moves it
        (``soong_extend_lease``: the lease agent); only once it did is the extension
        recorded, so a refusal there leaves history as it was.
        """
        plan = plan or self.plan_extension(instance_id, hours, to_max=to_max)
        if plan.instance.id != instance_id:
            raise ValueError(f"the plan extends {plan.instance.id}, not {instance_id}")
        extension, instance = plan.extension, plan.instance
        self.plugins.extend_lease(instance, hours=extension.hours,
                                  previous_deadline=extension.previous,
                                  lease_deadline=extension.deadline, config=self.config)
        event = Event(EventKind.EXTEND, instance.id, self.clock.now(),
                      provider=self.provider.name, type_name=instance.type_name,
                      region=instance.region, cost=extension.cost,
                      detail={"hours": extension.hours, "previous_deadline": extension.previous,
                              "lease_deadline": extension.deadline})
        try:
            self.history.record(event)
        except SoongError as exc:
            raise SoongError(
                f"the extension of {instance.id} to {format_timestamp(extension.deadline)} "
                f"was made, but history could not record it ({exc.message}): the budget "
                f"does not count its {extension.hours:g}h yet",
                hints=[f"once history is writable, run the same extension again "
                       f"({extension.hours:g}h): the lease agent counts a retry once"]) from None
        self.plugins.emit(event, self.config)
        return extension

    # -- stop ------------------------------------------------------------------------------------

    def stop(self, instance_ids: Iterable[str], *, reason: str = Reason.MANUAL.value) -> list[Instance]:
        """Terminate ``instance_ids`` in one provider call and record why, with the cost.

        An instance that has already ended or is terminating (listed so, or recorded
        ended in history) is left alone: nothing is sent for it and no second
        termination is recorded, so stopping twice is harmless. An id neither the
        provider nor history knows is an error, and nothing is terminated. Returns the
        instances the provider terminated now.
        """
        ids = list(dict.fromkeys(instance_ids))
        if not ids:
            return []
        listed = {i.id: i for i in self.instances()}
        missing = [i for i in ids if i not in listed and self.termination(i) is None]
        if missing:
            raise SoongError(f"no instance {missing[0]!r}" + (f" (and {len(missing) - 1} more)"
                                                              if len(missing) > 1 else ""),
                             hints=["run `soong status` to list instances"])
        return self.stop_instances([listed[i] for i in ids if i in listed], reason=reason)

    def stop_instances(self, instances: Sequence[Instance], *,
                       reason: str = Reason.MANUAL.value) -> list[Instance]:
        """:meth:`stop` for instances the caller has just listed (saves listing them
        again under the provider's rate limit). Those listed in a state that no longer
        bills (terminating, terminated, preempted) are skipped, as :meth:`stop` does."""
        chosen = [i for i in {i.id: i for i in instances}.values() if i.state.billing]
        if not chosen:
            return []
        from soong_core.history import HistoryError

        ended = self.provider.terminate([i.id for i in chosen])
        now = self.clock.now()
        events = [Event(EventKind.TERMINATE, instance.id, now, provider=self.provider.name,
                        reason=reason, type_name=instance.type_name, region=instance.region,
                        cost=costs.accrued(instance.price_cents_per_hour,
                                           instance.launched_at, now))
                  for instance in chosen]
        try:
            self.history.record_many(events)  # one transaction for the whole batch
        except HistoryError as exc:
            one = len(chosen) == 1
            which = (f"{chosen[0].id} is terminating, but history could not record it" if one
                     else f"{len(chosen)} instances are terminating "
                          f"({', '.join(i.id for i in chosen)}), but history could not "
                          "record them")
            raise HistoryError(
                f"{which}: {exc.message}",
                hints=[f"the next soong command records {'it' if one else 'them'} as ended "
                       "outside soong", *exc.hints]) from None
        for event in events:
            self.plugins.emit(event, self.config)
        self.seen(ended)
        return ended

    def termination(self, instance_id: str) -> Event | None:
        """The latest termination history records for ``instance_id`` (when it ended or
        was asked to, and why), or ``None``."""
        ends = self.history.events(instance_id=instance_id, kinds=[EventKind.TERMINATE])
        return ends[-1] if ends else None

    def ended_instances(self) -> list[Instance]:
        """Every instance history records as ended, rebuilt from its events (state
        ``terminated`` or ``preempted``), oldest end first: the provider forgets ended
        instances, history does not (what ``stop`` matches a stale id against)."""
        from soong_core.reconcile import ended_statuses

        return [status.instance for status in ended_statuses(self, since=0.0)]

    # -- helpers ---------------------------------------------------------------------------------

    def _running_costs(self, listed: Sequence[Instance]) -> list[budget.RunningCost]:
        """What committed spend counts beside history: each billing soong instance in
        ``listed`` up to its current lease deadline, and each launch still in doubt
        (an open intent no listed instance answers) as if it were running."""
        running = []
        launch_ids = set()
        for instance, view in zip(listed, self._views(listed)):
            if instance.launch_id:
                launch_ids.add(instance.launch_id)
            if view is None or not instance.state.billing or instance.price_cents_per_hour is None:
                continue
            running.append(budget.RunningCost(instance.price_cents_per_hour, view.launched_at,
                                              view.lease_deadline, instance.id))
        for intent in self.history.open_intents():
            price = intent.detail.get("price_cents_per_hour")
            deadline = intent.detail.get("lease_deadline")
            if intent.instance_id in launch_ids or not isinstance(price, int) \
                    or not isinstance(deadline, (int, float)):
                continue
            running.append(budget.RunningCost(price, intent.at, float(deadline)))
        return running

    def _record(self, event: Event) -> None:
        self.history.record(event)
        self.plugins.emit(event, self.config)


@dataclass(frozen=True)
class LaunchPlan:
    """A checked, priced launch: what ``start`` shows before it asks."""

    request: LaunchRequest
    instance_type: InstanceType
    admission: Admission
    """What the budget admitted: committed spend in the period and this launch's cost."""
    now: float
    contributions: tuple[tuple[str, LaunchContribution], ...] = ()
    """Every plugin's ``soong_prepare_launch`` contribution, ``(plugin, contribution)``."""

    @property
    def enforcement(self) -> dict[str, tuple[str, ...]]:
        """``{limit: plugins}`` for each of ``lease``, ``idle``, ``hard``: what the
        contributions say will enforce it on the instance (empty: nothing)."""
        return {limit: tuple(plugin for plugin, c in self.contributions if limit in c.enforces)
                for limit in LIMITS}

    @property
    def lease_cost(self) -> Decimal:
        return costs.estimate(self.instance_type.price_cents_per_hour, self.request.lease_hours)

    @property
    def hard_limit_cost(self) -> Decimal:
        return costs.estimate(self.instance_type.price_cents_per_hour,
                              self.request.hard_timeout_hours)


class _Waited:
    """How long a polling wait has taken, in wall seconds, against its ``timeout``.

    Measured on the core's clock (so the polls' own time counts: a rate-limited API
    answers slowly), and never less than what the wait slept: a test's clock may tell
    no wall time at all (:class:`~soong_core.clock.ManualClock`). ``str()`` is the
    figure as a user reads it (``"3s"``, ``"4m"``, ``"1h30m"``).
    """

    def __init__(self, soong: Soong, timeout: float | None) -> None:
        self._clock, self._sleep = soong.clock, soong.sleep
        self._started = self._clock.now()
        self._slept = 0.0
        self.timeout = timeout

    @property
    def seconds(self) -> float:
        return max(self._slept, self._clock.to_wall(self._clock.now() - self._started))

    @property
    def over(self) -> bool:
        return self.timeout is not None and self.seconds >= self.timeout

    def pause(self, interval: float) -> None:
        """Sleep ``interval``, or only what is left before the timeout when that is less."""
        seconds = interval if self.timeout is None else \
            max(0.0, min(interval, self.timeout - self.seconds))
        self._sleep(seconds)
        self._slept += seconds

    def __str__(self) -> str:
        seconds = self.seconds
        return f"{seconds:.2g}s" if seconds < 10 else format_duration(seconds)


def _lost_while_waiting(instance_id: str, launch_id: str | None, exc: SoongError) -> SoongError:
    """``exc`` (the provider failed while a launched instance booted), saying first that
    the instance exists and may bill, and how to check on it or stop it."""
    launch = f" (launch id {launch_id})" if launch_id else ""
    return SoongError(
        f"instance {instance_id}{launch} is launched and may be billing, but waiting for it "
        f"failed: {exc.message}",
        hints=[*exc.hints, f"once the API answers: check it with `soong status`, or stop it "
                           f"with `soong stop {instance_id}`"],
        detail=exc.detail, exit_code=exc.exit_code)


VIEW_DETAIL = "view"
"""The key of a ``soong_status_details`` mapping the core reads (:class:`ReportedView`)."""


def reported_view(details: Mapping[str, Any]) -> ReportedView | None:
    """The first plugin's ``view`` in ``details`` (``{plugin: mapping}``, in hook order)
    as a :class:`ReportedView`: ``lease_deadline`` and ``last_activity_at`` POSIX times,
    ``idle_timeout_s`` seconds (present, even null: the activity is known). A ``view``
    that is not that is one warning, and status goes on without it."""

    from soong_core.numbers import finite_number

    def time_or_none(value: Any) -> bool:
        number = finite_number(value)
        return value is None or (number is not None and number >= 0)

    for plugin, found in details.items():
        view = found.get(VIEW_DETAIL) if isinstance(found, Mapping) else None
        if view is None:
            continue
        known = {"lease_deadline", "last_activity_at", "idle_timeout_s"}
        if not isinstance(view, Mapping) or not set(view) <= known \
                or not all(time_or_none(view[key]) for key in view):
            log.warning("plugin %r: its status details' %r is not {lease_deadline, "
                        "last_activity_at, idle_timeout_s} as numbers or null: ignored",
                        plugin, VIEW_DETAIL)
            continue
        return ReportedView(source=plugin, lease_deadline=view.get("lease_deadline"),
                            idle_known="idle_timeout_s" in view,
                            last_activity_at=view.get("last_activity_at"),
                            idle_timeout_s=view.get("idle_timeout_s") or None)
    return None


def _with_tags(request: LaunchRequest, tags: Mapping[str, str]) -> LaunchRequest:
    from dataclasses import replace

    return replace(request, tags={**request.tags, **tags})


def _flatten(config: Mapping[str, Any]) -> dict[str, Any]:
    """``{"defaults": {"gpu": x}}`` or ``{"defaults.gpu": x}`` -> ``{"defaults.gpu": x}``."""
    flat: dict[str, Any] = {}
    for key, value in config.items():
        if "." in key:
            flat[key] = value
        elif isinstance(value, Mapping):
            for name, inner in value.items():
                flat[f"{key}.{name}"] = inner
        else:
            raise UsageError(f"config key {key!r} must be a section mapping or 'section.key'")
    return flat
