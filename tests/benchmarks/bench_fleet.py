"""A fleet of lease agents: every instance stops by itself, and on time.

``--count`` instances (default 24) launch on the simulator, whose time runs ``--speed``
times faster (default 600: ten simulated minutes a wall second), with its API rate
limits on and only the launch limit relaxed. Their lease agents boot from user_data in
the simulator's sandboxes, as on a real machine. Four kinds take turns:

* ``lease``: stops at its lease;
* ``idle``: never used, stops at its idle timeout;
* ``busy``: used (activity posted to its agent) for a while, then idle: stops an idle
  timeout after its last use;
* ``hard``: extended ``--to-max`` through its agent, stops at its hard limit.

Each instance's deadline comes at least ``--spacing`` wall seconds (default 1.5) after
the previous one's, so the stops are staggered. Then nothing but watching the cloud's
bills (``/_sim/billing``): every instance must end by itself.

Figures: each instance's overrun, from its deadline to when the cloud stopped billing
it, in wall seconds (simulated seconds / speed); their median and maximum; and the money
billed past the deadlines. Targets: every instance ends, for its kind's reason (its
agent's own record); median overrun <= 1 s wall, maximum <= 2 s, none early.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import threading
import time
from decimal import Decimal
from pathlib import Path
from typing import Any

KINDS = ("lease", "idle", "busy", "hard")
REASONS = {"lease": "lease_expired", "idle": "idle_timeout", "busy": "idle_timeout",
           "hard": "hard_timeout"}
HOUR = 3600.0
BUSY_TIMEOUT_S = 600.0
"""A ``busy`` instance's idle timeout (simulated seconds)."""
BUSY_GRACE_S = 1800.0
"""A ``busy`` instance's boot grace (simulated): its agent is up and used before it ends."""
STAGGER_MIN_S = 1.1
"""Wall seconds at least between two deadlines (the run's plan, checked after it)."""
MEDIAN_TARGET_S = 1.0
MAX_TARGET_S = 2.0
EARLY_S = 0.05
"""Wall seconds before its deadline that an end counts as early (float rounding aside)."""


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--count", type=int, default=24)
    parser.add_argument("--speed", type=float, default=600.0)
    parser.add_argument("--spacing", type=float, default=1.5,
                        help="wall seconds between consecutive deadlines (at least 1.1)")
    args = parser.parse_args(argv)
    if args.count < 4 or args.spacing < 1.1:
        parser.error("--count must be at least 4 and --spacing at least 1.1")
    with tempfile.TemporaryDirectory() as root:
        os.environ.update({"HOME": root, "XDG_CONFIG_HOME": f"{root}/config",
                           "XDG_DATA_HOME": f"{root}/data", "XDG_STATE_HOME": f"{root}/state",
                           "XDG_CACHE_HOME": f"{root}/cache"})
        return fleet(Path(root), args.count, args.speed, args.spacing)


class Member:
    """One instance of the fleet and what it should do."""

    def __init__(self, kind: str, slot: float) -> None:
        self.kind = kind
        self.slot = slot  # the planned deadline (simulated time)
        self.instance_id = ""
        self.deadline = 0.0  # the deadline as launched (tags, idle timeout, extension)
        self.url = ""
        self.token = ""
        self.last_use = 0.0
        self.launched = 0.0


def fleet(root: Path, count: int, speed: float, spacing: float) -> int:
    import json

    from soong_core.api import Soong
    from soong_core.clock import clock_from_config
    from soong_core.models import TAG_HARD_DEADLINE, TAG_LAUNCHED_AT, TAG_LEASE_DEADLINE, \
        parse_timestamp
    from soong_core.plugins import make_plugins
    from soong_plugins.lambda_labs.simulator import Simulator
    from soong_plugins.lambda_labs.simulator.ratelimit import GENERAL, Limit
    from soong_plugins.lambda_labs.simulator.testing import DEFAULT_PUBLIC_KEY
    from soong_plugins.lease_agent.client import AgentClient
    from soong_plugins.lease_agent.tokens import read_token

    from functools import partial

    from soong_plugins.lambda_labs import pacing, transport

    # The launch limit is relaxed on both sides for the run: the simulator's bucket, and
    # the client's own pacing of launches (one per 12 s would spread the fleet over
    # minutes); every other request stays paced at the API's one a second.
    relaxed = Limit(rate=100.0, burst=count)
    transport.Limiter = partial(pacing.Limiter,  # type: ignore[misc,assignment]
                                launch=pacing.Limit(rate=100.0, burst=count))
    transport.reset()
    with Simulator(root / "sim", speed=speed, boot_seconds=60, terminate_seconds=30,
                   rate_limit="edge", limits=(GENERAL, relaxed)) as sim:
        sim.cloud.add_ssh_key({"name": "soong", "public_key": DEFAULT_PUBLIC_KEY})
        sim.update_knobs({"default_capacity": 1000})
        base = {"defaults": {"provider": "lambda", "region": "us-east-1", "gpu": "gpu_1x_a10",
                             "idle_grace_minutes": 0, "idle_timeout_minutes": 600},
                "lambda": {"api_url": sim.api_url, "api_key": sim.api_key,
                           "account_id": sim.account_id},
                "agent": {"ready_timeout_seconds": 60, "api_key": sim.api_key},
                "clock": sim.clock_info()["config"]}
        clock = clock_from_config(base["clock"])
        plugins = make_plugins(entry_points=False)
        wall_s = spacing * speed  # simulated seconds per spacing
        members: list[Member] = []
        latencies: list[float] = []
        busy: list[Member] = []
        lock = threading.Lock()
        stop_pinging = threading.Event()
        pinger = threading.Thread(target=ping_busy, args=(busy, lock, clock, stop_pinging),
                                  daemon=True)
        pinger.start()
        started = time.monotonic()
        for index in range(count):
            kind = KINDS[index % len(KINDS)]
            now = clock.now()
            least = {"lease": HOUR + 60, "hard": 2.5 * HOUR, "idle": 120.0,
                     "busy": BUSY_GRACE_S + BUSY_TIMEOUT_S + 600}[kind]
            # after the previous deadline (its planned one while it is not known yet)
            previous = (members[-1].deadline or members[-1].slot) if members else 0.0
            slot = max(previous + wall_s, now + least)
            member = Member(kind, slot)
            config = json.loads(json.dumps(base))
            defaults = config["defaults"]
            options: dict[str, Any] = {"hours": 4}
            if kind == "lease":
                options["hours"] = (slot - now) / HOUR
            elif kind == "idle":
                defaults["idle_timeout_minutes"] = (slot - now) / 60
            elif kind == "busy":
                defaults["idle_timeout_minutes"] = BUSY_TIMEOUT_S / 60
                defaults["idle_grace_minutes"] = BUSY_GRACE_S / 60
            else:
                # a launch paced by the rate limit takes seconds of wall time, each
                # minutes here: a 2 h lease leaves time to extend it
                options = {"hours": 2, "hard_timeout_hours": (slot - now) / HOUR}
            with Soong(config, plugins=plugins) as soong:
                asked = time.monotonic()
                instance = soong.launch(name=f"{kind}-{index}", **options)
                latencies.append(time.monotonic() - asked)
                member.instance_id = instance.id
                member.url = sim.agents.url(instance.id) or ""
                member.token = read_token(instance.id) or ""
                if not member.url or not member.token:
                    print(f"error: no agent URL or token for {instance.id}")
                    return 1
                tags = instance.tags
                launched = parse_timestamp(tags[TAG_LAUNCHED_AT])
                member.launched = launched
                if kind == "lease":
                    member.deadline = parse_timestamp(tags[TAG_LEASE_DEADLINE])
                elif kind == "idle":
                    member.deadline = launched + defaults["idle_timeout_minutes"] * 60
                elif kind == "busy":
                    with lock:
                        busy.append(member)
                else:  # to the hard limit through its agent, before its 2 h lease ends
                    client = AgentClient(member.url, member.token, instance_id=instance.id,
                                         timeout=2.0)
                    if not wait_for_health(client, limit=30.0):
                        print(f"error: the agent of {instance.id} never answered: "
                              f"{sim.agents.info(instance.id)}")
                        return 1
                    soong.extend(instance.id, 24.0, to_max=True)
                    member.deadline = parse_timestamp(tags[TAG_HARD_DEADLINE])
            members.append(member)
        launched_in = time.monotonic() - started
        print(f"launched {count} instances in {launched_in:.1f} s wall ({speed:g}x "
              f"simulated time); one launch took {statistics.median(latencies):.2f} s "
              f"(median), {max(latencies):.2f} s at most", flush=True)

        # now only the cloud's bills are watched
        last = max(m.slot for m in members)
        give_up = time.monotonic() + (last - clock.now()) / speed + 15.0
        ended: dict[str, dict[str, Any]] = {}
        while time.monotonic() < give_up and len(ended) < count:
            for bill in sim.cloud.billing()["instances"]:
                if bill["billing_ended_at"] is not None:
                    ended.setdefault(bill["id"], bill)
            time.sleep(0.05)
        stop_pinging.set()
        pinger.join(5)
        with lock:
            unpinged = [m.instance_id for m in busy if not m.deadline]
        if unpinged:
            print(f"error: never saw the last use of {', '.join(unpinged)}")
        agents = sim.store.directory / "agents"
        return report(members, ended, agents, speed, spacing, launched_in)


def wait_for_health(client: Any, *, limit: float) -> bool:
    from soong_core.errors import SoongError

    end = time.monotonic() + limit
    while time.monotonic() < end:
        try:
            if client.health().get("ok"):
                return True
        except SoongError:
            pass
        time.sleep(0.2)
    return False


def ping_busy(busy: list[Member], lock: threading.Lock, clock: Any,
              stop: threading.Event) -> None:
    """Activity to each busy agent (once it answers) until an idle timeout before its
    slot; its deadline is then its last use, as its agent recorded it, plus the timeout
    (never inside its boot grace)."""
    from soong_core.errors import SoongError
    from soong_plugins.lease_agent.client import AgentClient

    done: set[str] = set()
    while not stop.is_set():
        with lock:
            waiting = [m for m in busy if m.instance_id not in done]
        now = clock.now()
        for member in waiting:
            client = AgentClient(member.url, member.token, instance_id=member.instance_id,
                                 timeout=2.0)
            try:
                if now < member.slot - BUSY_TIMEOUT_S:
                    client.activity("bench")
                    continue
                idle = client.status().get("idle") or {}
            except SoongError:
                continue  # not up yet: its boot grace covers that
            member.last_use = float(idle.get("last_activity_at") or member.launched)
            member.deadline = max(member.launched + BUSY_GRACE_S,
                                  member.last_use + BUSY_TIMEOUT_S)
            done.add(member.instance_id)
        stop.wait(0.1)


def report(members: list[Member], ended: dict[str, dict[str, Any]], agents: Path,
           speed: float, spacing: float, launched_in: float) -> int:
    import json

    problems: list[str] = []
    overruns: list[float] = []
    billed_past = Decimal(0)
    print(f"{'INSTANCE':10}  {'KIND':5}  {'REASON':26}  {'OVERRUN (wall s)':>16}  "
          f"{'BILLED PAST':>12}")
    for member in members:
        bill = ended.get(member.instance_id)
        if bill is None or not member.deadline:
            problems.append(f"{member.instance_id} ({member.kind}) did not end by itself")
            print(f"{member.instance_id[:10]:10}  {member.kind:5}  {'-':26}  "
                  f"{'still billing':>16}")
            continue
        state_file = agents / member.instance_id / "root" / "var/lib/soong/agent-state.json"
        terminating = json.loads(state_file.read_text()).get("terminating") or {}
        reasons = terminating.get("reasons") or [terminating.get("reason")]
        if REASONS[member.kind] not in reasons:
            problems.append(f"{member.instance_id} ({member.kind}) ended for {reasons}")
        overrun = (bill["billing_ended_at"] - member.deadline) / speed
        overruns.append(overrun)
        if overrun < -EARLY_S:
            problems.append(f"{member.instance_id} ({member.kind}) ended {-overrun:.2f} s "
                            "early")
        past_s = max(0.0, bill["billing_ended_at"] - member.deadline)
        past = Decimal(bill["price_cents_per_hour"]) * Decimal(repr(past_s)) / 3600 / 100
        billed_past += past
        print(f"{member.instance_id[:10]:10}  {member.kind:5}  {','.join(reasons):26}  "
              f"{overrun:16.3f}  {'$' + format(past, '.4f'):>12}")
    deadlines = sorted(m.deadline for m in members if m.deadline)
    gaps = [(b - a) / speed for a, b in zip(deadlines, deadlines[1:])]
    print(f"instances: {len(members)}, ended by themselves: {len(ended)}; launched in "
          f"{launched_in:.1f} s wall; deadlines staggered by at least "
          f"{min(gaps):.2f} s wall (planned {spacing:g})" if gaps else "")
    if gaps and min(gaps) < STAGGER_MIN_S:
        problems.append(f"two deadlines came {min(gaps):.2f} s apart, under "
                        f"{STAGGER_MIN_S:g} s")
    if overruns:
        median, worst = statistics.median(overruns), max(overruns)
        print(f"overrun: median {median:.3f} s wall (target <= {MEDIAN_TARGET_S:g}), "
              f"max {worst:.3f} s (target <= {MAX_TARGET_S:g}), min {min(overruns):.3f} s")
        print(f"billed past the deadlines: ${billed_past:.4f} in all")
        if median > MEDIAN_TARGET_S:
            problems.append(f"median overrun {median:.3f} s is over {MEDIAN_TARGET_S:g} s")
        if worst > MAX_TARGET_S:
            problems.append(f"max overrun {worst:.3f} s is over {MAX_TARGET_S:g} s")
    for problem in problems:
        print(f"missed: {problem}")
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
