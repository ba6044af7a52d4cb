"""What a new user meets before anything is set up: one line each, with the way on."""

from __future__ import annotations


import pytest

from soong_core.config import profile_path, write_config_file
from soong_core.testing import SoongEnv, free_port, run_soong


@pytest.mark.parametrize("args, code, lines", [
    (["start", "-y"], 2, ["error: no GPU type given",
                          "  pass --gpu TYPE or set one with `soong config set defaults.gpu TYPE`"]),
    (["start", "-y", "--gpu", "gpu_1x_a10"], 2,
     ["error: no Lambda Cloud API key: run `soong configure` or set LAMBDA_API_KEY"]),
    (["status"], 2, ["error: no Lambda Cloud API key: run `soong configure` or set LAMBDA_API_KEY"]),
    (["stop", "-y"], 2, ["error: no Lambda Cloud API key: run `soong configure` or set LAMBDA_API_KEY"]),
])
def test_no_config_at_all(soong_env: SoongEnv, args: list[str], code: int, lines: list[str]) -> None:
    result = run_soong(*args, env=soong_env)
    assert (result.exit_code, result.stderr.splitlines()) == (code, lines)
    assert result.stdout == ""


def test_sim_flag_before_sim_up(soong_env: SoongEnv) -> None:
    result = run_soong("--sim", "status", env=soong_env)
    assert result.exit_code == 2
    assert result.stderr.splitlines()[0].startswith("error: no profile 'sim'")
    assert "`soong sim up` writes the 'sim' profile" in result.stderr


def test_simulator_not_running(soong_env: SoongEnv) -> None:
    """The profile is there (the simulator ran once) but nothing answers any more."""
    write_config_file(profile_path("sim"), {"lambda": {
        "api_url": f"http://127.0.0.1:{free_port()}/api/v1", "api_key": "soong-sim-gone"}})
    for args in (["status"], ["start", "-y", "--gpu", "gpu_1x_a10"], ["stop", "--all", "-y"]):
        result = run_soong("--sim", *args, env=soong_env)
        assert result.exit_code == 1, result.stderr
        assert result.stderr.splitlines()[0] == "error: simulator not running: run `soong sim up`"
        assert "Traceback" not in result.stderr and "soong-sim-gone" not in result.stderr
