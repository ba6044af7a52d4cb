"""The ``gpu`` activity source: GPU utilisation above a threshold, from ``nvidia-smi``.

Each look runs ``nvidia-smi --query-gpu=<FIELDS> --format=csv,noheader,nounits`` once,
with a timeout, and reads one CSV line per GPU, for example::

    0, NVIDIA H100 80GB HBM3, 83, 40211, 81559, 54, 0

``active`` when any GPU's utilisation is at least ``utilization_percent``; ``idle`` when
at least one GPU reports its utilisation and every one is below. Whatever keeps the
source from knowing is ``unavailable`` and never activity: no ``nvidia-smi`` at the
configured path, a non-zero exit (no driver, no devices), a timeout, output of another
shape, or no GPU that reports its utilisation at all (MIG mode reports ``[N/A]``).

Memory, temperature and uncorrected ECC errors go into ``health``; a GPU with
uncorrected ECC errors adds a warning there.
"""

from __future__ import annotations

import csv
import io
import math
import os
import re
import signal
import subprocess
from typing import Any, Callable, Mapping, Sequence

from soong_core.interfaces import ActivitySource
from soong_core.models import ActivitySample, ActivityState, Timestamp

FIELDS: tuple[str, ...] = (
    "index", "name", "utilization.gpu", "memory.used", "memory.total", "temperature.gpu",
    "ecc.errors.uncorrected.volatile.total",
)
"""The ``--query-gpu`` fields, in the order of the columns they print."""
FORMAT = "csv,noheader,nounits"

ENV = {"PATH": "/usr/sbin:/usr/bin:/sbin:/bin", "LC_ALL": "C", "LANG": "C"}
"""The whole environment nvidia-smi runs with: the agent's own variables (its token
among them) are none of its business, and a C locale keeps numbers as it documents them."""

MAX_OUTPUT = 64 * 1024
"""Bytes of nvidia-smi's output read; a few hundred per GPU is usual."""

_NUMBER = re.compile(r"[+-]?\d+(?:\.\d+)?")
_CONTROL = re.compile(r"[\x00-\x1f\x7f]+")

Run = Callable[[Sequence[str], float], tuple[int, str, str]]
"""``run(argv, timeout_s) -> (returncode, stdout, stderr)``; raises
:class:`subprocess.TimeoutExpired` past the timeout and :class:`OSError` when the
program cannot start."""


def run_bounded(argv: Sequence[str], timeout_s: float) -> tuple[int, str, str]:
    """Run ``argv`` with no stdin and a minimal environment, for at most ``timeout_s``.

    The program gets a session of its own, so that a timeout kills everything it
    started: a child that kept the output pipe open would otherwise hold the look past
    its timeout.
    """
    process = subprocess.Popen(
        list(argv), stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
        env=dict(ENV), close_fds=True, start_new_session=True)
    try:
        out, err = process.communicate(timeout=timeout_s)
    except subprocess.TimeoutExpired:
        _kill_group(process)
        raise
    return process.returncode, _text(out), _text(err)


def _kill_group(process: subprocess.Popen[bytes]) -> None:
    try:
        os.killpg(process.pid, signal.SIGKILL)
    except OSError:
        process.kill()
    try:
        process.communicate(timeout=2)
    except subprocess.TimeoutExpired:  # pragma: no cover - a process that outlives SIGKILL
        pass


def _text(data: bytes | None) -> str:
    return (data or b"")[:MAX_OUTPUT].decode("utf-8", errors="replace")


def one_line(text: str, limit: int = 200) -> str:
    """``text`` as one line of at most ``limit`` characters (no control characters)."""
    flat = " ".join(_CONTROL.sub(" ", text).split())
    return flat if len(flat) <= limit else flat[:limit - 3] + "..."


def parse_value(cell: str) -> int | float | None:
    """One numeric cell: ``None`` for what nvidia-smi prints instead of a number.

    Bracketed words (``[N/A]``, ``[Not Supported]``, ``[Unknown Error]``,
    ``[GPU is lost]``, ...) and a bare ``N/A`` carry no number. A unit left after the
    number (``83 %``, when ``nounits`` was not honoured) is ignored.
    """
    text = cell.strip()
    match = _NUMBER.match(text)
    if not match or text.startswith("["):
        return None
    number = match.group(0)
    if "." not in number:
        return int(number)
    value = float(number)
    return value if math.isfinite(value) else None


def _parse_text(cell: str) -> str | None:
    text = cell.strip()
    if not text or text.startswith("[") or text.upper() == "N/A":
        return None
    return text


def _number(value: float) -> str:
    return f"{value:g}" if isinstance(value, float) else str(value)


class GpuSource(ActivitySource):
    """GPU utilisation from ``nvidia-smi``.

    :param settings: ``nvidia_smi`` (absolute path), ``utilization_percent`` (the
        threshold, 0-100), ``timeout_seconds``; checked by the agent's config loader.
    :param run: how the program runs (tests); :func:`run_bounded` by default.
    """

    name = "gpu"
    bounded = True  # every look ends by its own timeouts

    def __init__(self, settings: Mapping[str, Any], *, run: Run | None = None) -> None:
        self.nvidia_smi = str(settings.get("nvidia_smi", "/usr/bin/nvidia-smi"))
        self.threshold: float = settings.get("utilization_percent", 10)
        self.timeout_s = float(settings.get("timeout_seconds", 10))
        self._run: Run = run or run_bounded

    @property
    def argv(self) -> list[str]:
        return [self.nvidia_smi, "--query-gpu=" + ",".join(FIELDS), "--format=" + FORMAT]

    def sample(self, now: Timestamp) -> ActivitySample:
        path = self.nvidia_smi
        if not os.path.exists(path):
            return self._unavailable(f"no nvidia-smi at {path}")
        if os.path.isdir(path) or not os.access(path, os.X_OK):
            return self._unavailable(f"{path} is not an executable file")
        try:
            code, out, err = self._run(self.argv, self.timeout_s)
        except subprocess.TimeoutExpired:
            return self._unavailable(f"nvidia-smi did not answer within "
                                     f"{_number(self.timeout_s)} s (killed)")
        except OSError as exc:
            return self._unavailable(f"cannot run {path}: {exc.strerror or exc}")
        if code != 0:
            said = one_line(err.strip() or out.strip()) or "no output"
            return self._unavailable(f"nvidia-smi exited with status {code}: {said}")
        return self._judge(out)

    @staticmethod
    def _unavailable(detail: str) -> ActivitySample:
        return ActivitySample(ActivityState.UNAVAILABLE, detail, {"gpus": [], "warnings": []})

    def _judge(self, out: str) -> ActivitySample:
        gpus: list[dict[str, Any]] = []
        unknown: list[str] = []
        for number, row in enumerate(csv.reader(io.StringIO(out), skipinitialspace=True), 1):
            if not row or all(not cell.strip() for cell in row):
                continue
            if len(row) != len(FIELDS):
                return self._unavailable(
                    f"nvidia-smi printed {len(row)} fields on line {number}, expected "
                    f"{len(FIELDS)}: {one_line(','.join(row), 80)}")
            gpu, raw_utilisation = self._gpu(row, position=len(gpus))
            gpus.append(gpu)
            if gpu["utilization_percent"] is None:
                unknown.append(f"GPU {gpu['index']}: {raw_utilisation}")
        if not gpus:
            return self._unavailable("nvidia-smi printed no GPU: "
                                     + (one_line(out) or "empty output"))
        warnings = [f"GPU {gpu['index']}: {gpu['ecc_uncorrected']} uncorrected ECC errors "
                    "since the driver loaded" for gpu in gpus if (gpu["ecc_uncorrected"] or 0) > 0]
        warnings += [f"no utilisation from {what}" for what in unknown]
        health = {"gpus": gpus, "warnings": warnings}
        known = [gpu["utilization_percent"] for gpu in gpus
                 if gpu["utilization_percent"] is not None]
        count = f"{len(gpus)} GPU" + ("s" if len(gpus) != 1 else "")
        if not known:
            detail = (f"{count}, none reports its utilisation ({'; '.join(unknown)}); "
                      "MIG mode reports [N/A] for the whole GPU")
            return ActivitySample(ActivityState.UNAVAILABLE, one_line(detail, 280), health)
        highest = max(known)
        detail = (f"{count}, highest utilisation {_number(highest)}% "
                  f"(threshold {_number(self.threshold)}%)")
        if unknown:
            detail += f"; {len(unknown)} without utilisation ({'; '.join(unknown)})"
        state = ActivityState.ACTIVE if highest >= self.threshold else ActivityState.IDLE
        return ActivitySample(state, one_line(detail, 280), health)

    @staticmethod
    def _gpu(row: list[str], position: int) -> tuple[dict[str, Any], str]:
        index, name, utilisation, used, total, temperature, ecc = row
        parsed_index = parse_value(index)
        gpu = {
            "index": parsed_index if isinstance(parsed_index, int) else position,
            "name": _parse_text(name),
            "utilization_percent": parse_value(utilisation),
            "memory_used_mib": parse_value(used),
            "memory_total_mib": parse_value(total),
            "temperature_c": parse_value(temperature),
            "ecc_uncorrected": parse_value(ecc),
        }
        return gpu, one_line(utilisation, 40) or "(empty)"
