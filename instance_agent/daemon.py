"""The agent itself: limits from config and state, enforced by the CLI's policy engine.

:class:`Agent` holds the instance's view (launch time, deadlines, last activity) and
runs :func:`soong_core.policy.evaluate` over it with the policies pluggy finds (the
built-in ``soong_plugins.policies`` and any module named in ``plugins``; the budget
is admission control and never runs here). :meth:`Agent.run` is the enforcement loop:
it sleeps on one :class:`threading.Condition` until the earliest ``next_check``
(converted to wall seconds by the clock), and the API, the signals and the activity
writes wake it at once by notifying it. Nothing wakes it otherwise: no polling.

When the decision is to terminate, the reason goes into the state first (a restart
resumes the termination), then the pre-stop commands run, then the terminator retries
until the provider reports the instance ending; the HTTP API keeps answering meanwhile.

SIGTERM saves the state and exits 0, except when the system is powering off (an OS
shutdown keeps billing on Lambda Cloud): then it terminates the instance first, with
reason ``manual``.
"""

from __future__ import annotations

import math
import os
import signal
import threading
import time
from typing import TYPE_CHECKING, Any, Callable, Mapping, NamedTuple, Protocol, Sequence

from soong_core.models import HOUR, Action, ActivityState, Decision, InstanceView, Reason

from instance_agent import __version__
from instance_agent.state import AgentState, StateFile

if TYPE_CHECKING:
    from soong_core.clock import Clock
    from soong_core.interfaces import ActivitySource, CostPolicy
    from soong_core.models import ActivitySample

    from instance_agent.activity import SourceRunner
    from instance_agent.heartbeat import Heartbeat

EXCLUDED_POLICIES = frozenset({"budget"})
"""Registered policies the agent never runs (DESIGN: the budget is admission control)."""
DEADLINE_TOLERANCE = 0.001
RECHECK_WALL_S = 60.0
"""The longest the enforcement loop sleeps in one wait (wall seconds): it sleeps on
monotonic time, and a wall clock stepped forward meanwhile would otherwise hide a
deadline until the wait ended. One wakeup a minute costs nothing measurable."""
"""How close ``expected_deadline`` must be to the lease deadline (JSON round trips)."""


class TerminatorLike(Protocol):
    def run_pre_stop(self, commands: Sequence[Mapping[str, Any]]) -> None: ...

    def terminate(self, reason: str) -> bool: ...


TerminatorFactory = Callable[..., TerminatorLike]
"""``factory(provider, log=..., wait=...)``, as :class:`instance_agent.terminate.Terminator`."""


def default_terminator(provider: Mapping[str, Any], *, log: Callable[[str], None],
                       wait: Callable[[float], bool]) -> TerminatorLike:
    from instance_agent.terminate import Terminator

    return Terminator(provider, log=log, wait=wait)


class ApiError(Exception):
    """An answer other than 200, for the HTTP layer: ``status``, ``code``, ``message``."""

    def __init__(self, status: int, code: str, message: str, **extra: Any) -> None:
        super().__init__(message)
        self.status = status
        self.code = code
        self.message = message
        self.extra = extra


Refusal = ApiError
"""The name the HTTP layer uses."""


def version() -> str:
    return __version__


class Step(NamedTuple):
    """What one evaluation of the loop says: ``kind`` ``"wait"`` (``value``: wall seconds
    or None), ``"terminate"`` (``value``: the reasons) or ``"exit"`` (the signal)."""

    kind: str
    value: Any

    @property
    def reason(self) -> str | None:
        return str(self.value[0]) if self.kind == "terminate" and self.value else None


# -- poweroff -------------------------------------------------------------------------

POWEROFF_TARGETS = ("poweroff.target", "halt.target")


def systemd_powering_off(systemctl: str | None, *, timeout: float = 5.0) -> bool:
    """True when systemd has a poweroff or halt job queued (a reboot is not a poweroff:
    the instance comes back and the agent with it). No systemctl: False."""
    if not systemctl:
        return False
    import subprocess

    try:
        done = subprocess.run([systemctl, "list-jobs", "--no-legend", "--no-pager"],
                              stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                              stderr=subprocess.DEVNULL, timeout=timeout, check=False)
    except (OSError, subprocess.SubprocessError):
        return False
    listing = done.stdout.decode("utf-8", "replace")
    return any(target in listing for target in POWEROFF_TARGETS)


# -- policies ---------------------------------------------------------------------------


class Loaded(NamedTuple):
    """What the agent's plugin manager found."""

    policies: list[tuple[str, CostPolicy]]
    sources: list[tuple[str, ActivitySource]]
    problems: list[str]


def load_plugins(config: Mapping[str, Any],
                 log: Callable[[str], None] = lambda line: None) -> Loaded:
    """The policies and the enabled activity sources a fresh plugin manager registers:
    the built-in ``soong_plugins.policies`` and ``soong_plugins.activity`` first, then
    the config's ``plugins`` (registered after them, so a third party's name wins, as
    in the CLI). A plugin that fails to import or register, a factory that fails, or an
    enabled source in the config that nobody registers is one problem line (logged);
    the rest still apply."""
    import importlib

    import pluggy

    import soong_plugins.activity as builtin_sources
    import soong_plugins.policies as builtin_policies
    from soong_core import hookspecs

    problems: list[str] = []
    manager = pluggy.PluginManager(hookspecs.PROJECT)
    manager.add_hookspecs(hookspecs)
    manager.register(builtin_policies, "policies")
    manager.register(builtin_sources, "activity")
    for name in config.get("plugins", []):
        try:
            manager.register(importlib.import_module(name), name)
        except Exception as exc:
            problems.append(f"plugin {name}: cannot load it: {_one_line(exc)}")
    settings = config["instance"].get("settings") or {}
    policies = []
    for name, factory in _registered(manager, "soong_register_policies", problems).items():
        if name in EXCLUDED_POLICIES:
            continue
        try:
            policies.append((name, factory(settings)))
        except Exception as exc:
            problems.append(f"policy {name}: cannot create it: {_one_line(exc)}")
    configured = (config.get("activity") or {}).get("sources") or {}
    factories = _registered(manager, "soong_register_activity_sources", problems)
    sources = []
    for name, factory in factories.items():
        section = dict(configured.get(name) or {})
        if not section.pop("enabled", True):
            continue
        try:
            sources.append((name, factory(section)))
        except Exception as exc:
            problems.append(f"activity source {name}: cannot create it: {_one_line(exc)}")
    for name in sorted(set(configured) - set(factories)):
        if configured[name].get("enabled", True):
            problems.append(f"activity source {name}: configured, but no plugin registers it "
                            "(is its module in plugins and in the agent's bundle?)")
    for problem in problems:
        log(problem)
    return Loaded(policies, sources, problems)


def _registered(manager: Any, hook: str, problems: list[str]) -> dict[str, Callable[..., Any]]:
    """``{name: factory}`` registered through ``hook``, the later plugin's first."""
    factories: dict[str, Callable[..., Any]] = {}
    for impl in reversed(getattr(manager.hook, hook).get_hookimpls()):
        def register(name: str, factory: Callable[..., Any]) -> None:
            if isinstance(name, str) and name and callable(factory):
                factories.setdefault(name, factory)

        try:
            impl.function(**{arg: register for arg in impl.argnames})
        except Exception as exc:
            problems.append(f"plugin {impl.plugin_name}: {hook} failed: {_one_line(exc)}")
    return factories


# -- the agent ------------------------------------------------------------------------


class Agent:
    """One instance's limits and their enforcement. Thread-safe: every method takes
    the condition's lock; the HTTP handlers call :meth:`status`, :meth:`extend`,
    :meth:`activity` and :meth:`shutdown`; the loop runs in :meth:`run`."""

    def __init__(self, config: Mapping[str, Any], *, clock: Clock | None = None,
                 log: Callable[[str], None] | None = None,
                 terminator_factory: TerminatorFactory = default_terminator,
                 powering_off: Callable[[], bool] | None = None,
                 poweroff: Callable[[], bool] | None = None,
                 wall_command: Callable[[str, str], None] | None = None,
                 wait: Callable[[threading.Condition, float | None], Any] | None = None,
                 policies: Sequence[tuple[str, CostPolicy]] | None = None,
                 sources: Sequence[tuple[str, ActivitySource]] | None = None,
                 heartbeat_post: Callable[..., int] | None = None) -> None:
        from soong_core.clock import clock_from_config

        from instance_agent.config import clock_config

        self.config = config
        self.instance = config["instance"]
        self.clock: Clock = clock or clock_from_config(clock_config(config))
        if log is None:
            from pathlib import Path

            from instance_agent.config import secrets_of
            from instance_agent.logs import AgentLog

            path = config["paths"]["log"]
            log = AgentLog(Path(path) if path else None, max_bytes=config["log"]["max_bytes"],
                           secrets=tuple(secrets_of(config)))
        self.log = log
        self._terminator_factory = terminator_factory
        self._powering_off = powering_off or poweroff or (
            lambda: systemd_powering_off(config["paths"]["systemctl"]))
        self._wall_command = wall_command or self._run_wall
        self._wait = wait or (lambda condition, timeout: condition.wait(timeout))
        self.cond = threading.Condition()
        self.hard_deadline = float(self.instance["hard_deadline"])
        self.signals = SignalRelay(self)
        self.config_warnings = list(config.get("warnings", []))
        for warning in self.config_warnings:
            self.log(f"warning: {warning}")
        self.plugin_problems: list[str] = []
        if policies is None or sources is None:
            loaded = load_plugins(config, self.log)
            self.plugin_problems = loaded.problems
            policies = loaded.policies if policies is None else policies
            sources = loaded.sources if sources is None else sources
        self.policies = list(policies)
        self.runners = self._runners(sources)
        self.heartbeat = self._heartbeat(heartbeat_post)
        self.terminator: Any = None
        self._instance_id: str | None = None
        self._stop_threads = threading.Event()
        self._looking = False
        self._looked_for: float | None = None
        self.state_file = StateFile(config["paths"]["state"])
        self.state_problems: list[str] = []
        self.write_problem: str | None = None
        self.state = self._load_state()
        self._activity_saved_at = self.clock.now()
        self._activity_dirty = False
        self.started_at = self.clock.now()
        self.wakeups = 0
        """How many times the loop evaluated (at start, at a next_check, on an event)."""
        self.last_timeout: float | None = None
        """The wall seconds the loop last slept for (None: until woken)."""
        self.decision: Decision | None = None
        self._logged: tuple[Any, ...] | None = None
        self._exit_requested: str | None = None
        self._shutdown_note: str | None = None
        self.terminated = False
        self.server: Any = None

    # -- activity sources and heartbeats ----------------------------------------------

    def _runners(self, sources: Sequence[tuple[str, ActivitySource]]) -> dict[str, SourceRunner]:
        from instance_agent.activity import SourceRunner

        return {name: SourceRunner(name, source, now=self.clock.now, record=self._record,
                                   log=self.log) for name, source in sources}

    def _heartbeat(self, post: Callable[..., int] | None) -> Heartbeat | None:
        settings = self.config.get("watchdog") or {}
        if not settings.get("url"):
            return None
        from instance_agent.heartbeat import Heartbeat, post_json

        return Heartbeat(settings, self.heartbeat_payload, log=self.log, now=self.clock.now,
                         post=post or post_json)

    def sample_interval(self) -> float:
        """Wall seconds between two looks of a source: ``activity.sample_seconds``, but
        at most a quarter of the idle timeout (on an accelerated clock a 30 s look
        would be longer than the timeout itself)."""
        from instance_agent.activity import MIN_INTERVAL_S

        wanted = float(self.config["activity"]["sample_seconds"])
        idle = self.instance["idle_timeout_seconds"]
        if idle:
            wanted = min(wanted, self.clock.to_wall(float(idle) / 4))
        return max(MIN_INTERVAL_S, wanted)

    def _record(self, name: str, sample: ActivitySample, looked_at: float) -> None:
        """A look's outcome: an ``active`` one is activity at ``looked_at`` (or at the
        source's own ``last_activity``, never later than the look)."""
        if not sample.is_activity:
            return
        at = looked_at if sample.last_activity is None else min(looked_at, sample.last_activity)
        self._count(at, name)

    def _count(self, at: float, source: str) -> None:
        with self.cond:
            last = self.state.last_activity_at
            if last is not None and at <= last:
                return
            self.state.last_activity_at = at
            self.state.last_activity_source = source
            self._activity_dirty = True
            if self.clock.now() - self._activity_saved_at >= float(
                    self.config["state"]["activity_write_seconds"]):
                self._save(why="activity")
            self.cond.notify_all()

    def heartbeat_payload(self, final: bool = False,
                          reason: str | None = None) -> dict[str, Any]:
        """The heartbeat's JSON (DESIGN Interfaces)."""
        with self.cond:
            now = self.clock.now()
            decision = self.decide(now)
            ids = list(getattr(self.terminator, "instance_ids", None) or [])
            if ids:
                self._instance_id = ids[0]  # kept: a failed attempt empties the list
            next_stop = None if decision.deadline is None else {
                "at": decision.deadline, "reason": ", ".join(decision.reasons)}
            return {"schema_version": 1, "instance_id": self._instance_id,
                    "launch_id": self.instance["launch_id"], "sent_at": now,
                    "lease_deadline": self.state.lease_deadline,
                    "hard_deadline": float(self.instance["hard_deadline"]),
                    "next_stop": next_stop, "health": self._health(decision),
                    "version": __version__, "final": final,
                    "reason": reason if final else None}

    def _health(self, decision: Decision) -> dict[str, Any]:
        """Each source's state, what the sources report worth seeing, and warnings."""
        health: dict[str, Any] = {
            "sources": {name: (r.latest.state.value if r.latest else None)
                        for name, r in self.runners.items()}}
        for name, runner in self.runners.items():
            facts = dict(runner.latest.health) if runner.latest else {}
            for key in ("gpus", "models"):
                if key in facts:
                    health[key] = facts[key]
        health["warnings"] = self._warnings(decision)
        return health

    def _start_threads(self) -> None:
        from instance_agent.activity import look_in_turn, threads_for

        for group in threads_for(list(self.runners.values())):
            names = "+".join(runner.name for runner in group)
            threading.Thread(target=look_in_turn,
                             args=(group, self.sample_interval, self._stop_threads),
                             daemon=True, name=f"soong-activity-{names}").start()
        if self.heartbeat is not None:
            threading.Thread(target=self.heartbeat.loop, daemon=True,
                             name="soong-heartbeat").start()

    def _final_look(self) -> None:
        """Every source once more, all at once, for at most ``final_look_seconds``."""
        limit = float(self.config["activity"]["final_look_seconds"])
        try:
            end = time.monotonic() + limit
            looks = [threading.Thread(target=runner.look, kwargs={"wait_s": limit},
                                      daemon=True, name=f"soong-last-look-{runner.name}")
                     for runner in self.runners.values()]
            for look in looks:
                look.start()
            for look in looks:
                look.join(max(0.0, end - time.monotonic()))
            late = [r.name for r, t in zip(self.runners.values(), looks) if t.is_alive()]
            if late:
                self.log(f"last look: no answer within {limit:g} s from {', '.join(late)} "
                         "(not activity)")
        finally:
            with self.cond:
                self._looking = False
                self.cond.notify_all()

    def _wants_final_look(self, reasons: Sequence[str]) -> bool:
        """An idle stop (and nothing else) not looked at yet for this idle deadline."""
        if not self.runners or set(reasons) != {Reason.IDLE_TIMEOUT.value}:
            return False
        deadline = self.idle_deadline()
        if self._looked_for is not None and deadline is not None \
                and abs(deadline - self._looked_for) < DEADLINE_TOLERANCE:
            return False
        self._looked_for = deadline
        return True

    # -- state ----------------------------------------------------------------------

    def _load_state(self) -> AgentState:
        launch_id = self.instance["launch_id"]
        state, problem = self.state_file.load(launch_id, self.clock.now())
        if problem:
            self.state_problems.append(problem)
            self.log(f"warning: {problem}")
        if state is None:
            state = AgentState(launch_id=launch_id,
                               lease_deadline=float(self.instance["lease_deadline"]))
            self._save(state, "start")
        else:
            self.log(f"state loaded: lease deadline {_when(state.lease_deadline)}, "
                     f"{len(state.extensions)} extension(s)")
        return state

    def _save(self, state: AgentState | None = None, why: str = "") -> bool:
        """Write the state; on failure log loudly, keep a /status warning, return False."""
        try:
            self.state_file.save(state or self.state)
        except OSError as exc:
            problem = (f"cannot write the state file {self.state_file.path} ({why}): "
                       f"{exc.strerror or exc}; a restart would lose what changed")
            if problem != self.write_problem:
                self.log(f"ERROR: {problem}")
            self.write_problem = problem
            return False
        self.write_problem = None
        self._activity_dirty = False
        self._activity_saved_at = self.clock.now()
        return True

    # -- the view and the decision --------------------------------------------------

    def view(self) -> InstanceView:
        instance = self.instance
        return InstanceView(
            instance_id=instance["launch_id"],
            launched_at=float(instance["launched_at"]),
            lease_deadline=self.state.lease_deadline,
            hard_deadline=float(instance["hard_deadline"]),
            last_activity_at=self.state.last_activity_at,
            idle_timeout_s=instance["idle_timeout_seconds"],
            idle_grace_s=float(instance["idle_grace_seconds"]),
            warn_before_s=float(instance["warn_before_seconds"]),
            price_cents_per_hour=instance["price_cents_per_hour"],
            settings=instance.get("settings") or {})

    def decide(self, now: float) -> Decision:
        from soong_core.policy import evaluate

        def failed(name: str, exc: BaseException) -> None:
            self.log(f"policy {name} failed: {type(exc).__name__}: {_one_line(exc)} "
                     "(ignored; the other policies still apply)")

        return evaluate(self.policies, self.view(), now, on_error=failed)

    def idle_deadline(self) -> float | None:
        from soong_plugins.policies.idle import idle_deadline

        return idle_deadline(self.view())

    # -- the API's operations -------------------------------------------------------

    def health(self) -> dict[str, Any]:
        with self.cond:
            return {"ok": True, "version": __version__,
                    "terminating": self.state.terminating is not None}

    def status(self) -> dict[str, Any]:
        with self.cond:
            now = self.clock.now()
            decision = self.decide(now)
            view = self.view()
            idle_at = self.idle_deadline()
            last = view.last_activity_at
            next_stop = None
            if decision.deadline is not None:
                next_stop = {"at": decision.deadline, "reason": ", ".join(decision.reasons),
                             "reasons": list(decision.reasons),
                             "in_seconds": max(0.0, decision.deadline - now),
                             "message": decision.message}
            return {
                "version": __version__,
                "launch_id": view.instance_id,
                "now": now,
                "launched_at": view.launched_at,
                "uptime_seconds": max(0.0, now - view.launched_at),
                "agent_uptime_seconds": max(0.0, now - self.started_at),
                "lease_deadline": view.lease_deadline,
                "hard_deadline": view.hard_deadline,
                "max_extension_hours": self._max_hours(),
                "next_stop": next_stop,
                "action": decision.action.value,
                "message": decision.message,
                "idle": {"seconds": max(0.0, now - (view.launched_at if last is None else last)),
                         "deadline": idle_at, "timeout_seconds": view.idle_timeout_s,
                         "grace_seconds": view.idle_grace_s, "last_activity_at": last,
                         "last_activity_source": self.state.last_activity_source},
                "warnings": self._warnings(decision),
                "extensions": list(self.state.extensions),
                "terminating": self.state.terminating,
                "state_problems": list(self.state_problems)
                + ([self.write_problem] if self.write_problem else []),
                "activity": {"sample_seconds": self.sample_interval(),
                             "sources": {name: runner.report()
                                         for name, runner in self.runners.items()}},
                "health": self._health(decision),
                "heartbeat": None if self.heartbeat is None else self.heartbeat.report(),
                "policies": [name for name, _ in self.policies],
                "bind": self.config["api"]["bind"],
                "wakeups": self.wakeups,
                "clock": {"mode": self.config["clock"]["mode"],
                          "factor": getattr(self.clock, "factor", 1.0)},
            }

    def _warnings(self, decision: Decision) -> list[str]:
        warnings = list(self.config_warnings) + list(self.plugin_problems)
        if decision.action is Action.WARN:
            warnings.insert(0, decision.message)
        warnings += self.state_problems
        if self.write_problem:
            warnings.append(self.write_problem)
        problem = getattr(self.log, "file_problem", None)
        if problem:
            warnings.append(problem)
        for name, runner in self.runners.items():
            sample = runner.latest
            if sample is None:
                continue
            if sample.state is ActivityState.UNHEALTHY:
                warnings.append(f"activity source {name} is unhealthy: {sample.detail}")
            for line in sample.health.get("warnings") or ():
                warnings.append(f"{name}: {line}")
        beat = self.heartbeat
        if beat is not None and beat.consecutive_failures >= 2:
            warnings.append(f"heartbeats to the watchdog fail ({beat.consecutive_failures} in "
                            f"a row): {beat.last_error}")
        return warnings

    def _max_hours(self) -> float:
        """The largest extension the hard deadline allows, in hours (two decimals, down)."""
        room = float(self.instance["hard_deadline"]) - self.state.lease_deadline
        return max(0.0, math.floor(room / HOUR * 100) / 100)

    def extend(self, hours: float, expected_deadline: float) -> dict[str, Any]:
        with self.cond:
            current = self.state.lease_deadline
            if self.state.terminating is not None or self._shutdown_note is not None:
                raise ApiError(409, "terminating", "the instance is being terminated "
                               f"({self._reason_now()}): it cannot be extended")
            if abs(expected_deadline - current) > DEADLINE_TOLERANCE:
                raise ApiError(409, "deadline_changed",
                               f"the lease deadline is {current!r} ({_when(current)}), not "
                               f"{expected_deadline!r}: it changed (an extension already "
                               "happened?); look at /status and extend from the current one",
                               lease_deadline=current)
            now = self.clock.now()
            hard = float(self.instance["hard_deadline"])
            target = current + hours * HOUR
            if target > hard + DEADLINE_TOLERANCE:
                most = self._max_hours()
                raise ApiError(409, "past_hard_deadline",
                               f"extending by {hours:g} h would pass the hard deadline "
                               f"({_when(hard)}); the largest possible extension is "
                               f"{most:g} hours", max_hours=most, hard_deadline=hard,
                               lease_deadline=current)
            if current <= now:
                raise ApiError(409, "lease_expired", "the lease has already ended: the "
                               "instance is stopping", lease_deadline=current)
            extension = {"at": now, "hours": hours, "from": current, "to": target}
            trial = AgentState(**{**vars(self.state), "lease_deadline": target,
                                  "extensions": [*self.state.extensions, extension]})
            if not self._save(trial, "extension"):
                raise ApiError(503, "state_unwritable", "the extension could not be saved, so "
                               "it was not made: " + str(self.write_problem))
            self.state = trial
            self.log(f"extension: +{hours:g} h, lease deadline {_when(current)} -> "
                     f"{_when(target)}")
            self.cond.notify_all()
            return {"lease_deadline": target, "previous_deadline": current,
                    "hard_deadline": hard, "extension": extension,
                    "max_extension_hours": self._max_hours()}

    def activity(self, source: str | None = None) -> dict[str, Any]:
        """``POST /activity``: counted at once, and by the ``api`` source's next look
        (``source`` is the caller's label; the activity's source is ``api``)."""
        runner = self.runners.get("api")
        touch = getattr(runner.source, "touch", None) if runner is not None else None
        if not callable(touch):
            raise ApiError(409, "source_disabled", "POST /activity is switched off on this "
                           "instance (activity.sources.api.enabled is false)")
        with self.cond:
            now = self.clock.now()
            label = source if source and source != "api" else None
            touch(now, label)
            self._count(now, "api" if label is None else f"api ({label})")
            return {"last_activity_at": self.state.last_activity_at,
                    "idle_deadline": self.idle_deadline()}

    def shutdown(self, note: str | None = None) -> dict[str, Any]:
        with self.cond:
            if self._shutdown_note is None:
                self._shutdown_note = note or "requested through the API"
                self.log(f"shutdown requested: {self._shutdown_note}")
            self.cond.notify_all()
            return {"terminating": True, "reason": Reason.MANUAL.value}

    def _reason_now(self) -> str:
        if self.state.terminating is not None:
            return str(self.state.terminating.get("reason"))
        return Reason.MANUAL.value

    # -- signals --------------------------------------------------------------------

    def on_signal(self, signum: int) -> None:
        """SIGTERM/SIGINT (called from the signal thread, never from a handler)."""
        name = _signal_name(signum)
        powering_off = False
        if signum == signal.SIGTERM:
            try:
                powering_off = bool(self._powering_off())
            except Exception as exc:
                self.log(f"cannot tell whether the system powers off: {_one_line(exc)}")
        with self.cond:
            if powering_off:
                self.log(f"{name}: the system is powering off, which keeps billing: "
                         "terminating the instance first")
                if self._shutdown_note is None:
                    self._shutdown_note = "the system is powering off"
            else:
                self.log(f"{name}: saving the state and exiting")
                self._exit_requested = name
            self.cond.notify_all()

    # -- the loop -------------------------------------------------------------------

    def request_signal(self, signum: int) -> None:
        """From a signal handler: hand the signal to the relay thread (see SignalRelay)."""
        self.signals.send(signum)

    def step(self) -> Step:
        """One evaluation: ``Step("wait", wall seconds or None)``, ``Step("terminate",
        reasons)`` or ``Step("exit", signal name)``."""
        with self.cond:
            return Step(*self._step())

    def _step(self) -> tuple[str, Any]:
        self.wakeups += 1
        if self._exit_requested:
            return "exit", self._exit_requested
        now = self.clock.now()
        if self.state.terminating is not None:
            return "terminate", tuple(self.state.terminating.get("reasons")
                                      or (self.state.terminating["reason"],))
        if self._shutdown_note is not None:
            return "terminate", (Reason.MANUAL.value,)
        save_every = float(self.config["state"]["activity_write_seconds"])
        if self._activity_dirty and now - self._activity_saved_at >= save_every:
            self._save(why="activity")
        decision = self.decide(now)
        self.decision = decision
        # an idle deadline that activity moves later is no news: logged when it changes
        # anything else (the action, the reasons, another deadline)
        sliding = decision.action is Action.KEEP and decision.reasons == (
            Reason.IDLE_TIMEOUT.value,)
        logged = (decision.action, decision.reasons, None if sliding else decision.deadline)
        if logged != self._logged:
            self._logged = logged
            self.log(f"decision: {decision.action.value}: {decision.message}"
                     + (f" (next check {_when(decision.next_check)})"
                        if decision.next_check is not None else ""))
        if decision.action is Action.TERMINATE:
            return "terminate", decision.reasons or (Reason.MANUAL.value,)
        if decision.action is Action.WARN:
            self._warn(decision)
        wake = [decision.next_check] if decision.next_check is not None else []
        if self._activity_dirty:
            wake.append(self._activity_saved_at + save_every)
        if not wake:
            return "wait", None
        return "wait", max(0.0, self.clock.to_wall(min(wake) - now))

    def _warn(self, decision: Decision) -> None:
        deadline = decision.deadline
        if deadline is None or any(abs(deadline - w) < DEADLINE_TOLERANCE
                                   for w in self.state.warned):
            return
        self.state.warned.append(deadline)
        self._save(why="warning")
        message = f"soong: this instance {decision.message} ({_when(deadline)})"
        self.log(f"warning: {decision.message}")
        wall = self.config["paths"]["wall"]
        if wall:
            threading.Thread(target=self._wall_command, args=(wall, message), daemon=True,
                             name="soong-wall").start()

    def _run_wall(self, command: str, message: str) -> None:
        import subprocess

        try:
            subprocess.run([command], input=message.encode() + b"\n", timeout=10,
                           stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, check=False)
        except (OSError, subprocess.SubprocessError) as exc:
            self.log(f"wall {command} failed: {_one_line(exc)}")

    def run(self) -> int:
        """Enforce until the instance is terminated (0) or a signal asks to exit (0)."""
        terminator = self._terminator_factory(self.config["provider"], log=self.log,
                                              wait=self._terminator_wait)
        self.terminator = terminator
        self.signals.start()
        self._start_threads()
        locate = getattr(terminator, "locate", None)
        if callable(locate):  # find the instance id now: at the deadline one request
            threading.Thread(target=self._quietly, args=(locate,), daemon=True,
                             name="soong-locate").start()
        with self.cond:
            while True:
                outcome, value = self._step()
                if outcome == "terminate" and self.state.terminating is None \
                        and self._shutdown_note is None and self._wants_final_look(value):
                    # Never stop a busy machine on a stale look: every source once more.
                    self.log("idle deadline reached: every activity source looks once more")
                    self._looking = True
                    threading.Thread(target=self._final_look, daemon=True,
                                     name="soong-last-look").start()
                    limit = float(self.config["activity"]["final_look_seconds"])
                    self.cond.wait_for(lambda: not self._looking, timeout=limit + 5)
                    self._looking = False  # bounded even if the look never reported
                    continue
                if outcome != "wait":
                    break
                self.last_timeout = value
                # Condition.wait measures monotonic time; deadlines are wall (clock)
                # time. A clock stepped forward while asleep (NTP at boot) must not
                # let a deadline pass unseen by more than RECHECK_WALL_S.
                self._wait(self.cond, None if value is None
                           else min(value, RECHECK_WALL_S))
            if outcome == "exit":
                self._stop_threads.set()
                if self.heartbeat is not None:
                    self.heartbeat.stop()
                self._save(why="exit")
                return 0
            self._stop_threads.set()
            reasons = tuple(value)
            reason = reasons[0]
            if self.state.terminating is None:
                self.state.terminating = {"reason": reason, "reasons": list(reasons),
                                          "at": self.clock.now(),
                                          "note": self._shutdown_note}
                self._save(why="termination")
                self.log(f"terminating: {', '.join(reasons)}"
                         + (f" ({self._shutdown_note})" if self._shutdown_note else ""))
            else:
                self.log(f"resuming the termination ({', '.join(reasons)}) recorded "
                         f"{_when(self.state.terminating.get('at'))}")
            pre_stop_done = bool(self.state.terminating.get("pre_stop_done"))
        final_beat = None
        if self.heartbeat is not None:  # beside the termination, never before it
            final_beat = threading.Thread(target=self.heartbeat.final, args=(reason,),
                                          daemon=True, name="soong-final-heartbeat")
            final_beat.start()
        if not pre_stop_done:  # once per termination, not again after a restart
            try:
                terminator.run_pre_stop(self.config.get("pre_stop", []))
            except Exception as exc:
                self.log(f"pre-stop failed: {_one_line(exc)}")
            with self.cond:
                self.state.terminating = {**(self.state.terminating or {}),
                                          "pre_stop_done": True}
                self._save(why="termination")
        done = False
        try:
            done = terminator.terminate(reason)
        except Exception as exc:  # the contract says never; a bug must still exit cleanly
            self.log(f"terminate failed: {_one_line(exc)}")
        with self.cond:
            if done:
                self.state.terminating = {**(self.state.terminating or {}),
                                          "done_at": self.clock.now()}
                self.terminated = True
                self.log(f"terminated: the provider reports the instance ending ({reason})")
            else:
                self.log("exiting before the provider confirmed the termination; a "
                         "restart resumes it")
            self._save(why="exit")
        if final_beat is not None and self.heartbeat is not None:
            from instance_agent.heartbeat import FINAL_TRIES

            final_beat.join(FINAL_TRIES * (self.heartbeat.timeout + FINAL_TRIES))
            if not self.heartbeat.final_sent:
                self.log("the final heartbeat did not reach the watchdog")
        return 0

    def _terminator_wait(self, seconds: float) -> bool:
        """The terminator's pause: True (give up) once a signal asked the agent to exit."""
        deadline = time.monotonic() + max(0.0, seconds)
        with self.cond:
            while not self._exit_requested:
                left = deadline - time.monotonic()
                if left <= 0:
                    break
                self.cond.wait(left)
            return bool(self._exit_requested)

    def _quietly(self, function: Callable[[], Any]) -> None:
        try:
            function()
        except Exception as exc:
            self.log(f"locating the instance failed: {_one_line(exc)}")


# -- signals to the loop ------------------------------------------------------------


class SignalRelay:
    """SIGTERM and SIGINT, delivered to :meth:`Agent.on_signal` from a thread.

    A handler only writes the signal number to a pipe (:meth:`send`: all a handler may
    safely do, since it interrupts the loop wherever it is); a thread blocked reading it
    calls the agent, which may run ``systemctl`` and takes the condition's lock.
    """

    def __init__(self, agent: Agent) -> None:
        self.agent = agent
        self._read, self._write = os.pipe()
        os.set_blocking(self._write, False)
        self._started = False

    def start(self) -> None:
        if not self._started:
            self._started = True
            threading.Thread(target=self._relay, daemon=True, name="soong-signals").start()

    def send(self, signum: int) -> None:
        try:
            os.write(self._write, bytes([signum]))
        except OSError:
            pass

    def _relay(self) -> None:
        while True:
            try:
                data = os.read(self._read, 16)
            except OSError:
                return
            if not data:
                return
            for signum in data:
                self.agent.on_signal(signum)


# -- helpers ----------------------------------------------------------------------------


def _signal_name(signum: int) -> str:
    try:
        return signal.Signals(signum).name
    except ValueError:
        return f"signal {signum}"


def _when(moment: Any) -> str:
    if not isinstance(moment, (int, float)) or not math.isfinite(moment):
        return "never"
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(moment))


def _one_line(exc: BaseException) -> str:
    return " ".join(str(exc).split()) or type(exc).__name__
