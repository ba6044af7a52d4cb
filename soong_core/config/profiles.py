"""Profiles hold what differs: which keys a profile keeps, and which of its values merely
copy the main file (DESIGN, "Profiles hold what differs")."""

from __future__ import annotations

import os
from typing import TYPE_CHECKING, Any, Mapping

from soong_core.config.layers import Source
from soong_core.config.paths import PROFILE_NAME, default_config_path, profile_path
from soong_core.config.result import Config
from soong_core.config.schema import ConfigSchema
from soong_core.config.yaml_file import plain, read_config_file
from soong_core.errors import ConfigError

if TYPE_CHECKING:
    from soong_core.interfaces import Provider

PROFILE_SECTIONS: tuple[str, ...] = ("clock",)
"""Core sections a profile keeps whatever they hold: the clock of its cloud."""


def profile_keys_of(provider: Provider | type[Provider]) -> set[str]:
    """The keys that make a profile point at ``provider``'s cloud and account: its
    ``profile_keys`` and its ``credential_key``. A write to a profile keeps them."""
    keys = set(provider.profile_keys)
    if provider.credential_key:
        keys.add(provider.credential_key)
    return keys


def drop_copies(document: dict[str, Any], base: Mapping[str, Any], schema: ConfigSchema,
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
    a, b = plain(a), plain(b)
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
