"""How long `soong status` takes with 1 and with 1,000 instances, table and --json,
against the floor `python -c "import cleo.application, requests, rich.table"` (what any
cleo program that talks HTTP and draws a rich table imports); then ten `status` back to
back against rate limits, counting 429 answers.

Each fleet is its own simulated account: a simulator (in this process, rate limits on:
a token bucket of one request refilled at 1 per second with no burst, the strict mode;
the only limited mode it has) whose instances are seeded directly through its
simulator-only seeding (launching 1,000 at one per 12 s would take hours), each with
soong's tags, and a history where each has its `launch` event, recorded through the
history API. Every command is a fresh `soong` process with its own HOME and XDG
folders; runs are interleaved so machine noise hits all cases alike, and two `soong`
commands are spaced at least 1.2 s apart: soong paces itself across processes (one
request per second per account), and a command closer than that to the previous one
would wait for its turn, which is pacing, not the cost of `status`. Bytecode is
compiled and used, as for an installed soong (the children run without
`PYTHONDONTWRITEBYTECODE`; `bench_cli_startup` measures the uncompiled case). The
median of RUNS is reported, and the peak memory of one more run of each (Linux: the
process's own ``VmHWM``, read as it exits; ``ru_maxrss`` would report the benchmark's
own size, which a child inherits through fork and exec).

Targets: 1 instance at most 2.0x the floor (stretch 1.7x); 1,000 instances at most
0.5 s median, table and --json; ten back-to-back `status` meet no 429.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterator

RUNS = 7
PAUSE = 1.2
"""Wall seconds from the end of one `soong` command to the start of the next."""
FLEET = 1000
TARGET_ONE = 2.0
STRETCH_ONE = 1.7
TARGET_FLEET_S = 0.5
BACK_TO_BACK = 10
FLOOR = [sys.executable, "-c", "import cleo.application, requests, rich.table"]
HOUR = 3600.0
BYTECODE_OFF = "PYTHONDONTWRITEBYTECODE"
SETTING = ("simulator: rate limits on (1 request/s, no burst: strict); bytecode compiled "
           f"(children run without {BYTECODE_OFF}); >= {PAUSE:g} s between soong commands")
"""The header line both status benchmarks print: how they ran."""


def soong_command() -> list[str]:
    """The installed ``soong`` script, else ``python -m soong_core``."""
    script = shutil.which("soong")
    return [script] if script else [sys.executable, "-m", "soong_core"]


@dataclass
class Home:
    """One user's HOME and XDG folders, and the environment a `soong` there runs with."""

    root: Path
    env: dict[str, str] = field(init=False)

    def __post_init__(self) -> None:
        # Bytecode is written and used (as for an installed soong): what is measured is
        # status, not the compiler (bench_cli_startup measures the uncompiled case).
        self.env = {k: v for k, v in os.environ.items()
                    if not k.startswith(("SOONG_", "LAMBDA_")) and k != BYTECODE_OFF}
        self.env.update({"HOME": str(self.root), "XDG_CONFIG_HOME": str(self.root / "config"),
                         "XDG_DATA_HOME": str(self.root / "data"),
                         "XDG_STATE_HOME": str(self.root / "state"),
                         "XDG_CACHE_HOME": str(self.root / "cache")})

    @contextlib.contextmanager
    def active(self) -> Iterator[None]:
        """This process's environment set to the home's, for seeding through the API."""
        saved = dict(os.environ)
        os.environ.clear()
        os.environ.update(self.env)
        try:
            yield
        finally:
            os.environ.clear()
            os.environ.update(saved)


def configure(home: Home, sim: Any) -> None:
    """Point the home's config at ``sim``."""
    from soong_core.config import default_config_path, write_config_file

    with home.active():
        write_config_file(default_config_path(), {
            "lambda": {"api_url": sim.api_url, "api_key": sim.api_key},
            "defaults": {"gpu": "gpu_1x_a10", "region": "us-east-1"}})


def deadlines(now: float) -> tuple[float, float, float]:
    """Launch time, lease and hard deadline of the seeded instances: half an hour in."""
    return now - 0.5 * HOUR, now + 1.5 * HOUR, now + 7.5 * HOUR


def seed_instances(sim: Any, count: int, *, now: float) -> list[str]:
    """``count`` running instances with soong's tags in ``sim``, seeded directly."""
    from soong_core.models import (
        TAG_HARD_DEADLINE,
        TAG_LAUNCH_ID,
        TAG_LAUNCHED_AT,
        TAG_LEASE_DEADLINE,
        format_timestamp,
    )

    launched, lease, hard = deadlines(now)
    return list(sim.cloud.seed({
        "count": count, "name": "bench-{i}", "launched_seconds_ago": now - launched,
        "tags": {TAG_LAUNCH_ID: "bench-{i}", TAG_LAUNCHED_AT: format_timestamp(launched),
                 TAG_LEASE_DEADLINE: format_timestamp(lease),
                 TAG_HARD_DEADLINE: format_timestamp(hard)}})["instance_ids"])


def record_launches(home: Home, ids: list[str], *, now: float) -> None:
    """The `launch` event of each of ``ids`` in the home's history (its namespace: the
    one `soong` there uses), as `soong start` would have written it."""
    from soong_core.api import Soong
    from soong_core.models import Event, EventKind

    launched, lease, hard = deadlines(now)
    with home.active(), Soong.from_config() as soong:
        soong.history.record_many(
            Event(EventKind.LAUNCH, instance_id, launched, provider="lambda",
                  type_name="gpu_1x_a10", region="us-east-1",
                  detail={"launch_id": f"bench-{n}", "name": f"bench-{n}",
                          "price_cents_per_hour": 75, "lease_deadline": lease,
                          "hard_deadline": hard,
                          "enforced": {"lease": [], "idle": [], "hard": []}})
            for n, instance_id in enumerate(ids))


PEAK = (
    "import atexit, runpy, sys\n"
    "out = sys.argv.pop(1)\n"
    "def peak():\n"
    "    with open('/proc/self/status') as status, open(out, 'w') as f:\n"
    "        f.write(''.join(l.split()[1] for l in status if l.startswith('VmHWM:')))\n"
    "atexit.register(peak)\n"
    "code = sys.argv.pop(1)\n"
    "if code == '-m':\n"
    "    runpy.run_module(sys.argv.pop(1), run_name='__main__', alter_sys=True)\n"
    "else:\n"
    "    exec(code)\n"
)
"""Runs ``-m MODULE ARGS`` or ``CODE`` and writes its peak resident memory (KiB)."""

Case = tuple[list[str], dict[str, str], bool]
"""(argv, environment, whether it is a `soong` command, spaced by :data:`PAUSE`)."""


class Runner:
    """Runs commands, timing each, spacing `soong` ones by :data:`PAUSE`."""

    def __init__(self) -> None:
        self._last_soong_end = 0.0

    def run(self, argv: list[str], env: dict[str, str], *, soong: bool) -> float:
        """Wall seconds of one run; exits on failure."""
        if soong:
            time.sleep(max(0.0, self._last_soong_end + PAUSE - time.monotonic()))
        start = time.perf_counter()
        done = subprocess.run(argv, env=env, stdout=subprocess.DEVNULL,
                              stderr=subprocess.PIPE, timeout=300, check=False)
        elapsed = time.perf_counter() - start
        if soong:
            self._last_soong_end = time.monotonic()
        if done.returncode != 0:
            raise SystemExit(f"{' '.join(argv)} failed ({done.returncode}): "
                             f"{done.stderr.decode(errors='replace')}")
        return elapsed

    def peak_mib(self, argv: list[str], env: dict[str, str], *, soong: bool) -> float | None:
        """Peak resident memory of one more run, in MiB (``None`` off Linux)."""
        if not Path("/proc/self/status").exists():
            return None
        if argv[:2] == [sys.executable, "-c"]:
            tail = argv[2:]
        else:  # the `soong` script or `python -m soong_core`: the same module
            tail = ["-m", "soong_core", *argv[argv.index("-m") + 2 if "-m" in argv else 1:]]
        with tempfile.TemporaryDirectory() as folder:
            out = Path(folder) / "peak"
            self.run([sys.executable, "-c", PEAK, str(out), *tail], env, soong=soong)
            return int(out.read_text()) / 1024


def measure(runner: Runner, cases: dict[str, Case], runs: int) -> dict[str, list[float]]:
    """Every case once to warm caches (not counted), then ``runs`` rounds, interleaved."""
    for argv, env, soong in cases.values():
        runner.run(argv, env, soong=soong)
    samples: dict[str, list[float]] = {name: [] for name in cases}
    for _ in range(runs):
        for name, (argv, env, soong) in cases.items():
            samples[name].append(runner.run(argv, env, soong=soong))
    return samples


def report(runner: Runner, cases: dict[str, Case], samples: dict[str, list[float]],
           floor: str, runs: int) -> dict[str, float]:
    """Print median, min, ratio to the floor and peak memory; return the medians."""
    medians = {name: statistics.median(s) for name, s in samples.items()}
    base = medians[floor]
    print(f"{'command':40} {'median':>9} {'min':>9} {'ratio':>7} {'peak RSS':>10}   "
          f"({runs} runs each)")
    for name, s in samples.items():
        argv, env, soong = cases[name]
        peak = runner.peak_mib(argv, env, soong=soong)
        memory = "n/a" if peak is None else f"{peak:.1f}MiB"
        print(f"{name:40} {medians[name] * 1000:7.1f}ms {min(s) * 1000:7.1f}ms "
              f"{medians[name] / base:6.2f}x {memory:>10}", flush=True)
    return medians


def too_many_requests(log: Path, since: int) -> tuple[int, int]:
    """(API requests, 429 answers) in the simulator's request log after line ``since``."""
    from soong_plugins.lambda_labs.simulator.requestlog import read_lines

    entries = [e for e in read_lines(log)[since:] if e.get("kind", "api") == "api"]
    return len(entries), sum(1 for e in entries if e.get("status") == 429)


def main() -> int:
    from soong_plugins.lambda_labs.simulator import Simulator
    from soong_plugins.lambda_labs.simulator.requestlog import read_lines

    soong = soong_command()
    with tempfile.TemporaryDirectory() as root:
        one, fleet = Home(Path(root) / "one"), Home(Path(root) / "fleet")
        with Simulator(Path(root) / "sim-one", rate_limit="strict") as sim_one, \
                Simulator(Path(root) / "sim-fleet", rate_limit="strict") as sim_fleet:
            now = time.time()
            for home, sim, count in ((one, sim_one, 1), (fleet, sim_fleet, FLEET)):
                configure(home, sim)
                record_launches(home, seed_instances(sim, count, now=now), now=now)
            floor = "floor: cleo + requests + rich.table"
            cases: dict[str, Case] = {
                floor: (FLOOR, one.env, False),
                "status, 1 instance": ([*soong, "status"], one.env, True),
                "status --json, 1 instance": ([*soong, "status", "--json"], one.env, True),
                f"status, {FLEET:,} instances": ([*soong, "status"], fleet.env, True),
                f"status --json, {FLEET:,} instances": ([*soong, "status", "--json"],
                                                        fleet.env, True),
            }
            runner = Runner()
            print(f"{SETTING}; `soong` is {' '.join(soong)}", flush=True)
            medians = report(runner, cases, measure(runner, cases, RUNS), floor, RUNS)

            log = sim_one.store.request_log_path
            before = len(read_lines(log))
            for _ in range(BACK_TO_BACK):  # no pause: the pacing file must space them
                subprocess.run([*soong, "status"], env=one.env, stdout=subprocess.DEVNULL,
                               stderr=subprocess.DEVNULL, check=True, timeout=120)
            requests, limited = too_many_requests(log, before)

    ratio = medians["status, 1 instance"] / medians[floor]
    fleet_table = medians[f"status, {FLEET:,} instances"]
    fleet_json = medians[f"status --json, {FLEET:,} instances"]
    ok_one = ratio <= TARGET_ONE
    ok_fleet = fleet_table <= TARGET_FLEET_S and fleet_json <= TARGET_FLEET_S
    print(f"status of 1 instance is {ratio:.2f}x the floor: "
          f"{'meets' if ok_one else 'MISSES'} the target of {TARGET_ONE:.1f}x"
          f" ({'meets' if ratio <= STRETCH_ONE else 'misses'} the stretch {STRETCH_ONE:.1f}x)")
    print(f"status of {FLEET:,} instances: table {fleet_table:.3f} s, --json {fleet_json:.3f} s "
          f"median: {'meets' if ok_fleet else 'MISSES'} the target of {TARGET_FLEET_S:g} s")
    print(f"{BACK_TO_BACK} status back to back: {requests} API requests, {limited} answered 429: "
          f"{'meets' if limited == 0 else 'MISSES'} the target of none")
    return 0 if ok_one and ok_fleet and limited == 0 else 1


if __name__ == "__main__":
    sys.exit(main())
