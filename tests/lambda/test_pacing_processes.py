"""Processes of one account share its rate limit (DESIGN, "Rate limits as the edge
enforces them"; issue 10, point 3): the pacing file, its lock, and what happens when it
cannot be trusted.

The unit tests build several :class:`Limiter` objects on one file, as several processes
would, on a virtual timer. The last tests run real processes against a simulator whose
rate limits are strict and on real time: together they must never meet a 429, where the
same processes pacing alone (soong before the shared file) do.
"""

from __future__ import annotations

import itertools
import json
import logging
import subprocess
import sys
import threading
from pathlib import Path
from typing import Any, Callable

import pytest

from soong_core.config import default_config_path, write_config_file
from soong_core.testing import SoongEnv, run_soong
from soong_plugins.lambda_labs import transport
from soong_plugins.lambda_labs.pacing import (
    GENERAL,
    LAUNCH,
    Limiter,
    VirtualTimer,
    account_hash,
    pacing_path,
)
from soong_plugins.lambda_labs.simulator.requestlog import read_lines
from soong_plugins.lambda_labs.simulator.testing import SimHarness
from soong_plugins.lambda_labs.transport import Transport

SLOT = 1 / GENERAL.rate
"""Seconds between two requests of one account (1 s and the margin)."""


@pytest.fixture
def path(tmp_path: Path) -> Path:
    return tmp_path / "cache" / "soong" / "pacing-test.json"


def test_two_processes_on_one_file_take_turns(path: Path, timer: VirtualTimer) -> None:
    first, second = Limiter(timer, path=path), Limiter(timer, path=path)
    assert first.acquire() == 0
    assert second.acquire() == pytest.approx(SLOT)  # the first one's slot was taken
    assert first.acquire() == pytest.approx(SLOT)
    # pacing alone (no file), each believes the account idle: they would collide
    alone = Limiter(timer), Limiter(timer)
    assert [limiter.acquire() for limiter in alone] == [0, 0]


def test_launches_are_counted_across_processes(path: Path, timer: VirtualTimer) -> None:
    one, other = Limiter(timer, path=path), Limiter(timer, path=path)
    for _ in range(LAUNCH.burst):
        one.acquire(launch=True)
    before = timer.slept
    other.acquire(launch=True)  # the sixth launch of the account, from another process
    assert timer.slept - before == pytest.approx(1 / LAUNCH.rate - (LAUNCH.burst - 1) * SLOT)


class InterleavingTimer(VirtualTimer):
    """Runs ``during`` once, inside the first sleep, before the clock moves: what another
    process does while this one waits for its slot."""

    def __init__(self) -> None:
        super().__init__()
        self.during: Callable[[], Any] | None = None

    def sleep(self, seconds: float) -> None:
        during, self.during = self.during, None
        if during is not None:
            during()
        super().sleep(seconds)


def test_the_slot_is_booked_before_sleeping_and_the_lock_is_not_held_meanwhile(
        path: Path) -> None:
    timer = InterleavingTimer()
    first, second, third = (Limiter(timer, path=path) for _ in range(3))
    first.acquire()
    asked: list[float] = []
    # While `second` sleeps for its slot, `third` asks (and would deadlock on the lock if
    # `second` slept holding it): it queues behind `second`, two slots from now.
    timer.during = lambda: asked.append(timer.time() + third.acquire())
    start = timer.time()
    second.acquire()
    assert asked == [pytest.approx(start + 2 * SLOT)]


def test_a_corrupt_file_is_rebuilt_with_one_warning(
        path: Path, timer: VirtualTimer, caplog: pytest.LogCaptureFixture) -> None:
    path.parent.mkdir(parents=True)
    path.write_bytes(b"\x00\xffnot json")
    limiter = Limiter(timer, path=path)
    with caplog.at_level(logging.WARNING, logger="soong.lambda"):
        assert limiter.acquire() == pytest.approx(SLOT)  # as if a request had just gone out
        limiter.acquire()
    assert [r.getMessage() for r in caplog.records] == [
        f"the pacing file {path} was unreadable ('utf-8' codec can't decode byte 0xff in "
        "position 1: invalid start byte): rebuilt it"]
    assert json.loads(path.read_text())["version"] == 1


@pytest.mark.parametrize("content", [
    '{"version": 1}',
    '{"version": 99, "written_at": 0, "general": {}, "launch": {}}',
    '{"version": 1, "written_at": 1000, "general": {"tokens": NaN, "updated": 1000}, '
    '"launch": {"tokens": 5, "updated": 1000}}',
    '{"version": 1, "written_at": 1000, "general": {"tokens": 0, "updated": 999999}, '
    '"launch": {"tokens": 5, "updated": 1000}}',  # a slot booked days ahead: not believed
])
def test_content_that_is_not_a_pacing_file_never_stalls_a_command(
        path: Path, timer: VirtualTimer, content: str) -> None:
    path.parent.mkdir(parents=True)
    path.write_text(content)
    assert Limiter(timer, path=path).acquire() <= SLOT + 1e-9


@pytest.mark.parametrize("blocked", ["the cache folder is a file", "the file is a folder"])
def test_an_unusable_file_means_pacing_alone_with_one_warning(
        tmp_path: Path, timer: VirtualTimer, caplog: pytest.LogCaptureFixture,
        blocked: str) -> None:
    path = tmp_path / "cache" / "soong" / "pacing-x.json"
    if blocked == "the cache folder is a file":
        (tmp_path / "cache").write_text("a file where the cache folder should be")
    else:
        path.mkdir(parents=True)
    limiter = Limiter(timer, path=path)
    with caplog.at_level(logging.WARNING, logger="soong.lambda"):
        waits = [limiter.acquire() for _ in range(3)]
    assert waits == [0, pytest.approx(SLOT), pytest.approx(SLOT)]  # still paced, alone
    [warning] = caplog.records
    assert "pacing this process alone" in warning.getMessage()
    assert limiter.path is None


def test_a_clock_set_back_does_not_stall_the_next_command(
        path: Path, timer: VirtualTimer) -> None:
    timer.set(1_000_000.0)
    Limiter(timer, path=path).acquire()
    timer.set(1_000_000.0 - 3600)  # NTP corrects the clock by an hour
    assert Limiter(timer, path=path).acquire() == pytest.approx(SLOT)
    alone = Limiter(timer)
    alone.acquire()
    timer.set(timer.time() - 3600)
    assert alone.acquire() == pytest.approx(SLOT)


def test_the_file_is_named_by_a_hash_and_holds_no_key(timer: VirtualTimer,
                                                      soong_env: SoongEnv) -> None:
    key = "soong-secret-key-1234567890"
    client = Transport("http://127.0.0.1:9/api/v1", key)
    path = client.limiter.path
    assert path is not None and path.parent == soong_env.cache_home / "soong"
    assert path.name == f"pacing-{account_hash('http://127.0.0.1:9/api/v1', key)}.json"
    client.limiter.acquire()
    assert key not in path.name and key not in path.read_text()
    assert account_hash("http://a/api/v1", "k1") != account_hash("http://a/api/v1", "k2")
    assert account_hash("http://a/api/v1", "k") != account_hash("http://b/api/v1", "k")


def test_one_account_on_two_endpoints_or_keys_shares_one_file(timer: VirtualTimer) -> None:
    identity: list[str | None] = [None]
    first = Transport("http://127.0.0.1:9/api/v1", "key-one-000000", identity=lambda: identity[0])
    second = Transport("http://127.0.0.1:10/api/v1", "key-two-000000", identity="sim-acct-1")
    assert first.account != second.account  # no identity yet: endpoint and key
    identity[0] = "sim-acct-1"  # the provider learns it from the config
    assert first.account == second.account and first.limiter is second.limiter
    assert first.limiter.path == pacing_path(account_hash("", None, "sim-acct-1"))
    # in one process, a provider that does not know the identity shares it too
    unaware = Transport("http://127.0.0.1:9/api/v1", "key-one-000000")
    assert unaware.limiter is first.limiter


def test_per_process_pacing_can_be_chosen(timer: VirtualTimer) -> None:
    state = transport.reset(timer, shared_pacing=False)
    assert Transport("http://127.0.0.1:9/api/v1", "k-000000", state=state).limiter.path is None


# -- real processes -------------------------------------------------------------------------

CHILD = """
import sys
from soong_plugins.lambda_labs import transport
from soong_plugins.lambda_labs.provider import LambdaProvider

url, key, count, mode = sys.argv[1:5]
if mode == "alone":
    transport.reset(shared_pacing=False)  # what every process did before the pacing file
provider = LambdaProvider(url, key)
print("ready", flush=True)
sys.stdin.readline()  # all start together
for _ in range(int(count)):
    provider.list_instances()
print("done", flush=True)
"""


def run_together(cloud: SimHarness, soong_env: SoongEnv, mode: str, *, processes: int = 2,
                 count: int = 2) -> list[dict[str, Any]]:
    """``processes`` children listing instances ``count`` times each, released at once;
    the API requests the simulator saw, in order."""
    env = {**soong_env.environ(), "PATH": "/usr/bin:/bin"}
    children = [subprocess.Popen([sys.executable, "-c", CHILD, cloud.api_url, cloud.api_key,
                                  str(count), mode], stdin=subprocess.PIPE,
                                 stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                                 env=env) for _ in range(processes)]
    try:
        for child in children:
            assert child.stdout is not None and child.stdout.readline() == "ready\n"
        for child in children:
            assert child.stdin is not None
            child.stdin.write("go\n")
            child.stdin.flush()
        for child in children:
            out, err = child.communicate(timeout=120)
            assert child.returncode == 0 and out == "done\n", err
            assert err == ""  # no warning: the pacing file worked for both
    finally:
        for child in children:
            if child.poll() is None:
                child.kill()
    return [e for e in read_lines(cloud.simulator.store.request_log_path) if e["kind"] == "api"]


@pytest.mark.slow
def test_two_processes_released_together_never_meet_a_429(
        sim_factory: Callable[..., SimHarness], soong_env: SoongEnv) -> None:
    cloud = sim_factory(rate_limit="strict")  # 1 per second, no burst, on real time
    seen = run_together(cloud, soong_env, "shared")
    assert [e["status"] for e in seen] == [200] * 4
    gaps = [b["ts"] - a["ts"] for a, b in itertools.pairwise(seen)]
    assert min(gaps) >= 1.0, gaps  # as the simulator saw them arrive


@pytest.mark.slow
def test_the_same_processes_pacing_alone_collide(
        sim_factory: Callable[..., SimHarness], soong_env: SoongEnv) -> None:
    cloud = sim_factory(rate_limit="strict")
    seen = run_together(cloud, soong_env, "alone")
    assert "rate_limited" in [e["fault"] for e in seen]  # what the shared file prevents


@pytest.mark.slow
def test_concurrent_and_back_to_back_soong_status_meet_no_429(
        sim_factory: Callable[..., SimHarness], soong_env: SoongEnv) -> None:
    cloud = sim_factory(rate_limit="strict")
    write_config_file(default_config_path(), {"lambda": {"api_url": cloud.api_url,
                                                         "api_key": cloud.api_key}})
    results: list[Any] = [None, None]

    def status(index: int) -> None:
        results[index] = run_soong("status", env=soong_env, timeout=120)

    threads = [threading.Thread(target=status, args=(i,)) for i in range(2)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    results.append(run_soong("status", env=soong_env, timeout=120))  # right after them
    assert [r.exit_code for r in results] == [0, 0, 0], [r.stderr for r in results]
    seen = [e for e in read_lines(cloud.simulator.store.request_log_path) if e["kind"] == "api"]
    assert len(seen) >= 3 and [e["fault"] for e in seen] == [None] * len(seen)
    gaps = [b["ts"] - a["ts"] for a, b in itertools.pairwise(seen)]
    assert min(gaps) >= 1.0, gaps
