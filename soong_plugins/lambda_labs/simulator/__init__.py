"""A local Lambda Cloud that speaks the official API (``../spec``), for trying soong with
no account and no money, and for testing soong against a faithful cloud.

Modules, from the bottom up:

- :mod:`.catalogue`: regions, instance types with prices, images;
- :mod:`.state` and :mod:`.store`: the cloud's records and their files (atomic, 0600);
- :mod:`.cloud`: what each API operation does (validation, lifecycle, capacity);
- :mod:`.billing`: price per simulated second;
- :mod:`.ratelimit`, :mod:`.faults`: the documented limits and injected failures;
- :mod:`.api`, :mod:`.control`, :mod:`.routes`, :mod:`.server`: HTTP;
- :mod:`.app`: :class:`Simulator`, which ties them together;
- :mod:`.daemon`: the background process behind ``soong sim up/status/down``;
- :mod:`.testing`: pytest fixtures that validate every response against the spec.

Standard library only (plus soong's core clock). Nothing here is imported by
``soong --help``: the ``soong sim`` commands import it inside ``handle()``.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from soong_plugins.lambda_labs.simulator.app import Simulator, SimulatorError

__all__ = ["Simulator", "SimulatorError"]


def __getattr__(name: str) -> Any:
    if name in __all__:
        from soong_plugins.lambda_labs.simulator import app

        return getattr(app, name)
    raise AttributeError(name)
