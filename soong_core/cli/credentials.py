"""A command that needs the provider's credential fails at once when none can exist.

What :attr:`SoongCommand.needs_credential <soong_core.cli.command.SoongCommand.needs_credential>`
asks for: before the configuration is validated and the provider built (yaml, cerberus,
requests), a run where nothing can hold the credential gets the provider's own "no
credential" line. Imported only by such a command.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Mapping

if TYPE_CHECKING:
    from soong_core.cli.command import SoongCommand
    from soong_core.config import ConfigSchema


def fail_without_credential(command: SoongCommand) -> None:
    """Raise the provider's "no credential" error when nothing can hold one: no
    config file, no profile, no per-run value, no config variable in the
    environment. Otherwise return, and the full load decides: only it can read a
    file, and it reports every other problem."""
    import os

    from soong_core.config import CORE, CORE_SCHEMA, ConfigSchema, default_config_path
    from soong_core.errors import ConfigError

    app = command.app
    if app.profile is not None or app.config_path:
        return
    if any(value is not None for value in command.run_overrides().values()):
        return
    try:
        os.stat(default_config_path())
    except FileNotFoundError:
        pass
    except OSError:
        return  # unreadable: the full load says why
    else:
        return  # a file may hold the key
    try:
        sections: dict[str, Mapping[str, Mapping[str, Any]]] = dict(CORE_SCHEMA)
        owners = dict.fromkeys(sections, CORE)
        for section, (plugin, rules) in command.plugins.config_sections().items():
            if section in sections:
                return  # a plugin takes a core section: the full load names it
            sections[section], owners[section] = rules, plugin
        message = missing_credential(ConfigSchema(sections, owners), os.environ)
    except Exception:  # a plugin's broken schema: the full load names it
        return
    if message is not None:
        raise ConfigError(message)


def missing_credential(schema: ConfigSchema, environ: Mapping[str, str]) -> str | None:
    """The message of the default provider's missing credential, when neither the
    defaults nor ``environ`` can give one (the caller knows no file or profile can);
    ``None`` when they may, or when the provider declares no credential.

    A provider declares its credential in its plugin's schema: the key whose rules say
    ``meta: {credential: {provider: NAME, missing: MESSAGE}}``. Any variable the config
    reads (``SOONG_...`` or an alias) counts as "may": it could hold the key, name
    another provider, or be invalid, which the full load reports first.
    """
    if any(name in environ for name in schema.env_names()):
        return None
    provider = schema.default("defaults.provider")
    for key in schema.keys():
        meta = schema.rules(key).get("meta")
        credential = meta.get("credential") if isinstance(meta, Mapping) else None
        if (isinstance(credential, Mapping) and credential.get("provider") == provider
                and isinstance(credential.get("missing"), str)
                and not schema.default(key)):
            return str(credential["missing"])
    return None
