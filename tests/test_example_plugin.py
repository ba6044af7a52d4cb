"""examples/soong-curfew: a third-party plugin installed for real and found by entry point."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from datetime import datetime, timezone
from pathlib import Path

import pytest

from soong_core.models import Action, InstanceView
from soong_core.testing import SoongEnv, install_offline

EXAMPLE = Path(__file__).resolve().parent.parent / "examples" / "soong-curfew"


@pytest.fixture(scope="module")
def installed_example(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """pip-install the example (offline, from a copy) into a private target directory."""
    return install_offline(EXAMPLE, tmp_path_factory.mktemp("curfew"))


def test_soong_plugins_lists_the_installed_example(installed_example: Path, soong_env: SoongEnv) -> None:
    environ = {**os.environ, **soong_env.environ(), "PYTHONPATH": str(installed_example)}
    done = subprocess.run([sys.executable, "-m", "soong_core", "plugins", "--json"],
                          capture_output=True, text=True, env=environ, timeout=60)
    assert done.returncode == 0 and done.stderr == ""
    [curfew] = [row for row in json.loads(done.stdout) if row["name"] == "curfew"]
    assert curfew["distribution"] == "soong-curfew" and curfew["version"] == "0.1.0"
    assert curfew["status"] == "loaded" and curfew["builtin"] is False
    assert curfew["hooks"] == ["soong_agent_bundle_modules", "soong_config_schema",
                               "soong_register_policies"]
    # and the third-party switch turns it off
    done = subprocess.run([sys.executable, "-m", "soong_core", "--no-plugins", "plugins", "--json"],
                          capture_output=True, text=True, env=environ, timeout=60)
    assert "curfew" not in [row["name"] for row in json.loads(done.stdout)]


def at(text: str) -> float:
    return datetime.fromisoformat(text).replace(tzinfo=timezone.utc).timestamp()


def test_curfew_policy_boundaries() -> None:
    from soong_curfew.policy import CurfewPolicy

    view = InstanceView("i-1", launched_at=at("2026-11-29T10:00:00"),
                        lease_deadline=at("2026-11-30T10:00:00"),
                        hard_deadline=at("2026-11-30T10:00:00"), warn_before_s=600)
    policy = CurfewPolicy(hour=19)
    curfew = at("2026-11-29T19:00:00")
    keep = policy.evaluate(view, curfew - 601)
    assert keep.action is Action.KEEP and keep.deadline == curfew and keep.next_check == curfew - 600
    assert policy.evaluate(view, curfew - 600).action is Action.WARN
    assert policy.evaluate(view, curfew - 1).action is Action.WARN
    done = policy.evaluate(view, curfew)
    assert done.action is Action.TERMINATE and done.reasons == ("curfew",)
    # launched after today's curfew: tomorrow's
    late = InstanceView("i-2", at("2026-11-29T20:00:00"), 0, 0)
    assert policy.evaluate(late, at("2026-11-29T21:00:00")).deadline == at("2026-11-30T19:00:00")
