"""How many API requests one `soong status` makes, with a cold and a warm type cache.

A simulator (rate limits on, as the real API) and real `soong` processes: two
`start --no-wait` (the command that needs the catalogue: prices, capacity), the first
with an empty cache folder (cold), the second right after (warm); then `status` cold
(cache deleted) and warm, with the two instances running. The simulator's request log
counts what each run asked.

Targets: a warm `status` makes one request; a cold one at most two.
"""

from __future__ import annotations

import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

TARGET_WARM = 1
TARGET_COLD = 2
PAUSE = 1.2
"""Seconds between commands: a new process cannot know what the previous one spent of
the one-request-per-second allowance, and a person typing takes longer than this."""


def main() -> int:
    with tempfile.TemporaryDirectory() as root:
        home = Path(root)
        env = {k: v for k, v in os.environ.items() if not k.startswith(("SOONG_", "LAMBDA_"))}
        env.update({"HOME": str(home), "XDG_CONFIG_HOME": str(home / "config"),
                    "XDG_DATA_HOME": str(home / "data"), "XDG_STATE_HOME": str(home / "state"),
                    "XDG_CACHE_HOME": str(home / "cache")})
        os.environ.update(env)
        from soong_core.config import default_config_path, write_config_file
        from soong_plugins.lambda_labs.simulator import Simulator
        from soong_plugins.lambda_labs.simulator.requestlog import read_lines
        from soong_plugins.lambda_labs.simulator.testing import DEFAULT_PUBLIC_KEY

        with Simulator(home / "sim", rate_limit="strict") as sim:
            write_config_file(default_config_path(), {
                "lambda": {"api_url": sim.api_url, "api_key": sim.api_key},
                "defaults": {"gpu": "gpu_1x_a10", "region": "us-east-1"}})
            sim.cloud.add_ssh_key({"name": "soong", "public_key": DEFAULT_PUBLIC_KEY})
            log = sim.store.request_log_path

            def requests_of(*args: str) -> int:
                time.sleep(PAUSE)  # as a person between commands: the last second's token back
                before = len(read_lines(log))
                done = subprocess.run([sys.executable, "-m", "soong_core", *args], env=env,
                                      capture_output=True, text=True, timeout=120, check=False)
                if done.returncode != 0:
                    raise SystemExit(f"soong {' '.join(args)} failed: {done.stderr}")
                return sum(1 for e in read_lines(log)[before:] if e["kind"] == "api")

            # one process start for the file cache: not measured
            subprocess.run([sys.executable, "-m", "soong_core", "--version"], env=env,
                           capture_output=True, check=True)

            figures = {"start --no-wait, cold cache": requests_of("start", "-y", "--no-wait",
                                                                  "--hours", "2"),
                       "start --no-wait, warm cache": requests_of("start", "-y", "--no-wait",
                                                                  "--hours", "2")}
            for cache in (home / "cache").rglob("instance-types-*.json"):
                cache.unlink()
            figures["status, cold cache"] = requests_of("status")
            figures["status, warm cache"] = requests_of("status")
            limited = sum(1 for e in read_lines(log) if e.get("status") == 429)
    print(f"{'command':32} {'requests':>8}")
    for name, count in figures.items():
        print(f"{name:32} {count:8d}")
    print(f"429 answers over the whole run: {limited}")
    cold, warm = figures["status, cold cache"], figures["status, warm cache"]
    ok = warm <= TARGET_WARM and cold <= TARGET_COLD
    print(f"status: {cold} request(s) cold, {warm} warm: "
          f"{'meets' if ok else 'MISSES'} the target (warm <= {TARGET_WARM}, cold <= {TARGET_COLD})")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
