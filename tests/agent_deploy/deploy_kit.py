"""What the deployment tests share: a launch's request and config, the sandbox that
runs user_data scripts as the simulator does (a do-nothing ``systemctl`` first on PATH)."""

from __future__ import annotations

import os
import subprocess
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from soong_core.models import (
    TAG_HARD_DEADLINE, TAG_LAUNCH_ID, TAG_LAUNCHED_AT, TAG_LEASE_DEADLINE, LaunchRequest,
    format_timestamp,
)

TOKEN = "tok-" + "A" * 40
API_KEY = "secret_sim_" + "k" * 32
LAUNCHED = 1_900_000_000.0
CONFIG: dict[str, Any] = {
    "defaults": {"provider": "lambda", "idle_timeout_minutes": 30, "idle_grace_minutes": 5,
                 "warn_before_minutes": 10},
    "lambda": {"api_key": API_KEY, "api_url": "http://127.0.0.1:9/api/v1"},
    "agent": {"port": 8799, "api_key": None},
}


def launch_request(launch_id: str = "launch-abc") -> LaunchRequest:
    return LaunchRequest("gpu_1x_a10", ("us-east-1",), tags={
        TAG_LAUNCH_ID: launch_id, TAG_LAUNCHED_AT: format_timestamp(LAUNCHED),
        TAG_LEASE_DEADLINE: format_timestamp(LAUNCHED + 2 * 3600),
        TAG_HARD_DEADLINE: format_timestamp(LAUNCHED + 8 * 3600)})


@dataclass(frozen=True)
class Script:
    text: str
    config: dict[str, Any]


@dataclass(frozen=True)
class Sandbox:
    root: Path
    log: Path
    """What the stub ``systemctl`` was asked, one call a line."""

    def run(self, script: str, name: str = "part.sh") -> subprocess.CompletedProcess[str]:
        path = self.root.parent / name
        path.write_text(script)
        return subprocess.run(["bash", str(path)], env=self.environ(), capture_output=True,
                              text=True, timeout=60)

    def environ(self) -> dict[str, str]:
        return {"SOONG_ROOT": str(self.root), "HOME": str(self.root / "root"),
                "PATH": f"{self.log.parent}:/usr/local/bin:/usr/bin:/bin"}

    def files(self) -> dict[str, int]:
        """Every file under the root, relative, with its mode."""
        return {str(p.relative_to(self.root)): p.stat().st_mode & 0o777
                for p in sorted(self.root.rglob("*")) if p.is_file()}



def python3() -> str:
    """The interpreter an instance has: the system's ``python3`` (3.10+)."""
    for candidate in ("/usr/bin/python3", "/usr/local/bin/python3"):
        if os.access(candidate, os.X_OK):
            return candidate
    import sys

    return sys.executable
