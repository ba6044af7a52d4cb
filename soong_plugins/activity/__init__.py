"""Built-in plugin ``activity``: the lease agent's signals that somebody uses the machine.

Four sources, each in its own module, imported only when the agent creates it:

- ``api``: explicit ``POST /activity`` calls (:mod:`.api`);
- ``sessions``: interactive terminal logins read from utmp (:mod:`.sessions`);
- ``gpu``: GPU utilisation above a threshold, from ``nvidia-smi`` (:mod:`.gpu`);
- ``prometheus``: serving engines' request and token counters (:mod:`.prometheus`).

Pure Python on the standard library: the agent's zipapp carries the package and runs it
on the instance, registered through ``soong_register_activity_sources`` exactly as a
third party's source is.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Callable, Mapping

from soong_core.hookspecs import hookimpl

if TYPE_CHECKING:
    from soong_core.interfaces import ActivitySource

Factory = Callable[[Mapping[str, Any]], "ActivitySource"]


def _api(settings: Mapping[str, Any]) -> ActivitySource:
    from soong_plugins.activity.api import ApiActivity

    return ApiActivity(settings)


def _sessions(settings: Mapping[str, Any]) -> ActivitySource:
    from soong_plugins.activity.sessions import SessionsSource

    return SessionsSource(settings)


def _gpu(settings: Mapping[str, Any]) -> ActivitySource:
    from soong_plugins.activity.gpu import GpuSource

    return GpuSource(settings)


def _prometheus(settings: Mapping[str, Any]) -> ActivitySource:
    from soong_plugins.activity.prometheus import PrometheusSource

    return PrometheusSource(settings)


SOURCES: dict[str, Factory] = {
    "api": _api, "sessions": _sessions, "gpu": _gpu, "prometheus": _prometheus,
}


@hookimpl
def soong_register_activity_sources(register: Callable[[str, Factory], None]) -> None:
    """``api``, ``sessions``, ``gpu`` and ``prometheus``."""
    for name, factory in SOURCES.items():
        register(name, factory)

