"""soong's configuration: one YAML file, validated by a schema the plugins extend.

Where a value comes from, lowest precedence first:

1. the schema's ``default`` (cerberus rules: the core's sections below, plus each
   plugin's through the ``soong_config_schema`` hook);
2. the file, ``$XDG_CONFIG_HOME/soong/config.yaml`` (or the ``--config`` path);
3. the environment, ``SOONG_<SECTION>_<KEY>`` and aliases a schema declares in
   ``meta: {env: NAME}`` (the Lambda plugin declares ``LAMBDA_API_KEY``);
4. a profile (``--profile NAME``, ``--sim``), ``profiles/NAME.yaml`` beside the file: it
   holds what differs for one cloud (endpoint, key, clock, what the user set there), and
   a write to it drops what merely copies the file (:func:`save_profile_values`);
5. per-run overrides from command-line flags, which are never saved.

Every problem is reported as one line naming the key, the bad value, what is expected
and where the value came from, so a user fixes all of them in one go. Nothing in here
knows any provider: plugin sections are just more schema.

Importing this module is cheap: yaml and cerberus are imported by the functions that
need them (``soong --help`` must stay fast).
"""

from __future__ import annotations

import copy
import difflib
import functools
import json
import logging
import math
import os
import re
import stat
from dataclasses import dataclass
from pathlib import Path
from types import MappingProxyType
from typing import TYPE_CHECKING, Any, Callable, Iterable, Iterator, Mapping

from soong_core.files import soong_dir, write_private
from soong_core.errors import ConfigError, PluginError

if TYPE_CHECKING:
    from soong_core.interfaces import Provider
    from soong_core.plugins import Plugins

log = logging.getLogger("soong.config")

ENV_PREFIX = "SOONG_"
CORE = "core"
"""The owner recorded for the core's own sections."""
SECRET_MASK = "********"
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
            "meta": _help("Lease of a new instance, in hours. Not yet enforced on the instance: "
                          "it bills until `soong stop`."),
        },
        "idle_timeout_minutes": {
            "type": "number", "min": 1, "default": 30,
            "meta": _help("How long an instance may go unused before it should stop. Not yet "
                          "enforced: nothing detects idleness yet."),
        },
        "idle_grace_minutes": {
            "type": "number", "min": 0, "default": 10,
            "meta": _help("After boot, how long before the idle timeout applies (not yet "
                          "enforced)."),
        },
        "hard_timeout_hours": {
            "type": "number", "min": 1, "default": 8,
            "meta": _help("Absolute limit from launch, fixed at launch; no extension passes it. "
                          "Not yet enforced on the instance."),
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
            "type": "string", "allowed": ["day", "week", "month", "none"], "default": "month",
            "meta": _help("The period the cap applies to (`none`: all time)."),
        },
    },
}
CORE_SCHEMA["clock"] = {
    "mode": {
        "type": "string", "allowed": ["real", "accelerated"], "default": "real",
        "meta": _help("`accelerated` runs cloud time faster (the simulator's profile sets it)."),
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
}
"""The core's sections: ``{section: {key: cerberus rules}}``. Defaults live here."""

RENAMED_KEYS: Mapping[str, str] = MappingProxyType({
    "ssh.key_name": "defaults.ssh_key_name",  # launch needs it with or without fabric_tunnel
})
"""Keys that moved, ``{old "section.key": new}``. A file or profile that holds an old key
still loads (the value is read as the new key, with a warning), ``save_values`` renames
it in the file it writes, and naming an old key (``soong config set``) is an error that
says where it went. An old key that the schema knows again is left alone."""


# -- where a value came from ------------------------------------------------------------


@dataclass(frozen=True)
class Source:
    """Where a value came from: ``kind`` is default, file, env or override."""

    kind: str
    name: str = ""
    """The file's path (file) or the variable's name (env)."""

    def __str__(self) -> str:
        if self.kind == "file":
            return self.name
        if self.kind == "env":
            return f"${self.name}"
        if self.kind == "override":
            return "command line"
        return self.kind

    @property
    def phrase(self) -> str:
        """How a problem's line says where: ``in /path``, ``from $VAR``..."""
        if self.kind == "file":
            return f"in {self.name}"
        if self.kind == "env":
            return f"from ${self.name}"
        if self.kind == "override":
            return "from the command line"
        if self.kind == "given":
            return ""  # the value the user is setting right now: no need to say where
        return "the default"

    @property
    def where(self) -> str:
        return f" ({self.phrase})" if self.phrase else ""


DEFAULT = Source("default")
OVERRIDE = Source("override")
GIVEN = Source("given")


# -- the schema ---------------------------------------------------------------------------


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

    def validator(self) -> Any:
        from cerberus import Validator

        return Validator(self.cerberus_schema(), allow_unknown=False)


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
    sections: dict[str, Mapping[str, Mapping[str, Any]]] = copy.deepcopy(CORE_SCHEMA)
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


# -- renamed keys --------------------------------------------------------------------------


@dataclass(frozen=True)
class Rename:
    """An old key (:data:`RENAMED_KEYS`) found in a file, and what became of its value."""

    old: str
    new: str
    kept: bool
    """True: the value now sits under ``new``. False: the file sets ``new`` too, which
    wins, so the old value was dropped."""


def _renames(schema: ConfigSchema) -> list[tuple[str, str]]:
    """The renames that apply to ``schema``: the new key is known and the old one not."""
    known = set(schema.keys())
    return [(old, new) for old, new in RENAMED_KEYS.items()
            if old not in known and new in known]


def _rename_keys(document: dict[str, Any], schema: ConfigSchema) -> list[Rename]:
    """Move every old key of ``document`` (a file's top level, changed in place) to its
    new name. A section left empty goes too, so a file whose ``ssh`` section held only
    ``key_name`` leaves no ``ssh`` behind to be unknown when fabric_tunnel is off. Where
    a section involved is no mapping, nothing moves: validation reports it (and the old
    key, by its new name)."""
    found: list[Rename] = []
    for old, new in _renames(schema):
        old_section, _, old_name = old.partition(".")
        new_section, _, new_name = new.partition(".")
        values, target = document.get(old_section), document.get(new_section)
        if not isinstance(values, dict) or old_name not in values:
            continue
        if target is not None and not isinstance(target, dict):
            continue
        value = values.pop(old_name)
        if target is None:
            target = document[new_section] = {}
        kept = new_name not in target
        if kept:
            target[new_name] = value
        if not values and document.get(old_section) is values:
            del document[old_section]
        found.append(Rename(old, new, kept))
    return found


_WARNED: set[str] = set()
"""Rename warnings already given by this process: ``soong configure`` reads the
configuration several times, and one line per file and key is enough."""


def _warn_once(message: str) -> None:
    if message not in _WARNED:
        _WARNED.add(message)
        log.warning("%s", message)


def _warn_renamed(found: Iterable[Rename], path: Path) -> None:
    """Reading: say, once per process, that an old key was read under its new name."""
    for rename in found:
        if rename.kept:
            _warn_once(f"config key {rename.old} in {path} is now {rename.new}: read as that "
                       "(rename it in the file)")
        else:
            _warn_once(f"config key {rename.old} in {path} is ignored: it is now "
                       f"{rename.new}, which the file sets too")


def _warn_renamed_in_file(found: Iterable[Rename], path: Path) -> None:
    """Writing: say what became of each old key in the file just written."""
    for rename in found:
        if rename.kept:
            log.warning("config key %s in %s is now %s: renamed in the file", rename.old,
                        path, rename.new)
        else:
            log.warning("config key %s in %s is now %s, which the file sets too: removed "
                        "from the file", rename.old, path, rename.new)


def _env_renames(schema: ConfigSchema, environ: Mapping[str, str],
                 values: dict[str, tuple[Any, Source]]) -> list[str]:
    """``SOONG_SSH_KEY_NAME`` and the like: read as the new key unless that is set too."""
    problems: list[str] = []
    for old, new in _renames(schema):
        var = env_name(old)
        if var not in environ:
            continue
        if new in values:
            _warn_once(f"${var} is ignored: {old} is now {new}, which "
                       f"{values[new][1]} sets")
            continue
        _warn_once(f"${var} is now ${env_name(new)} ({new}): read as that")
        try:
            values[new] = (parse_text(environ[var], schema.rules(new)), Source("env", var))
        except ValueError as exc:
            problems.append(f"{new}: {show_value(environ[var])} {exc} (from ${var})")
    return problems


# -- the result ----------------------------------------------------------------------------


def _freeze(value: Any) -> Any:
    if isinstance(value, Mapping):
        return MappingProxyType({k: _freeze(v) for k, v in value.items()})
    if isinstance(value, (list, tuple)):
        return tuple(_freeze(v) for v in value)
    return value


def _thaw(value: Any) -> Any:
    if isinstance(value, Mapping):
        return {k: _thaw(v) for k, v in value.items()}
    if isinstance(value, tuple):
        return [_thaw(v) for v in value]
    return value


class Config(Mapping[str, Mapping[str, Any]]):
    """The validated configuration, read-only: ``config["defaults"]["lease_hours"]``.

    Sections are read-only mappings and lists are tuples, so a plugin that receives
    ``config`` in a hook cannot change what the next plugin sees.
    ``config.get("defaults.lease_hours")`` reads one key.
    """

    def __init__(self, data: Mapping[str, Mapping[str, Any]], *, path: Path,
                 schema: ConfigSchema, sources: Mapping[str, Source] | None = None,
                 exists: bool = False) -> None:
        self._data: Mapping[str, Mapping[str, Any]] = _freeze(data)
        self.path = path
        """The file this configuration was read from (it may not exist)."""
        self.exists = exists
        """Whether that file existed."""
        self.schema = schema
        self._sources = dict(sources or {})

    def __getitem__(self, section: str) -> Mapping[str, Any]:
        return self._data[section]

    def __iter__(self) -> Iterator[str]:
        return iter(self._data)

    def __len__(self) -> int:
        return len(self._data)

    def get(self, key: str, default: Any = None) -> Any:  # type: ignore[override]
        """A section (``"budget"``) or one key (``"budget.max_dollars"``)."""
        section, dot, name = key.partition(".")
        if section not in self._data:
            return default
        if not dot:
            return self._data[section]
        return self._data[section].get(name, default)

    def source_of(self, key: str) -> Source:
        """Where ``"section.key"`` came from; unknown keys raise ConfigError."""
        self.schema.rules(key)
        return self._sources.get(key, DEFAULT)

    def is_secret(self, key: str) -> bool:
        return self.schema.is_secret(key)

    def to_dict(self, *, mask_secrets: bool = False) -> dict[str, dict[str, Any]]:
        """A plain copy (dicts and lists) for YAML or JSON; optionally with secrets masked."""
        data: dict[str, dict[str, Any]] = _thaw(self._data)
        if mask_secrets:
            for section, values in data.items():
                for key in values:
                    if self.schema.is_secret(f"{section}.{key}"):
                        values[key] = mask_secret(values[key])
        return data

    def __repr__(self) -> str:
        return f"Config(path={str(self.path)!r}, {self.to_dict(mask_secrets=True)!r})"


def mask_secret(value: Any) -> Any:
    """What to display of a secret: ``None`` stays ``None`` (unset is no secret), long
    strings show their last 4 characters (enough to tell two keys apart), anything
    else is ``********``."""
    if value is None or value == "":
        return value
    if isinstance(value, str) and len(value) >= 16:
        return "****" + value[-4:]
    return SECRET_MASK


# -- paths ---------------------------------------------------------------------------------


def default_config_path(environ: Mapping[str, str] | None = None) -> Path:
    """``$XDG_CONFIG_HOME/soong/config.yaml``, ``~/.config/soong/config.yaml`` without it.

    A relative ``XDG_CONFIG_HOME`` is ignored, as the XDG specification says.
    """
    return soong_dir("config", environ) / "config.yaml"


PROFILE_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]*$")


def profile_path(name: str, environ: Mapping[str, str] | None = None) -> Path:
    """``$XDG_CONFIG_HOME/soong/profiles/NAME.yaml``: a profile layered by ``--profile NAME``.

    Profiles hold a few keys that switch soong to another cloud or account at once
    (``--sim`` is ``--profile sim``, which ``soong sim up`` writes).
    """
    if not PROFILE_NAME.match(name):
        raise ConfigError(f"invalid profile name {name!r}",
                          hints=["use letters, digits, '-', '_' and '.'"])
    return default_config_path(environ).parent / "profiles" / f"{name}.yaml"


def _no_profile(name: str, path: Path) -> ConfigError:
    return ConfigError(f"no profile {name!r}: {path} does not exist",
                       hints=[f"profiles are YAML files in {path.parent}; "
                              "`soong sim up` writes the 'sim' profile"])


def _profile_values(name: str, schema: ConfigSchema, environ: Mapping[str, str] | None,
                    partial_plugins: bool = False) -> dict[str, tuple[Any, Source]]:
    """The values of profile ``name``, read as the main file is: old keys under their new
    names, and (``partial_plugins``) the sections of plugins not loaded set aside with a
    warning. An unknown key, or an unknown section with every plugin loaded, is an error
    naming the profile's file."""
    path = profile_path(name, environ)
    if not path.exists():
        raise _no_profile(name, path)
    document = read_config_file(path, explicit=True) or {}
    _warn_renamed(_rename_keys(document, schema), path)
    _set_aside_unknown_sections(document, schema, partial_plugins, path)
    values, problems = _profile_document_values(name, document, schema, path)
    raise_problems(problems)
    return values


def _profile_document_values(name: str, document: Mapping[str, Any], schema: ConfigSchema,
                             path: Path) -> tuple[dict[str, tuple[Any, Source]], list[str]]:
    """``{"section.key": (value, source)}`` of a profile's content, and its problems (an
    unknown section or key, a section that is no mapping), each naming ``path``. An
    empty section (``lambda:``) sets nothing, as in the main file."""
    source = Source("file", str(path))
    values: dict[str, tuple[Any, Source]] = {}
    problems: list[str] = []
    for section, keys in document.items():
        if keys is None:
            continue
        if section not in schema.sections:
            first = next(iter(keys), None) if isinstance(keys, Mapping) else None
            named = str(section) if first is None else f"{section}.{first}"
            problems.append(f"{unknown_key_message(schema, named)} (in {path})")
        elif not isinstance(keys, Mapping):
            problems.append(f"profile {name!r}: section {section} must be a mapping "
                            f"(in {path})")
        else:
            for key, value in keys.items():
                full = f"{section}.{key}"
                if key in schema.section(section):
                    values[full] = (value, source)
                else:
                    problems.append(f"{unknown_key_message(schema, full)} (in {path})")
    return values, problems


def config_path(explicit: str | os.PathLike[str] | None = None,
                environ: Mapping[str, str] | None = None) -> Path:
    """The file in use: ``explicit`` (``--config``, ``~`` expanded) or the default."""
    if explicit is not None and str(explicit):
        return Path(os.path.expanduser(os.fspath(explicit)))
    return default_config_path(environ)


# -- reading the file ------------------------------------------------------------------


def read_config_file(path: Path, *, explicit: bool = False) -> dict[str, Any] | None:
    """The file's top-level mapping; ``None`` when it does not exist (and may not).

    Every way a file can be wrong (missing while named explicitly, a directory, not
    UTF-8, malformed YAML, a top level that is no mapping) is one ConfigError line
    naming the file; never a traceback. A file others can read gets a warning.
    """
    try:
        info = path.stat()
    except FileNotFoundError:
        if explicit:
            import shlex

            raise ConfigError(f"config file {path} does not exist",
                              hints=[f"create it with `soong --config "
                                     f"{shlex.quote(str(path))} configure`, or drop "
                                     f"--config to use {default_config_path()}"]) from None
        return None
    except OSError as exc:
        raise ConfigError(f"cannot read config file {path}: {exc.strerror or exc}") from None
    if stat.S_ISDIR(info.st_mode):
        raise ConfigError(f"config file {path} is a directory, not a file")
    if not stat.S_ISREG(info.st_mode):
        raise ConfigError(f"config file {path} is not a regular file")
    _warn_if_exposed(path, info.st_mode)
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise ConfigError(f"cannot read config file {path}: {exc.strerror or exc}") from None
    return _parse_yaml(path, _decode(path, data))


def _warn_if_exposed(path: Path, mode: int) -> None:
    if mode & 0o077:
        log.warning("config file %s has mode %04o: others may read its secrets; "
                    "run `chmod 600 %s`", path, stat.S_IMODE(mode), path)


def _decode(path: Path, data: bytes) -> str:
    try:
        return data.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        raise ConfigError(f"config file {path} is not UTF-8 text (byte 0x{data[exc.start]:02x} "
                          f"at offset {exc.start})") from None


def _parse_yaml(path: Path, text: str) -> dict[str, Any] | None:
    import yaml

    try:
        document = yaml.load(text, Loader=_strict_loader())  # noqa: S506 (a SafeLoader)
    except yaml.reader.ReaderError as exc:
        line, column = _line_column(text, exc.position)
        raise ConfigError(f"config file {path}: line {line}, column {column}: not text "
                          f"(character #x{exc.character:04x} is not allowed in YAML)"
                          ) from None
    except yaml.MarkedYAMLError as exc:
        raise ConfigError(_yaml_problem(path, exc)) from None
    except yaml.YAMLError as exc:
        raise ConfigError(f"config file {path}: malformed YAML: {' '.join(str(exc).split())}"
                          ) from None
    if document is None:
        return {}
    if not isinstance(document, dict):
        kind = {list: "a list", str: "a string"}.get(type(document), type(document).__name__)
        raise ConfigError(f"config file {path}: the top level must be a mapping of sections "
                          f"(like `defaults:`), not {kind}")
    return document


def _yaml_problem(path: Path, exc: Any) -> str:
    mark = exc.problem_mark or exc.context_mark
    problem = " ".join(str(exc.problem or exc.context or "malformed YAML").split())
    if mark is None:
        return f"config file {path}: malformed YAML: {problem}"
    return (f"config file {path}: malformed YAML at line {mark.line + 1}, "
            f"column {mark.column + 1}: {problem}")


def _line_column(text: str, position: int) -> tuple[int, int]:
    before = text[:position]
    return before.count("\n") + 1, position - (before.rfind("\n") + 1) + 1


@functools.lru_cache(maxsize=1)
def _strict_loader() -> type:
    """A SafeLoader that refuses duplicate keys: YAML would silently keep the last one."""
    import yaml

    class StrictLoader(yaml.SafeLoader):
        def construct_mapping(self, node: Any, deep: bool = False) -> Any:
            seen: dict[Any, int] = {}
            for key_node, _ in node.value:
                if key_node.tag == "tag:yaml.org,2002:merge":
                    continue
                key = self.construct_object(key_node, deep=deep)
                try:
                    first = seen.setdefault(key, key_node.start_mark.line + 1)
                except TypeError:  # unhashable: the base class reports it
                    continue
                if first != key_node.start_mark.line + 1:
                    raise yaml.constructor.ConstructorError(
                        None, None, f"duplicate key {key!r} (first set at line {first})",
                        key_node.start_mark)
            return super().construct_mapping(node, deep=deep)

    return StrictLoader


# -- text to values ------------------------------------------------------------------------

_TRUE = {"true", "yes", "on", "1"}
_FALSE = {"false", "no", "off", "0"}
_NULL = {"", "null", "~"}


def _parse_integer(text: str) -> int:
    return int(text.strip())


def _parse_number(text: str) -> int | float:
    text = text.strip()
    try:
        return int(text)
    except ValueError:
        value = float(text)
    if not math.isfinite(value):
        raise ValueError(text)
    return value


def _parse_boolean(text: str) -> bool:
    word = text.strip().lower()
    if word in _TRUE:
        return True
    if word in _FALSE:
        return False
    raise ValueError(text)


def _parse_string(text: str) -> str:
    return text


def _parse_yaml_value(text: str) -> Any:
    import yaml

    try:
        return yaml.safe_load(text)
    except yaml.YAMLError:
        raise ValueError(text) from None


_PARSERS: dict[str, Callable[[str], Any]] = {
    "integer": _parse_integer,
    "number": _parse_number,
    "float": _parse_number,
    "boolean": _parse_boolean,
    "string": _parse_string,
}

_EXPECTED = {
    "integer": "an integer", "number": "a number", "float": "a number",
    "boolean": "true or false", "string": "a string", "list": "a list",
    "dict": "a mapping", "date": "a date", "datetime": "a date and time",
}


def _types(rules: Mapping[str, Any]) -> list[str]:
    kind = rules.get("type")
    if kind is None:
        return []
    return [kind] if isinstance(kind, str) else list(kind)


def expected(rules: Mapping[str, Any]) -> str:
    """What a key takes, in words: "a number", "an integer or a string"."""
    words = [_EXPECTED.get(t, t) for t in _types(rules)]
    return " or ".join(words) or "a value"


def parse_text(text: str, rules: Mapping[str, Any]) -> Any:
    """Turn command-line or environment text into a value of the key's schema type.

    Integers, numbers and booleans (true/false, yes/no, on/off, 1/0) are parsed; a
    list is comma-separated; ``null`` (or nothing) is ``None`` where the key is
    nullable; types without a parser are read as YAML. Raises ``ValueError`` whose
    message says what was expected.
    """
    if rules.get("nullable") and text.strip().lower() in _NULL:
        return None
    types = _types(rules)
    if not types:
        return _parse_yaml_value(text)
    for kind in types:
        try:
            return _parse_as(kind, text, rules)
        except ValueError:
            continue
    raise ValueError(f"is not {expected(rules)}")


def _parse_as(kind: str, text: str, rules: Mapping[str, Any]) -> Any:
    if kind == "list":
        items = [item.strip() for item in text.split(",") if item.strip()]
        item_rules = rules.get("schema")
        if isinstance(item_rules, Mapping) and _types(item_rules):
            return [parse_text(item, item_rules) for item in items]
        return items
    parser = _PARSERS.get(kind)
    if parser is not None:
        return parser(text)
    value = _parse_yaml_value(text)
    if kind == "dict" and not isinstance(value, dict):
        raise ValueError(text)
    return value


# -- validation ------------------------------------------------------------------------


def show_value(value: Any, *, secret: bool = False) -> str:
    """A value as a problem line shows it: JSON-like, short, and masked if secret."""
    if secret:
        return json.dumps(mask_secret(value))
    try:
        text = json.dumps(value, default=str, ensure_ascii=False)
    except (TypeError, ValueError):
        text = repr(value)
    return text if len(text) <= 60 else text[:57] + "..."


def _display_path(path: Iterable[Any]) -> str:
    text = ""
    for part in path:
        if isinstance(part, int) and text:
            text += f"[{part}]"
        else:
            text += f".{part}" if text else str(part)
    return text


def unknown_key_message(schema: ConfigSchema, key: str) -> str:
    """``unknown key budget.max_dolars (did you mean budget.max_dollars?)``; for a renamed
    key, ``config key ssh.key_name is now defaults.ssh_key_name: use that name``."""
    renamed = dict(_renames(schema)).get(key)
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


def _leaf_errors(errors: Iterable[Any]) -> Iterator[Any]:
    for error in errors:
        if error.is_group_error and error.child_errors:
            yield from _leaf_errors(error.child_errors)
        else:
            yield error


def _describe_error(error: Any, schema: ConfigSchema, where: str) -> str:
    from cerberus import errors as codes

    path = tuple(error.document_path)
    key = _display_path(path)
    if error.code == codes.UNKNOWN_FIELD.code:
        return unknown_key_message(schema, ".".join(str(p) for p in path[:2])) + where
    secret = len(path) >= 2 and schema.is_secret(f"{path[0]}.{path[1]}")
    value = show_value(error.value, secret=secret)
    rule, constraint = error.rule, error.constraint
    if rule == "type":
        what = expected({"type": constraint})
        return f"{key}: {value} is not {what}{where}"
    if rule == "min":
        return f"{key}: {value} is below the minimum {constraint}{where}"
    if rule == "max":
        return f"{key}: {value} is above the maximum {constraint}{where}"
    if rule == "allowed":
        return f"{key}: {value} is not one of {', '.join(map(str, constraint))}{where}"
    if rule == "nullable":
        return f"{key}: null is not allowed{where}"
    if rule == "required":
        return f"{key}: is required{where}"
    if rule == "regex":
        return f"{key}: {value} does not match {constraint}{where}"
    return f"{key}: {value}: {_cerberus_message(error)}{where}"


def _cerberus_message(error: Any) -> str:
    from cerberus.errors import BasicErrorHandler

    template = BasicErrorHandler.messages.get(error.code, "is invalid ({rule})")
    try:
        return template.format(*error.info, constraint=error.constraint, field=error.field,
                               value=error.value, rule=error.rule)
    except (IndexError, KeyError):
        return f"breaks rule {error.rule}"


def _check_lease_within_hard_timeout(document: Mapping[str, Any]
                                     ) -> Iterator[tuple[tuple[str, ...], str]]:
    defaults = document.get("defaults")
    if not isinstance(defaults, Mapping):
        return
    lease, hard = defaults.get("lease_hours"), defaults.get("hard_timeout_hours")
    if _is_number(lease) and _is_number(hard) and lease > hard:
        yield (("defaults.lease_hours", "defaults.hard_timeout_hours"),
               f"defaults.lease_hours: {show_value(lease)} is more than "
               f"defaults.hard_timeout_hours ({show_value(hard)}); a lease cannot outlast "
               "the hard timeout")


def _check_finite(document: Mapping[str, Any]) -> Iterator[tuple[tuple[str, ...], str]]:
    """YAML reads ``.nan`` and ``.inf`` as floats, and NaN passes every min/max rule."""
    for section, values in document.items():
        if not isinstance(values, Mapping):
            continue
        for key, value in values.items():
            items = value if isinstance(value, list) else [value]
            if any(isinstance(item, float) and not math.isfinite(item) for item in items):
                yield ((f"{section}.{key}",),
                       f"{section}.{key}: {show_value(value)} is not a finite number")


def _is_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


CrossCheck = Callable[[Mapping[str, Any]], Iterator[tuple[tuple[str, ...], str]]]

CROSS_CHECKS: tuple[CrossCheck, ...] = (_check_finite, _check_lease_within_hard_timeout)
"""Checks across keys, run on the normalised document: each yields the keys involved
(to say where their values came from) and the problem."""


def validate(raw: Mapping[str, Any], schema: ConfigSchema,
             sources: Mapping[str, Source] | None = None) -> tuple[dict[str, Any], list[str]]:
    """Normalise (defaults filled in) and validate ``raw``.

    Returns the normalised document, ordered as the schema is, and the problems, one
    line each, naming the key, the value, what is expected and where the value came
    from (``sources``, by ``"section"`` and ``"section.key"``; absent means default).
    """
    sources = sources or {}

    def where(keys: Iterable[str]) -> str:
        phrases = dict.fromkeys(sources.get(key, DEFAULT).phrase for key in keys)
        if len(phrases) > 1:  # name what the user set, not the defaults around it
            phrases.pop(DEFAULT.phrase, None)
        shown = [phrase for phrase in phrases if phrase]
        return f" ({'; '.join(shown)})" if shown else ""

    validator = schema.validator()
    validator.validate(dict(raw))
    problems = [_describe_error(error, schema, where([_source_key(error.document_path)]))
                for error in _leaf_errors(validator._errors)]
    document = _ordered(validator.document or {}, schema)
    for check in CROSS_CHECKS:
        for keys, problem in check(document):
            problems.append(problem + where(keys))
    return document, problems


def _source_key(path: Iterable[Any]) -> str:
    return ".".join(str(part) for part in list(path)[:2])


def _ordered(document: Mapping[str, Any], schema: ConfigSchema) -> dict[str, Any]:
    """Sections and keys in schema order (core first), whatever order the file had."""
    ordered: dict[str, Any] = {}
    for section in [*schema.sections, *document]:
        if section in document and section not in ordered:
            values = document[section]
            if isinstance(values, Mapping) and section in schema.sections:
                keys = [*schema.section(section), *values]
                values = {key: values[key] for key in dict.fromkeys(keys) if key in values}
            ordered[section] = values
    return ordered


def raise_problems(problems: list[str]) -> None:
    """Raise one ConfigError: the first problem as message, the others as hints."""
    if problems:
        raise ConfigError(problems[0], hints=problems[1:])


# -- layering ------------------------------------------------------------------------------


def _layer_env(schema: ConfigSchema, environ: Mapping[str, str]
               ) -> tuple[dict[str, tuple[Any, Source]], list[str]]:
    """Values from the environment by key; a known variable with a bad value is a problem."""
    values: dict[str, tuple[Any, Source]] = {}
    problems: list[str] = []
    for var, key in schema.env_names().items():
        if var not in environ:
            continue
        text = environ[var]
        try:
            values[key] = (parse_text(text, schema.rules(key)), Source("env", var))
        except ValueError as exc:
            shown = show_value(text, secret=schema.is_secret(key))
            problems.append(f"{key}: {shown} {exc} (from ${var})")
    problems += _env_renames(schema, environ, values)
    return values, problems


def _layer_overrides(schema: ConfigSchema, overrides: Mapping[str, Any]
                     ) -> tuple[dict[str, tuple[Any, Source]], list[str]]:
    """Per-run values; ``None`` means "flag not given"; text is parsed by the key's type."""
    values: dict[str, tuple[Any, Source]] = {}
    problems: list[str] = []
    for key, value in overrides.items():
        if value is None:
            continue
        rules = schema.rules(key)
        if isinstance(value, str) and "string" not in _types(rules):
            try:
                value = parse_text(value, rules)
            except ValueError as exc:
                problems.append(f"{key}: {show_value(value, secret=schema.is_secret(key))} "
                                f"{exc} (from the command line)")
                continue
        values[key] = (value, OVERRIDE)
    return values, problems


def _apply(raw: dict[str, Any], values: Mapping[str, tuple[Any, Source]],
           sources: dict[str, Source]) -> None:
    for key, (value, source) in values.items():
        section, _, name = key.partition(".")
        current = raw.get(section)
        if current is None:
            current = raw[section] = {}
        if not isinstance(current, dict):
            continue  # the section itself is wrong; validation reports it
        current[name] = value
        sources[key] = source


def _file_sources(raw: Mapping[str, Any], source: Source) -> dict[str, Source]:
    sources: dict[str, Source] = {}
    for section, values in raw.items():
        sources[str(section)] = source
        if isinstance(values, Mapping):
            for key in values:
                sources[f"{section}.{key}"] = source
    return sources


def _set_aside_unknown_sections(raw: dict[str, Any], schema: ConfigSchema,
                                partial_plugins: bool, path: Path) -> None:
    """With plugins missing, a section nobody knows may belong to one: warn, keep it out
    of validation, and leave it in the file. With every plugin loaded it is an error."""
    if not partial_plugins:
        return
    for section in [s for s in raw if s not in schema.sections]:
        log.warning("config section %s in %s is unknown to the loaded plugins: ignored",
                    section, path)
        del raw[section]


def _partial(plugins: Plugins | None) -> bool:
    return plugins is not None and any(p.status != "loaded" for p in plugins.info())


def load_config(path: str | os.PathLike[str] | None = None, *, plugins: Plugins | None = None,
                environ: Mapping[str, str] | None = None,
                overrides: Mapping[str, Any] | None = None,
                partial_plugins: bool = False, profile: str | None = None,
                missing_ok: bool = False) -> Config:
    """Read, layer and validate the configuration.

    Layers, lowest first: schema defaults, the file, the environment, the profile,
    per-run overrides. A profile sits above the environment so that ``--sim`` reaches
    the simulator even when ``LAMBDA_API_KEY`` holds a real key. Keys of
    :data:`RENAMED_KEYS` in the file or the profile are read under their new names, with
    a warning naming the file.

    :param path: the file (``--config``); it must then exist. ``None``: the default
        path, where a missing file means defaults.
    :param plugins: whose ``soong_config_schema`` sections to include; ``None``: the
        core's sections only.
    :param environ: the environment to read overrides from (default ``os.environ``).
    :param overrides: per-run values ``{"section.key": value}`` (command-line flags);
        ``None`` values are ignored, strings parsed by the key's type. Never saved.
    :param partial_plugins: some plugins were not loaded on purpose (``--no-plugins``):
        unknown sections, in the file and in the profile, are then warned about rather
        than errors. Disabled or failed plugins imply it.
    :param profile: the name of a profile to layer (``--profile``, ``--sim``); it must exist.
    :param missing_ok: a ``path`` that does not exist means defaults, as the default path
        does (``soong configure --config NEW.yaml`` is about to create it).
    :raises ConfigError: every problem, one line each (the first as message).
    """
    file = config_path(path, environ)
    schema = build_schema(plugins)
    content = read_config_file(file, explicit=_explicit(path) and not missing_ok)
    raw = copy.deepcopy(content) if content is not None else {}
    _warn_renamed(_rename_keys(raw, schema), file)
    file_source = Source("file", str(file))
    sources = _file_sources(raw, file_source)
    partial = partial_plugins or _partial(plugins)
    _set_aside_unknown_sections(raw, schema, partial, file)
    env_values, problems = _layer_env(schema, os.environ if environ is None else environ)
    override_values, override_problems = _layer_overrides(schema, overrides or {})
    _apply(raw, env_values, sources)
    if profile is not None:
        _apply(raw, _profile_values(profile, schema, environ, partial), sources)
    _apply(raw, override_values, sources)
    document, invalid = validate(raw, schema, sources)
    raise_problems(problems + override_problems + invalid)
    return Config(document, path=file, schema=schema, sources=sources,
                  exists=content is not None)


def _explicit(path: str | os.PathLike[str] | None) -> bool:
    return path is not None and bool(str(path))


def make_config(values: Mapping[str, Any] | None = None, *,
                plugins: Plugins | None = None) -> Config:
    """A validated Config from the defaults and ``values`` alone (no file, no environment):
    for embedding programs and tests. ``values`` are ``{"section.key": value}``."""
    schema = build_schema(plugins)
    override_values, problems = _layer_overrides(schema, values or {})
    raw: dict[str, Any] = {}
    sources: dict[str, Source] = {}
    _apply(raw, override_values, sources)
    document, invalid = validate(raw, schema, sources)
    raise_problems(problems + invalid)
    return Config(document, path=default_config_path({}), schema=schema, sources=sources)


# -- writing -------------------------------------------------------------------------------


def write_config_file(path: Path, document: Mapping[str, Any]) -> None:
    """Write ``document`` as YAML atomically (temp file + rename), mode 0600.

    The parent directory is created 0700 when missing. A symlinked config file stays
    a symlink: its target is replaced. Comments in the old file are not kept.
    """
    import yaml

    target = Path(os.path.realpath(path))
    text = yaml.safe_dump(_plain(document), sort_keys=False, default_flow_style=False,
                          allow_unicode=True)
    try:
        write_private(target, text)
    except OSError as exc:
        raise ConfigError(f"cannot write {target}: {exc.strerror or exc}") from None


def _plain(value: Any) -> Any:
    """Mappings to dicts and tuples to lists, so safe_dump writes plain YAML."""
    if isinstance(value, Mapping):
        return {k: _plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    return value


def save_values(path: str | os.PathLike[str] | None, values: Mapping[str, Any], *,
                plugins: Plugins | None = None, partial_plugins: bool = False) -> Config:
    """Set ``{"section.key": value}`` in the file, keeping every other key in it.

    The resulting file (with defaults, without the environment) is validated before
    anything is written; on any problem the file is left untouched. Returns the
    configuration the file now holds. The file is created if missing. Old keys
    (:data:`RENAMED_KEYS`) in the file are renamed in what is written, with a warning.
    """
    file = config_path(path)
    schema = build_schema(plugins)
    for key in values:
        schema.rules(key)
    content = read_config_file(file) or {}
    document = copy.deepcopy(content)
    renamed = _rename_keys(document, schema)
    file_source = Source("file", str(file))
    _set_keys(document, values, file)
    raw = copy.deepcopy(document)
    _set_aside_unknown_sections(raw, schema, partial_plugins or _partial(plugins), file)
    sources = _file_sources(raw, file_source)
    sources.update(dict.fromkeys(values, GIVEN))
    normalised, problems = validate(raw, schema, sources)
    raise_problems(problems)
    write_config_file(file, document)
    _warn_renamed_in_file(renamed, file)
    return Config(normalised, path=file, schema=schema, exists=True,
                  sources=_file_sources(document, file_source))


def _set_keys(document: dict[str, Any], values: Mapping[str, Any], file: Path) -> None:
    """Put ``{"section.key": value}`` into a file's content (changed in place)."""
    for key, value in values.items():
        section, _, name = key.partition(".")
        if document.get(section) is None:
            document[section] = {}
        if not isinstance(document[section], dict):
            raise ConfigError(f"{section}: {show_value(document[section])} is not a mapping "
                              f"(in {file})")
        document[section][name] = value


def set_value(path: str | os.PathLike[str] | None, key: str, text: str, *,
              plugins: Plugins | None = None, partial_plugins: bool = False,
              profile: str | None = None, keep: Iterable[str] | None = ()) -> Config:
    """``soong config set KEY VALUE``: parse ``text`` by the key's type, validate, write.

    With ``profile`` the key is written in that profile (:func:`save_profile_values`,
    with ``keep``), not in the file ``path``.
    """
    schema = build_schema(plugins)
    rules = schema.rules(key)
    try:
        value = parse_text(text, rules)
    except ValueError as exc:
        raise ConfigError(f"{key}: {show_value(text, secret=schema.is_secret(key))} {exc}"
                          ) from None
    if profile is not None:
        return save_profile_values(profile, {key: value}, config=path, keep=keep,
                                   plugins=plugins, partial_plugins=partial_plugins)
    return save_values(path, {key: value}, plugins=plugins, partial_plugins=partial_plugins)


# -- writing a profile -------------------------------------------------------------------

PROFILE_SECTIONS: tuple[str, ...] = ("clock",)
"""Core sections a profile keeps whatever they hold: the clock of its cloud."""


def profile_keys_of(provider: Provider | type[Provider]) -> set[str]:
    """The keys that make a profile point at ``provider``'s cloud and account: its
    ``profile_keys`` and its ``credential_key``. A write to a profile keeps them."""
    keys = set(provider.profile_keys)
    if provider.credential_key:
        keys.add(provider.credential_key)
    return keys


def save_profile_values(name: str, values: Mapping[str, Any], *,
                        config: str | os.PathLike[str] | None = None,
                        keep: Iterable[str] | None = (), plugins: Plugins | None = None,
                        partial_plugins: bool = False, missing_ok: bool = False) -> Config:
    """Set ``{"section.key": value}`` in profile ``name`` (it must exist), and drop from it
    what only copies the main file.

    A profile holds what differs from the main file (``config``, the ``--config`` path or
    the default): a key whose value in the profile equals what the main file or the
    defaults give there would outrank a later change of the main file, so it is removed,
    with one warning naming the keys and the profile's file. Never removed: the keys of
    ``values``, those of ``keep`` (the provider's :func:`profile_keys_of`), and the
    sections of :data:`PROFILE_SECTIONS`. ``keep=None`` (the provider is unknown)
    removes nothing.

    The main file with the new profile over it (defaults, no environment) is validated
    before anything is written; on any problem the profile is left untouched. Returns
    that configuration, whose ``path`` is the profile's file. ``missing_ok``: a
    ``config`` path that does not exist means defaults.
    """
    file = profile_path(name)
    schema = build_schema(plugins)
    for key in values:
        schema.rules(key)
    if not file.exists():
        raise _no_profile(name, file)
    document = copy.deepcopy(read_config_file(file, explicit=True) or {})
    renamed = _rename_keys(document, schema)
    partial = partial_plugins or _partial(plugins)
    main = config_path(config)
    main_raw = copy.deepcopy(read_config_file(main, explicit=_explicit(config) and not missing_ok)
                             or {})
    _rename_keys(main_raw, schema)  # compared by new names (loading it warns about old ones)
    _set_aside_unknown_sections(main_raw, schema, partial, main)
    sources = _file_sources(main_raw, Source("file", str(main)))
    base, _ = validate(copy.deepcopy(main_raw), schema, sources)  # problems: reported below
    removed: list[str] = []
    if keep is not None:
        protected = {*keep, *values}
        protected.update(f"{section}.{key}" for section in PROFILE_SECTIONS
                         for key in schema.section(section))
        removed = _drop_copies(document, base, schema, protected)
    _set_keys(document, values, file)
    checked = copy.deepcopy(document)
    _set_aside_unknown_sections(checked, schema, partial, file)
    profile_values, problems = _profile_document_values(name, checked, schema, file)
    layered = copy.deepcopy(main_raw)
    _apply(layered, profile_values, sources)
    sources.update(dict.fromkeys(values, GIVEN))
    normalised, invalid = validate(layered, schema, sources)
    raise_problems(problems + invalid)
    if values or removed or renamed:  # nothing to change: the file is not touched
        write_config_file(file, document)
    _warn_renamed_in_file(renamed, file)
    if removed:
        log.warning("removed %s from %s: the main file (%s) or the defaults give the same, "
                    "and a copy in the profile would outrank a later change there",
                    ", ".join(removed), file, main)
    for key in values:
        sources[key] = Source("file", str(file))
    return Config(normalised, path=file, schema=schema, sources=sources, exists=True)


def _drop_copies(document: dict[str, Any], base: Mapping[str, Any], schema: ConfigSchema,
                 protected: set[str]) -> list[str]:
    """Remove from ``document`` (a profile's content, changed in place) each known key,
    not ``protected``, whose value equals ``base``'s (the main file's, normalised); a
    section this leaves empty goes too. Returns the keys removed."""
    removed: list[str] = []
    for section in list(document):
        values, given = document[section], base.get(section)
        if (not isinstance(values, dict) or section not in schema.sections
                or not isinstance(given, Mapping)):
            continue
        for key in list(values):
            full = f"{section}.{key}"
            if full in protected or key not in schema.section(section) or key not in given:
                continue
            if same_value(values[key], given[key]):
                del values[key]
                removed.append(full)
        if not values and any(k.startswith(f"{section}.") for k in removed):
            del document[section]
    return removed


def same_value(a: Any, b: Any) -> bool:
    """Whether two config values are the same: lists and tuples alike, ``4 == 4.0``,
    but ``true`` is not ``1``."""
    a, b = _plain(a), _plain(b)
    if isinstance(a, list) and isinstance(b, list):
        return len(a) == len(b) and all(same_value(x, y) for x, y in zip(a, b))
    if isinstance(a, dict) and isinstance(b, dict):
        return a.keys() == b.keys() and all(same_value(a[k], b[k]) for k in a)
    if isinstance(a, bool) or isinstance(b, bool):
        return isinstance(a, bool) and isinstance(b, bool) and a == b
    if isinstance(a, str) and isinstance(b, str) and "~" in (a[:1], b[:1]):
        return os.path.expanduser(a) == os.path.expanduser(b)  # ~/.ssh/x is $HOME/.ssh/x
    return bool(a == b)


def profile_sources(config: Config, name: str) -> list[str]:
    """The keys of ``config`` whose value comes from profile ``name``, in schema order."""
    path = str(profile_path(name))
    return [key for key in config.schema.keys()
            if config.source_of(key) == Source("file", path)]


def profiles_setting(key: str, environ: Mapping[str, str] | None = None) -> list[str]:
    """The names of the profiles whose file sets ``key`` (unreadable ones are skipped):
    under ``--profile NAME`` such a value outranks the main file's."""
    folder = default_config_path(environ).parent / "profiles"
    section, _, name = key.partition(".")
    found: list[str] = []
    for path in sorted(folder.glob("*.yaml")) if folder.is_dir() else []:
        if not PROFILE_NAME.match(path.stem):
            continue
        try:
            document = read_config_file(path) or {}
        except ConfigError:
            continue
        values = document.get(section)
        if isinstance(values, Mapping) and name in values:
            found.append(path.stem)
    return found
