"""A launched instance is never lost, and no launch goes ahead with its limits off.

The history database is locked by a real second process (an open ``BEGIN IMMEDIATE``
transaction, as a long write of another soong would hold it); the CLI runs in-process
on the fake cloud with the busy timeout cut to a second, so the tests wait one second
where a user would wait ten.
"""

from __future__ import annotations

import sqlite3
import subprocess
import sys
import time
from contextlib import contextmanager
from decimal import Decimal
from pathlib import Path
from typing import Any, Callable, Iterator

import pytest

from soong_core import Soong, history as history_module
from soong_core.cli.application import SoongApplication
from soong_core.clock import RealClock
from soong_core.config import write_config_file
from soong_core.errors import UsageError
from soong_core.fake import DeclaringPlugin, FakeProvider, FakeProviderPlugin
from soong_core.history import History, namespace_for
from soong_core.models import EventKind, Instance, LaunchRequest
from soong_core.plugins import BUILTIN_PLUGINS, Plugins, make_plugins
from soong_core.testing import CliResult, SoongEnv, live_fake_cloud, run_application

CONFIG = {"defaults": {"provider": "fake", "gpu": "gpu_1x_a10", "region": "us-east-1",
                       "lease_hours": 2}}

HOLDER = """
import sqlite3, sys, time
db = sqlite3.connect(sys.argv[1], isolation_level=None, timeout=30)
db.execute("BEGIN IMMEDIATE")
print("locked", flush=True)
sys.stdin.readline()  # hold the lock until told (or until the test ends)
db.execute("ROLLBACK")
"""


@contextmanager
def locked(path: Path) -> Iterator[subprocess.Popen[str]]:
    """Another process holds the database's write lock inside this block."""
    holder = subprocess.Popen([sys.executable, "-c", HOLDER, str(path)], text=True,
                              stdin=subprocess.PIPE, stdout=subprocess.PIPE)
    try:
        assert holder.stdout is not None and holder.stdout.readline().strip() == "locked"
        yield holder
    finally:
        if holder.poll() is None:
            holder.kill()
        holder.wait(timeout=10)


@pytest.fixture
def quick_lock(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(history_module, "BUSY_TIMEOUT_S", 1.0)


@pytest.fixture
def cloud(soong_env: SoongEnv, register_plugin: Any) -> FakeProvider:
    provider = live_fake_cloud(register_plugin)
    write_config_file(soong_env.config_file, CONFIG)
    return provider


def history_path() -> Path:
    """The history file the CLI will use, created (schema and all) ahead of the lock."""
    with History.open(namespace=namespace_for("fake")) as history:
        return history.path


def events() -> list[Any]:
    with History.open(namespace=namespace_for("fake")) as history:
        return history.events()


def errors(result: CliResult) -> list[str]:
    """The error line and its hints (progress lines such as "launching..." come first)."""
    lines = result.stderr.splitlines()
    starts = [n for n, line in enumerate(lines) if line.startswith("error: ")]
    assert len(starts) == 1, result.stderr
    return lines[starts[0]:]


def launches(provider: FakeProvider) -> list[Any]:
    return [request for call, request in provider.calls if call == "launch"]


def test_a_locked_history_launches_nothing_and_names_the_database(
        run_cli: Callable[..., CliResult], cloud: FakeProvider, quick_lock: None) -> None:
    path = history_path()
    with locked(path):
        result = run_cli("start -y")
    assert result.exit_code == 1
    first, *hints = errors(result)
    assert first == (f"error: cannot write to the history database {path}: database is locked "
                     "(another process has held it for more than 1s)")
    assert hints and "Traceback" not in result.stderr
    assert launches(cloud) == [] and cloud.list_instances() == []
    assert events() == []


class LockAfterLaunch(FakeProvider):
    """Launches, then another process takes the history's write lock before soong can
    record the launch (and keeps it until the test releases it)."""

    def __init__(self, path: Path) -> None:
        super().__init__(RealClock(), boot_seconds=0)
        self.path = path
        self.holding: Any = None

    def launch(self, request: LaunchRequest) -> Instance:
        instance = super().launch(request)
        self.holding = locked(self.path)
        self.holding.__enter__()
        return instance

    def release(self) -> None:
        if self.holding is not None:
            self.holding.__exit__(None, None, None)


def test_a_launch_history_cannot_record_names_the_billing_instance_and_is_adopted_later(
        run_cli: Callable[..., CliResult], soong_env: SoongEnv, register_plugin: Any,
        quick_lock: None) -> None:
    write_config_file(soong_env.config_file, CONFIG)
    provider = LockAfterLaunch(history_path())
    provider.add_ssh_key("soong", "ssh-ed25519 AAAAtest soong")
    register_plugin(FakeProviderPlugin(provider), "fake")
    try:
        result = run_cli("start -y")
    finally:
        provider.release()
    [instance] = provider.list_instances()
    assert result.exit_code == 1, result.stderr
    first, *hints = errors(result)
    assert first.startswith(f"error: instance {instance.id} is launched and billing, but "
                            "history could not record it: cannot write to the history database")
    assert f"soong stop {instance.id}" in hints[0]
    assert [e.kind for e in events()] == [EventKind.LAUNCH_INTENT]

    # The next command, any command, adopts it by its launch id: nothing is lost, and
    # nobody needs to launch again to find out.
    status = run_cli("status")
    assert status.exit_code == 0, status.stderr
    assert f"note: adopted instance {instance.id}" in status.stderr
    assert instance.id in status.stdout
    kinds = [(e.kind, e.instance_id) for e in events()]
    assert kinds == [(EventKind.LAUNCH_INTENT, instance.launch_id),
                     (EventKind.LAUNCH, instance.id)]
    assert len(launches(provider)) == 1
    stopped = run_cli(f"stop {instance.id} -y")
    assert stopped.exit_code == 0, stopped.stderr
    assert [e.reason for e in events() if e.kind is EventKind.TERMINATE] == ["manual"]


def test_a_locked_history_leaves_status_working_with_a_warning(
        run_cli: Callable[..., CliResult], cloud: FakeProvider, quick_lock: None) -> None:
    assert run_cli("start -y").exit_code == 0
    with locked(history_path()):
        result = run_cli("status")
    assert result.exit_code == 0, result.stderr
    assert "fake-0001" in result.stdout
    [warning] = result.stderr.splitlines()
    assert warning.startswith("warning: history not brought up to date: cannot write to the "
                              "history database")


def test_malformed_rows_are_skipped_with_one_warning_each(
        run_cli: Callable[..., CliResult], cloud: FakeProvider) -> None:
    assert run_cli("start -y").exit_code == 0
    path = history_path()
    with sqlite3.connect(path) as raw:
        namespace = namespace_for("fake")
        now = time.time()
        raw.execute("INSERT INTO events (namespace, kind, instance_id, at, detail) "
                    "VALUES (?, 'extend', 'fake-0001', ?, '{not json')", (namespace, now))
        raw.execute("INSERT INTO events (namespace, kind, instance_id, at, cost) "
                    "VALUES (?, 'terminate', 'old-1', ?, 'lots')", (namespace, now))
    # status reads what concerns open instances (the extension of fake-0001), not the
    # old termination; --history reads both rows.
    for args, rows in (("status", 1), ("status --history", 2)):
        result = run_cli(args)
        assert result.exit_code == 0, result.stderr
        warnings = [line for line in result.stderr.splitlines() if line.startswith("warning:")]
        assert len(warnings) == rows, (args, result.stderr)  # one per row, not one per read
        assert all("is malformed" in w and "skipped" in w for w in warnings)
        assert "fake-0001" in result.stdout


# -- limits that cannot be enforced or checked --------------------------------------


def without_policies() -> Plugins:
    """Built-ins minus ``policies``: what an embedding program or a broken install gets."""
    return make_plugins(entry_points=False, disabled=(),
                        builtins=[b for b in BUILTIN_PLUGINS if b[0] != "policies"])


def test_no_deadline_and_an_unchecked_budget_are_refused_before_anything_launches(
        soong_env: SoongEnv) -> None:
    plugins = without_policies()
    provider = live_fake_cloud(plugins.register)
    write_config_file(soong_env.config_file, {**CONFIG, "budget": {"max_dollars": 1}})
    budgeted = run_application(SoongApplication(plugins=plugins), "start -y")
    assert budgeted.exit_code == 2
    assert budgeted.stderr.splitlines()[0] == (
        "error: budget.max_dollars is set ($1.00) but no budget policy is registered: this "
        "launch cannot be checked against it")
    write_config_file(soong_env.config_file, CONFIG)
    unlimited = run_application(SoongApplication(plugins=plugins), "start -y")
    assert unlimited.exit_code == 2
    assert unlimited.stderr.splitlines()[0] == (
        "error: no cost policy gives this launch a deadline: nothing would ever stop it")
    assert launches(provider) == []


def test_an_extension_is_refused_the_same_way(soong_env: SoongEnv, plugins: Plugins,
                                              register_plugin: Any) -> None:
    provider = live_fake_cloud(register_plugin)
    with Soong(CONFIG, plugins=plugins) as soong:
        instance = soong.launch(hours=2)
    bare = without_policies()
    bare.register(FakeProviderPlugin(provider), "fake")
    with Soong({**CONFIG, "budget": {"max_dollars": 50}}, plugins=bare) as soong:
        with pytest.raises(UsageError, match="no budget policy is registered: this extension"):
            soong.extend(instance.id, 1)
    with Soong(CONFIG, plugins=bare) as soong:
        with pytest.raises(UsageError, match="no cost policy gives this extension a deadline"):
            soong.extend(instance.id, 1)
        assert soong.history.events(kinds=[EventKind.EXTEND]) == []


def test_disabling_the_policies_by_name_is_refused(run_cli: Any, soong_env: SoongEnv) -> None:
    from soong_core.testing import run_soong

    result = run_soong("--sim", "start", "-y", env=soong_env,
                       extra_env={"SOONG_DISABLE_PLUGINS": "policies"})
    assert result.exit_code == 2
    assert result.stderr.splitlines()[0].startswith(
        "error: plugin 'policies' is required and cannot be disabled")


# -- who enforces what ------------------------------------------------------------------


def test_the_panel_names_what_enforces_each_limit_and_secrets_wait_for_the_launch(
        run_cli: Callable[..., CliResult], cloud: FakeProvider, register_plugin: Any) -> None:
    agent = DeclaringPlugin(("lease", "hard"))
    register_plugin(agent, "agent")
    declined = run_cli("start", inputs="n\n")
    assert declined.exit_code == 1
    assert agent.finished == []  # the panel was shown; nothing launch-time ran
    result = run_cli("start -y")
    assert result.exit_code == 0, result.stderr
    rows = {line.split()[1]: line for line in result.stdout.splitlines()
            if line.startswith("│ ") and line.split()[1] in ("lease", "hard", "idle")}
    assert rows["lease"].split()[-2:] == ["agent", "│"]
    assert rows["hard"].split()[-2:] == ["agent", "│"]
    assert "nothing: stop it yourself" in rows["idle"]
    [request] = launches(cloud)
    [finished] = agent.finished
    assert request.tags["test:finished"] == request.tags["soong:launch-id"]
    assert finished.tags["soong:launch-id"] == request.tags["soong:launch-id"]
    [launch] = [e for e in events() if e.kind is EventKind.LAUNCH]
    assert launch.detail["enforced"] == {"lease": ["agent"], "idle": [], "hard": ["agent"]}
    assert launch.cost == Decimal("1.50")
