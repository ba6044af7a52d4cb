from __future__ import annotations

from typing import TYPE_CHECKING

import pytest

if TYPE_CHECKING:
    from soong_core.testing import SoongEnv

pytest_plugins = ["soong_core.testing"]


@pytest.fixture(autouse=True)
def _isolated(soong_env: SoongEnv) -> SoongEnv:
    """Every test runs with HOME and XDG in temporary folders (see soong_core.testing)."""
    return soong_env


def pytest_configure(config: pytest.Config) -> None:
    # The example plugin is importable in-process (tests register it by hand); the
    # entry-point route is tested by installing it (tests/test_example_plugin.py).
    import sys
    from pathlib import Path

    example = Path(__file__).resolve().parent.parent / "examples" / "soong-curfew"
    sys.path.insert(0, str(example))
