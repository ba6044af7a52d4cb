"""Builds plugin managers and gives the rest of soong typed access to the hooks.

:func:`make_plugins` is a factory with no import-time side effects: each call returns
a fresh, independent manager, which is what lets several embedded ``Soong`` objects (and
tests) coexist. Order: built-in plugins first, then entry points of group ``soong``, so
a third party is called first and can override a built-in name; then ``check_pending``.

A plugin that fails to import, to register, or that implements a hook that does not
exist (a misspelling) is left out with one warning line naming it; the rest works.
Any plugin can be disabled by name, except a required built-in (:data:`REQUIRED_PLUGINS`):
:func:`make_plugins` refuses that with a usage error.

This module holds what building a manager and listing registrations need, which is
what every run of ``soong`` (``--help`` included) executes; what is called once soong
works (creating a registered object, preparing a launch, events, status details) is in
:mod:`soong_core.plugin_calls`, imported on first use. Entry points are read through
:mod:`importlib.metadata` only when an installed distribution may declare one (see
:func:`may_declare_entry_points`): importing it costs more than the rest of ``--help``.
"""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass
from functools import partial
from typing import TYPE_CHECKING, Any, Callable, Generic, Iterable, Iterator, Mapping, Sequence, TypeVar

import pluggy

from soong_core import __version__, hookspecs
from soong_core.errors import PluginError, UsageError

if TYPE_CHECKING:
    from soong_core.interfaces import (
        ActivitySource,
        CostPolicy,
        Provider,
        StatusReporter,
        TunnelBackend,
    )
    from soong_core.models import Event, Instance, LaunchContribution, LaunchRequest

log = logging.getLogger("soong.plugins")

ENTRY_POINT_GROUP = "soong"
DISABLE_ENV = "SOONG_DISABLE_PLUGINS"

BUILTIN_PLUGINS: tuple[tuple[str, str], ...] = (
    ("lambda_labs", "soong_plugins.lambda_labs"),
    ("fabric_tunnel", "soong_plugins.fabric_tunnel"),
    ("lease_agent", "soong_plugins.lease_agent"),
    ("policies", "soong_plugins.policies"),
    ("activity", "soong_plugins.activity"),
    ("reporters", "soong_plugins.reporters"),
)
"""(plugin name, module) of the plugins that ship with soong, in registration order."""

REQUIRED_PLUGINS: Mapping[str, str] = {
    "policies": ("it registers the lease, hard_timeout and budget policies; without it no "
                 "limit applies and no budget is checked"),
}
"""Built-in plugins that cannot be disabled, each with the reason. :func:`make_plugins`
refuses to disable one; a manager built without it (``builtins=``) is the caller's choice,
and the core refuses to launch without the limits it needs."""

REGISTRATION_KINDS: tuple[str, ...] = (
    "providers", "policies", "reporters", "tunnel_backends", "activity_sources", "commands",
)
"""The kinds of things a plugin registers by name: the keys of :meth:`Plugins.registrations`."""

T = TypeVar("T")


@dataclass(frozen=True)
class PluginInfo:
    """One row of ``soong plugins``."""

    name: str
    distribution: str
    version: str
    builtin: bool
    hooks: tuple[str, ...] = ()
    status: str = "loaded"
    """``loaded``, ``disabled`` (by name) or ``failed`` (see ``error``)."""
    error: str | None = None
    required: bool = False
    """A built-in listed in :data:`REQUIRED_PLUGINS`: it cannot be disabled."""
    required_reason: str | None = None
    """Why it is required (``None`` when it is not)."""


@dataclass(frozen=True)
class Registration(Generic[T]):
    name: str
    plugin: str
    factory: Callable[..., T]


class Registry(Generic[T]):
    """What plugins registered for one kind (providers, policies...), by name."""

    def __init__(self, kind: str, interface: type | None = None) -> None:
        self.kind = kind
        self.interface = interface
        self._entries: dict[str, Registration[T]] = {}

    def add(self, name: Any, factory: Any, plugin: str) -> None:
        if not isinstance(name, str) or not name:
            raise PluginError(f"plugin {plugin!r} registered a {self.kind} with an invalid name {name!r}")
        if not callable(factory):
            raise PluginError(f"plugin {plugin!r} registered {self.kind} {name!r} without a factory")
        if name in self._entries:
            first = self._entries[name].plugin
            log.warning("plugin %r registers %s %r, already registered by plugin %r: ignored",
                        plugin, self.kind, name, first)
            return
        self._entries[name] = Registration(name, plugin, factory)

    def names(self) -> list[str]:
        return list(self._entries)

    def __contains__(self, name: object) -> bool:
        return name in self._entries

    def __iter__(self) -> Iterator[Registration[T]]:
        return iter(self._entries.values())

    def __len__(self) -> int:
        return len(self._entries)

    def get(self, name: str) -> Registration[T]:
        """The registration of ``name``; an unknown name is a usage error listing the known."""
        from soong_core.plugin_calls import registry_get

        return registry_get(self, name)

    def create(self, name: str, config: Mapping[str, Any]) -> T:
        """Instantiate ``name`` through its factory; a wrong type is the plugin's error."""
        from soong_core.plugin_calls import registry_create

        return registry_create(self, name, config)

    def create_all(self, config: Mapping[str, Any]) -> list[tuple[str, T]]:
        """``[(name, object)]`` for every registered name, in registration order, each
        made by :meth:`create` (what the policy engine and admission run over)."""
        return [(name, self.create(name, config)) for name in self._entries]


class Plugins:
    """A typed facade over one pluggy manager: the rest of soong never calls ``pm.hook``."""

    def __init__(self, pm: pluggy.PluginManager | None = None) -> None:
        if pm is None:
            pm = pluggy.PluginManager(hookspecs.PROJECT)
            pm.add_hookspecs(hookspecs)
        self.pm = pm
        self._info: dict[str, PluginInfo] = {}
        self._cache: dict[str, Any] = {}

    # -- loading ------------------------------------------------------------------

    def register(self, plugin: object, name: str, *, distribution: str = "",
                 version: str = "", builtin: bool = False) -> bool:
        """Register ``plugin`` under ``name``; on any problem warn, record it, return False."""
        if self.pm.is_blocked(name):
            self._record(name, distribution, version, builtin, status="disabled")
            return False
        try:
            self.pm.register(plugin, name)
            self._check_hooks(plugin)
        except Exception as exc:
            self._fail(name, distribution, version, builtin, exc)
            return False
        hooks = tuple(sorted(caller.name for caller in self.pm.get_hookcallers(plugin) or ()))
        self._record(name, distribution, version, builtin, hooks=hooks)
        self._cache.clear()
        return True

    def _check_hooks(self, plugin: object) -> None:
        callers = self.pm.get_hookcallers(plugin) or ()
        unknown = sorted(caller.name for caller in callers if not caller.has_spec())
        wrappers = sorted(caller.name for caller in callers for impl in caller.get_hookimpls()
                          if impl.plugin is plugin and (impl.wrapper or impl.hookwrapper))
        if unknown or wrappers:
            self.pm.unregister(plugin)
        if unknown:
            raise PluginError(f"implements unknown hook {', '.join(unknown)} "
                              "(misspelt, or written for another soong version?)")
        if wrappers:
            raise PluginError(f"wraps {', '.join(wrappers)}: soong calls plugins one at a "
                              "time and does not support hook wrappers")

    def unregister(self, name: str) -> None:
        self.pm.unregister(name=name)
        self._info.pop(name, None)
        self._cache.clear()

    def load_builtins(self, builtins: Iterable[tuple[str, str]] = BUILTIN_PLUGINS) -> None:
        from importlib import import_module

        for name, module in builtins:
            self._load(name, partial(import_module, module),
                       distribution="soong", version=__version__, builtin=True)

    def load_entry_points(self, group: str = ENTRY_POINT_GROUP) -> None:
        import sys

        if "importlib.metadata" not in sys.modules and not may_declare_entry_points(group):
            return  # nothing installed declares one: importing importlib.metadata would find none
        from importlib.metadata import entry_points

        for ep in entry_points(group=group):
            dist = getattr(ep, "dist", None)
            self._load(ep.name, ep.load,
                       distribution=dist.name if dist else "?",
                       version=dist.version if dist else "?")

    def _load(self, name: str, load: Callable[[], object], *, distribution: str,
              version: str, builtin: bool = False) -> None:
        if name in self._info:
            previous = self._info[name]
            exc = PluginError(f"name already taken by distribution {previous.distribution!r}")
            self._fail(name, distribution, version, builtin, exc, keep_previous=True)
            return
        if self.pm.is_blocked(name):
            self._record(name, distribution, version, builtin, status="disabled")
            return
        try:
            plugin = load()
        except Exception as exc:
            self._fail(name, distribution, version, builtin, exc)
            return
        self.register(plugin, name, distribution=distribution, version=version, builtin=builtin)

    def _fail(self, name: str, distribution: str, version: str, builtin: bool,
              exc: BaseException, keep_previous: bool = False) -> None:
        error = str(exc) if isinstance(exc, PluginError) else f"{type(exc).__name__}: {exc}"
        error = " ".join(error.split())  # one line, whatever the exception said
        log.warning("plugin %r (%s) failed to load: %s", name, distribution or "?", error)
        if not keep_previous:
            self._record(name, distribution, version, builtin, status="failed", error=error)

    def _record(self, name: str, distribution: str, version: str, builtin: bool, *,
                hooks: tuple[str, ...] = (), status: str = "loaded",
                error: str | None = None) -> None:
        reason = REQUIRED_PLUGINS.get(name) if builtin else None
        self._info[name] = PluginInfo(name, distribution, version, builtin, hooks, status, error,
                                      required=reason is not None, required_reason=reason)

    def info(self) -> list[PluginInfo]:
        """Every plugin seen: loaded, disabled or failed, built-ins first."""
        return sorted(self._info.values(), key=lambda p: (not p.builtin, p.name))

    @property
    def failures(self) -> list[PluginInfo]:
        return [p for p in self._info.values() if p.status == "failed"]

    # -- calling ------------------------------------------------------------------

    def each(self, hook_name: str, **kwargs: Any) -> Iterator[tuple[str, Any]]:
        """Call each implementation of ``hook_name`` in pluggy's order, one at a time.

        Yields ``(plugin name, result)``. Calling them one by one (rather than through
        ``pm.hook``) lets the caller attribute every result and every exception to its
        plugin; exceptions propagate, so each caller decides whether one plugin's
        failure is fatal (launch) or a warning (events, status details).
        """
        for impl in self._impls(hook_name):
            yield impl.plugin_name, _call(impl, kwargs)

    def _impls(self, hook_name: str) -> list[pluggy.HookImpl]:
        return list(reversed(getattr(self.pm.hook, hook_name).get_hookimpls()))

    def _registry(self, hook_name: str, kind: str, interface: type | None) -> Registry[Any]:
        if hook_name in self._cache:
            return self._cache[hook_name]
        registry: Registry[Any] = Registry(kind, interface)
        for impl in self._impls(hook_name):
            def register(name: str, factory: Callable[..., Any], _plugin: str = impl.plugin_name) -> None:
                registry.add(name, factory, _plugin)

            try:
                _call(impl, {"register": register})
            except PluginError as exc:
                log.warning("%s", exc.message)
            except Exception as exc:
                log.warning("plugin %r failed in %s: %s", impl.plugin_name, hook_name,
                            _one_line(exc))
        self._cache[hook_name] = registry
        return registry

    def providers(self) -> Registry[Provider]:
        from soong_core.interfaces import Provider

        return self._registry("soong_register_providers", "provider", Provider)

    def policies(self) -> Registry[CostPolicy]:
        from soong_core.interfaces import CostPolicy

        return self._registry("soong_register_policies", "cost policy", CostPolicy)

    def tunnel_backends(self) -> Registry[TunnelBackend]:
        from soong_core.interfaces import TunnelBackend

        return self._registry("soong_register_tunnel_backends", "tunnel backend", TunnelBackend)

    def reporters(self) -> Registry[StatusReporter]:
        from soong_core.interfaces import StatusReporter

        return self._registry("soong_register_reporters", "status reporter", StatusReporter)

    def activity_sources(self) -> Registry[ActivitySource]:
        from soong_core.interfaces import ActivitySource

        return self._registry("soong_register_activity_sources", "activity source", ActivitySource)

    def commands(self) -> Registry[Any]:
        """CLI commands from plugins; factories take no argument and return a cleo Command."""
        return self._registry("soong_register_commands", "command", None)

    def registrations(self) -> dict[str, dict[str, list[str]]]:
        """What each plugin registered: ``{plugin: {kind: [names]}}``.

        Every plugin of :meth:`info` appears (one that registered nothing, or was disabled
        or failed, with empty lists), and every kind of :data:`REGISTRATION_KINDS` is a key.
        Names are in registration order. A name two plugins registered counts for the one
        that won it (see :class:`Registry`). Calls the register hooks, instantiates nothing.
        """
        from soong_core.plugin_calls import registrations

        return registrations(self)

    def config_sections(self) -> dict[str, tuple[str, Mapping[str, Any]]]:
        """``{section: (plugin, cerberus rules)}`` over all plugins."""
        sections: dict[str, tuple[str, Mapping[str, Any]]] = {}
        for plugin, result in self.each("soong_config_schema"):
            if result is None:
                continue
            if not isinstance(result, Mapping):
                raise PluginError(f"plugin {plugin!r}: soong_config_schema returned "
                                  f"{type(result).__name__}, not a mapping of sections")
            for section, rules in result.items():
                if section in sections:
                    raise PluginError(f"config section {section!r} is claimed by plugins "
                                      f"{sections[section][0]!r} and {plugin!r}")
                if not isinstance(rules, Mapping):
                    raise PluginError(f"plugin {plugin!r}: schema of section {section!r} "
                                      "is not a mapping")
                sections[section] = (plugin, rules)
        return sections

    def launch_contributions(self, request: LaunchRequest, config: Mapping[str, Any]
                             ) -> list[tuple[str, LaunchContribution]]:
        """``[(plugin, contribution)]`` from ``soong_prepare_launch``, in call order.

        Called while a launch is planned (before the panel), so the hook must have no
        side effects. Each contribution is checked here, merged in order into
        ``request``: a wrong return type, a bad tag or a tag two plugins set differently
        is a :class:`PluginError` naming the plugin, and so is a plugin that raises.
        """
        from soong_core.plugin_calls import launch_contributions

        return launch_contributions(self, request, config)

    def status_details(self, instance: Instance, config: Mapping[str, Any]) -> dict[str, Any]:
        """``{plugin: details}``; a failing plugin is a warning, the rest still show
        (:meth:`status_details_many` of one instance, with ``status``'s budget)."""
        from soong_core.api import STATUS_DETAILS_BUDGET_S

        return self.status_details_many([instance], config,
                                        budget_s=STATUS_DETAILS_BUDGET_S)[0]

    def status_details_many(self, instances: Sequence[Instance], config: Mapping[str, Any],
                            *, budget_s: float) -> list[dict[str, Any]]:
        """:meth:`status_details` of each of ``instances``, asked in parallel (every
        plugin for every instance at once, a few threads at a time) and waited for
        ``budget_s`` wall seconds in all: what has not answered by then is left out,
        in one warning line per plugin."""
        from soong_core.plugin_calls import status_details_many

        return status_details_many(self, instances, config, budget_s=budget_s)

    def extend_lease(self, instance: Instance, *, hours: float, previous_deadline: float,
                     lease_deadline: float, config: Mapping[str, Any]) -> None:
        """Have every plugin that enforces ``instance``'s lease move it
        (``soong_extend_lease``); the first that raises stops the extension: a
        SoongError as it is, anything else a PluginError naming the plugin."""
        from soong_core.errors import PluginError, SoongError

        arguments = {"instance": instance, "hours": hours,
                     "previous_deadline": previous_deadline,
                     "lease_deadline": lease_deadline, "config": config}
        for impl in self._impls("soong_extend_lease"):
            try:
                _call(impl, arguments)
            except SoongError:
                raise
            except Exception as exc:
                raise PluginError(f"plugin {impl.plugin_name!r} failed to extend "
                                  f"{instance.id}: {type(exc).__name__}: {exc}; nothing was "
                                  "recorded") from exc

    def instances_seen(self, instances: Sequence[Instance], *, complete: bool, account: str,
                       config: Mapping[str, Any]) -> None:
        """Tell every plugin what the core just saw (``soong_instances_seen``); a failing
        plugin is a warning, the rest still hear it."""
        from soong_core.plugin_calls import instances_seen

        instances_seen(self, instances, complete=complete, account=account, config=config)

    def emit(self, event: Event, config: Mapping[str, Any]) -> None:
        """Broadcast a lifecycle event; a failing receiver never stops the others."""
        from soong_core.plugin_calls import emit

        emit(self, event, config)

    def agent_bundle_modules(self) -> list[str]:
        """The module names plugins want bundled into the agent, each once, in call order."""
        from soong_core.plugin_calls import agent_bundle_modules

        return agent_bundle_modules(self)


def _call(impl: pluggy.HookImpl, kwargs: Mapping[str, Any]) -> Any:
    return impl.function(*[kwargs[arg] for arg in impl.argnames])


def _one_line(exc: BaseException) -> str:
    return " ".join(f"{type(exc).__name__}: {exc}".split())


def may_declare_entry_points(group: str) -> bool:
    """Whether an installed distribution may declare an entry point in ``group``.

    Importing :mod:`importlib.metadata` costs about 20 ms, more than the rest of ``soong
    --help``; this looks where it would look (the ``*.dist-info`` and ``*.egg-info``
    folders of each :data:`sys.path` directory) for an ``entry_points.txt`` with a
    ``[group]`` section, read as it reads them. ``False`` only when that settles it:
    another finder of distributions on :data:`sys.meta_path`, a path entry that is not a
    directory (a zip) or is an egg, a file that cannot be read or decoded (which
    importlib.metadata would report) all answer ``True``, leaving it to
    importlib.metadata.
    """
    import sys
    from importlib.machinery import PathFinder

    for finder in sys.meta_path:
        if finder is not PathFinder and getattr(finder, "find_distributions", None) is not None:
            return True
    for entry in sys.path:
        if not isinstance(entry, str) or entry.lower().endswith(".egg"):
            return True
        root = entry or "."
        try:
            names = os.listdir(root)
        except OSError:
            if os.path.isfile(root):
                return True  # a zip file: importlib.metadata looks inside it
            continue  # missing or unreadable: importlib.metadata finds nothing there either
        for name in names:
            if not name.lower().endswith((".dist-info", ".egg-info")):
                continue
            try:
                with open(os.path.join(root, name, "entry_points.txt"), encoding="utf-8") as file:
                    text = file.read()
            except (FileNotFoundError, NotADirectoryError, IsADirectoryError, PermissionError):
                continue  # what importlib.metadata skips
            except (OSError, ValueError):
                return True
            for line in text.splitlines():
                line = line.strip()
                if line.startswith("[") and line.endswith("]") and line.strip("[]") == group:
                    return True
    return False


def disabled_from_env(environ: Mapping[str, str] | None = None) -> set[str]:
    """Names listed in ``SOONG_DISABLE_PLUGINS`` (comma or space separated)."""
    raw = (os.environ if environ is None else environ).get(DISABLE_ENV, "")
    return {name for name in raw.replace(",", " ").split() if name}


def _refuse_disabling_required(disabled: set[str], builtins: Iterable[tuple[str, str]], *,
                               source: str) -> None:
    for name, _module in builtins:
        reason = REQUIRED_PLUGINS.get(name)
        if reason is not None and name in disabled:
            raise UsageError(f"plugin {name!r} is required and cannot be disabled: {reason}",
                             hints=[f"remove {name} from {source}"])


def make_plugins(*, entry_points: bool = True, disabled: Iterable[str] | None = None,
                 builtins: Iterable[tuple[str, str]] = BUILTIN_PLUGINS) -> Plugins:
    """A fresh plugin manager: built-ins, then (unless ``entry_points=False``) entry points.

    :param entry_points: load third-party plugins (``--no-plugins`` turns this off).
    :param disabled: plugin names never to register, built-in or not; by default the
        names in ``SOONG_DISABLE_PLUGINS``.
    :param builtins: the built-in plugins to load, ``(name, module)`` pairs.
    :raises UsageError: ``disabled`` names a required built-in (:data:`REQUIRED_PLUGINS`).
    """
    builtins = tuple(builtins)
    names = disabled_from_env() if disabled is None else set(disabled)
    _refuse_disabling_required(names, builtins,
                               source=DISABLE_ENV if disabled is None else "disabled=")
    plugins = Plugins()
    for name in names:
        plugins.pm.set_blocked(name)
    plugins.load_builtins(builtins)
    if entry_points:
        plugins.load_entry_points()
    try:
        plugins.pm.check_pending()
    except pluggy.PluginValidationError as exc:  # register() should have caught it
        raise PluginError(f"plugin {exc.plugin!r}: {exc}") from exc
    return plugins
