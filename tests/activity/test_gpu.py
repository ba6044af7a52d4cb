"""The ``gpu`` source against stub ``nvidia-smi`` scripts printing the real formats:
every state, the parse of ``[N/A]``/``[Not Supported]`` and a hung tool killed whole."""

from __future__ import annotations

import json
import os
import signal
import subprocess
from pathlib import Path
from typing import Any

import pytest
from stubs import (NA, NOT_SUPPORTED, gpu_row, hung_child, nvidia_smi_calls, set_nvidia_smi,
                   write_nvidia_smi_stub)

from soong_core.models import ActivityState
from soong_plugins.activity import SOURCES
from soong_plugins.activity.gpu import FIELDS, GpuSource, parse_value

NOW = 1_700_000_000.0


def source(stub: Path, **settings: Any) -> GpuSource:
    return GpuSource({"nvidia_smi": str(stub), "utilization_percent": 10,
                      "timeout_seconds": 5, **settings})


def look(gpu: GpuSource) -> Any:
    sample = gpu.sample(NOW)
    json.dumps(sample.health, allow_nan=False)
    assert "\n" not in sample.detail and sample.last_activity is None
    return sample


@pytest.fixture
def stub(tmp_path: Path) -> Path:
    return write_nvidia_smi_stub(tmp_path / "bin" / "nvidia-smi", [gpu_row(0)])


def test_busy_gpu_is_active_with_its_health(stub: Path) -> None:
    set_nvidia_smi(stub, [gpu_row(0, utilization=83, memory_used=40211, temperature=54),
                          gpu_row(1, utilization=0, memory_used=3, temperature=29)])
    sample = look(source(stub))
    assert sample.state is ActivityState.ACTIVE
    assert sample.detail == "2 GPUs, highest utilisation 83% (threshold 10%)"
    assert sample.health == {"warnings": [], "gpus": [
        {"index": 0, "name": "NVIDIA H100 80GB HBM3", "utilization_percent": 83,
         "memory_used_mib": 40211, "memory_total_mib": 81559, "temperature_c": 54,
         "ecc_uncorrected": 0},
        {"index": 1, "name": "NVIDIA H100 80GB HBM3", "utilization_percent": 0,
         "memory_used_mib": 3, "memory_total_mib": 81559, "temperature_c": 29,
         "ecc_uncorrected": 0}]}


def test_runs_the_documented_query(stub: Path) -> None:
    look(source(stub))
    assert nvidia_smi_calls(stub) == [[
        "--query-gpu=index,name,utilization.gpu,memory.used,memory.total,temperature.gpu,"
        "ecc.errors.uncorrected.volatile.total", "--format=csv,noheader,nounits"]]
    assert len(FIELDS) == 7


@pytest.mark.parametrize("utilisation,state", [
    (9, ActivityState.IDLE), (10, ActivityState.ACTIVE), (9.5, ActivityState.IDLE),
    (100, ActivityState.ACTIVE), (0, ActivityState.IDLE)])
def test_threshold_is_inclusive(stub: Path, utilisation: float, state: ActivityState) -> None:
    set_nvidia_smi(stub, [gpu_row(0, utilization=utilisation)])
    assert look(source(stub)).state is state


def test_threshold_setting_is_used(stub: Path) -> None:
    set_nvidia_smi(stub, [gpu_row(0, utilization=40)])
    sample = look(source(stub, utilization_percent=50.5))
    assert sample.state is ActivityState.IDLE
    assert sample.detail == "1 GPU, highest utilisation 40% (threshold 50.5%)"


def test_the_same_source_follows_the_gpu(stub: Path) -> None:
    gpu = source(stub)
    states = []
    for utilisation in (80, 0, 80):
        set_nvidia_smi(stub, [gpu_row(0, utilization=utilisation)])
        states.append(look(gpu).state)
    assert states == [ActivityState.ACTIVE, ActivityState.IDLE, ActivityState.ACTIVE]


def test_mig_mode_reports_no_utilisation_so_unavailable(stub: Path) -> None:
    set_nvidia_smi(stub, [gpu_row(0, utilization=NA, memory_used=36537, memory_total=81920,
                                  temperature=33, ecc=NA)])
    sample = look(source(stub))
    assert sample.state is ActivityState.UNAVAILABLE
    assert "none reports its utilisation" in sample.detail
    assert "(GPU 0: [N/A])" in sample.detail and "MIG" in sample.detail
    gpu, = sample.health["gpus"]
    assert gpu["utilization_percent"] is None and gpu["ecc_uncorrected"] is None
    assert gpu["memory_used_mib"] == 36537 and gpu["temperature_c"] == 33


def test_one_gpu_without_utilisation_leaves_the_others_in_charge(stub: Path) -> None:
    set_nvidia_smi(stub, [gpu_row(0, utilization=NOT_SUPPORTED), gpu_row(1, utilization=3)])
    sample = look(source(stub))
    assert sample.state is ActivityState.IDLE
    assert sample.detail.startswith("2 GPUs, highest utilisation 3% (threshold 10%); "
                                    "1 without utilisation (GPU 0: [Not Supported])")
    assert sample.health["warnings"] == ["no utilisation from GPU 0: [Not Supported]"]
    set_nvidia_smi(stub, [gpu_row(0, utilization=NOT_SUPPORTED), gpu_row(1, utilization=30)])
    assert look(source(stub)).state is ActivityState.ACTIVE


def test_not_supported_fields_are_none(stub: Path) -> None:
    set_nvidia_smi(stub, [gpu_row(0, utilization=20, name="Tesla T4", temperature=NOT_SUPPORTED,
                                  memory_used="[Unknown Error]", ecc="[GPU is lost]")])
    sample = look(source(stub))
    assert sample.state is ActivityState.ACTIVE
    gpu, = sample.health["gpus"]
    assert gpu["name"] == "Tesla T4"
    assert (gpu["temperature_c"], gpu["memory_used_mib"], gpu["ecc_uncorrected"]) == (None,) * 3


def test_uncorrected_ecc_errors_warn(stub: Path) -> None:
    set_nvidia_smi(stub, [gpu_row(0, utilization=0), gpu_row(1, utilization=0, ecc=3)])
    sample = look(source(stub))
    assert sample.state is ActivityState.IDLE
    assert sample.health["warnings"] == [
        "GPU 1: 3 uncorrected ECC errors since the driver loaded"]


@pytest.mark.parametrize("cell,value", [
    ("83", 83), (" 7 ", 7), ("12.5", 12.5), ("83 %", 83), ("[N/A]", None), ("N/A", None),
    ("[Not Supported]", None), ("[Unknown Error]", None), ("[GPU is lost]", None),
    ("[Insufficient Permissions]", None), ("", None), ("nan", None), ("inf", None),
    ("Disabled", None)])
def test_parse_value(cell: str, value: object) -> None:
    assert parse_value(cell) == value
    assert type(parse_value(cell)) is type(value)


def test_missing_tool_is_unavailable(tmp_path: Path) -> None:
    sample = look(source(tmp_path / "nowhere" / "nvidia-smi"))
    assert sample.state is ActivityState.UNAVAILABLE
    assert sample.detail == f"no nvidia-smi at {tmp_path / 'nowhere' / 'nvidia-smi'}"
    assert sample.health == {"gpus": [], "warnings": []}


def test_not_executable_is_unavailable(stub: Path, tmp_path: Path) -> None:
    stub.chmod(0o644)
    sample = look(source(stub))
    assert sample.state is ActivityState.UNAVAILABLE
    assert sample.detail == f"{stub} is not an executable file"
    assert nvidia_smi_calls(stub) == []
    assert look(source(tmp_path)).state is ActivityState.UNAVAILABLE


def test_failing_tool_is_unavailable_with_its_message(stub: Path) -> None:
    message = ("NVIDIA-SMI has failed because it couldn't communicate with the NVIDIA driver. "
               "Make sure that the latest NVIDIA driver is installed and running.\n\n")
    set_nvidia_smi(stub, message, exit_code=9)
    sample = look(source(stub))
    assert sample.state is ActivityState.UNAVAILABLE
    assert sample.detail.startswith("nvidia-smi exited with status 9: NVIDIA-SMI has failed "
                                    "because it couldn't communicate with the NVIDIA driver.")


def test_failure_on_stderr_is_shown_and_rows_are_not_trusted(stub: Path) -> None:
    set_nvidia_smi(stub, [gpu_row(0, utilization=90)], exit_code=15,
                   stderr="Unable to determine the device handle for GPU0000:01:00.0: "
                          "Unknown Error\n")
    sample = look(source(stub))
    assert sample.state is ActivityState.UNAVAILABLE
    assert sample.detail == ("nvidia-smi exited with status 15: Unable to determine the device "
                             "handle for GPU0000:01:00.0: Unknown Error")
    set_nvidia_smi(stub, stderr="")
    sample = look(source(stub))
    assert sample.detail.startswith("nvidia-smi exited with status 15: 0, NVIDIA H100")
    set_nvidia_smi(stub, "")
    assert look(source(stub)).detail == "nvidia-smi exited with status 15: no output"


def test_no_devices(stub: Path) -> None:
    set_nvidia_smi(stub, "No devices were found\n", exit_code=6)
    sample = look(source(stub))
    assert sample.state is ActivityState.UNAVAILABLE
    assert sample.detail == "nvidia-smi exited with status 6: No devices were found"


@pytest.mark.parametrize("output,said", [
    ("", "nvidia-smi printed no GPU: empty output"),
    ("\n\n", "nvidia-smi printed no GPU: empty output"),
    ("Failed to initialize NVML: Driver/library version mismatch\n",
     "nvidia-smi printed 1 fields on line 1, expected 7"),
    ("0, NVIDIA A100, 50, 100, 200\n", "nvidia-smi printed 5 fields on line 1, expected 7"),
    ("0, A, 1, 2, 3, 4, 0\n1, B, 1, 2, 3, 4, 0, 9\n",
     "nvidia-smi printed 8 fields on line 2, expected 7")])
def test_output_of_another_shape_is_unavailable(stub: Path, output: str, said: str) -> None:
    set_nvidia_smi(stub, output)
    sample = look(source(stub))
    assert sample.state is ActivityState.UNAVAILABLE
    assert sample.detail.startswith(said)


def test_hung_tool_is_killed_with_its_children(stub: Path) -> None:
    set_nvidia_smi(stub, [gpu_row(0, utilization=95)], hang=True)
    sample = look(source(stub, timeout_seconds=0.5))
    assert sample.state is ActivityState.UNAVAILABLE
    assert sample.detail == "nvidia-smi did not answer within 0.5 s (killed)"
    sleeper = hung_child(stub)
    assert sleeper is not None
    try:
        assert not _running(sleeper)
    finally:
        if _running(sleeper):
            os.kill(sleeper, signal.SIGKILL)
    set_nvidia_smi(stub, hang=False)
    assert look(source(stub, timeout_seconds=0.5)).state is ActivityState.ACTIVE


def _running(pid: int) -> bool:
    """Alive and not a zombie waiting for a parent to reap it."""
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except OSError:
        return False
    return state != "Z"


def test_tool_sees_no_agent_environment(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SOONG_AGENT_TOKEN", "secret-token-value")
    seen = tmp_path / "seen"
    tool = tmp_path / "nvidia-smi"
    tool.write_text(f"#!/bin/sh\nenv > {seen}\nread line && exit 3\n"
                    "echo '0, GPU, 50, 1, 2, 3, 0'\n")
    tool.chmod(0o755)
    sample = look(source(tool))
    assert sample.state is ActivityState.ACTIVE  # stdin is empty: read failed at once
    env = seen.read_text()
    assert "secret-token-value" not in env and "SOONG" not in env
    assert "LC_ALL=C" in env


def test_run_failures_are_unavailable(stub: Path) -> None:
    def vanished(argv: Any, timeout: float) -> tuple[int, str, str]:
        raise FileNotFoundError(2, "No such file or directory")

    def timeout(argv: Any, timeout: float) -> tuple[int, str, str]:
        raise subprocess.TimeoutExpired(argv, timeout)

    sample = look(GpuSource({"nvidia_smi": str(stub)}, run=vanished))
    assert sample.state is ActivityState.UNAVAILABLE
    assert sample.detail == f"cannot run {stub}: No such file or directory"
    sample = look(GpuSource({"nvidia_smi": str(stub)}, run=timeout))
    assert sample.detail == "nvidia-smi did not answer within 10 s (killed)"


def test_registered_factory_builds_it(stub: Path) -> None:
    set_nvidia_smi(stub, [gpu_row(0, utilization=12)])
    gpu = SOURCES["gpu"]({"nvidia_smi": str(stub), "utilization_percent": 10,
                          "timeout_seconds": 10})
    assert isinstance(gpu, GpuSource) and gpu.name == "gpu"
    assert look(gpu).state is ActivityState.ACTIVE


def test_stub_refuses_another_question(stub: Path) -> None:
    result = subprocess.run([str(stub), "-q"], capture_output=True, text=True)
    assert result.returncode == 2 and "expected --query-gpu" in result.stderr
    assert os.access(stub, os.X_OK)
