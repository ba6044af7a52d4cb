"""How long `soong --help`, `--version`, `plugins` and `status` with no config at all
take, against the floor of any cleo program (`python -c "import cleo.application"`),
measured in the same run, with and without compiled bytecode.

An editable install run under `PYTHONDONTWRITEBYTECODE` (as in this project's
environment) never writes bytecode for soong's own modules, so each run compiles every
module it imports from source; an installed wheel, or a checkout run without that
variable, finds them compiled. Both are measured on a copy of the checkout's sources
(`PYTHONPATH`, so the checkout's own `__pycache__` is neither used nor touched): once
compiled, once bare with `PYTHONDONTWRITEBYTECODE=1`. Libraries (cleo, rich, ...) are
compiled in both, as pip leaves them. The header line says which case the checkout
itself is in today.

`status` runs with no config file, no profile and no soong or Lambda variable: it must
fail with the missing-key line before it loads yaml, cerberus or requests.

soong reads entry points through `importlib.metadata` only when an installed
distribution may declare one in group `soong` (importing it costs about 20 ms); the
targeted cases run with none installed, and `soong --help (a plugin installed)` shows,
untargeted, what a user with a third-party plugin pays: a folder holding a plugin
distribution is added to `PYTHONPATH` for that case only.

Every command is a fresh subprocess; runs are interleaved so machine noise hits all of
them alike; the median of RUNS is reported. No command makes a request, so no pacing
applies. Target: `soong --help` and `status` each at most 2.0x the floor in both cases
(stretch 1.7x).
"""

from __future__ import annotations

import compileall
import importlib.util
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

RUNS = 15
TARGET_RATIO = 2.0
STRETCH_RATIO = 1.7
PACKAGES = ("soong_core", "soong_plugins", "instance_agent")
TARGETED = ("soong --help", "soong status (no config)")
FLOOR = "floor: import cleo.application"
MISSING_KEY = "no Lambda Cloud API key"
WITH_PLUGIN = "soong --help (a plugin installed)"


def checkout() -> Path:
    """The folder holding the ``soong_core`` this interpreter imports (the checkout, for
    an editable install)."""
    spec = importlib.util.find_spec("soong_core")
    if spec is None or spec.origin is None:
        raise SystemExit("error: soong_core is not importable: install soong first")
    return Path(spec.origin).resolve().parent.parent


def bytecode_state(root: Path) -> str:
    """Whether the checkout's modules have bytecode Python would use: how many of them."""
    sources = [p for package in PACKAGES for p in (root / package).rglob("*.py")]
    current = sum(1 for source in sources if _compiled(source))
    writes = "not written" if sys.flags.dont_write_bytecode else "written on import"
    return (f"{current} of {len(sources)} modules of {root} have current bytecode; "
            f"new bytecode is {writes}"
            + (" (PYTHONDONTWRITEBYTECODE)" if sys.flags.dont_write_bytecode else ""))


def _compiled(source: Path) -> bool:
    """A ``.pyc`` whose header matches the source's mtime and size (the default check)."""
    try:
        header = Path(importlib.util.cache_from_source(str(source))).read_bytes()[:16]
        info = source.stat()
    except OSError:
        return False
    if len(header) < 16 or header[:4] != importlib.util.MAGIC_NUMBER:
        return False
    if int.from_bytes(header[4:8], "little") != 0:
        return True  # hash-based: checked otherwise, counted as compiled
    return (int.from_bytes(header[8:12], "little") == int(info.st_mtime) & 0xFFFFFFFF
            and int.from_bytes(header[12:16], "little") == info.st_size & 0xFFFFFFFF)


def copy_sources(root: Path, into: Path) -> None:
    for package in PACKAGES:
        if (root / package).is_dir():
            shutil.copytree(root / package, into / package,
                            ignore=shutil.ignore_patterns("__pycache__", "*.pyc"))


def install_plugin(site: Path) -> None:
    """A distribution declaring one (empty) plugin in group ``soong``, as pip lays it out."""
    info = site / "soong_bench_plugin-1.0.dist-info"
    info.mkdir(parents=True)
    (info / "METADATA").write_text("Metadata-Version: 2.1\nName: soong-bench-plugin\n"
                                   "Version: 1.0\n")
    (info / "entry_points.txt").write_text("[soong]\nbench = soong_bench_plugin\n")
    (site / "soong_bench_plugin.py").write_text('"""A plugin that registers nothing."""\n')


def environments(home: Path, compiled: Path, bare: Path) -> dict[str, dict[str, str]]:
    base = {k: v for k, v in os.environ.items()
            if not k.startswith(("SOONG_", "LAMBDA_", "PYTHON"))}
    base.update({"HOME": str(home), "XDG_CONFIG_HOME": f"{home}/config",
                 "XDG_DATA_HOME": f"{home}/data", "XDG_CACHE_HOME": f"{home}/cache",
                 "XDG_STATE_HOME": f"{home}/state"})
    return {
        "compiled bytecode": {**base, "PYTHONPATH": str(compiled)},
        "no bytecode (PYTHONDONTWRITEBYTECODE)": {**base, "PYTHONPATH": str(bare),
                                                  "PYTHONDONTWRITEBYTECODE": "1"},
    }


def cases() -> dict[str, list[str]]:
    soong = [sys.executable, "-m", "soong_core"]
    return {
        FLOOR: [sys.executable, "-c", "import cleo.application"],
        "soong --help": [*soong, "--help"],
        "soong --version": [*soong, "--version"],
        "soong plugins": [*soong, "plugins"],
        "soong status (no config)": [*soong, "status"],
        WITH_PLUGIN: [*soong, "--help"],
    }


def case_environment(env: dict[str, str], name: str, plugin_site: Path) -> dict[str, str]:
    """``env``, with the plugin's folder on ``PYTHONPATH`` for :data:`WITH_PLUGIN`."""
    if name != WITH_PLUGIN:
        return env
    return {**env, "PYTHONPATH": os.pathsep.join([env["PYTHONPATH"], str(plugin_site)])}


def check_status(env: dict[str, str], cwd: Path, argv: list[str]) -> None:
    """The status case must be the early failure, not some other error."""
    done = subprocess.run(argv, env=env, cwd=cwd, capture_output=True, text=True)
    if done.returncode != 2 or MISSING_KEY not in done.stderr:
        raise SystemExit(f"error: `soong status` without config did not fail on the missing "
                         f"key (exit {done.returncode}): {done.stderr.strip()[:200]}")


def check_plugin_loaded(env: dict[str, str], cwd: Path) -> None:
    """The plugin case must load the plugin, or it measures nothing more."""
    argv = [sys.executable, "-m", "soong_core", "plugins", "--json"]
    done = subprocess.run(argv, env=env, cwd=cwd, capture_output=True, text=True)
    if done.returncode != 0 or '"soong-bench-plugin"' not in done.stdout:
        raise SystemExit(f"error: the installed plugin was not loaded (exit {done.returncode}): "
                         f"{done.stderr.strip()[:200]}")


def main() -> int:
    root = checkout()
    commands = cases()
    with tempfile.TemporaryDirectory() as tmp:
        home, compiled, bare = Path(tmp, "home"), Path(tmp, "compiled"), Path(tmp, "bare")
        home.mkdir()
        plugin_site = Path(tmp, "plugin")
        install_plugin(plugin_site)
        copy_sources(root, compiled)
        copy_sources(root, bare)
        compileall.compile_dir(str(compiled), quiet=1)
        envs = environments(home, compiled, bare)
        cwd = Path(tmp)
        times: dict[tuple[str, str], list[float]] = {(m, c): [] for m in envs for c in commands}
        for mode, env in envs.items():  # warm the file cache once; check the early failure
            for name, argv in commands.items():
                subprocess.run(argv, env=case_environment(env, name, plugin_site), cwd=cwd,
                               stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
            check_status(env, cwd, commands["soong status (no config)"])
            check_plugin_loaded(case_environment(env, WITH_PLUGIN, plugin_site), cwd)
        for _ in range(RUNS):
            for mode, env in envs.items():
                for name, argv in commands.items():
                    case_env = case_environment(env, name, plugin_site)
                    start = time.perf_counter()
                    subprocess.run(argv, env=case_env, cwd=cwd, stdout=subprocess.DEVNULL,
                                   stderr=subprocess.DEVNULL)
                    times[(mode, name)].append(time.perf_counter() - start)
    print(f"the checkout: {bytecode_state(root)}")
    print(f"({RUNS} runs each, {sys.executable} -m soong_core on a copy of {root})")
    verdicts = []
    for mode in envs:
        floor = statistics.median(times[(mode, FLOOR)])
        print(f"\n{mode}")
        print(f"  {'command':32} {'median':>9} {'min':>9} {'ratio':>7}")
        for name in commands:
            samples = times[(mode, name)]
            median = statistics.median(samples)
            print(f"  {name:32} {median * 1000:7.1f}ms {min(samples) * 1000:7.1f}ms "
                  f"{median / floor:6.2f}x")
        for name in TARGETED:
            ratio = statistics.median(times[(mode, name)]) / floor
            verdict = ("meets the stretch" if ratio <= STRETCH_RATIO else
                       "meets" if ratio <= TARGET_RATIO else "MISSES")
            verdicts.append(ratio <= TARGET_RATIO)
            print(f"  {name} is {ratio:.2f}x the cleo floor: {verdict} "
                  f"(target {TARGET_RATIO:.1f}x, stretch {STRETCH_RATIO:.1f}x)")
    return 0 if all(verdicts) else 1


if __name__ == "__main__":
    sys.exit(main())
