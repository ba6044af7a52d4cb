"""One running simulator: state directory, clock, cloud, limits, faults, HTTP server.

Used three ways: by the background process ``soong sim up`` starts (``serve_forever``),
by ``soong sim up --foreground``, and in-process by tests (``start`` serves from a
thread; see :mod:`soong_plugins.lambda_labs.simulator.testing`)::

    with Simulator(tmp_path, clock=ManualClock(), rate_limit=False) as sim:
        urllib.request.urlopen(Request(sim.api_url + "/instances",
                               headers={"Authorization": f"Bearer {sim.api_key}"}))

Simulated time comes from one accelerable clock (DESIGN, "One clock"): the anchors are
kept in the state, so a restarted simulator, the CLI and every agent derive the same
"now" from the wall clock. Tests inject a ManualClock instead and never sleep.
"""

from __future__ import annotations

import base64
import contextlib
import binascii
import errno
import logging
import os
import secrets
import threading
import time
from pathlib import Path
from typing import Any, Callable, Iterable, Mapping

from soong_core.clock import AcceleratedClock, Clock, clock_from_config
from soong_plugins.lambda_labs.simulator import api, control, errors, locks
from soong_plugins.lambda_labs.simulator.apikeys import KeyRing
from soong_plugins.lambda_labs.simulator.cloud import Cloud
from soong_plugins.lambda_labs.simulator.errors import ApiError, invalid_parameters
from soong_plugins.lambda_labs.simulator.faults import FAULT_NAMES, FaultInjector, FaultSettings
from soong_plugins.lambda_labs.simulator.ratelimit import (
    LAUNCH,
    Limit,
    RateLimiter,
    check_body,
    check_mode,
)
from soong_plugins.lambda_labs.simulator.requestlog import (
    JsonLines,
    redact_request,
    redact_response,
)
from soong_plugins.lambda_labs.simulator.routes import Router
from soong_plugins.lambda_labs.simulator.server import Exchange, SimulatorHTTPServer
from soong_plugins.lambda_labs.simulator.locks import HeldLock
from soong_plugins.lambda_labs.simulator.state import TERMINATE_ENDED_CHOICES
from soong_plugins.lambda_labs.simulator.store import StateStore, StoreError

log = logging.getLogger("soong.sim")

HOST = "127.0.0.1"

SETTING_RULES: dict[str, tuple[type, float, float | None, bool]] = {
    # name: (type, minimum, maximum, nullable)
    "boot_seconds": (float, 0, None, False),
    "terminate_seconds": (float, 0, None, False),
    "ended_visible_seconds": (float, 0, None, False),
    "default_capacity": (int, 0, None, True),
    "quota_instances": (int, 0, None, True),
    "filesystem_growth_bytes_per_hour": (int, 0, None, False),
}
"""Persisted settings the knobs endpoint may change, and what they accept."""

SETTING_CHOICES: dict[str, tuple[str, ...]] = {"terminate_ended": TERMINATE_ENDED_CHOICES}
"""Persisted settings that take one of a few words."""


class SimulatorError(Exception):
    """The simulator cannot start or run (one line, for the user, with optional hints)."""

    exit_code = 1

    def __init__(self, message: str, hints: tuple[str, ...] = ()) -> None:
        super().__init__(message)
        self.message = message
        self.hints = hints


class StateTaken(SimulatorError):
    """Another simulator runs on this state directory (it holds its lock)."""

    @classmethod
    def from_record(cls, state_dir: Path, record: Mapping[str, Any]) -> StateTaken:
        import shlex

        where = f" at {record['api_url']}" if record.get("api_url") else ""
        return cls(f"a simulator is already running{where} (pid {record.get('pid', '?')}) "
                   f"on the state directory {state_dir}",
                   (f"stop it first with `soong sim down --state-dir "
                    f"{shlex.quote(str(state_dir))}`, or give another --state-dir (and "
                    "--profile NAME) to run a second one",))


class ProfileTaken(SimulatorError):
    """The profile belongs to a live simulator of another state directory. A usage
    error (exit 2): nothing was started, another ``--profile`` would do."""

    exit_code = 2

    @classmethod
    def from_record(cls, profile: Path, record: Mapping[str, Any]) -> ProfileTaken:
        import shlex

        owner = str(record.get("state_dir") or "another state directory")
        where = f" at {record['api_url']}" if record.get("api_url") else ""
        return cls(f"profile {profile.stem} belongs to the simulator running{where} "
                   f"(pid {record.get('pid', '?')}) on the state directory {owner}: give "
                   "another --profile NAME to run a second simulator beside it, or stop that "
                   f"one first with `soong sim down --state-dir {shlex.quote(owner)}`")


def check_setting(name: str, value: Any) -> Any:
    """``value`` checked for setting ``name``; ValueError names the rule."""
    if name == "account_active":
        if not isinstance(value, bool):
            raise ValueError(f"account_active must be true or false, got {value!r}")
        return value
    if name in SETTING_CHOICES:
        choices = SETTING_CHOICES[name]
        text = str(value) if isinstance(value, (str, int)) and not isinstance(value, bool) \
            else None
        if text not in choices:
            raise ValueError(f"{name} must be one of {', '.join(choices)}, got {value!r}")
        return text
    kind, low, high, nullable = SETTING_RULES[name]
    if value is None and nullable:
        return None
    ok_type = (isinstance(value, int) if kind is int else isinstance(value, (int, float)))
    if isinstance(value, bool) or not ok_type or value < low or (high is not None and value > high):
        what = "an integer" if kind is int else "a number"
        raise ValueError(f"{name} must be {what} >= {low:g}{' or null' if nullable else ''}, "
                         f"got {value!r}")
    if kind is float and value != value:  # NaN
        raise ValueError(f"{name} must be a number, got NaN")
    return kind(value)


SPEED_MIN = 0.001
SPEED_MAX = 1_000_000.0


def check_speed(value: Any) -> float:
    """Simulated seconds per wall second: from 0.001 (the config's ``clock.factor``
    minimum) to a million (a year of cloud time in about 30 wall seconds)."""
    if (isinstance(value, bool) or not isinstance(value, (int, float)) or value != value
            or not SPEED_MIN <= value <= SPEED_MAX):
        raise ValueError(f"speed must be a number from {SPEED_MIN:g} to {SPEED_MAX:g}, "
                         f"got {value!r}")
    return float(value)


class Simulator:
    """A simulated Lambda Cloud serving its API on ``127.0.0.1``.

    :param state_dir: where the cloud lives (see :mod:`.store`).
    :param port: 0 picks a free port.
    :param clock: inject a clock (tests: ``ManualClock``); by default an accelerated
        clock from the stored anchors, re-anchored when ``speed`` changes it.
    :param speed: simulated seconds per wall second (default: as stored, else 1).
    :param boot_seconds, terminate_seconds: simulated seconds; ``None`` keeps the stored.
    :param terminate_ended: ``"return"`` (default) answers a terminate naming an ended,
        still listed instance with it unchanged; ``"404"`` fails the call; ``None`` keeps
        the stored setting.
    :param rate_limit: enforce the API's documented limits (wall time): ``"edge"`` (or
        ``True``) as Lambda's edge counts them, a burst of 3 around 1/s; ``"strict"``,
        one a second with no burst; ``"off"`` (or ``False``). See :mod:`.ratelimit`.
    :param rate_limit_body: what a 429 carries: ``"text"``, Cloudflare's plain
        ``error code: 1015`` (the real API's); ``"json"``, the error envelope.
    :param limits: ``(general, launch)`` limits, for tests that need shorter windows.
    :param faults: initial fault settings (see :mod:`.faults`).
    :param capacity: ``(type or "*", region or "*", slots)`` to set at start.
    :param reset: forget the stored cloud first (the API key and the account stay;
        simulated time goes on from where the old cloud had reached, never back).
    :param capture_path: append request and response bodies (redacted) to this file.
    :param on_exchange: called with every :class:`~.server.Exchange` (tests validate
        responses with it).
    :param pid_file: write ``sim.pid`` while serving (the ``soong sim`` commands use it).
    :param profile_path: keep this soong config profile pointing at the simulator
        (URL, key, account id, clock), rewritten when the clock changes.

    A simulator holds a lock on its state directory from construction to :meth:`close`
    (and one beside ``profile_path``), so a second one on the same state, or on a
    profile a live simulator keeps, is refused (:class:`StateTaken`,
    :class:`ProfileTaken`) before it changes anything.
    """

    def __init__(self, state_dir: str | os.PathLike[str], *, host: str = HOST, port: int = 0,
                 clock: Clock | None = None, speed: float | None = None,
                 boot_seconds: float | None = None, terminate_seconds: float | None = None,
                 terminate_ended: str | None = None, rate_limit: bool | str = True,
                 rate_limit_body: str = "text", limits: tuple[Limit, Limit] | None = None,
                 faults: Mapping[str, Any] | None = None,
                 capacity: Iterable[tuple[str, str, int]] = (), reset: bool = False,
                 capture_path: str | os.PathLike[str] | None = None,
                 on_exchange: Callable[[Exchange], None] | None = None,
                 pid_file: bool = False, profile_path: str | os.PathLike[str] | None = None,
                 wall: Callable[[], float] = time.monotonic) -> None:
        self.store = StateStore(state_dir)
        self.host = host
        self.requested_port = port
        self.run_id = secrets.token_hex(8)
        self.warnings: list[str] = []
        self._profile_path = Path(profile_path).expanduser().absolute() if profile_path \
            else None
        self._locks: list[HeldLock] = []
        self._capture_path = Path(capture_path) if capture_path else None
        self._pid_file = pid_file
        self._request_log: JsonLines | None = None
        self._capture: JsonLines | None = None
        self._server: SimulatorHTTPServer | None = None
        self._thread: threading.Thread | None = None
        self.started_at: float | None = None
        self._started_monotonic = 0.0
        self.on_exchange = on_exchange
        self.router = Router([*api.ROUTES, *control.ROUTES])
        try:
            mode = rate_limit if isinstance(rate_limit, str) else (
                "edge" if rate_limit else "off")
            self.limiter = RateLimiter(mode=check_mode(mode, "rate_limit"),
                                       body=check_body(rate_limit_body),
                                       general=limits[0] if limits else None,
                                       launch=limits[1] if limits else LAUNCH, now=wall)
        except ValueError as exc:
            raise SimulatorError(str(exc)) from None
        self.faults = FaultInjector(FaultSettings())
        try:
            self.faults.update(faults or {})
        except ValueError as exc:
            raise SimulatorError(str(exc)) from None
        try:
            self._setup(reset, clock, speed, boot_seconds, terminate_seconds, capacity,
                        terminate_ended)
        except BaseException:
            self._release_locks()
            raise

    def _setup(self, reset: bool, clock: Clock | None, speed: float | None,
               boot_seconds: float | None, terminate_seconds: float | None,
               capacity: Iterable[tuple[str, str, int]],
               terminate_ended: str | None = None) -> None:
        """Take the locks, then load (or reset) the cloud and make its clock."""
        try:
            self.store.prepare()
            self._take_locks()
            reached = None
            if reset:
                reached = self._time_reached(self.store.load()[0])
                self.store.reset()
            state, self.warnings = self.store.load()
            self.api_key = self.store.api_key()
            self.account_id = self.store.account_id()
        except (StoreError, OSError) as exc:
            raise SimulatorError(str(exc)) from None
        try:
            if clock is None and not state.clock:
                reached = max(filter(None, (reached, self._time_reached(state),
                                            self._profile_time())), default=None)
            self.clock = clock if clock is not None else self._accelerated(state.clock, speed,
                                                                           reached)
        except ValueError as exc:
            raise SimulatorError(str(exc)) from None
        if isinstance(self.clock, AcceleratedClock):
            state.clock = self.clock.to_config()
        try:
            self.keys: KeyRing = KeyRing(self.store.directory, self.api_key,
                                         lambda: self.clock.now())
        except StoreError as exc:
            raise SimulatorError(str(exc)) from None
        self.warnings += self.keys.warnings
        self.cloud = Cloud(state, self.clock, self.store.save)
        from soong_plugins.lambda_labs.simulator.agents import AgentRunner

        self.agents = AgentRunner(self.store.directory / "agents", self.cloud,
                                  self.api_url_from, self.agent_clock)
        self.cloud.add_launch_listener(self.agents.on_launch)
        self.cloud.agent_url = self.agents.url
        self._apply_settings({"boot_seconds": boot_seconds,
                              "terminate_seconds": terminate_seconds,
                              "terminate_ended": terminate_ended})
        for type_name, region, slots in capacity:
            try:
                self.cloud.set_capacity(type_name, region, slots)
            except ApiError as exc:
                raise SimulatorError(f"capacity {type_name}:{region}={slots}: {exc.message}"
                                     ) from None
        self.cloud.save()

    # -- locks and time -----------------------------------------------------------------

    def _lock_record(self) -> dict[str, Any]:
        record: dict[str, Any] = {"pid": os.getpid(), "state_dir": str(self.store.directory)}
        if self._server is not None:
            record.update(url=self.url, api_url=self.api_url, run_id=self.run_id)
        return record

    def _take_locks(self) -> None:
        try:
            self._locks.append(locks.hold(self.store.lock_path, self._lock_record()))
        except locks.LockTaken as taken:
            raise StateTaken.from_record(self.store.directory, self._with_url(taken.record)
                                         ) from None
        if self._profile_path is None:
            return
        from soong_core.files import private_dir
        from soong_plugins.lambda_labs.simulator.store import profile_lock_path

        try:
            private_dir(self._profile_path.parent)
        except OSError as exc:
            raise SimulatorError(f"cannot write the profile {self._profile_path}: "
                                 f"{exc.strerror or exc}") from None
        try:
            self._locks.append(locks.hold(profile_lock_path(self._profile_path),
                                          self._lock_record()))
        except locks.LockTaken as taken:
            raise ProfileTaken.from_record(self._profile_path, taken.record) from None

    def _with_url(self, record: Mapping[str, Any]) -> dict[str, Any]:
        """A lock's record, with the URL from the PID file when the lock's has none."""
        found = dict(record)
        pid_record = self.store.read_pid_file()
        if "api_url" not in found and pid_record and pid_record.get("pid") == found.get("pid"):
            found["api_url"] = pid_record.get("api_url")
        return found

    def _release_locks(self) -> None:
        for held in reversed(self._locks):
            held.release()
        self._locks.clear()

    @staticmethod
    def _time_reached(state: Any) -> float | None:
        """The latest simulated time a cloud's state shows: its clock now, or any time
        recorded in it (a launch, a scheduled end), whichever is later."""
        times = [state.latest_time()]
        if state.clock:
            with contextlib.suppress(ValueError, KeyError, TypeError):
                times.append(clock_from_config(state.clock).now())
        return max(filter(None, times), default=None)

    def _profile_time(self) -> float | None:
        """Now on the clock of the profile this simulator keeps: what soong's commands
        under it dated their history with."""
        if self._profile_path is None:
            return None
        from soong_core.config import read_config_file
        from soong_core.errors import ConfigError

        try:
            document = read_config_file(self._profile_path) or {}
            return float(clock_from_config(document.get("clock") or {}).now())
        except (ConfigError, ValueError, KeyError, TypeError, AttributeError):
            return None

    @staticmethod
    def _accelerated(stored: Mapping[str, Any] | None, speed: float | None,
                     reached: float | None = None) -> AcceleratedClock:
        """The stored clock (re-anchored for a new ``speed``), or a new one that starts
        no earlier than ``reached``: a reset cloud's time never runs back behind what
        the old cloud, its profile and the history written under it had seen."""
        if speed is not None:
            speed = check_speed(speed)
        previous = None
        if stored:
            try:
                candidate = clock_from_config(stored)
            except (ValueError, KeyError, TypeError):
                candidate = None
            if isinstance(candidate, AcceleratedClock):
                previous = candidate
        if previous is None:
            wall = time.time()
            return AcceleratedClock(speed or 1.0, sim_anchor=max(wall, reached or wall),
                                    wall_anchor=wall)
        if speed is None or speed == previous.factor:
            return previous
        return AcceleratedClock(speed, sim_anchor=previous.now())  # time stays continuous

    def _apply_settings(self, changes: Mapping[str, Any]) -> None:
        given = {name: value for name, value in changes.items() if value is not None}
        try:
            checked = {name: check_setting(name, value) for name, value in given.items()}
        except ValueError as exc:
            raise SimulatorError(str(exc)) from None
        with self.cloud.changing() as state:
            for name, value in checked.items():
                setattr(state.settings, name, value)

    # -- serving ------------------------------------------------------------------------

    @property
    def port(self) -> int:
        if self._server is None:
            raise SimulatorError("the simulator is not bound yet")
        return int(self._server.server_address[1])

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.port}"

    @property
    def api_url(self) -> str:
        return self.url + api.PREFIX

    def api_url_from(self, instance_id: str) -> str:
        """The API's URL as instance ``instance_id``'s agent reaches it (its own address,
        for the rate limits: :data:`.server.FROM_PREFIX`)."""
        from soong_plugins.lambda_labs.simulator.server import FROM_PREFIX

        return f"{self.url}{FROM_PREFIX}{instance_id}{api.PREFIX}"

    def bind(self) -> None:
        """Open the listening socket (port 0: a free one); errors are one line."""
        if self._server is not None:
            return
        previous = self._previous_port()
        if previous:
            with contextlib.suppress(OSError):  # taken meanwhile: any free port will do
                self._server = SimulatorHTTPServer((self.host, previous), self)
        try:
            if self._server is None:
                self._server = SimulatorHTTPServer((self.host, self.requested_port), self)
        except OSError as exc:
            if exc.errno == errno.EADDRINUSE:
                raise SimulatorError(f"port {self.requested_port} on {self.host} is already in "
                                     "use") from None
            raise SimulatorError(f"cannot listen on {self.host}:{self.requested_port}: "
                                 f"{exc.strerror or exc}") from None
        self.started_at = time.time()
        self._started_monotonic = time.monotonic()
        try:
            self._request_log = JsonLines(self.store.request_log_path)
            if self._capture_path is not None:
                self._capture = JsonLines(self._capture_path)
            for held in self._locks:
                held.update(self._lock_record())
            if self._profile_path is not None:
                self.write_profile()
            self.agents.start()  # the agents of live instances, pointed at this URL
            if self._pid_file:  # last: a pid file means "serving"
                self.store.write_pid_file(self.pid_record())
        except (OSError, StoreError) as exc:
            self.close()
            raise SimulatorError(f"cannot start: {exc}") from None
        except SimulatorError:
            self.close()
            raise

    def _previous_port(self) -> int | None:
        """With no port asked for, the one the profile names: a restarted simulator keeps
        its URL, so the profile, scripts and curl lines that use it keep working."""
        if self.requested_port or self._profile_path is None:
            return None
        from urllib.parse import urlsplit

        from soong_core.config import read_config_file
        from soong_core.errors import ConfigError

        try:
            document = read_config_file(self._profile_path) or {}
            url = (document.get("lambda") or {}).get("api_url") or ""
            parts = urlsplit(str(url))
            return parts.port if parts.hostname == self.host else None
        except (ConfigError, ValueError, AttributeError):
            return None

    def start(self) -> Simulator:
        """Bind and serve from a background thread; returns self."""
        self.bind()
        assert self._server is not None
        self._thread = threading.Thread(target=self._server.serve_forever,
                                        kwargs={"poll_interval": 0.01},
                                        name=f"soong-sim-{self.port}", daemon=True)
        self._thread.start()
        return self

    def serve_forever(self) -> None:
        """Bind (if needed) and serve in this thread until :meth:`stop` (from another
        thread or a signal handler that calls it)."""
        self.bind()
        assert self._server is not None
        self._serving = True  # set before reading _stop_requested; stop() does the reverse
        try:
            if not self._stop_requested:
                self._server.serve_forever(poll_interval=0.2)
        finally:
            self._serving = False
            self.close()

    _serving = False
    _stop_requested = False

    def stop(self) -> None:
        """Stop serving, close connections and files, save the state, drop the pid file.

        Safe from a signal handler, and before ``serve_forever`` has started (it then
        returns at once); a simulator that was only bound is released by :meth:`close`.
        """
        self._stop_requested = True
        server = self._server
        if server is None:
            self._release_locks()  # never bound, or closed already
            return
        server.close_connections()
        if self._thread is not None:
            server.shutdown()
            self._thread.join(timeout=10)
            self._thread = None
            self.close()
        elif self._serving:  # serve_forever runs below us (a signal handler) or elsewhere
            threading.Thread(target=server.shutdown, daemon=True).start()

    def close(self) -> None:
        """Release the port, files and locks of a simulator that is not serving (one
        that was only constructed too). Safe to call twice."""
        server, self._server = self._server, None
        if server is not None:
            server.server_close()
            self.agents.close()
            self.cloud.save()
            for journal in (self._request_log, self._capture):
                if journal is not None:
                    journal.close()
            if self._pid_file:
                self.store.remove_pid_file(os.getpid())
        self._release_locks()

    def __enter__(self) -> Simulator:
        return self.start()

    def __exit__(self, *exc_info: object) -> None:
        self.stop()

    # -- what the server asks -------------------------------------------------------------

    def authenticate(self, header: str | None) -> None:
        """Accept ``Bearer KEY``, ``Basic base64(KEY:)`` (curl's ``-u KEY:``),
        ``Basic base64(KEY)`` and ``Basic KEY``, as the spec's security schemes say."""
        if not header:
            raise errors.unauthorized()
        scheme, _, value = header.strip().partition(" ")
        value = value.strip()
        candidates: list[str] = []
        if scheme.lower() == "bearer":
            candidates = [value]
        elif scheme.lower() == "basic":
            candidates = [value, value.removesuffix(":")]
            for text in (value, value.removesuffix(":")):
                try:
                    decoded = base64.b64decode(text, validate=True).decode("utf-8")
                except (binascii.Error, ValueError):
                    continue
                candidates += [decoded, decoded.partition(":")[0]]
        if not any(self.keys.accepts(candidate) for candidate in candidates):
            raise errors.unauthorized()

    def check_account(self) -> None:
        if not self.cloud.state.settings.account_active:
            raise errors.account_inactive()

    def record(self, exchange: Exchange) -> None:
        """Log one request (request log, capture file, test hook); never raises."""
        try:
            if self._request_log is not None:
                self._request_log.append(exchange.log_entry())
            if self._capture is not None:
                self._capture.append(self._capture_entry(exchange))
            if self.on_exchange is not None:
                self.on_exchange(exchange)
        except Exception:
            log.exception("could not record %s %s", exchange.method, exchange.path)

    @staticmethod
    def _capture_entry(exchange: Exchange) -> dict[str, Any]:
        entry = exchange.log_entry()
        raw = exchange.request_body
        if raw.strip():
            import json

            try:
                entry["request_body"] = redact_request(json.loads(raw.decode("utf-8")))
            except (UnicodeDecodeError, json.JSONDecodeError):
                entry["request_body_invalid"] = {"bytes": len(raw)}
        entry["response_body"] = redact_response(exchange.response_body)
        return entry

    # -- the control endpoint's answers -------------------------------------------------

    def pid_record(self) -> dict[str, Any]:
        return {"pid": os.getpid(), "port": self.port, "url": self.url, "api_url": self.api_url,
                "state_dir": str(self.store.directory), "started_at": self.started_at,
                "run_id": self.run_id, "account_id": self.account_id,
                "profile": None if self._profile_path is None else str(self._profile_path)}

    def agent_clock(self) -> dict[str, Any]:
        """The clock an agent's override carries: this simulator's anchors; for an
        injected clock (tests' ManualClock), wall speed from its time now."""
        from soong_core.clock import RealClock

        if isinstance(self.clock, (AcceleratedClock, RealClock)):
            return self.clock.to_config()
        return {"mode": "accelerated", "factor": 1.0, "sim_anchor": self.clock.now(),
                "wall_anchor": time.time()}

    def clock_info(self) -> dict[str, Any]:
        clock = self.clock
        config = clock.to_config() if isinstance(clock, AcceleratedClock) else None
        return {"now": clock.now(), "speed": self.speed, "config": config,
                "manual": config is None}

    @property
    def speed(self) -> float | None:
        """Simulated seconds per wall second; ``None`` on an injected manual clock."""
        return self.clock.factor if isinstance(self.clock, AcceleratedClock) else None

    def status(self) -> dict[str, Any]:
        settings = self.cloud.state.settings
        uptime = time.monotonic() - self._started_monotonic if self.started_at else 0.0
        return {
            **self.pid_record(),
            "uptime_seconds": round(uptime, 3),
            "speed": self.speed,
            "sim_time": self.clock.now(),
            "clock": self.clock_info()["config"],
            "boot_seconds": settings.boot_seconds,
            "terminate_seconds": settings.terminate_seconds,
            "terminate_ended": settings.terminate_ended,
            "rate_limit": self.limiter.enabled,
            "rate_limit_mode": self.limiter.mode,
            "rate_limit_body": self.limiter.body,
            "instances": self.cloud.counts(),
            "warnings": list(self.warnings),
        }

    def knobs(self) -> dict[str, Any]:
        settings = self.cloud.state.settings
        return {
            "speed": self.speed,
            "boot_seconds": settings.boot_seconds,
            "terminate_seconds": settings.terminate_seconds,
            "ended_visible_seconds": settings.ended_visible_seconds,
            "default_capacity": settings.default_capacity,
            "quota_instances": settings.quota_instances,
            "filesystem_growth_bytes_per_hour": settings.filesystem_growth_bytes_per_hour,
            "account_active": settings.account_active,
            "terminate_ended": settings.terminate_ended,
            "rate_limit": self.limiter.enabled,
            "rate_limit_mode": self.limiter.mode,
            "rate_limit_body": self.limiter.body,
            **self.faults.settings(),
        }

    def _apply_rate_limit(self, *, mode: str | None = None, enabled: bool | None = None,
                          body: str | None = None) -> None:
        """The rate-limit knobs, checked already: the mode first, then ``rate_limit``
        (``true`` turns the limits back on in the mode they last had)."""
        if mode is not None:
            self.limiter.mode = mode
        if enabled is not None:
            self.limiter.enabled = enabled
        if body is not None:
            self.limiter.body = body

    def update_knobs(self, body: Any) -> dict[str, Any]:
        """Change knobs all at once (every value is checked before any is applied)."""
        if not isinstance(body, dict) or not body:
            raise invalid_parameters("give an object of knobs to change",
                                     f"known: {', '.join(sorted(self.knobs()))}")
        settings: dict[str, Any] = {}
        faults: dict[str, Any] = {}
        speed = None
        rate_limit: dict[str, Any] = {}
        try:
            for name, value in body.items():
                if name == "speed":
                    if not isinstance(self.clock, AcceleratedClock):
                        raise ValueError("speed cannot change: this simulator runs on a "
                                         "manual clock")
                    speed = check_speed(value)
                elif name == "rate_limit":
                    if not isinstance(value, bool):
                        raise ValueError(f"rate_limit must be true or false, got {value!r}")
                    rate_limit["enabled"] = value
                elif name == "rate_limit_mode":
                    rate_limit["mode"] = check_mode(value)
                elif name == "rate_limit_body":
                    rate_limit["body"] = check_body(value)
                elif name in SETTING_RULES or name in SETTING_CHOICES \
                        or name == "account_active":
                    settings[name] = check_setting(name, value)
                elif name in FAULT_NAMES:
                    faults[name] = value
                else:
                    raise ValueError(f"unknown knob {name!r} (known: "
                                     f"{', '.join(sorted(self.knobs()))})")
            from soong_plugins.lambda_labs.simulator.faults import check_fault_setting

            for name, value in faults.items():
                check_fault_setting(name, value)
        except ValueError as exc:
            raise invalid_parameters(str(exc)) from None
        self.faults.update(faults)
        self._apply_rate_limit(**rate_limit)
        with self.cloud.changing() as state:
            for name, value in settings.items():
                setattr(state.settings, name, value)
            if speed is not None:
                assert isinstance(self.clock, AcceleratedClock)
                self.clock = AcceleratedClock(speed, sim_anchor=self.clock.now())
                self.cloud.clock = self.clock
                state.clock = self.clock.to_config()
        if speed is not None and self._profile_path is not None:
            self.write_profile()
        if speed is not None:
            self.agents.clock_changed()
        return self.knobs()

    def write_profile(self) -> None:
        """Point the profile (``sim`` unless ``sim up --profile`` said another) at this
        simulator: ``lambda.api_url``, ``lambda.api_key``, ``lambda.account_id`` and
        ``clock``. Everything else in it is kept."""
        from soong_core.config import read_config_file, write_config_file
        from soong_core.errors import ConfigError

        assert self._profile_path is not None
        try:  # keep what the user put there (`soong --sim configure` writes defaults)
            document: dict[str, Any] = read_config_file(self._profile_path) or {}
        except ConfigError:
            document = {}  # unreadable: nothing in it can be kept
        section = document.get("lambda")
        document["lambda"] = {**(section if isinstance(section, dict) else {}),
                              "api_url": self.api_url, "api_key": self.api_key,
                              "account_id": self.account_id}
        if isinstance(self.clock, AcceleratedClock):
            document["clock"] = self.clock.to_config()
        else:
            # An injected clock (tests' ManualClock) cannot be shared across processes:
            # the profile's clock starts from its time now and runs at wall speed, so a
            # CLI started soon after agrees with the simulator's Date header.
            document["clock"] = {"mode": "accelerated", "factor": 1,
                                 "sim_anchor": self.clock.now(), "wall_anchor": time.time()}
        try:
            write_config_file(self._profile_path, document)
        except Exception as exc:  # a ConfigError or OSError: say which file
            raise SimulatorError(f"cannot write the profile {self._profile_path}: {exc}") from None
