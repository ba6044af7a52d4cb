"""The layers a value can come from, and where each value came from (its :class:`Source`).

Lowest precedence first: the schema's defaults; the file; the environment
(``SOONG_<SECTION>_<KEY>`` and the aliases a schema declares in ``meta: {env: NAME}``);
a profile; per-run overrides. The file is a document (a mapping of sections, checked by
validation as it stands); every other layer is a :class:`Layer` of values by
``"section.key"``, each with its source, and the problems met reading them. Keys of
:data:`~soong_core.config.schema.RENAMED_KEYS` are read under their new names here.
"""

from __future__ import annotations

import copy
import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Iterable, Mapping

from soong_core.config.coerce import parse_text, value_types
from soong_core.config.messages import raise_problems, show_value
from soong_core.config.paths import no_profile, profile_path
from soong_core.config.schema import ConfigSchema, env_name, unknown_key_message
from soong_core.config.yaml_file import read_config_file

if TYPE_CHECKING:
    from soong_core.plugins import Plugins

log = logging.getLogger("soong.config")


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


@dataclass
class Layer:
    """Values by ``"section.key"``, each with its source, and the problems met reading
    them (one line each; validation of the values comes later, in the pipeline)."""

    values: dict[str, tuple[Any, Source]] = field(default_factory=dict)
    problems: list[str] = field(default_factory=list)


# -- renamed keys --------------------------------------------------------------------------


@dataclass(frozen=True)
class Rename:
    """An old key (:data:`RENAMED_KEYS`) found in a file, and what became of its value."""

    old: str
    new: str
    kept: bool
    """True: the value now sits under ``new``. False: the file sets ``new`` too, which
    wins, so the old value was dropped."""


def rename_keys(document: dict[str, Any], schema: ConfigSchema) -> list[Rename]:
    """Move every old key of ``document`` (a file's top level, changed in place) to its
    new name. A section left empty goes too, so a file whose ``ssh`` section held only
    ``key_name`` leaves no ``ssh`` behind to be unknown when fabric_tunnel is off. Where
    a section involved is no mapping, nothing moves: validation reports it (and the old
    key, if its section is unknown)."""
    found: list[Rename] = []
    for old, new in schema.renames():
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


def warn_renamed(found: Iterable[Rename], path: Path) -> None:
    """Reading: say, once per process, that an old key was read under its new name."""
    for rename in found:
        if rename.kept:
            _warn_once(f"config key {rename.old} in {path} is now {rename.new}: read as that "
                       "(rename it in the file)")
        else:
            _warn_once(f"config key {rename.old} in {path} is ignored: it is now "
                       f"{rename.new}, which the file sets too")


def warn_renamed_in_file(found: Iterable[Rename], path: Path) -> None:
    """Writing: say what became of each old key in the file just written."""
    for rename in found:
        if rename.kept:
            log.warning("config key %s in %s is now %s: renamed in the file", rename.old,
                        path, rename.new)
        else:
            log.warning("config key %s in %s is now %s, which the file sets too: removed "
                        "from the file", rename.old, path, rename.new)


# -- a file ----------------------------------------------------------------------------------


@dataclass
class FileLayer:
    """A config file (the main one or a profile) as read, old keys renamed."""

    path: Path
    exists: bool
    document: dict[str, Any]
    """Its top level with old keys under their new names: what a write starts from."""
    renames: list[Rename]

    @property
    def source(self) -> Source:
        return Source("file", str(self.path))

    def warn_renamed(self) -> None:
        warn_renamed(self.renames, self.path)

    def checked(self, schema: ConfigSchema, partial_plugins: bool) -> dict[str, Any]:
        """A copy of :attr:`document` for validation: with ``partial_plugins``, the
        sections ``schema`` does not know are set aside (with a warning)."""
        raw = copy.deepcopy(self.document)
        set_aside_unknown_sections(raw, schema, partial_plugins, self.path)
        return raw


def read_file_layer(path: Path, schema: ConfigSchema, *, explicit: bool) -> FileLayer:
    """Read ``path`` (:func:`read_config_file`; ``explicit``: it must exist) and rename
    its old keys, without a warning yet: reading and writing say different things."""
    content = read_config_file(path, explicit=explicit)
    document = copy.deepcopy(content) if content is not None else {}
    renames = rename_keys(document, schema)
    return FileLayer(path, content is not None, document, renames)


def set_aside_unknown_sections(raw: dict[str, Any], schema: ConfigSchema,
                               partial_plugins: bool, path: Path) -> None:
    """With plugins missing, a section nobody knows may belong to one: warn, keep it out
    of validation, and leave it in the file. With every plugin loaded it is an error."""
    if not partial_plugins:
        return
    for section in [s for s in raw if s not in schema.sections]:
        log.warning("config section %s in %s is unknown to the loaded plugins: ignored",
                    section, path)
        del raw[section]


def is_partial(plugins: Plugins | None, partial_plugins: bool = False) -> bool:
    """Whether some plugins are missing (``--no-plugins``, disabled or failed ones): their
    sections are then warned about rather than errors."""
    if partial_plugins:
        return True
    return plugins is not None and any(p.status != "loaded" for p in plugins.info())


def file_sources(raw: Mapping[str, Any], source: Source) -> dict[str, Source]:
    """``source`` for each section and key of a file's document."""
    sources: dict[str, Source] = {}
    for section, values in raw.items():
        sources[str(section)] = source
        if isinstance(values, Mapping):
            for key in values:
                sources[f"{section}.{key}"] = source
    return sources


def apply(raw: dict[str, Any], values: Mapping[str, tuple[Any, Source]],
          sources: dict[str, Source]) -> None:
    """Lay ``values`` over a document (changed in place), recording their sources."""
    for key, (value, source) in values.items():
        section, _, name = key.partition(".")
        current = raw.get(section)
        if current is None:
            current = raw[section] = {}
        if not isinstance(current, dict):
            continue  # the section itself is wrong; validation reports it
        current[name] = value
        sources[key] = source


# -- a profile -----------------------------------------------------------------------------


def profile_layer(name: str, schema: ConfigSchema, environ: Mapping[str, str] | None,
                  partial_plugins: bool = False) -> Layer:
    """The values of profile ``name``, read as the main file is: old keys under their new
    names, and (``partial_plugins``) the sections of plugins not loaded set aside with a
    warning. It must exist; an unknown key, or an unknown section with every plugin
    loaded, is an error naming the profile's file, raised at once, as a file that cannot
    be read is."""
    path = profile_path(name, environ)
    if not path.exists():
        raise no_profile(name, path)
    profile = read_file_layer(path, schema, explicit=True)
    profile.warn_renamed()
    layer = document_layer(name, profile.checked(schema, partial_plugins), schema, path)
    raise_problems(layer.problems)
    return layer


def document_layer(name: str, document: Mapping[str, Any], schema: ConfigSchema,
                   path: Path) -> Layer:
    """The values of a profile's content, and its problems (an unknown section or key, a
    section that is no mapping), each naming ``path``. An empty section (``lambda:``)
    sets nothing, as in the main file."""
    source = Source("file", str(path))
    layer = Layer()
    for section, keys in document.items():
        if keys is None:
            continue
        if section not in schema.sections:
            first = next(iter(keys), None) if isinstance(keys, Mapping) else None
            named = str(section) if first is None else f"{section}.{first}"
            layer.problems.append(f"{unknown_key_message(schema, named)} (in {path})")
        elif not isinstance(keys, Mapping):
            layer.problems.append(f"profile {name!r}: section {section} must be a mapping "
                                  f"(in {path})")
        else:
            for key, value in keys.items():
                full = f"{section}.{key}"
                if key in schema.section(section):
                    layer.values[full] = (value, source)
                else:
                    layer.problems.append(f"{unknown_key_message(schema, full)} (in {path})")
    return layer


# -- the environment, the command line, values being set -------------------------------


def env_layer(schema: ConfigSchema, environ: Mapping[str, str]) -> Layer:
    """Values from the environment by key; a known variable with a bad value is a problem."""
    layer = Layer()
    for var, key in schema.env_names().items():
        if var not in environ:
            continue
        text = environ[var]
        try:
            layer.values[key] = (parse_text(text, schema.rules(key)), Source("env", var))
        except ValueError as exc:
            shown = show_value(text, secret=schema.is_secret(key))
            layer.problems.append(f"{key}: {shown} {exc} (from ${var})")
    layer.problems += _env_renames(schema, environ, layer.values)
    return layer


def _env_renames(schema: ConfigSchema, environ: Mapping[str, str],
                 values: dict[str, tuple[Any, Source]]) -> list[str]:
    """``SOONG_SSH_KEY_NAME`` and the like: read as the new key unless that is set too."""
    problems: list[str] = []
    for old, new in schema.renames():
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


def override_layer(schema: ConfigSchema, overrides: Mapping[str, Any]) -> Layer:
    """Per-run values; ``None`` means "flag not given"; text is parsed by the key's type.
    An unknown key raises at once (it is the caller's mistake, not the user's)."""
    layer = Layer()
    for key, value in overrides.items():
        if value is None:
            continue
        rules = schema.rules(key)
        if isinstance(value, str) and "string" not in value_types(rules):
            try:
                value = parse_text(value, rules)
            except ValueError as exc:
                layer.problems.append(f"{key}: {show_value(value, secret=schema.is_secret(key))}"
                                      f" {exc} (from the command line)")
                continue
        layer.values[key] = (value, OVERRIDE)
    return layer


def given_layer(values: Mapping[str, Any]) -> Layer:
    """Values being set (``soong config set``, ``configure``): already typed, and said
    without a place in problems, since the user is giving them right now."""
    return Layer({key: (value, GIVEN) for key, value in values.items()})
