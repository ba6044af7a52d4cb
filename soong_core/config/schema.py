"""The schema: the core's sections, each plugin's, and lookups by ``"section.key"``.

A section is ``{key: cerberus rules}``; defaults live in the rules. The core's sections
are :data:`CORE_SCHEMA`; plugins add theirs through the ``soong_config_schema`` hook, and
:func:`build_schema` assembles both into one :class:`ConfigSchema`. Nothing in here knows
any provider: plugin sections are just more schema.
"""

from __future__ import annotations

import copy
import difflib
import logging
import re
from types import MappingProxyType
from typing import TYPE_CHECKING, Any, Mapping

from soong_core.errors import ConfigError, PluginError
from soong_core.periods import BUDGET_PERIODS, DEFAULT_BUDGET_PERIOD

if TYPE_CHECKING:
    from soong_core.plugins import Plugins

log = logging.getLogger("soong.config")

ENV_PREFIX = "SOONG_"
CORE = "core"
"""The owner recorded for the core's own sections."""
SECTION_NAME = re.compile(r"^[a-z][a-z0-9_]*$")



def _help(text: str) -> dict[str, Any]:
    return {"help": text}


CORE_SCHEMA: dict[str, dict[str, dict[str, Any]]] = {
    "defaults": {
        "provider": {
            "type": "string", "default": "lambda",
            "meta": _help("The provider to use (`soong plugins` lists what is registered)."),
        },
        "lease_hours": {
            "type": "number", "min": 1, "default": 4,
            "meta": _help("Lease of a new instance, in hours (its lease agent stops it then, "
                          "on Lambda Cloud)."),
        },
        "idle_timeout_minutes": {
            "type": "number", "min": 1, "default": 30,
            "meta": _help("How long an instance may go unused before its lease agent stops "
                          "it."),
        },
        "idle_grace_minutes": {
            "type": "number", "min": 0, "default": 10,
            "meta": _help("After boot, how long before the idle timeout applies."),
        },
        "hard_timeout_hours": {
            "type": "number", "min": 1, "default": 8,
            "meta": _help("Absolute limit from launch, fixed at launch; no extension passes it "
                          "(its lease agent stops it then)."),
        },
        "gpu": {
            "type": "string", "nullable": True, "default": None,
            "meta": _help("Instance type to launch when `start` is given none."),
        },
        "region": {
            "type": "string", "nullable": True, "default": None,
            "meta": _help("Preferred region."),
        },
        "fallback_regions": {
            "type": "list", "schema": {"type": "string"}, "default": [],
            "meta": _help("Regions to try, in order, when the preferred one has no capacity."),
        },
        "model": {
            "type": "string", "nullable": True, "default": None,
            "meta": _help("Model to serve when `start` is given none."),
        },
        "warn_before_minutes": {
            "type": "number", "min": 0, "default": 10,
            "meta": _help("How long before a limit `status` shows it as near (warnings on the "
                          "instance are not yet built)."),
        },
        "api_timeout_seconds": {
            "type": "number", "min": 1, "default": 60,
            "meta": _help("How long the provider's API may go without answering (requests, "
                          "retries, waits for the rate limit) before a command gives up; "
                          "`--api-timeout` sets it for one run."),
        },
        "ssh_key_name": {
            "type": "string", "default": "soong",
            "meta": _help("The name of the public key registered with the provider, "
                          "authorised on every launch."),
        },
    },
    "budget": {
        "max_dollars": {
            "type": "number", "min": 0, "nullable": True, "default": None,
            "meta": _help("Spending cap per period across all instances, checked at launch and "
                          "extension (it never stops an instance); null: no cap."),
        },
        "period": {
            "type": "string", "allowed": list(BUDGET_PERIODS), "default": DEFAULT_BUDGET_PERIOD,
            "meta": _help("The period the cap applies to (`none`: all time)."),
        },
    },
    "clock": {
        "mode": {
            "type": "string", "allowed": ["real", "accelerated"], "default": "real",
            "meta": _help("`accelerated` runs cloud time faster (the simulator's profile sets "
                          "it)."),
        },
        "factor": {
            "type": "number", "min": 0.001, "default": 1,
            "meta": _help("How many cloud seconds pass per wall second (accelerated only)."),
        },
        "sim_anchor": {
            "type": "number", "nullable": True, "default": None,
            "meta": _help("Cloud time at `wall_anchor` (accelerated only)."),
        },
        "wall_anchor": {
            "type": "number", "nullable": True, "default": None,
            "meta": _help("Wall time at which cloud time was `sim_anchor` (accelerated only)."),
        },
    },
}
"""The core's sections: ``{section: {key: cerberus rules}}``. Defaults live here."""

RENAMED_KEYS: Mapping[str, str] = MappingProxyType({
    "ssh.key_name": "defaults.ssh_key_name",  # launch needs it with or without fabric_tunnel
})
"""Keys that moved, ``{old "section.key": new}``. A file or profile that holds an old key
still loads (the value is read as the new key, with a warning), ``save_values`` renames
it in the file it writes, and naming an old key (``soong config set``) is an error that
says where it went. An old key that the schema knows again is left alone."""


class ConfigSchema:
    """The core's sections plus every plugin's, with lookups by ``"section.key"``."""

    def __init__(self, sections: Mapping[str, Mapping[str, Mapping[str, Any]]],
                 owners: Mapping[str, str]) -> None:
        self._sections = {name: dict(rules) for name, rules in sections.items()}
        self._owners = dict(owners)

    @property
    def sections(self) -> list[str]:
        return list(self._sections)

    def section(self, name: str) -> Mapping[str, Mapping[str, Any]]:
        return MappingProxyType(self._sections[name])

    def owner(self, section: str) -> str:
        """``"core"`` or the name of the plugin that contributed ``section``."""
        return self._owners[section]

    def keys(self) -> list[str]:
        """Every known key as ``"section.key"``, in schema order."""
        return [f"{section}.{key}" for section, rules in self._sections.items() for key in rules]

    def rules(self, key: str) -> Mapping[str, Any]:
        """The rules of ``"section.key"``; an unknown key is a ConfigError with a suggestion."""
        section, _, name = key.partition(".")
        if section in self._sections and name in self._sections[section]:
            return self._sections[section][name]
        raise ConfigError(unknown_key_message(self, key))

    def is_secret(self, key: str) -> bool:
        section, _, name = key.partition(".")
        rules = self._sections.get(section, {}).get(name, {})
        return bool(_meta(rules).get("secret"))

    def default(self, key: str) -> Any:
        return copy.deepcopy(self.rules(key).get("default"))

    def renames(self) -> list[tuple[str, str]]:
        """The renames of :data:`RENAMED_KEYS` that apply here, ``(old, new)``: the new key
        is known and the old one not."""
        known = set(self.keys())
        return [(old, new) for old, new in RENAMED_KEYS.items()
                if old not in known and new in known]

    def env_names(self) -> dict[str, str]:
        """``{variable: "section.key"}``: ``SOONG_<SECTION>_<KEY>`` and declared aliases.

        Aliases come first, so a ``SOONG_...`` variable (more specific) wins when both
        are set. Two keys mapping to one name (``a_b.c`` and ``a.b_c``) keep the first.
        """
        names: dict[str, str] = {}
        for key in self.keys():
            alias = _meta(self.rules(key)).get("env")
            if isinstance(alias, str) and alias:
                names.setdefault(alias, key)
        for key in self.keys():
            var = env_name(key)
            if var in names and names[var] != key:
                log.warning("config keys %s and %s both read $%s: %s wins", names[var], key,
                            var, names[var])
                continue
            names[var] = key
        return names

    def cerberus_schema(self) -> dict[str, Any]:
        """One cerberus schema: each section a dict with its rules (absent means ``{}``)."""
        return {section: {"type": "dict", "default": {}, "schema": copy.deepcopy(rules)}
                for section, rules in self._sections.items()}

    def validator(self, error_handler: Any = None) -> Any:
        """A cerberus ``Validator`` of :meth:`cerberus_schema`, unknown keys refused;
        ``error_handler``: what its ``errors`` report (cerberus' default: a tree)."""
        from cerberus import Validator

        if error_handler is None:
            return Validator(self.cerberus_schema(), allow_unknown=False)
        return Validator(self.cerberus_schema(), allow_unknown=False,
                         error_handler=error_handler)


def _meta(rules: Mapping[str, Any]) -> Mapping[str, Any]:
    meta = rules.get("meta")
    return meta if isinstance(meta, Mapping) else {}


def _env_part(name: str) -> str:
    return re.sub(r"[^A-Za-z0-9]", "_", name).upper()


def env_name(key: str) -> str:
    """``defaults.lease_hours`` -> ``SOONG_DEFAULTS_LEASE_HOURS``."""
    section, _, name = key.partition(".")
    return f"{ENV_PREFIX}{_env_part(section)}_{_env_part(name)}"


def build_schema(plugins: Plugins | None = None) -> ConfigSchema:
    """The core's sections plus those the plugins contribute (``soong_config_schema``).

    A plugin section that takes a core section's name, has a name unfit for an
    environment variable, or is not valid cerberus is the plugin's error, named.
    """
    sections: dict[str, Mapping[str, Mapping[str, Any]]] = dict(copy.deepcopy(CORE_SCHEMA))
    owners = {section: CORE for section in sections}
    if plugins is not None:
        # config_sections() follows call order (last registered first); list the
        # sections in registration order instead, built-ins before third parties.
        for section, (plugin, rules) in reversed(plugins.config_sections().items()):
            _check_plugin_section(section, plugin, rules)
            sections[section] = copy.deepcopy(dict(rules))
            owners[section] = plugin
    return ConfigSchema(sections, owners)


def _check_plugin_section(section: str, plugin: str, rules: Mapping[str, Any]) -> None:
    if section in CORE_SCHEMA:
        raise PluginError(f"plugin {plugin!r} contributes config section {section!r}, "
                          "which is a core section", hints=["rename the plugin's section"])
    if not isinstance(section, str) or not SECTION_NAME.match(section):
        raise PluginError(f"plugin {plugin!r}: config section name {section!r} must match "
                          f"{SECTION_NAME.pattern}")
    for key, key_rules in rules.items():
        if not isinstance(key, str) or not isinstance(key_rules, Mapping):
            raise PluginError(f"plugin {plugin!r}: config key {section}.{key} needs a mapping "
                              "of cerberus rules")
    from cerberus import SchemaError, Validator

    try:
        Validator({section: {"type": "dict", "schema": copy.deepcopy(dict(rules))}})
    except SchemaError as exc:
        detail = " ".join(str(exc).split())
        raise PluginError(f"plugin {plugin!r}: config section {section!r} is not a valid "
                          f"cerberus schema: {detail}") from exc


def unknown_key_message(schema: ConfigSchema, key: str) -> str:
    """``unknown key budget.max_dolars (did you mean budget.max_dollars?)``; for a renamed
    key, ``config key ssh.key_name is now defaults.ssh_key_name: use that name``."""
    renamed = dict(schema.renames()).get(key)
    if renamed is not None:
        return f"config key {key} is now {renamed}: use that name"
    section, dot, name = key.partition(".")
    if not dot:
        return f"unknown section {section}{_suggest_section(schema, section)}"
    if section not in schema.sections:
        return f"unknown key {key}: no section {section}{_suggest_section(schema, section)}"
    matches = difflib.get_close_matches(name, list(schema.section(section)), n=1)
    if matches:
        return f"unknown key {key} (did you mean {section}.{matches[0]}?)"
    elsewhere = [k for k in schema.keys() if k.partition(".")[2] == name]
    if elsewhere:
        return f"unknown key {key} (did you mean {elsewhere[0]}?)"
    return f"unknown key {key} (known keys of {section}: {', '.join(schema.section(section))})"


def _suggest_section(schema: ConfigSchema, section: str) -> str:
    matches = difflib.get_close_matches(section, schema.sections, n=1)
    if matches:
        return f" (did you mean {matches[0]}?)"
    as_key = [k for k in schema.keys() if k.partition(".")[2] == section]
    if as_key:
        return f" (did you mean {as_key[0]}?)"
    return f" (known sections: {', '.join(schema.sections)})"
