"""How long `soong status` takes with 100 and with 100,000 history events: what it
reads of history must follow what is open, not all that was ever recorded.

Two users of one simulated account, each with one running soong instance (seeded in
the simulator, its `launch` in history), differ only in their history: besides that
launch, 33 or 33,333 instances that were launched and ended long ago (a launch
intent, a launch and a termination each), 100 or 100,000 events in all, recorded
through the history API (`History.record_many`). The simulator runs in this process
with rate limits on (a token bucket of one request refilled at 1 per second, no
burst: the strict mode, its only limited one). Every command is a fresh `soong`
process; runs alternate, two `soong` commands at least 1.2 s apart (soong paces
itself across processes at one request per second per account: closer runs would
measure that wait). Medians of RUNS, with the floor of
`bench_status_instances` for scale and each case's peak memory.

Target: the 100,000-event `status` at most 1.2x the 100-event one.
"""

from __future__ import annotations

import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

from bench_status_instances import (  # noqa: E402
    FLOOR,
    HOUR,
    SETTING,
    Case,
    Home,
    Runner,
    configure,
    measure,
    record_launches,
    report,
    seed_instances,
    soong_command,
)

RUNS = 9
SIZES = (100, 100_000)
TARGET_RATIO = 1.2
CHUNK = 10_000
"""Events per transaction while seeding."""


def seed_history(home: Home, running: list[str], events: int, *, now: float) -> int:
    """The launch of the ``running`` instance and ended instances, ``events`` events in
    all; returns how many the history holds."""
    from soong_core.api import Soong
    from soong_core.models import Event, EventKind

    record_launches(home, running, now=now)  # one launch event
    ended = (events - 1) // 3
    past = now - 90 * 24 * HOUR
    with home.active(), Soong.from_config() as soong:
        batch: list[Event] = []
        for n in range(ended):
            launch_id, instance, at = f"old-launch-{n}", f"old-{n}", past + n
            detail = {"launch_id": launch_id, "price_cents_per_hour": 75,
                      "lease_deadline": at + 2 * HOUR, "hard_deadline": at + 8 * HOUR}
            batch += [
                Event(EventKind.LAUNCH_INTENT, launch_id, at, provider="lambda",
                      type_name="gpu_1x_a10", detail=detail),
                Event(EventKind.LAUNCH, instance, at, provider="lambda",
                      type_name="gpu_1x_a10", region="us-east-1", detail=detail),
                Event(EventKind.TERMINATE, instance, at + HOUR, provider="lambda",
                      reason="manual", type_name="gpu_1x_a10", region="us-east-1",
                      detail={"launch_id": launch_id})]
            if len(batch) >= CHUNK:
                soong.history.record_many(batch)
                batch = []
        soong.history.record_many(batch)
        return len(soong.history.events())


def main() -> int:
    from soong_plugins.lambda_labs.simulator import Simulator

    soong = soong_command()
    with tempfile.TemporaryDirectory() as root:
        with Simulator(Path(root) / "sim", rate_limit="strict") as sim:
            now = time.time()
            running = seed_instances(sim, 1, now=now)
            homes = {}
            for size in SIZES:
                home = Home(Path(root) / f"events-{size}")
                configure(home, sim)
                held = seed_history(home, running, size, now=now)
                homes[size] = home
                print(f"seeded {held:,} events", flush=True)
            floor = "floor: cleo + requests + rich.table"
            cases: dict[str, Case] = {floor: (FLOOR, homes[SIZES[0]].env, False)}
            for size, home in homes.items():
                cases[f"status, {size:,} events"] = ([*soong, "status"], home.env, True)
            print(f"{SETTING}; `soong` is {' '.join(soong)}", flush=True)
            runner = Runner()
            medians = report(runner, cases, measure(runner, cases, RUNS), floor, RUNS)
    small, large = (medians[f"status, {size:,} events"] for size in SIZES)
    ratio = large / small
    verdict = "meets" if ratio <= TARGET_RATIO else "MISSES"
    print(f"status with {SIZES[1]:,} events is {ratio:.2f}x status with {SIZES[0]:,}: "
          f"{verdict} the target of {TARGET_RATIO:.1f}x")
    return 0 if ratio <= TARGET_RATIO else 1


if __name__ == "__main__":
    sys.exit(main())
