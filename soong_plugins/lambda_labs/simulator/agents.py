"""The agent runner: each launched instance boots its lease agent from its user_data.

What cloud-init and systemd do on a real instance, done in a sandbox (DESIGN, "The
simulator boots agents from user_data"; the interfaces are the issue-17 contract C2):

1. **The scripts.** A launch whose user_data is a plain ``#!`` script, or multipart MIME,
   gets a sandbox root ``<state dir>/agents/<instance-id>/root``. Each
   ``text/x-shellscript`` part (in filename order, as cloud-init runs them; the plain
   script is one part) is written under ``<root>/var/lib/cloud/instance/scripts/``
   (removed once it ran: user_data is never kept, what it installed is) and run with ``bash`` and only ``SOONG_ROOT=<root>``, ``PATH=<stub dir>:/usr/local/bin:
   /usr/bin:/bin`` and ``HOME=<root>/root`` in its environment. The stub directory's
   ``systemctl`` does nothing but log its arguments. Other parts (``text/cloud-config``)
   and user_data that is neither are ignored. A part runs at most
   :data:`SCRIPT_TIMEOUT_S` wall seconds; the output of every part goes to
   ``<root>/var/log/cloud-init-output.log``; a part that fails is recorded (the agent
   endpoint reports it) and the next part still runs, as cloud-init does.
2. **The unit.** If the scripts installed ``<root>/etc/systemd/system/soong-agent.service``,
   the runner reads its ``Environment=``, ``ExecStart=`` and ``RestartSec=``, writes
   ``<root>/etc/soong/agent.override.json`` (the simulator's clock, the loopback port
   for the agent's API chosen at launch, the simulator's API URL as this instance
   reaches it: ``/_from/<id>``, so the rate limits count it apart) and starts the ExecStart in its own
   session, its output appended to ``<root>/var/log/soong/agent.stdout``. An agent that
   exits is started again after ``RestartSec`` wall seconds (``Restart=always``); the
   restarts are counted.
3. **The end.** An instance that is terminating or has ended (terminated, preempted) has
   its agent stopped (SIGTERM, then SIGKILL after :data:`STOP_GRACE_S`), and so has every
   agent when the simulator stops. A simulator started on a state directory starts the
   agents of its billing instances again from their installed units, with a fresh
   override (user_data is never kept; the sandbox is).

Faults (``POST /_sim/instances/{id}/fault``): ``agent_kill`` kills the agent once (the
supervision restarts it), ``agent_dead`` kills it for good, as far as supervision goes.

After the boot, ``systemctl start|restart soong-agent.service`` run in the sandbox (the
installer run again over SSH, which a test's sshd points at the sandbox) stops the agent
and starts it again from the unit as it is now, dead or not: what systemd would do.

All of it runs off the request threads: a launch starts a thread that runs the scripts;
one supervising thread watches every agent every :data:`POLL_S` wall seconds.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import re
import shlex
import signal
import subprocess
import sys
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable

from soong_plugins.lambda_labs.simulator.errors import ApiError, invalid_parameters

if TYPE_CHECKING:
    from soong_plugins.lambda_labs.simulator.cloud import Cloud
    from soong_plugins.lambda_labs.simulator.state import InstanceRecord

log = logging.getLogger("soong.sim.agents")

UNIT_PATH = "etc/systemd/system/soong-agent.service"
OVERRIDE_PATH = "etc/soong/agent.override.json"
SCRIPTS_DIR = "var/lib/cloud/instance/scripts"
SCRIPT_LOG = "var/log/cloud-init-output.log"
AGENT_STDOUT = "var/log/soong/agent.stdout"
SYSTEMCTL_LOG = "var/log/soong-sim-systemctl.log"
PID_FILE = "agent.pid"
SCRIPT_TIMEOUT_S = 120.0
"""Wall seconds one user_data part may run before it is killed."""
STOP_GRACE_S = 3.0
"""Wall seconds between SIGTERM and SIGKILL when an agent is stopped."""
POLL_S = 0.1
"""How often (wall seconds) the supervision looks at every agent."""
DEFAULT_RESTART_S = 0.1
"""systemd's default ``RestartSec``: 100 ms."""
FAULTS = ("agent_kill", "agent_dead")

UNIT_NAMES = ("soong-agent", "soong-agent.service")
RESTART_VERBS = ("start", "restart", "try-restart", "reload-or-restart")
"""``systemctl VERB soong-agent.service`` lines that (re)start the agent once it booted."""

STUB_SYSTEMCTL = """#!/bin/sh
# The soong simulator's systemctl: logs its arguments; the simulator's supervision reads
# the log and (re)starts soong-agent.service when asked to after the boot.
mkdir -p "${SOONG_ROOT}/var/log"
printf '%s\\n' "$*" >> "${SOONG_ROOT}/""" + SYSTEMCTL_LOG + """"
exit 0
"""


class UnitError(ValueError):
    """The installed unit cannot be started (one line)."""


@dataclass
class Unit:
    """What the runner takes from an installed systemd unit."""

    argv: list[str]
    environment: dict[str, str]
    restart_seconds: float


def _seconds(text: str) -> float:
    """A systemd time span as ``RestartSec=`` takes it: ``2``, ``2s``, ``500ms``, ``1min``."""
    total = 0.0
    units = {"": 1.0, "s": 1.0, "sec": 1.0, "ms": 0.001, "msec": 0.001, "m": 60.0,
             "min": 60.0}
    found = re.findall(r"(\d+(?:\.\d+)?)\s*([a-z]*)", text.strip().lower())
    if not found or re.sub(r"[\d.\sa-z]", "", text.lower()):
        raise UnitError(f"RestartSec={text!r} is not a time span")
    for number, unit in found:
        if unit not in units:
            raise UnitError(f"RestartSec={text!r}: unknown unit {unit!r}")
        total += float(number) * units[unit]
    return total


def parse_unit(text: str) -> Unit:
    """The ``[Service]`` section's ExecStart, Environment and RestartSec."""
    section = ""
    argv: list[str] | None = None
    environment: dict[str, str] = {}
    restart = DEFAULT_RESTART_S
    for raw in text.splitlines():
        line = raw.strip()
        if not line or line.startswith(("#", ";")):
            continue
        if line.startswith("[") and line.endswith("]"):
            section = line[1:-1]
            continue
        if section != "Service" or "=" not in line:
            continue
        key, _, value = line.partition("=")
        key, value = key.strip(), value.strip()
        try:
            words = shlex.split(value)
        except ValueError as exc:
            raise UnitError(f"{key}= cannot be read: {exc}") from None
        if key == "ExecStart":
            words = [words[0].lstrip("-@+!:"), *words[1:]] if words else words
            argv = words or None
        elif key == "Environment":
            for word in words:
                name, equals, setting = word.partition("=")
                if equals and name:
                    environment[name] = setting
        elif key == "RestartSec":
            restart = _seconds(value)
    if not argv:
        raise UnitError("the unit has no ExecStart=")
    return Unit(argv=argv, environment=environment, restart_seconds=restart)


def shell_parts(user_data: str) -> list[tuple[str, str]] | None:
    """``(filename, script)`` of each part to run, in the order to run them; ``None``
    when the user_data is neither a ``#!`` script nor multipart MIME."""
    if user_data.startswith("#!"):
        return [("part-001", user_data)]
    import email
    import email.policy

    head = user_data.lstrip()[:4096].lower()
    if "content-type:" not in head or "multipart/" not in head:
        return None
    message = email.message_from_string(user_data.lstrip(), policy=email.policy.default)
    if not message.is_multipart():
        return None
    parts = []
    for index, part in enumerate(message.walk()):
        if part.is_multipart() or part.get_content_type() != "text/x-shellscript":
            continue
        name = part.get_filename() or f"part-{index:03d}"
        payload = part.get_payload(decode=True)
        if isinstance(payload, bytes):
            text = payload.decode(part.get_content_charset() or "utf-8", errors="replace")
        else:
            text = str(part.get_payload())
        parts.append((_safe_name(name, index), text))
    parts.sort(key=lambda item: item[0])
    return parts


def _safe_name(name: str, index: int) -> str:
    """A part's filename as a plain name inside the scripts folder."""
    base = re.sub(r"[^A-Za-z0-9._-]", "_", os.path.basename(name)).lstrip(".")
    return base or f"part-{index:03d}"


def free_port(host: str = "127.0.0.1") -> int:
    import socket

    with socket.socket() as probe:
        probe.bind((host, 0))
        return int(probe.getsockname()[1])


@dataclass
class Agent:
    """One instance's sandbox and the agent supervised in it."""

    instance_id: str
    home: Path
    state: str = "booting"
    """booting (scripts run), running, restarting, dead (``agent_dead``), stopped
    (the instance ended or the simulator stops), none (no unit was installed)."""
    port: int | None = None
    process: subprocess.Popen[bytes] | None = None
    restarts: int = 0
    restart_at: float | None = None
    unit: Unit | None = None
    errors: list[str] = field(default_factory=list)
    script: subprocess.Popen[bytes] | None = None
    systemctl_read: int = 0
    """How far (bytes) the supervision has read the sandbox's systemctl log."""

    @property
    def root(self) -> Path:
        return self.home / "root"

    def alive(self) -> bool:
        return self.process is not None and self.process.poll() is None

    def info(self) -> dict[str, Any]:
        data: dict[str, Any] = {
            "port": self.port, "pid": self.process.pid if self.alive() and self.process
            else None, "restarts": self.restarts, "root": str(self.root),
            "alive": self.alive(), "state": self.state}
        if self.errors:
            data["error"] = "; ".join(self.errors)
        return data


class AgentRunner:
    """Every instance's agent, for one simulator (see the module's docstring).

    :param directory: ``<state dir>/agents``.
    :param cloud: whose instances' status ends their agents.
    :param api_url: the simulator's API base URL now as an instance's agent reaches it
        (its port may change on a restart), by instance id.
    :param clock_config: the simulator's clock as the agent's ``clock`` section.
    """

    def __init__(self, directory: Path, cloud: Cloud, api_url: Callable[[str], str],
                 clock_config: Callable[[], dict[str, Any]]) -> None:
        self.directory = directory
        self.cloud = cloud
        self._api_url = api_url
        self._clock_config = clock_config
        self._agents: dict[str, Agent] = {}
        self._lock = threading.RLock()
        self._closing = threading.Event()
        self._monitor: threading.Thread | None = None
        self._boots: list[threading.Thread] = []

    # -- lifecycle ---------------------------------------------------------------------

    def start(self) -> None:
        """Start the supervision and the agents of the billing instances with a unit
        installed by an earlier run (each with a fresh override)."""
        if self._monitor is not None:
            return
        self._closing.clear()
        if self.directory.is_dir():
            self._stub_dir()
            for home in sorted(self.directory.iterdir()):
                if home.is_dir() and home.name != "bin":
                    self._kill_stale(home)
                    if (home / "root" / UNIT_PATH).is_file() and self._billing(home.name):
                        agent = Agent(home.name, home)
                        with self._lock:
                            self._agents[home.name] = agent
                        self._install(agent)
        self._monitor = threading.Thread(target=self._supervise, name="soong-sim-agents",
                                         daemon=True)
        self._monitor.start()

    def close(self) -> None:
        """Stop every agent (and any script still running) and the supervision."""
        self._closing.set()
        monitor, self._monitor = self._monitor, None
        if monitor is not None:
            monitor.join(timeout=5)
        with self._lock:
            agents = list(self._agents.values())
        for agent in agents:
            if agent.script is not None:
                _kill_group(agent.script, signal.SIGKILL)
        with self._lock:
            boots = list(self._boots)
        for thread in boots:
            thread.join(timeout=5)
        self._stop_all(agents)

    def _stop_all(self, agents: list[Agent]) -> None:
        """Stop these agents and their supervision."""
        with self._lock:
            for agent in agents:
                agent.state = "stopped" if agent.state != "dead" else agent.state
                agent.restart_at = None
        self._terminate(agents)
        for agent in agents:
            with contextlib.suppress(OSError):
                (agent.home / PID_FILE).unlink()

    @staticmethod
    def _terminate(agents: list[Agent]) -> None:
        """SIGTERM every agent's process at once, SIGKILL those still there after
        :data:`STOP_GRACE_S`."""
        running = [agent.process for agent in agents
                   if agent.process is not None and agent.process.poll() is None]
        for process in running:
            _kill_group(process, signal.SIGTERM)
        end = time.monotonic() + STOP_GRACE_S
        for process in running:
            try:
                process.wait(timeout=max(0.0, end - time.monotonic()))
            except subprocess.TimeoutExpired:
                _kill_group(process, signal.SIGKILL)
                with contextlib.suppress(subprocess.TimeoutExpired):
                    process.wait(timeout=5)

    # -- what the simulator asks --------------------------------------------------------

    def on_launch(self, record: InstanceRecord, user_data: str | None) -> None:
        """The launch listener: boot the instance's user_data in a thread."""
        if not user_data or self._closing.is_set():
            return
        parts = shell_parts(user_data)
        if parts is None:
            return
        # The port is the instance's from its launch, as a real agent's is: a client that
        # asks before the agent runs is refused, as it would be on the machine.
        agent = Agent(record.id, self.directory / record.id, port=free_port())
        with self._lock:
            self._agents[record.id] = agent
        thread = threading.Thread(target=self._boot, args=(agent, parts),
                                  name=f"soong-sim-boot-{record.id[:8]}", daemon=True)
        with self._lock:
            self._boots = [t for t in self._boots if t.is_alive()] + [thread]
        thread.start()

    def info(self, instance_id: str) -> dict[str, Any]:
        """``GET /_sim/instances/{id}/agent``."""
        with self._lock:
            agent = self._agents.get(instance_id)
            if agent is None:
                raise ApiError(404, "global/object-does-not-exist",
                               f"instance {instance_id} has no agent (its user_data "
                               "installed none, or it has none)")
            return agent.info()

    def url(self, instance_id: str) -> str | None:
        """Where the instance's agent answers (refused while it boots, restarts or is
        dead, as on a machine), else ``None`` (its user_data installed no agent, or
        it has ended)."""
        with self._lock:
            agent = self._agents.get(instance_id)
            if agent is None or agent.port is None or agent.state in ("none", "stopped"):
                return None
            return f"http://127.0.0.1:{agent.port}"

    def fault(self, instance_id: str, fault: str) -> dict[str, Any]:
        """``agent_kill``: SIGKILL once (restarted after RestartSec); ``agent_dead``:
        SIGKILL and never again."""
        with self._lock:
            agent = self._agents.get(instance_id)
            if agent is None:
                self.info(instance_id)  # the 404
            assert agent is not None
            if agent.state not in ("running", "restarting"):
                raise invalid_parameters(f"the agent of instance {instance_id} is "
                                         f"{agent.state}: {fault} needs a supervised agent")
            if fault == "agent_dead":
                agent.state = "dead"
                agent.restart_at = None
            if agent.process is not None and agent.process.poll() is None:
                _kill_group(agent.process, signal.SIGKILL)
                with contextlib.suppress(subprocess.TimeoutExpired):
                    agent.process.wait(timeout=5)
            return agent.info()

    def clock_changed(self) -> None:
        """The simulator's clock was re-anchored (a new speed): every supervised agent
        is started again on the new clock (an agent reads its override once)."""
        with self._lock:
            agents = [a for a in self._agents.values() if a.state in ("running", "restarting")]
            for agent in agents:
                agent.state = "restarting"
                agent.restart_at = None  # not before it is gone
        self._terminate(agents)
        with self._lock:
            for agent in agents:
                if agent.state == "restarting" and not self._closing.is_set():
                    self._spawn(agent)

    # -- booting ----------------------------------------------------------------------

    def _boot(self, agent: Agent, parts: list[tuple[str, str]]) -> None:
        try:
            stubs = self._stub_dir()
            root = agent.root
            (root / "root").mkdir(parents=True, exist_ok=True)
            scripts = root / SCRIPTS_DIR
            scripts.mkdir(parents=True, exist_ok=True)
            output = root / SCRIPT_LOG
            output.parent.mkdir(parents=True, exist_ok=True)
            env = {"SOONG_ROOT": str(root), "PATH": f"{stubs}:/usr/local/bin:/usr/bin:/bin",
                   "HOME": str(root / "root")}
            for name, text in parts:
                if self._closing.is_set() or not self._billing(agent.instance_id):
                    agent.state = "stopped"
                    return
                script = scripts / name
                with open(os.open(script, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o700),
                          "w") as handle:
                    handle.write(text)
                try:
                    problem = self._run_part(agent, script, env, output)
                finally:  # user_data is not kept (it carries secrets); what it installed is
                    script.unlink(missing_ok=True)
                if problem:
                    log.warning("instance %s: %s", agent.instance_id, problem)
                    with self._lock:
                        agent.errors.append(problem)
            if self._closing.is_set() or not self._billing(agent.instance_id):
                agent.state = "stopped"
                return
            self._systemctl_asks(agent)  # the boot's own start: the install below
            self._install(agent)
        except OSError as exc:
            with self._lock:
                agent.errors.append(f"cannot boot the sandbox: {exc.strerror or exc}")
                agent.state = "none"

    def _run_part(self, agent: Agent, script: Path, env: dict[str, str],
                  output: Path) -> str | None:
        """Run one part; what went wrong, or ``None``."""
        with open(output, "ab") as sink:
            sink.write(f"--- soong simulator: running {script.name}\n".encode())
            sink.flush()
            process = subprocess.Popen(["bash", str(script)], cwd=str(agent.root), env=env,
                                       stdin=subprocess.DEVNULL, stdout=sink,
                                       stderr=subprocess.STDOUT, start_new_session=True)
            with self._lock:
                agent.script = process
            try:
                code = process.wait(timeout=SCRIPT_TIMEOUT_S)
            except subprocess.TimeoutExpired:
                _kill_group(process, signal.SIGKILL)
                process.wait()
                return f"user_data part {script.name} ran over {SCRIPT_TIMEOUT_S:g} s " \
                       "and was killed"
            finally:
                with self._lock:
                    agent.script = None
        if self._closing.is_set():
            return None
        if code != 0:
            return f"user_data part {script.name} exited with {code} (see " \
                   f"{output})"
        return None

    def _stub_dir(self) -> Path:
        stubs = self.directory / "bin"
        systemctl = stubs / "systemctl"
        if not systemctl.is_file() or systemctl.read_text() != STUB_SYSTEMCTL:
            stubs.mkdir(parents=True, exist_ok=True)
            systemctl.write_text(STUB_SYSTEMCTL)
            systemctl.chmod(0o755)
        return stubs

    def _install(self, agent: Agent) -> None:
        """Read the installed unit, start its agent (or record why not)."""
        unit_path = agent.root / UNIT_PATH
        with self._lock:
            if not unit_path.is_file():
                agent.state = "none"
                agent.errors.append(f"the user_data installed no {UNIT_PATH}")
                return
            try:
                agent.unit = parse_unit(unit_path.read_text(errors="replace"))
            except (UnitError, OSError) as exc:
                agent.state = "none"
                agent.errors.append(f"{UNIT_PATH}: {exc}")
                return
            self._spawn(agent)

    def _spawn(self, agent: Agent) -> None:
        """Write the override and start the ExecStart (under the lock)."""
        assert agent.unit is not None
        if agent.port is None:  # a simulator started again: a fresh port
            agent.port = free_port()
        root = agent.root
        override = {"_comment": "written by the soong simulator at each start of the "
                                "agent: what it owns",
                    "clock": self._clock_config(), "api": {"port": agent.port},
                    "provider": {"api_url": self._api_url(agent.instance_id)}}
        path = root / OVERRIDE_PATH
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            temporary = path.with_name(path.name + ".tmp")
            with open(os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600),
                      "w") as handle:
                json.dump(override, handle, indent=1)
            os.replace(temporary, path)
            stdout = root / AGENT_STDOUT
            stdout.parent.mkdir(parents=True, exist_ok=True)
            argv = list(agent.unit.argv)
            if not os.path.exists(argv[0]) and os.path.basename(argv[0]).startswith("python"):
                argv[0] = sys.executable  # no such interpreter here: this one stands in
            env = {"PATH": f"{self.directory / 'bin'}:/usr/local/bin:/usr/bin:/bin",
                   "LANG": "C.UTF-8", **agent.unit.environment}
            with open(stdout, "ab") as sink:
                agent.process = subprocess.Popen(
                    argv, cwd=str(root), env=env, stdin=subprocess.DEVNULL, stdout=sink,
                    stderr=subprocess.STDOUT, start_new_session=True)
            (agent.home / PID_FILE).write_text(f"{agent.process.pid}\n")
        except OSError as exc:
            agent.errors.append(f"cannot start the agent: {exc.strerror or exc}")
            agent.state = "restarting"
            agent.process = None
            agent.restart_at = time.monotonic() + max(agent.unit.restart_seconds, 1.0)
            return
        agent.state = "running"
        agent.restart_at = None

    # -- supervision ------------------------------------------------------------------

    def _supervise(self) -> None:
        while not self._closing.wait(POLL_S):
            try:
                self._look()
            except Exception:  # the supervision must go on whatever one agent did
                log.exception("agent supervision")

    def _look(self) -> None:
        with self._lock:
            agents = list(self._agents.values())
        ending = []
        for agent in agents:
            if agent.state in ("running", "restarting") and not self._billing(
                    agent.instance_id):
                ending.append(agent)
                continue
            if agent.state in ("running", "restarting", "dead", "none") \
                    and self._systemctl_asks(agent) and not self._closing.is_set():
                self._restart_unit(agent)
                continue
            with self._lock:
                if self._closing.is_set():
                    return
                if agent.state == "running" and not agent.alive():
                    agent.state = "restarting"
                    assert agent.unit is not None
                    agent.restart_at = time.monotonic() + agent.unit.restart_seconds
                if agent.state == "restarting" and agent.restart_at is not None \
                        and time.monotonic() >= agent.restart_at:
                    agent.restarts += 1
                    self._spawn(agent)
        if ending:
            self._stop_all(ending)

    def _systemctl_asks(self, agent: Agent) -> bool:
        """Whether the sandbox's systemctl was asked to (re)start the agent since the
        last look (someone re-ran the installer, as ``soong agent install`` does)."""
        path = agent.root / SYSTEMCTL_LOG
        try:
            with open(path, "rb") as handle:
                handle.seek(agent.systemctl_read)
                new = handle.read()
        except OSError:
            return False
        complete = new[:new.rfind(b"\n") + 1]
        agent.systemctl_read += len(complete)
        for line in complete.decode("utf-8", "replace").splitlines():
            words = line.split()
            if not words:
                continue
            verb = words[0]
            now = verb == "enable" and "--now" in words
            if (verb in RESTART_VERBS or now) and any(w in UNIT_NAMES for w in words[1:]):
                return True
        return False

    def _restart_unit(self, agent: Agent) -> None:
        """``systemctl restart``: the running agent stopped, the unit read again and
        started (an agent killed for good by ``agent_dead`` too: the unit was started)."""
        self._terminate([agent])
        with self._lock:
            if self._closing.is_set():
                return
            agent.state = "booting"
            agent.restart_at = None
            agent.process = None
            agent.errors = []
            self._install(agent)

    def _billing(self, instance_id: str) -> bool:
        """The instance is there and neither terminating nor ended."""
        with self.cloud.locked() as state:
            record = state.instances.get(instance_id)
            return record is not None and record.status(self.cloud.now()).billing

    @staticmethod
    def _kill_stale(home: Path) -> None:
        """An agent a killed simulator left running (its pid file names it, and its
        command line names its sandbox) is stopped: it would hold the port and the state."""
        try:
            pid = int((home / PID_FILE).read_text().strip())
            command = Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ")
        except (OSError, ValueError):
            return
        if str(home / "root").encode() in command:
            with contextlib.suppress(OSError):
                os.killpg(pid, signal.SIGKILL)
        with contextlib.suppress(OSError):
            (home / PID_FILE).unlink()


def _kill_group(process: subprocess.Popen[bytes], sig: int) -> None:
    """Signal the process's session (it was started in its own), else the process."""
    try:
        os.killpg(process.pid, sig)
    except OSError:
        with contextlib.suppress(OSError):
            process.send_signal(sig)
