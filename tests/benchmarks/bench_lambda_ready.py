"""From "the simulator marks the instance active" to "the client reports it ready".

A simulator on real time (speed 1) with the API's rate limits on; for each trial one
booting instance is seeded with a boot delay drawn between 2 and 4 seconds (so the
moment it turns active falls anywhere between two polls), and the embedding API's
``wait_until_ready`` waits for it with the real provider, limiter and sleeps. The
latency is the wall time from the instance's ``active_at`` to ``wait_until_ready``
returning. The simulator's request log then gives the request rate.

Targets: median latency under 1.5 s; never more than one request in any second (and so
no 429 answer).
"""

from __future__ import annotations

import argparse
import itertools
import os
import random
import statistics
import sys
import tempfile
import time
from pathlib import Path

TARGET_MEDIAN = 1.5
TRIALS = 12


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--trials", type=int, default=TRIALS)
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory() as root:
        home = Path(root)
        os.environ.update({"HOME": root, "XDG_CONFIG_HOME": f"{root}/config",
                           "XDG_DATA_HOME": f"{root}/data", "XDG_STATE_HOME": f"{root}/state",
                           "XDG_CACHE_HOME": f"{root}/cache"})
        from soong_core.api import Soong
        from soong_core.plugins import make_plugins
        from soong_plugins.lambda_labs.simulator import Simulator
        from soong_plugins.lambda_labs.simulator.requestlog import read_lines

        latencies: list[float] = []
        with Simulator(home / "sim", rate_limit="strict", speed=1.0) as sim:
            clock = sim.clock
            config = {"defaults": {"provider": "lambda"},
                      "lambda": {"api_url": sim.api_url, "api_key": sim.api_key}}
            rng = random.Random(1)
            with Soong(config, plugins=make_plugins(entry_points=False)) as soong:
                for _ in range(args.trials):
                    sim.update_knobs({"boot_seconds": rng.uniform(2.0, 4.0)})
                    [instance_id] = sim.cloud.seed({"count": 1, "status": "booting"})["instance_ids"]
                    active_at = sim.cloud.state.instances[instance_id].active_at
                    ready = soong.wait_until_ready(instance_id, timeout=60)
                    reported = time.time()
                    latencies.append(reported - _wall_of(clock, active_at))
                    assert ready.ip
            api = [e for e in read_lines(sim.store.request_log_path) if e["kind"] == "api"]
        times = sorted(e["ts"] for e in api)
        gaps = [b - a for a, b in itertools.pairwise(times)]
        busiest = max((sum(1 for t in times if start <= t < start + 1.0) for start in times),
                      default=0)
        limited = sum(1 for e in api if e["status"] == 429)
    median = statistics.median(latencies)
    print(f"trials: {len(latencies)}; latency from active to ready (s):")
    print(f"  median {median:.3f}  min {min(latencies):.3f}  max {max(latencies):.3f}  "
          f"p90 {statistics.quantiles(latencies, n=10)[-1]:.3f}")
    print(f"requests: {len(api)}; smallest gap {min(gaps):.3f}s; most in any 1 s window: "
          f"{busiest}; 429 answers: {limited}")
    ok = median < TARGET_MEDIAN and busiest <= 1 and limited == 0
    print(f"median {median:.3f}s is {median / TARGET_MEDIAN:.2f}x the {TARGET_MEDIAN}s target; "
          f"{'meets' if ok else 'MISSES'} the targets (median < {TARGET_MEDIAN}s, "
          "<= 1 request per second, no 429)")
    return 0 if ok else 1


def _wall_of(clock: object, sim_time: float) -> float:
    """The wall time at which the simulator's clock reads ``sim_time``."""
    anchors = clock.to_config()  # type: ignore[attr-defined]
    return anchors["wall_anchor"] + (sim_time - anchors["sim_anchor"]) / anchors["factor"]


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
