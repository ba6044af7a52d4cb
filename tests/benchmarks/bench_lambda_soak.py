"""A fault soak: launch, watch and terminate for minutes against a cloud that misbehaves.

The simulator answers 10 % of API requests with a 5xx, resets 5 % of connections, and
drops the reply of every third launch (the instance is made, the client never hears);
its rate limits are on. Two threads share one process, as a CLI and a watchdog would:
the launcher launches one instance after another through the embedding API (paced by
the launch limit, one per 12 s after the first five); the watcher lists statuses and
stops, in one batched call, every instance that has become active. At the end faults
are switched off and the cloud is counted.

Targets: every launch made exactly one instance (launched = wanted, no duplicate),
no launch lost, and no crash (only soong's own errors may surface, and none of them
from a launch). ``--seconds N`` sets the duration (default 300: five minutes), also
``SOONG_SOAK_SECONDS`` when run through ``run.py``.
"""

from __future__ import annotations

import argparse
import collections
import itertools
import os
import sys
import tempfile
import threading
import time
import traceback
from pathlib import Path

DEFAULT_SECONDS = 300.0


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float,
                        default=float(os.environ.get("SOONG_SOAK_SECONDS", DEFAULT_SECONDS)))
    parser.add_argument("--seed", type=int, default=20251)
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory() as root:
        os.environ.update({"HOME": root, "XDG_CONFIG_HOME": f"{root}/config",
                           "XDG_DATA_HOME": f"{root}/data", "XDG_STATE_HOME": f"{root}/state",
                           "XDG_CACHE_HOME": f"{root}/cache"})
        return soak(Path(root), args.seconds, args.seed)


def soak(root: Path, seconds: float, seed: int) -> int:
    from soong_core.api import Soong
    from soong_core.errors import SoongError
    from soong_core.models import TAG_LAUNCH_ID
    from soong_core.plugins import make_plugins
    from soong_plugins.lambda_labs.simulator import Simulator
    from soong_plugins.lambda_labs.simulator.requestlog import read_lines
    from soong_plugins.lambda_labs.simulator.testing import DEFAULT_PUBLIC_KEY
    from soong_plugins.lambda_labs.transport import shared

    errors: collections.Counter[str] = collections.Counter()
    crashes: list[str] = []
    wanted = 0
    known: dict[str, str] = {}  # launch id -> instance id the client reported
    adopted = 0
    stopped: set[str] = set()
    lock = threading.Lock()
    with Simulator(root / "sim", rate_limit="strict", speed=30.0, boot_seconds=60,
                   terminate_seconds=30) as sim:
        sim.cloud.add_ssh_key({"name": "soong", "public_key": DEFAULT_PUBLIC_KEY})
        sim.update_knobs({"default_capacity": 1000, "error_rate": 0.10, "error_status": 503,
                          "reset_rate": 0.05, "fault_seed": seed})
        config = {"defaults": {"provider": "lambda", "region": "us-east-1",
                               "fallback_regions": ["us-west-1"], "gpu": "gpu_1x_a10"},
                  "lambda": {"api_url": sim.api_url, "api_key": sim.api_key},
                  # the simulator's accelerated clock, as the sim profile holds it (else
                  # `start`'s clock check refuses every launch)
                  "clock": sim.clock_info()["config"]}
        deadline = time.monotonic() + seconds
        done = threading.Event()

        def launcher() -> None:
            nonlocal adopted, wanted
            with Soong(config, plugins=make_plugins(entry_points=False)) as soong:
                while time.monotonic() < deadline:
                    if wanted % 3 == 2:
                        sim.update_knobs({"drop_launch_responses": 1})
                    try:
                        plan = soong.plan_launch(hours=1)
                    except SoongError as exc:
                        errors[f"plan: {type(exc).__name__}: {exc.message}"] += 1
                        continue
                    wanted += 1
                    try:
                        instance = soong.launch(plan=plan)
                        with lock:
                            known[instance.tags[TAG_LAUNCH_ID]] = instance.id
                            adopted += bool(instance.extra.get("adopted"))
                    except SoongError as exc:
                        errors[f"launch: {type(exc).__name__}: {exc.message}"] += 1
                    except Exception:
                        crashes.append(traceback.format_exc())
            done.set()

        def watcher() -> None:
            with Soong(config, plugins=make_plugins(entry_points=False)) as soong:
                while not done.is_set():
                    try:
                        statuses = soong.status()
                        active = [s.instance.id for s in statuses
                                  if s.instance.state.value == "active"
                                  and s.instance.id not in stopped]
                        if active:
                            soong.stop(active)
                            stopped.update(active)
                    except SoongError as exc:
                        errors[f"watch: {type(exc).__name__}"] += 1
                    except Exception:
                        crashes.append(traceback.format_exc())
                    done.wait(2.0)

        threads = [threading.Thread(target=launcher), threading.Thread(target=watcher)]
        started = time.monotonic()
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        elapsed = time.monotonic() - started
        sim.update_knobs({"error_rate": 0.0, "reset_rate": 0.0, "drop_launch_responses": 0})
        by_launch: dict[str, list[str]] = collections.defaultdict(list)
        for record in sim.cloud.state.instances.values():
            for tag in record.tags:
                if tag["key"] == TAG_LAUNCH_ID:
                    by_launch[tag["value"]].append(record.id)
        log = [e for e in read_lines(sim.store.request_log_path) if e["kind"] == "api"]
        limiters = {id(limiter): limiter for limiter in shared().limiters.values()}
        waited = sum(limiter.waited for limiter in limiters.values())
    faults = collections.Counter(e["fault"] or "none" for e in log)
    operations = collections.Counter(e["operation"] for e in log)
    duplicates = {k: ids for k, ids in by_launch.items() if len(ids) > 1}
    # what the client reported is what exists: the one instance of its launch id
    mismatched = [k for k, instance_id in known.items() if by_launch.get(k) != [instance_id]]
    launched = len(by_launch)
    print(f"soak: {elapsed:.0f}s, faults: 10% 5xx, 5% resets, every third launch reply dropped")
    print(f"launches wanted {wanted}, instances launched {launched}, duplicates "
          f"{len(duplicates)}, reported wrongly {len(mismatched)}, adopted after a lost reply "
          f"{adopted}, stopped {len(stopped)}")
    print(f"requests {len(log)} ({len(log) / elapsed:.2f}/s; limiter waited {waited:.0f}s): "
          + ", ".join(f"{k} {v}" for k, v in sorted(faults.items())))
    print("operations: " + ", ".join(f"{k} {v}" for k, v in sorted(operations.items())))
    refused = [f"{e['operation']} {e['ts'] - previous['ts']:.3f}s after {previous['operation']}"
               for previous, e in itertools.pairwise(log) if e["fault"] == "rate_limited"]
    print("429 answers: " + ("; ".join(refused) or "none"))
    print("errors surfaced: " + (", ".join(f"{k} x{v}" for k, v in errors.items()) or "none"))
    print(f"crashes: {len(crashes)}")
    for crash in crashes[:3]:
        print(crash)
    ok = (launched == wanted and not duplicates and not mismatched and not crashes
          and not any(k.startswith("launch") for k in errors))
    print(f"launched = wanted ({launched} = {wanted}), no duplicate, no crash: "
          f"{'meets' if ok else 'MISSES'} the target")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
