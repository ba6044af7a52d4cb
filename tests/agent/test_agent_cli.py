"""``python -I -m instance_agent`` as a process, under every Python 3.10-3.12 found:
``--example-config`` prints a config that validates, ``--check`` and ``--self-test``
pass, and a bad config is one line per problem and exit 2, never a traceback."""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path

import pytest
from agent_harness import LAUNCHER, REPO, interpreters, pluggy_only

from instance_agent.config import validate

pytestmark = pytest.mark.slow
PYTHONS = interpreters()


def agent_cli(python: str, tmp_path: Path, *args: str) -> subprocess.CompletedProcess[str]:
    import sys

    path = [str(REPO)] if python == sys.executable else [str(REPO), str(pluggy_only(tmp_path))]
    env = {k: v for k, v in os.environ.items() if not k.startswith("PYTHON")}
    env["SOONG_ROOT"] = str(tmp_path / "root")
    return subprocess.run([python, "-I", "-c", LAUNCHER % path, *args], cwd=str(tmp_path),
                          env=env, stdin=subprocess.DEVNULL, capture_output=True, text=True,
                          timeout=120)


@pytest.mark.parametrize("python", PYTHONS)
def test_example_config_check_and_self_test(python: str, tmp_path: Path) -> None:
    printed = agent_cli(python, tmp_path, "--example-config")
    assert printed.returncode == 0, printed.stderr
    example = json.loads(printed.stdout)
    validate(example, environ={})
    path = tmp_path / "agent.json"
    path.write_text(printed.stdout)
    checked = agent_cli(python, tmp_path, "--check", "--config", str(path))
    assert checked.returncode == 0, checked.stderr
    assert "is valid" in checked.stdout
    tested = agent_cli(python, tmp_path, "--self-test")
    assert tested.returncode == 0, tested.stdout + tested.stderr
    assert tested.stdout.strip().endswith("self-test ok")


@pytest.mark.parametrize("python", PYTHONS[:1])
def test_a_bad_config_is_one_line_per_problem_and_exit_2(python: str, tmp_path: Path) -> None:
    path = tmp_path / "agent.json"
    path.write_text(json.dumps({"schema_version": 7, "api": {"port": "x", "tokn": 1},
                                "instance": [], "colour": "red"}))
    ran = agent_cli(python, tmp_path, "--config", str(path))
    assert ran.returncode == 2
    lines = ran.stderr.splitlines()
    assert len(lines) >= 6 and all(line.startswith("soong-agent: ") for line in lines)
    assert "Traceback" not in ran.stderr and ran.stdout == ""
    for expected in ("schema_version: must be 1", "api.port: must be an integer",
                     "api.tokn: unknown key", "instance: must be an object",
                     "colour: unknown key", "provider.api_key: required"):
        assert any(expected in line for line in lines), (expected, lines)


@pytest.mark.parametrize("content", [b"", b"{", b"\x00\xff", b"[1, 2]"])
def test_an_unreadable_config_is_one_line(tmp_path: Path, content: bytes) -> None:
    path = tmp_path / "agent.json"
    path.write_bytes(content)
    ran = agent_cli(PYTHONS[0], tmp_path, "--config", str(path))
    assert ran.returncode == 2 and len(ran.stderr.splitlines()) == 1
    assert "Traceback" not in ran.stderr


def test_a_missing_config_is_one_line(tmp_path: Path) -> None:
    ran = agent_cli(PYTHONS[0], tmp_path, "--config", str(tmp_path / "none.json"))
    assert ran.returncode == 2 and "cannot read it" in ran.stderr
    assert len(ran.stderr.splitlines()) == 1
