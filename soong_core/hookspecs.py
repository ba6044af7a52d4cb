"""Every hook soong calls: the whole contract between the core and its plugins.

A plugin is a module (or object) with functions marked ``@hookimpl`` and named after
these specs; it may accept any subset of a spec's arguments. Built-in plugins
(``soong_plugins``) use nothing that a third-party package cannot.

Registration hooks receive a ``register(name, factory)`` callable instead of returning
objects: the core records which plugin registered what, instantiates lazily, and warns
about (and ignores) a second registration of a name. Plugins are called last-registered
first, so a third-party plugin registers before the built-ins and its name wins.

No hook here is ``firstresult``: every plugin's answer is used. Each docstring says how.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Callable, Iterable, Mapping, Sequence

import pluggy

if TYPE_CHECKING:
    from cleo.commands.command import Command

    from soong_core.interfaces import (
        ActivitySource,
        CostPolicy,
        Provider,
        StatusReporter,
        TunnelBackend,
    )
    from soong_core.models import Event, Instance, LaunchContribution, LaunchRequest

PROJECT = "soong"

hookspec = pluggy.HookspecMarker(PROJECT)
hookimpl = pluggy.HookimplMarker(PROJECT)

Config = Mapping[str, Any]
"""The validated configuration: sections of the core and of every plugin."""


@hookspec
def soong_register_providers(register: Callable[[str, Callable[[Config], Provider]], None]) -> None:
    """Register cloud providers by name.

    Called when the core first needs the list of providers (``soong start``, ``status``,
    ``available``...), once per plugin manager.

    :param register: ``register(name, factory)``; ``factory(config)`` returns a
        :class:`~soong_core.interfaces.Provider`. It is called only when that provider
        is used, so constructing a client here costs nothing at start-up.
    :return: None. Every plugin registers; a name registered twice keeps the first.
    """


@hookspec
def soong_register_policies(register: Callable[[str, Callable[[Config], CostPolicy]], None]) -> None:
    """Register cost policies (idle, lease, hard timeout, budget, your own).

    Called when the core evaluates instances (``status``; the agent and the watchdog
    are to, once built) or admits a launch or an extension.

    :param register: ``register(name, factory)``; ``factory(config)`` returns a
        :class:`~soong_core.interfaces.CostPolicy`. The policy engine runs every
        registered policy and the earliest deadline wins.
    :return: None. Every plugin registers; a name registered twice keeps the first.
    """


@hookspec
def soong_register_tunnel_backends(
    register: Callable[[str, Callable[[Config], TunnelBackend]], None],
) -> None:
    """Register tunnel backends: ways to reach an instance (port forwards, a shell).

    The built-in one is ``fabric`` (plugin ``fabric_tunnel``), which ``soong tunnel``
    runs on. Called by ``soong plugins`` (to list them) and by programs that create a
    backend by name (``plugins.tunnel_backends().create("fabric", config)``).

    :param register: ``register(name, factory)``; ``factory(config)`` returns a
        :class:`~soong_core.interfaces.TunnelBackend`.
    :return: None. Every plugin registers; a name registered twice keeps the first.
    """


@hookspec
def soong_register_reporters(
    register: Callable[[str, Callable[[Config], StatusReporter]], None],
) -> None:
    """Register status reporters: ways to render ``soong status`` (table, JSON...).

    Called when a command renders statuses.

    :param register: ``register(name, factory)``; ``factory(config)`` returns a
        :class:`~soong_core.interfaces.StatusReporter`.
    :return: None. Every plugin registers; a name registered twice keeps the first.
    """


@hookspec
def soong_lifecycle_event(event: Event, config: Config) -> None:
    """Receive a lifecycle event: launch, extension, warning or termination.

    Called after the event happened and was written to history, for notifications
    (chat, mail, a desktop alert). A plugin that raises is reported in one warning
    line and the others still receive the event.

    :param event: the :class:`~soong_core.models.Event`, with its reason.
    :param config: the validated configuration.
    :return: None (broadcast to every plugin).
    """


@hookspec
def soong_config_schema() -> Mapping[str, Mapping[str, Any]] | None:
    """Contribute sections to the configuration schema.

    Called once when the configuration is loaded or validated, before any other hook
    receives ``config``.

    :return: ``{section: cerberus-rules}``, where each value is the cerberus schema of
        that section's keys, defaults included (``{"hour": {"type": "integer",
        "default": 19}}``); or None. Every plugin's sections are merged into the
        core's; a section claimed by two plugins is an error naming both.
    """


@hookspec
def soong_prepare_launch(request: LaunchRequest, config: Config) -> LaunchContribution | None:
    """Contribute to a launch: tags, user_data parts, and which limits it enforces.

    Called once per planned launch, while ``start`` (or ``Soong.plan_launch``) prepares
    the panel: before anything is shown, confirmed or launched, so it must have no side
    effects. ``request`` does not carry soong's launch tags yet (launch id, launch time,
    deadlines): those exist only at launch. What needs them, or a secret generated for
    this instance, comes from the contribution's ``finish``, called once at launch
    (after the user confirmed and the launch intent was recorded, before the provider
    call). This is how the lease agent travels (it adds its cloud-init script) without
    the core knowing about it.

    :param request: the :class:`~soong_core.models.LaunchRequest` so far (read-only).
    :param config: the validated configuration.
    :return: a :class:`~soong_core.models.LaunchContribution` or None. Every plugin's
        contribution is merged in call order. ``enforces`` names the limits (``lease``,
        ``idle``, ``hard``) what it installs enforces on the instance: the start panel
        shows them, and history keeps them with the launch. A plugin that raises (here
        or in ``finish``), a bad tag, a tag soong writes itself, or a tag set by two
        plugins to different values aborts the launch: nothing is launched
        half-protected.
    """


@hookspec
def soong_status_details(instance: Instance, config: Config) -> Mapping[str, Any] | None:
    """Contribute details to an instance's status (how the agent's view reaches ``status``).

    Called for each instance shown by ``soong status`` and ``Soong.status()``, for all
    of them at once from several threads (an implementation must be thread-safe), and
    waited for about 2 s in all (``Soong.status_details_budget_s``): an answer that
    comes later is left out, with one warning line. Ask only what answers quickly.

    :param instance: the :class:`~soong_core.models.Instance` as its provider reports it.
    :param config: the validated configuration.
    :return: a JSON-serialisable mapping or None. Results are kept per plugin name in
        ``InstanceStatus.details``. A plugin that raises is reported in one warning
        line and the status is shown without its part. Two keys mean something to
        soong: ``view`` (``{"lease_deadline", "last_activity_at", "idle_timeout_s"}``,
        POSIX times and seconds, each optional; ``idle_timeout_s`` present, even
        null, says the activity is known), what the instance itself enforces, on which
        the policies are then judged (the first plugin's wins; see
        :class:`~soong_core.models.ReportedView`); and ``notes``, a list of lines the
        table shows under itself for the instance.
    """


@hookspec
def soong_instances_seen(instances: Sequence[Instance], complete: bool, account: str,
                         config: Config) -> None:
    """Hear what the core has just seen of the provider's instances.

    Called after the core lists the account's instances (every command that does:
    ``status``, ``stop``, ``ssh``, ``extend``... and ``Soong.instances()``) with
    ``complete=True``; after ``start`` sees its instance become active, and after
    ``stop`` terminates some, with just those and ``complete=False``. What keeps a file
    per instance up to date uses it: the ``fabric`` plugin's ssh Host entries.

    :param instances: the :class:`~soong_core.models.Instance` objects, as the provider
        reports them now (an ended state means the instance ended).
    :param complete: True when ``instances`` is everything the account has: what is
        absent has ended. False: only these were looked at; nothing may be concluded
        about the others.
    :param account: a stable key of the provider account the instances belong to
        (the history namespace). A complete list judges only what was recorded under
        the same account: a user with two profiles keeps the other's entries.
    :param config: the validated configuration.
    :return: None (broadcast). A plugin that raises is reported in one warning line.
    """


@hookspec
def soong_extend_lease(instance: Instance, hours: float, previous_deadline: float,
                       lease_deadline: float, config: Config) -> None:
    """Move ``instance``'s lease from ``previous_deadline`` to ``lease_deadline`` where
    it is enforced (the lease agent's ``POST /extend``), before the core records it.

    Called by ``Soong.extend`` once the hard limit and the budget admitted the
    extension. A plugin that enforces nothing for this instance returns None at once.
    One that cannot apply it raises :class:`~soong_core.errors.SoongError` saying what
    is wrong and what to do: the core then records nothing, so history and the instance
    never disagree. A retry after a lost answer must not extend twice: ``previous_deadline``
    is the deadline the extension starts from, as the laptop knows it.

    :param hours: the extension (already clamped to the hard limit with ``to_max``).
    :param previous_deadline: the lease deadline now (the launch tag, or the latest
        extension in history); timestamps are Unix seconds.
    :param lease_deadline: the new one, never past the hard deadline.
    :return: None. Any exception stops the extension (a plugin's bug is a PluginError).
    """


@hookspec
def soong_register_activity_sources(
    register: Callable[[str, Callable[[Config], ActivitySource]], None],
) -> None:
    """Register activity sources: signals that somebody uses the instance (agent side).

    Called by ``soong plugins``, to list what plugins register, and by the lease agent
    on the instance when it starts: it creates each enabled source once.

    :param register: ``register(name, factory)``; ``factory(settings)`` (the source's
        ``activity.sources.<name>`` object of the agent config) returns an
        :class:`~soong_core.interfaces.ActivitySource`. Only a look that says ``active``
        is activity; the idle deadline counts from the latest over all sources.
    :return: None. Every plugin registers; a name registered twice keeps the first.
    """


@hookspec
def soong_agent_bundle_modules() -> Iterable[str] | None:
    """Name the pure-Python modules the lease agent must carry to the instance.

    Called when ``soong agent build`` writes the agent's zipapp (the plugin manager's
    ``agent_bundle_modules()`` collects and checks the answers). A plugin whose
    policies or activity sources should run on the instance names its module here (and
    itself, since the agent loads it as a plugin there).

    :return: importable module or package names (``["soong_curfew"]``) or None. The
        union over all plugins is bundled; they must need only the standard library.
    """


@hookspec
def soong_register_commands(register: Callable[[str, Callable[[], Command]], None]) -> None:
    """Add CLI commands, as lazy factories.

    Called when the ``soong`` application needs its command names (``soong list``,
    ``--help``, an unknown name). Factories run only when that command is invoked, so
    heavy imports belong inside them.

    :param register: ``register(name, factory)``; ``name`` may contain spaces for a
        namespace (``"curfew show"``), ``factory()`` returns a cleo ``Command``. A
        name that a core command or an earlier plugin already has keeps the first.
    :return: None.
    """
