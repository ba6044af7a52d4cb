"""A pytest plugin for testing soong and soong plugins.

Enable it in a ``conftest.py``::

    pytest_plugins = ["soong_core.testing"]

Fixtures:

``soong_env``
    HOME and every XDG directory pointed at fresh temporary folders, soong's and
    Lambda's environment variables removed: nothing reads or writes a real ``~/.ssh``,
    config or history. Returns the paths.
``plugins``
    A fresh plugin manager with the built-in plugins and no entry points.
``register_plugin``
    ``register_plugin(obj, name=None)`` registers a plugin into ``plugins`` for this
    test only; it is unregistered when the test ends, pass or fail.
``clock``
    A :class:`~soong_core.clock.ManualClock`.
``fake_provider``
    A :class:`~soong_core.fake.FakeProvider` on ``clock``, registered as provider ``fake``.
``run_cli``
    ``run_cli("plugins --json")`` runs a command in-process against ``plugins`` and
    returns a :class:`CliResult` (exit code, stdout, stderr).

:func:`run_soong` runs the real command line in a subprocess; :func:`live_fake_cloud`
gives the CLI a fake cloud on real time.
"""

from __future__ import annotations

import os
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable, Iterator

import pytest

from soong_core.clock import ManualClock
from soong_core.fake import FakeProvider, FakeProviderPlugin
from soong_core.plugins import Plugins, make_plugins

if TYPE_CHECKING:
    from soong_core.cli.application import SoongApplication

ENV_PREFIXES = ("SOONG_", "LAMBDA_")
AGENT_PYTHON_FLOOR = (3, 10)
"""The oldest Python the lease agent runs on (an instance's own python3)."""


def agent_pythons() -> list[str]:
    """Every Python on this machine the lease agent can run on: pyenv's version
    directories and ``python3`` on PATH that answer (a failing shim is none), 3.10 or
    newer, once per environment (a venv and its base are two)."""
    import glob
    import shutil
    import subprocess

    pyenv = os.environ.get("PYENV_ROOT", "/root/.pyenv")
    candidates = sorted(glob.glob(f"{pyenv}/versions/*/bin/python3"))
    candidates += [found for found in [shutil.which("python3")] if found]
    probe = f"import sys; print(sys.version_info >= {AGENT_PYTHON_FLOOR!r}, sys.prefix)"
    seen: set[str] = set()
    usable = []
    for candidate in candidates:
        try:
            answer = subprocess.run([candidate, "-c", probe], capture_output=True, text=True,
                                    timeout=30)
        except (OSError, subprocess.TimeoutExpired):
            continue
        fit, _, prefix = answer.stdout.strip().partition(" ")
        if answer.returncode == 0 and fit == "True" and prefix not in seen:
            seen.add(prefix)
            usable.append(candidate)
    return usable


def free_port() -> int:
    """A TCP port on 127.0.0.1 nobody listens on now (bound, then released): for a
    server a test starts there, or as an address where nothing answers."""
    import socket

    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def install_offline(package: Path, work: Path) -> Path:
    """pip-install ``package`` (a folder with a ``pyproject.toml``, copied first so the
    build leaves nothing in it) offline and without dependencies into ``work/site``;
    that folder, for ``PYTHONPATH``. A failed install fails the test with pip's error."""
    import shutil
    import subprocess
    import sys

    source, target = work / "src", work / "site"
    shutil.copytree(package, source)
    done = subprocess.run(
        [sys.executable, "-m", "pip", "install", "--quiet", "--no-deps", "--no-index",
         "--no-build-isolation", "--disable-pip-version-check", "--target", str(target),
         str(source)], capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    return target


@dataclass(frozen=True)
class Request:
    """What a :class:`LocalServer` received."""

    method: str
    path: str
    headers: dict[str, str]
    body: bytes


@dataclass(frozen=True)
class Answer:
    """What a :class:`LocalServer` sends back."""

    body: bytes | str = b""
    status: int = 200
    content_type: str = "text/plain"
    headers: dict[str, str] | None = None


class LocalServer:
    """An HTTP server on 127.0.0.1 (a free port), serving from a thread of its own:
    each request, any method, is answered with ``answer(request)`` (an :class:`Answer`,
    or a body for a 200). What it received is in :attr:`requests`. For a stand-in of a
    service (a serving engine's metrics, a watchdog, a Jupyter server); ``tls`` (a
    server-side :class:`ssl.SSLContext`) makes it HTTPS. :meth:`close` (or ``with``)
    stops it."""

    def __init__(self, answer: Callable[[Request], Answer | bytes | str], *,
                 tls: Any = None) -> None:
        import http.server
        import threading

        self.requests: list[Request] = []
        served = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def _answer(self) -> None:
                length = int(self.headers.get("Content-Length") or 0)
                request = Request(self.command, self.path, dict(self.headers.items()),
                                  self.rfile.read(length) if length else b"")
                served.requests.append(request)
                reply = answer(request)
                if not isinstance(reply, Answer):
                    reply = Answer(reply)
                data = reply.body.encode() if isinstance(reply.body, str) else reply.body
                self.send_response(reply.status)
                self.send_header("Content-Type", reply.content_type)
                self.send_header("Content-Length", str(len(data)))
                for name, value in (reply.headers or {}).items():
                    self.send_header(name, value)
                self.end_headers()
                if self.command != "HEAD":
                    self.wfile.write(data)

            do_GET = do_POST = do_PUT = do_PATCH = do_DELETE = do_HEAD = _answer

            def log_message(self, *args: object) -> None:
                pass

        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        if tls is not None:
            self.server.socket = tls.wrap_socket(self.server.socket, server_side=True)
        self.port = int(self.server.server_address[1])
        self.url = f"{'https' if tls is not None else 'http'}://127.0.0.1:{self.port}"
        self._thread = threading.Thread(target=self.server.serve_forever, args=(0.05,),
                                        daemon=True)
        self._thread.start()

    @property
    def serving(self) -> bool:
        return self._thread.is_alive()

    def close(self) -> None:
        if self._thread.is_alive():
            self.server.shutdown()
            self._thread.join(10)
        self.server.server_close()

    def __enter__(self) -> LocalServer:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


@dataclass(frozen=True)
class SoongEnv:
    home: Path
    config_home: Path
    data_home: Path
    state_home: Path
    cache_home: Path
    runtime_dir: Path

    @property
    def config_file(self) -> Path:
        return self.config_home / "soong" / "config.yaml"

    def environ(self) -> dict[str, str]:
        """The variables to give a subprocess so it sees this environment too."""
        return {
            "HOME": str(self.home),
            "XDG_CONFIG_HOME": str(self.config_home),
            "XDG_DATA_HOME": str(self.data_home),
            "XDG_STATE_HOME": str(self.state_home),
            "XDG_CACHE_HOME": str(self.cache_home),
            "XDG_RUNTIME_DIR": str(self.runtime_dir),
        }


def isolate_environment(root: Path, monkeypatch: pytest.MonkeyPatch) -> SoongEnv:
    """Point HOME and XDG at folders under ``root`` and drop soong/Lambda variables."""
    env = SoongEnv(*(root / name for name in ("home", "config", "data", "state", "cache", "run")))
    for path in (env.home, env.config_home, env.data_home, env.state_home, env.cache_home,
                 env.runtime_dir):
        path.mkdir(parents=True, exist_ok=True)
    env.runtime_dir.chmod(0o700)
    for key, value in env.environ().items():
        monkeypatch.setenv(key, value)
    for key in list(os.environ):
        if key.startswith(ENV_PREFIXES):
            monkeypatch.delenv(key)
    return env


@pytest.fixture
def soong_env(tmp_path_factory: pytest.TempPathFactory, monkeypatch: pytest.MonkeyPatch) -> SoongEnv:
    return isolate_environment(tmp_path_factory.mktemp("soong-env"), monkeypatch)


@contextmanager
def registered(plugins: Plugins, plugin: object, name: str | None = None) -> Iterator[str]:
    """Register ``plugin`` for the duration of a ``with`` block; always unregistered."""
    name = name or getattr(plugin, "__name__", None) or f"test-plugin-{id(plugin):x}"
    if not plugins.register(plugin, name):
        info = next(p for p in plugins.info() if p.name == name)
        raise AssertionError(f"plugin {name!r} did not register: {info.error or info.status}")
    try:
        yield name
    finally:
        plugins.unregister(name)


@pytest.fixture
def plugins() -> Plugins:
    return make_plugins(entry_points=False, disabled=())


@pytest.fixture
def register_plugin(plugins: Plugins) -> Iterator[Callable[..., str]]:
    stack: list[object] = []

    def register(plugin: object, name: str | None = None) -> str:
        context = registered(plugins, plugin, name)
        registered_name = context.__enter__()
        stack.append(context)
        return registered_name

    try:
        yield register
    finally:
        while stack:
            stack.pop().__exit__(None, None, None)  # type: ignore[attr-defined]


@pytest.fixture
def clock() -> ManualClock:
    return ManualClock()


@pytest.fixture
def fake_provider(clock: ManualClock, register_plugin: Callable[..., str]) -> FakeProvider:
    provider = FakeProvider(clock)
    register_plugin(FakeProviderPlugin(provider), "fake")
    return provider


def live_fake_cloud(register: Callable[..., Any], **options: Any) -> FakeProvider:
    """A :class:`~soong_core.fake.FakeProvider` on the real clock, for tests of the CLI
    (which waits in real time): active at once unless ``boot_seconds`` says otherwise,
    holding the SSH key ``soong`` that launches name, registered as provider ``fake``
    through ``register`` (the ``register_plugin`` fixture, or a :class:`Plugins`'
    ``register``). ``options`` go to the provider."""
    from soong_core.clock import RealClock

    options.setdefault("boot_seconds", 0)
    provider = FakeProvider(RealClock(), **options)
    provider.add_ssh_key("soong", "ssh-ed25519 AAAAtest soong")
    register(FakeProviderPlugin(provider), "fake")
    return provider


@dataclass(frozen=True)
class CliResult:
    exit_code: int
    stdout: str
    stderr: str


def run_application(app: SoongApplication, args: str | list[str], *,
                    inputs: str | None = None) -> CliResult:
    """Run ``soong ARGS`` in-process, non-interactive unless ``inputs`` is given."""
    import shlex

    from cleo.io.buffered_io import BufferedIO
    from cleo.io.inputs.argv_input import ArgvInput

    argv = shlex.split(args) if isinstance(args, str) else list(args)
    io = BufferedIO(ArgvInput(["soong", *argv]))
    if inputs is not None:
        from io import StringIO

        io.input.set_stream(StringIO())
        io.set_user_input(inputs)
        io.interactive(True)  # answers are waiting, as if a user typed them
    else:
        io.interactive(False)
    app.auto_exits(False)
    exit_code = app.run(io.input, io.output, io.error_output)
    return CliResult(exit_code, io.fetch_output(), io.fetch_error())


def run_soong(*args: str, env: SoongEnv, extra_env: dict[str, str] | None = None,
              timeout: float = 60) -> CliResult:
    """Run ``python -m soong_core ARGS`` in a fresh interpreter, as a user would, with
    ``env``'s HOME and XDG folders and no soong or Lambda variables from outside."""
    import subprocess
    import sys

    environ = {k: v for k, v in os.environ.items() if not k.startswith(ENV_PREFIXES)}
    environ.update(env.environ())
    environ.update(extra_env or {})
    done = subprocess.run([sys.executable, "-m", "soong_core", *args], capture_output=True,
                          text=True, env=environ, timeout=timeout)
    return CliResult(done.returncode, done.stdout, done.stderr)


@pytest.fixture
def run_cli(plugins: Plugins) -> Callable[..., CliResult]:
    from soong_core.cli.application import SoongApplication

    def run(args: str | list[str], *, inputs: str | None = None) -> CliResult:
        return run_application(SoongApplication(plugins=plugins), args, inputs=inputs)

    return run
