"""Built-in plugin ``reporters``: how ``soong status`` renders instances.

Registered exactly like a third-party plugin, through ``soong_register_reporters``:

``table``
    for people: short id, name, coloured state, IP, GPU, uptime, time left, cost so far,
    estimated total, and when and why the instance will stop
    (:class:`~soong_plugins.reporters.table.TableReporter`);
``json``
    for scripts: the stable schema of ``docs/json.md``
    (:class:`~soong_plugins.reporters.json_report.JsonReporter`).

Each reporter's module is imported only when its factory runs, and rich only inside
the table's ``render``: loading the plugin costs this file.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Callable, Mapping

from soong_core.hookspecs import hookimpl

if TYPE_CHECKING:
    from soong_core.interfaces import StatusReporter

Factory = Callable[[Mapping[str, Any]], "StatusReporter"]


def _table(config: Mapping[str, Any]) -> StatusReporter:
    from soong_plugins.reporters.table import TableReporter

    return TableReporter(config)


def _json(config: Mapping[str, Any]) -> StatusReporter:
    from soong_plugins.reporters.json_report import JsonReporter

    return JsonReporter(config)


@hookimpl
def soong_register_reporters(register: Callable[[str, Factory], None]) -> None:
    register("table", _table)
    register("json", _json)
