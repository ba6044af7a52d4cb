"""How long `soong --help`, `--version` and `plugins` take, against the floor of any
cleo program (`python -c "import cleo.application"`), measured in the same run.

Every command is a fresh subprocess; runs are interleaved so machine noise hits all of
them alike; the median of RUNS is reported. Target: `soong --help` at most 2x the floor.
"""

from __future__ import annotations

import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time

RUNS = 15
TARGET_RATIO = 2.0


def soong_command() -> list[str]:
    script = shutil.which("soong")
    return [script] if script else [sys.executable, "-m", "soong_core"]


def main() -> int:
    soong = soong_command()
    cases = {
        "floor: import cleo.application": [sys.executable, "-c", "import cleo.application"],
        "soong --help": [*soong, "--help"],
        "soong --version": [*soong, "--version"],
        "soong plugins": [*soong, "plugins"],
    }
    with tempfile.TemporaryDirectory() as home:
        env = {**os.environ, "HOME": home, "XDG_CONFIG_HOME": f"{home}/config",
               "XDG_DATA_HOME": f"{home}/data", "XDG_CACHE_HOME": f"{home}/cache"}
        times: dict[str, list[float]] = {name: [] for name in cases}
        for name, argv in cases.items():  # warm the file cache once
            subprocess.run(argv, env=env, stdout=subprocess.DEVNULL, check=True)
        for _ in range(RUNS):
            for name, argv in cases.items():
                start = time.perf_counter()
                subprocess.run(argv, env=env, stdout=subprocess.DEVNULL, check=True)
                times[name].append(time.perf_counter() - start)
    floor = statistics.median(times["floor: import cleo.application"])
    print(f"{'command':34} {'median':>9} {'min':>9} {'ratio':>7}   ({RUNS} runs each, {' '.join(soong)})")
    for name, samples in times.items():
        median = statistics.median(samples)
        print(f"{name:34} {median * 1000:7.1f}ms {min(samples) * 1000:7.1f}ms {median / floor:6.2f}x")
    ratio = statistics.median(times["soong --help"]) / floor
    verdict = "meets" if ratio <= TARGET_RATIO else "MISSES"
    print(f"soong --help is {ratio:.2f}x the cleo floor: {verdict} the target of {TARGET_RATIO:.1f}x")
    return 0 if ratio <= TARGET_RATIO else 1


if __name__ == "__main__":
    sys.exit(main())
