"""The one pipeline: layers over a file's document, validated, to a :class:`Config`.

:func:`resolve` lays each layer's values over a base document (a file's, or nothing),
recording every value's source, and validates the result; :func:`load_config`,
:func:`make_config` and the writes (:mod:`soong_core.config.saving`) differ only in the
layers they hand it.
"""

from __future__ import annotations

import copy
import os
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Iterable, Mapping

from soong_core.config.layers import (
    Layer,
    Source,
    apply,
    env_layer,
    file_sources,
    is_partial,
    override_layer,
    profile_layer,
    read_file_layer,
)
from soong_core.config.messages import raise_problems
from soong_core.config.paths import config_path, default_config_path, is_explicit
from soong_core.config.result import Config
from soong_core.config.schema import ConfigSchema, build_schema
from soong_core.config.validation import validate

if TYPE_CHECKING:
    from soong_core.plugins import Plugins


@dataclass
class Resolved:
    """What :func:`resolve` made: the normalised document, every value's source, and the
    problems (of the layers, in their order, then of validation)."""

    schema: ConfigSchema
    document: dict[str, Any]
    sources: dict[str, Source]
    problems: list[str]

    def config(self, *, path: Path, exists: bool = False) -> Config:
        """The :class:`Config`; raises one ConfigError for every problem."""
        raise_problems(self.problems)
        return Config(self.document, path=path, schema=self.schema, sources=self.sources,
                      exists=exists)


def resolve(schema: ConfigSchema, base: Mapping[str, Any], base_source: Source | None,
            layers: Iterable[Layer]) -> Resolved:
    """Lay ``layers`` (lowest first) over ``base``, a file's document (``base_source``
    for each of its keys; ``None``: no file), and validate the result."""
    raw = copy.deepcopy(dict(base))
    sources = file_sources(raw, base_source) if base_source is not None else {}
    problems: list[str] = []
    for layer in layers:
        problems += layer.problems
        apply(raw, layer.values, sources)
    document, invalid = validate(raw, schema, sources)
    return Resolved(schema, document, sources, problems + invalid)


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
    main = read_file_layer(file, schema, explicit=is_explicit(path) and not missing_ok)
    main.warn_renamed()
    partial = is_partial(plugins, partial_plugins)
    base = main.checked(schema, partial)
    layers = [env_layer(schema, os.environ if environ is None else environ),
              override_layer(schema, overrides or {})]
    if profile is not None:
        layers.insert(1, profile_layer(profile, schema, environ, partial))
    resolved = resolve(schema, base, main.source, layers)
    return resolved.config(path=file, exists=main.exists)


def make_config(values: Mapping[str, Any] | None = None, *,
                plugins: Plugins | None = None) -> Config:
    """A validated Config from the defaults and ``values`` alone (no file, no environment):
    for embedding programs and tests. ``values`` are ``{"section.key": value}``, strings
    parsed by the key's type as command-line values are."""
    schema = build_schema(plugins)
    resolved = resolve(schema, {}, None, [override_layer(schema, values or {})])
    return resolved.config(path=default_config_path({}))
