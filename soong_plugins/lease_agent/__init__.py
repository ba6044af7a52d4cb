"""Built-in plugin ``lease_agent``: the on-instance agent (``instance_agent``) on every
Lambda launch, its config section and ``soong agent build``.

Every launch on the ``lambda`` provider carries the agent (declaring that it enforces
the lease, the idle timeout and the hard limit): at launch, ``finish`` mints the
instance's token, writes the agent's config and returns the install script
(:mod:`.userdata`), which the core puts first in the launch's user_data. The laptop
keeps the token (:mod:`.tokens`) until the instance ends. Another provider gets no
agent: the agent terminates its instance through Lambda Cloud's API."""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING, Any, Callable, Mapping, Sequence

from soong_core.cli import lazy_command
from soong_core.hookspecs import hookimpl
from soong_core.models import HOUR

if TYPE_CHECKING:
    from cleo.commands.command import Command

    from soong_core.interfaces import TunnelBackend
    from soong_core.models import Event, Instance, LaunchContribution, LaunchRequest

log = logging.getLogger("soong.agent")

PROVIDER = "lambda"
"""The provider whose instances carry the agent (its client speaks Lambda Cloud's API)."""

AGENT_COMMANDS: dict[str, str] = {
    "agent build": "soong_plugins.lease_agent.build_command:AgentBuildCommand",
    "agent status": "soong_plugins.lease_agent.status_command:AgentStatusCommand",
    "agent install": "soong_plugins.lease_agent.install_command:AgentInstallCommand",
}
"""``soong agent ...`` -> ``module:Class``, imported only when listed or run."""


@hookimpl
def soong_register_commands(register: Callable[[str, Callable[[], Command]], None]) -> None:
    """``soong agent build`` (write the agent's zipapp), ``soong agent status`` and
    ``soong agent install``."""
    for name, target in AGENT_COMMANDS.items():
        register(name, lazy_command(target))


@hookimpl
def soong_register_tunnel_backends(
        register: Callable[[str, Callable[[Mapping[str, Any]], TunnelBackend]], None]) -> None:
    """``direct``: an agent the provider reports a URL for on this machine (the
    simulator's), reached without SSH (:class:`.reach.DirectTunnels`)."""
    def factory(config: Mapping[str, Any]) -> TunnelBackend:
        from soong_plugins.lease_agent.reach import DirectTunnels

        return DirectTunnels(config)

    register("direct", factory)


@hookimpl
def soong_config_schema() -> dict[str, dict[str, Any]]:
    """Section ``agent``: where the agent listens and the key it terminates with."""
    return {
        "agent": {
            "port": {
                "type": "integer", "min": 1024, "max": 65535, "default": 8765,
                "meta": {"help": "Port the lease agent listens on (127.0.0.1 on the "
                                  "instance)."},
            },
            "ready_timeout_seconds": {
                "type": "number", "min": 10, "max": HOUR, "default": 600,
                "meta": {"help": "How long `soong start` waits for the agent's first "
                                  "answer once the instance is active."},
            },
            "api_key": {
                "type": "string", "nullable": True, "default": None,
                "meta": {"secret": True,
                         "help": "Separate provider API key for the lease agent to "
                                 "terminate its instance with (written 0600 on the "
                                 "instance); null: the main key."},
            },
        },
    }


def _bundle_modules() -> list[str]:
    """What plugins name for the agent's bundle (``soong_agent_bundle_modules``), from a
    manager loaded as the CLI loads its own (a hook is not handed the caller's)."""
    from soong_core.plugins import make_plugins

    return make_plugins().agent_bundle_modules()


_modules_cache: list[list[str]] = []


def bundle_modules() -> list[str]:
    if not _modules_cache:
        _modules_cache.append(_bundle_modules())
    return _modules_cache[0]


def _provider(config: Mapping[str, Any]) -> str | None:
    defaults = config.get("defaults") if hasattr(config, "get") else None
    return defaults.get("provider") if isinstance(defaults, Mapping) else None


@hookimpl
def soong_prepare_launch(request: LaunchRequest, config: Mapping[str, Any]
                         ) -> LaunchContribution | None:
    """On Lambda: the agent enforces lease, idle and hard; its script comes at launch."""
    from soong_core.models import LIMITS, LaunchContribution

    if _provider(config) != PROVIDER:
        return None

    def finish(final: LaunchRequest) -> LaunchContribution:
        import secrets

        from soong_core.models import TAG_LAUNCH_ID
        from soong_plugins.lease_agent import tokens
        from soong_plugins.lease_agent.userdata import agent_config, install_script, zipapp

        token = secrets.token_urlsafe(32)
        agent_json = agent_config(final.tags, config, token)
        script = install_script(zipapp(bundle_modules()), agent_json)
        launch_id = final.tags[TAG_LAUNCH_ID]
        try:
            tokens.write_pending(launch_id, token)  # fail closed: an agent nobody can reach
        except (OSError, ValueError) as exc:
            raise RuntimeError(f"cannot keep the agent's token in {tokens.agents_dir()}: "
                               f"{getattr(exc, 'strerror', None) or exc}") from None
        tokens.drop_stale_pending()
        if not (config.get("agent") or {}).get("api_key"):
            log.warning("the lease agent terminates its instance with your main API key "
                        "(written 0600 on the instance): give it a separate one with "
                        "`soong config set agent.api_key KEY`")
        return LaunchContribution(user_data_parts=(script,))

    def ready(instance: Instance, on_phase: Callable[[str], None]) -> None:
        from soong_plugins.lease_agent.ready import wait_for_agent

        wait_for_agent(instance, config, on_phase=on_phase)

    return LaunchContribution(enforces=LIMITS, finish=finish, ready=ready)


@hookimpl
def soong_extend_lease(instance: Instance, hours: float, previous_deadline: float,
                       lease_deadline: float, config: Mapping[str, Any]) -> None:
    """The agent enforces the lease: it moves it (``POST /extend``), or nothing does."""
    if _provider(config) != PROVIDER:
        return
    from soong_plugins.lease_agent.extend import extend_through_agent

    extend_through_agent(instance, hours, previous_deadline, lease_deadline, config)


@hookimpl
def soong_status_details(instance: Instance, config: Mapping[str, Any]
                         ) -> dict[str, Any] | None:
    """The agent's own view, where it answers without a new SSH connection
    (:mod:`.details`)."""
    if _provider(config) != PROVIDER:
        return None
    from soong_plugins.lease_agent.details import agent_details

    return agent_details(instance, config)


@hookimpl
def soong_lifecycle_event(event: Event, config: Mapping[str, Any]) -> None:
    """The token follows its instance: renamed at launch, removed at termination."""
    from soong_core.models import EventKind
    from soong_plugins.lease_agent import tokens

    if event.kind is EventKind.LAUNCH:
        launch_id = event.detail.get("launch_id")
        if isinstance(launch_id, str) and launch_id:
            tokens.adopt(launch_id, event.instance_id)
    elif event.kind is EventKind.TERMINATE:
        tokens.remove_token(event.instance_id)


@hookimpl
def soong_instances_seen(instances: Sequence[Instance], complete: bool, account: str,
                         config: Mapping[str, Any]) -> None:
    """Tokens of ended instances go; a pending one whose instance is listed is adopted."""
    from soong_plugins.lease_agent import tokens

    kept = set(tokens.kept_instances())
    seen: set[str] = set()
    for instance in instances:
        seen.add(instance.id)
        if instance.id not in kept and instance.launch_id:
            try:
                if tokens.adopt(instance.launch_id, instance.id):
                    kept.add(instance.id)
            except ValueError:
                continue
        if instance.id not in kept:
            continue
        if instance.state.ended:
            tokens.remove_token(instance.id)
            kept.discard(instance.id)
        else:
            tokens.note_account(instance.id, account)
    if complete:
        for gone in kept - seen:
            if tokens.account_of(gone) == account:
                tokens.remove_token(gone)
