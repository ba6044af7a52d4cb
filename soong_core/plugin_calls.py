"""What commands and the core ask of the plugins once they are loaded.

:mod:`soong_core.plugins` builds a manager and lists what plugins register, which is
all ``soong --help`` needs; the calls made while soong works (creating a registered
object, preparing and finishing a launch, status details, lifecycle events, the agent's
bundled modules, the ``soong plugins`` table) are here, reached through the typed
methods of :class:`~soong_core.plugins.Plugins` and :class:`~soong_core.plugins.Registry`
and imported on their first call.
"""

from __future__ import annotations

from functools import partial
from typing import TYPE_CHECKING, Any, Callable, Iterable, Iterator, Mapping, Sequence, TypeVar

from soong_core.errors import PluginError, SoongError, UsageError
from soong_core.plugins import REGISTRATION_KINDS, _call, _one_line, log

if TYPE_CHECKING:
    from soong_core.models import Event, Instance, LaunchContribution, LaunchRequest
    from soong_core.plugins import Plugins, Registration, Registry

T = TypeVar("T")


def registry_get(registry: Registry[T], name: str) -> Registration[T]:
    """See :meth:`Registry.get`."""
    try:
        return registry._entries[name]
    except KeyError:
        known = ", ".join(sorted(registry._entries)) or "none"
        raise UsageError(f"unknown {registry.kind} {name!r} (known: {known})",
                         hints=["run `soong plugins` to see what is loaded"]) from None


def registry_create(registry: Registry[T], name: str, config: Mapping[str, Any]) -> T:
    """See :meth:`Registry.create`."""
    entry = registry_get(registry, name)
    try:
        obj = entry.factory(config)
    except SoongError:
        raise
    except Exception as exc:
        raise PluginError(f"plugin {entry.plugin!r} failed to create {registry.kind} {name!r}: "
                          f"{type(exc).__name__}: {exc}") from exc
    interface = registry.interface
    if interface is not None and not isinstance(obj, interface):
        raise PluginError(f"plugin {entry.plugin!r}: {registry.kind} {name!r} is a "
                          f"{type(obj).__name__}, not a {interface.__name__}")
    return obj


def registrations(plugins: Plugins) -> dict[str, dict[str, list[str]]]:
    """See :meth:`Plugins.registrations`."""
    registries: dict[str, Callable[[], Registry[Any]]] = {
        "providers": plugins.providers,
        "policies": plugins.policies,
        "reporters": plugins.reporters,
        "tunnel_backends": plugins.tunnel_backends,
        "activity_sources": plugins.activity_sources,
        "commands": plugins.commands,
    }
    result: dict[str, dict[str, list[str]]] = {
        info.name: {kind: [] for kind in REGISTRATION_KINDS} for info in plugins.info()}
    for kind in REGISTRATION_KINDS:
        for entry in registries[kind]():
            by_kind = result.setdefault(entry.plugin, {k: [] for k in REGISTRATION_KINDS})
            by_kind[kind].append(entry.name)
    return result


def launch_contributions(plugins: Plugins, request: LaunchRequest, config: Mapping[str, Any]
                         ) -> list[tuple[str, LaunchContribution]]:
    """See :meth:`Plugins.launch_contributions`."""
    found: list[tuple[str, LaunchContribution]] = []
    merged = request
    for impl in plugins._impls("soong_prepare_launch"):
        plugin = impl.plugin_name
        contribution = _contribution(
            plugin, partial(_call, impl, {"request": request, "config": config}),
            doing="prepare the launch", source="soong_prepare_launch")
        if contribution is None:
            continue
        merged = _merge(merged, contribution, plugin)
        found.append((plugin, contribution))
    return found


DETAIL_WORKERS = 16
"""Threads asking plugins for status details at once (each call is one instance's)."""


def status_details_many(plugins: Plugins, instances: Sequence[Instance],
                        config: Mapping[str, Any], *, budget_s: float) -> list[dict[str, Any]]:
    """See :meth:`Plugins.status_details_many`."""
    import queue
    import threading
    import time

    impls = plugins._impls("soong_status_details")
    jobs: queue.SimpleQueue[tuple[int, int]] = queue.SimpleQueue()
    for index in range(len(instances)):
        for number in range(len(impls)):
            jobs.put((index, number))
    answers: dict[tuple[int, int], Any] = {}
    failures: dict[tuple[int, int], str] = {}
    lock = threading.Lock()

    def work() -> None:
        while True:
            try:
                index, number = jobs.get_nowait()
            except queue.Empty:
                return
            try:
                result = _call(impls[number], {"instance": instances[index], "config": config})
            except Exception as exc:  # one plugin's failure is its warning, not status's
                with lock:
                    failures[(index, number)] = _one_line(exc)
                continue
            with lock:
                answers[(index, number)] = result

    pending = len(instances) * len(impls)
    threads = [threading.Thread(target=work, daemon=True, name="soong-status-details")
               for _ in range(min(DETAIL_WORKERS, pending))]
    end = time.monotonic() + budget_s
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(max(0.0, end - time.monotonic()))
    with lock:  # what came later is not waited for, and not shown
        answered, failed = dict(answers), dict(failures)
    late: dict[str, list[str]] = {}
    found: list[dict[str, Any]] = [{} for _ in instances]
    for index, instance in enumerate(instances):
        for number, impl in enumerate(impls):
            key = (index, number)
            if key in failed:
                log.warning("plugin %r failed in soong_status_details for %s: %s",
                            impl.plugin_name, instance.id, failed[key])
            elif key not in answered:
                late.setdefault(impl.plugin_name, []).append(instance.id)
            elif answered[key] is not None:
                found[index][impl.plugin_name] = answered[key]
    for plugin, ids in late.items():
        log.warning("plugin %r gave no status details within %g s for %s: shown without them",
                    plugin, budget_s, ", ".join(ids))
    return found


def emit(plugins: Plugins, event: Event, config: Mapping[str, Any]) -> None:
    """See :meth:`Plugins.emit`."""
    for _ in each_tolerant(plugins, "soong_lifecycle_event", event=event, config=config):
        pass


def instances_seen(plugins: Plugins, instances: Sequence[Instance], *, complete: bool,
                   account: str, config: Mapping[str, Any]) -> None:
    """See :meth:`Plugins.instances_seen`."""
    for _ in each_tolerant(plugins, "soong_instances_seen", instances=list(instances),
                           complete=complete, account=account, config=config):
        pass


def agent_bundle_modules(plugins: Plugins) -> list[str]:
    """See :meth:`Plugins.agent_bundle_modules`."""
    modules: list[str] = []
    for plugin, result in plugins.each("soong_agent_bundle_modules"):
        if result is None:
            continue
        if isinstance(result, str):
            raise PluginError(f"plugin {plugin!r}: soong_agent_bundle_modules must return "
                              f"a list of module names, not the string {result!r}")
        modules.extend(m for m in result if m not in modules)
    return modules


def each_tolerant(plugins: Plugins, hook_name: str, **kwargs: Any) -> Iterator[tuple[str, Any]]:
    """Like :meth:`Plugins.each`, but a plugin that raises is one warning and is skipped."""
    for impl in plugins._impls(hook_name):
        try:
            result = _call(impl, kwargs)
        except Exception as exc:
            log.warning("plugin %r failed in %s: %s", impl.plugin_name, hook_name, _one_line(exc))
            continue
        yield impl.plugin_name, result


def _check_reserved(contribution: LaunchContribution, plugin: str) -> None:
    """The launch facts are soong's to write: a plugin's tag may not replace one."""
    from soong_core.models import CORE_TAGS

    taken = sorted(key for key in contribution.tags if key in CORE_TAGS)
    if taken:
        raise PluginError(f"plugin {plugin!r} sets tag {taken[0]!r}, which soong writes itself "
                          "at launch")


def _merge(request: LaunchRequest, contribution: LaunchContribution, plugin: str) -> LaunchRequest:
    try:
        return request.with_contribution(contribution, plugin)
    except ValueError as exc:
        raise PluginError(f"plugin {plugin!r}: {exc}") from exc


def finish_launch(request: LaunchRequest,
                  contributions: Iterable[tuple[str, LaunchContribution]]) -> LaunchRequest:
    """Merge planned ``contributions`` into ``request`` (which carries soong's launch tags
    by now), then what each one's ``finish`` adds at launch time. Any failure is a
    :class:`PluginError` naming the plugin: nothing is launched half-prepared."""
    from soong_core.models import LaunchContribution

    planned = list(contributions)
    for plugin, contribution in planned:
        request = _merge(request, contribution, plugin)
    for plugin, contribution in planned:
        finish = contribution.finish
        if finish is None:
            continue
        extra = _contribution(plugin, partial(finish, request),
                              doing="finish the launch", source="finish")
        if extra is not None:
            request = _merge(request, LaunchContribution(extra.tags, extra.user_data_parts),
                             plugin)
    return request


def _contribution(plugin: str, call: Callable[[], Any], *, doing: str,
                  source: str) -> LaunchContribution | None:
    """What ``call`` returns, checked: an exception or a wrong type is a
    :class:`PluginError` naming ``plugin``, as is a tag soong writes itself."""
    from soong_core.models import LaunchContribution

    try:
        result = call()
    except SoongError:
        raise
    except Exception as exc:
        raise PluginError(f"plugin {plugin!r} failed to {doing}: {_one_line(exc)}") from exc
    if result is None:
        return None
    if not isinstance(result, LaunchContribution):
        raise PluginError(f"plugin {plugin!r}: {source} returned {type(result).__name__}, "
                          "not a LaunchContribution")
    _check_reserved(result, plugin)
    return result
