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
