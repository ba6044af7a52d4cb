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

from soong_core.models import HOUR, Action, Decision, InstanceView, Reason

from instance_agent import __version__
from instance_agent.state import AgentState, StateFile

if TYPE_CHECKING:
    from soong_core.clock import Clock
    from soong_core.interfaces import CostPolicy

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


def load_policies(plugins: Sequence[str], settings: Mapping[str, Any],
                  log: Callable[[str], None] = lambda line: None) -> tuple[list[tuple[str, CostPolicy]], list[str]]:
    """``([(name, policy)], problems)``: what ``soong_register_policies`` registers in a
    fresh plugin manager holding the built-in policies and ``plugins`` (registered after
    them, so a third party's name wins, as in the CLI). A plugin that fails to import or
    register, or a factory that fails, is one problem line; the rest still apply."""
    import importlib

    import pluggy

    import soong_plugins.policies as builtin
    from soong_core import hookspecs

    problems: list[str] = []
    manager = pluggy.PluginManager(hookspecs.PROJECT)
    manager.add_hookspecs(hookspecs)
    manager.register(builtin, "policies")
    for name in plugins:
        try:
            manager.register(importlib.import_module(name), name)
        except Exception as exc:
            problems.append(f"plugin {name}: cannot load it: {_one_line(exc)}")
    factories: dict[str, Callable[[Mapping[str, Any]], Any]] = {}
    for impl in reversed(manager.hook.soong_register_policies.get_hookimpls()):
        def register(name: str, factory: Callable[..., Any]) -> None:
            if isinstance(name, str) and name and callable(factory):
                factories.setdefault(name, factory)

        try:
            impl.function(**{arg: register for arg in impl.argnames})
        except Exception as exc:
            problems.append(f"plugin {impl.plugin_name}: soong_register_policies failed: "
                            f"{_one_line(exc)}")
    policies = []
    for name, factory in factories.items():
        if name in EXCLUDED_POLICIES:
            continue
        try:
            policies.append((name, factory(settings)))
        except Exception as exc:
            problems.append(f"policy {name}: cannot create it: {_one_line(exc)}")
    for problem in problems:
        log(problem)
    return policies, problems


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
                 policies: Sequence[tuple[str, CostPolicy]] | None = None) -> None:
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
        if policies is None:
            found, self.plugin_problems = load_policies(config.get("plugins", []),
                                                        self.instance.get("settings", {}),
                                                        self.log)
            self.policies = list(found)
        else:
            self.policies, self.plugin_problems = list(policies), []
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
        with self.cond:
            now = self.clock.now()
            self.state.last_activity_at = now
            self.state.last_activity_source = source or "api"
            self._activity_dirty = True
            if now - self._activity_saved_at >= float(self.config["state"]["activity_write_seconds"]):
                self._save(why="activity")
            self.cond.notify_all()
            return {"last_activity_at": now, "idle_deadline": self.idle_deadline()}

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
        logged = (decision.action, decision.reasons, decision.deadline)
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
        self.signals.start()
        locate = getattr(terminator, "locate", None)
        if callable(locate):  # find the instance id now: at the deadline one request
            threading.Thread(target=self._quietly, args=(locate,), daemon=True,
                             name="soong-locate").start()
        with self.cond:
            while True:
                outcome, value = self._step()
                if outcome != "wait":
                    break
                self.last_timeout = value
                # Condition.wait measures monotonic time; deadlines are wall (clock)
                # time. A clock stepped forward while asleep (NTP at boot) must not
                # let a deadline pass unseen by more than RECHECK_WALL_S.
                self._wait(self.cond, None if value is None
                           else min(value, RECHECK_WALL_S))
            if outcome == "exit":
                self._save(why="exit")
                return 0
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
