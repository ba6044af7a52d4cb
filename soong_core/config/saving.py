"""Writes: set keys in the main file or in a profile, validated before anything is
written, through the same pipeline as reading (:func:`~soong_core.config.pipeline.resolve`)."""

from __future__ import annotations

import logging
import os
from pathlib import Path
from typing import TYPE_CHECKING, Any, Iterable, Mapping

from soong_core.config.coerce import parse_text
from soong_core.config.layers import (
    document_layer,
    given_layer,
    is_partial,
    read_file_layer,
    warn_renamed_in_file,
)
from soong_core.config.messages import show_value
from soong_core.config.paths import config_path, is_explicit, no_profile, profile_path
from soong_core.config.pipeline import resolve
from soong_core.config.profiles import PROFILE_SECTIONS, drop_copies
from soong_core.config.result import Config
from soong_core.config.schema import ConfigSchema, build_schema
from soong_core.config.yaml_file import write_config_file
from soong_core.errors import ConfigError

if TYPE_CHECKING:
    from soong_core.plugins import Plugins

log = logging.getLogger("soong.config")


def _check_keys(schema: ConfigSchema, values: Mapping[str, Any]) -> None:
    for key in values:
        schema.rules(key)


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
    _check_keys(schema, values)
    main = read_file_layer(file, schema, explicit=False)
    _set_keys(main.document, values, file)
    base = main.checked(schema, is_partial(plugins, partial_plugins))
    resolved = resolve(schema, base, main.source, [given_layer(values)])
    resolved.sources.update(dict.fromkeys(values, main.source))  # where they now come from
    config = resolved.config(path=file, exists=True)
    write_config_file(file, main.document)
    warn_renamed_in_file(main.renames, file)
    return config


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
    _check_keys(schema, values)
    if not file.exists():
        raise no_profile(name, file)
    profile = read_file_layer(file, schema, explicit=True)
    partial = is_partial(plugins, partial_plugins)
    main_file = config_path(config)
    # the main file is compared by new names (loading it warns about old ones)
    main = read_file_layer(main_file, schema, explicit=is_explicit(config) and not missing_ok)
    base = main.checked(schema, partial)
    removed: list[str] = []
    if keep is not None:
        given = resolve(schema, base, main.source, []).document  # problems: reported below
        protected = {*keep, *values}
        protected.update(f"{section}.{key}" for section in PROFILE_SECTIONS
                         for key in schema.section(section))
        removed = drop_copies(profile.document, given, schema, protected)
    _set_keys(profile.document, values, file)
    layer = document_layer(name, profile.checked(schema, partial), schema, file)
    resolved = resolve(schema, base, main.source, [layer, given_layer(values)])
    resolved.sources.update(dict.fromkeys(values, profile.source))  # where they now come from
    result = resolved.config(path=file, exists=True)
    if values or removed or profile.renames:  # nothing to change: the file is not touched
        write_config_file(file, profile.document)
    warn_renamed_in_file(profile.renames, file)
    if removed:
        log.warning("removed %s from %s: the main file (%s) or the defaults give the same, "
                    "and a copy in the profile would outrank a later change there",
                    ", ".join(removed), file, main_file)
    return result
