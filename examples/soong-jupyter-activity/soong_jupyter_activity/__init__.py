"""soong-jupyter-activity: an example third-party activity source for the lease agent.

Two hooks, through the entry point ``jupyter_activity`` in group ``soong``: the activity
source ``jupyter`` (a Jupyter server's kernels, see :mod:`.source`), and this package's
own name for ``soong agent build`` to carry to the instance, where the agent loads it
as a plugin and runs the source. Standard library only, like everything on the instance.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Callable, Mapping

from soong_core.hookspecs import hookimpl

if TYPE_CHECKING:
    from soong_core.interfaces import ActivitySource


def _jupyter(settings: Mapping[str, Any]) -> ActivitySource:
    from soong_jupyter_activity.source import JupyterSource

    return JupyterSource(settings)


@hookimpl
def soong_register_activity_sources(
        register: Callable[[str, Callable[[Mapping[str, Any]], ActivitySource]], None]) -> None:
    register("jupyter", _jupyter)


@hookimpl
def soong_agent_bundle_modules() -> list[str]:
    return ["soong_jupyter_activity"]
