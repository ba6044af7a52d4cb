"""soong: run cloud GPU instances without ever paying for one you forgot.

The core is small and provider-agnostic; everything else is a plugin. Importing this
package is cheap and has no side effects: ``from soong_core import Soong`` loads the
embedding API on first use.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

__version__ = "0.1.0"

__all__ = ["Soong", "SoongError", "__version__", "hookimpl"]

if TYPE_CHECKING:
    from soong_core.api import Soong
    from soong_core.errors import SoongError
    from soong_core.hookspecs import hookimpl


def __getattr__(name: str) -> Any:
    if name == "hookimpl":
        from soong_core.hookspecs import hookimpl

        return hookimpl
    if name == "SoongError":
        from soong_core.errors import SoongError

        return SoongError
    if name == "Soong":
        from soong_core.api import Soong

        return Soong
    raise AttributeError(f"module 'soong_core' has no attribute {name!r}")
