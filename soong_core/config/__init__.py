"""soong's configuration: one YAML file, validated by a schema the plugins extend.

Where a value comes from, lowest precedence first:

1. the schema's ``default`` (cerberus rules: the core's sections, plus each plugin's
   through the ``soong_config_schema`` hook);
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

The package, one concern a module:

- :mod:`~soong_core.config.schema`: the core's sections, plugins' sections, :func:`build_schema`;
- :mod:`~soong_core.config.layers`: the layers and each value's :class:`Source`;
- :mod:`~soong_core.config.yaml_file`: reading (positions, duplicate keys) and atomic 0600 writes;
- :mod:`~soong_core.config.coerce`: text to typed values (:func:`parse_text`);
- :mod:`~soong_core.config.messages`: problem lines, through a cerberus error handler;
- :mod:`~soong_core.config.validation`: cerberus and the checks across keys;
- :mod:`~soong_core.config.pipeline`: the one pipeline, :func:`load_config`, :func:`make_config`;
- :mod:`~soong_core.config.saving`: :func:`save_values`, :func:`set_value`,
  :func:`save_profile_values`;
- :mod:`~soong_core.config.profiles`: what a profile keeps; :mod:`~soong_core.config.paths`.

Importing this package is cheap: each module is imported when one of its names is first
used, and yaml and cerberus by the functions that need them (``soong --help`` and an early
"no API key" must stay fast).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from soong_core.config.coerce import expected, parse_boolean, parse_text
    from soong_core.config.layers import (
        DEFAULT,
        GIVEN,
        OVERRIDE,
        Layer,
        Rename,
        Source,
        log,
    )
    from soong_core.config.messages import SECRET_MASK, mask_secret, raise_problems, show_value
    from soong_core.config.paths import PROFILE_NAME, config_path, default_config_path, profile_path
    from soong_core.config.pipeline import load_config, make_config, resolve
    from soong_core.config.profiles import (
        PROFILE_SECTIONS,
        profile_keys_of,
        profile_sources,
        profiles_setting,
        same_value,
    )
    from soong_core.config.result import Config
    from soong_core.config.saving import save_profile_values, save_values, set_value
    from soong_core.config.schema import (
        BUDGET_PERIODS,
        CORE,
        CORE_SCHEMA,
        ENV_PREFIX,
        RENAMED_KEYS,
        SECTION_NAME,
        ConfigSchema,
        build_schema,
        env_name,
        unknown_key_message,
    )
    from soong_core.config.validation import CROSS_CHECKS, CrossCheck, validate
    from soong_core.config.yaml_file import read_config_file, write_config_file


_MODULES: dict[str, str] = {
    "coerce": "expected parse_boolean parse_text",
    "layers": "DEFAULT GIVEN Layer OVERRIDE Rename Source log",
    "messages": "SECRET_MASK mask_secret raise_problems show_value",
    "paths": "PROFILE_NAME config_path default_config_path profile_path",
    "pipeline": "load_config make_config resolve",
    "profiles": "PROFILE_SECTIONS profile_keys_of profile_sources profiles_setting same_value",
    "result": "Config",
    "saving": "save_profile_values save_values set_value",
    "schema": "BUDGET_PERIODS CORE CORE_SCHEMA ConfigSchema ENV_PREFIX RENAMED_KEYS "
              "SECTION_NAME build_schema env_name unknown_key_message",
    "validation": "CROSS_CHECKS CrossCheck validate",
    "yaml_file": "read_config_file write_config_file",
}
_WHERE: dict[str, str] = {name: f"soong_core.config.{module}"
                         for module, names in _MODULES.items() for name in names.split()}
"""Which module defines each public name. The package imports a module only when one
of its names is asked for (PEP 562), so ``soong_core.config.schema`` alone (what the
early "no API key" check and the plugins' schema read) does not load the pipeline."""


def __getattr__(name: str) -> Any:
    module = _WHERE.get(name)
    if module is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    import importlib

    value = getattr(importlib.import_module(module), name)
    globals()[name] = value
    return value


__all__ = [
    "BUDGET_PERIODS", "CORE", "CORE_SCHEMA", "CROSS_CHECKS", "DEFAULT", "ENV_PREFIX", "GIVEN",
    "OVERRIDE", "PROFILE_NAME", "PROFILE_SECTIONS", "RENAMED_KEYS", "SECRET_MASK",
    "SECTION_NAME", "Config", "ConfigSchema", "CrossCheck", "Layer", "Rename", "Source",
    "build_schema", "config_path", "default_config_path", "env_name", "expected", "load_config",
    "log", "make_config", "mask_secret", "parse_boolean", "parse_text",
    "profile_keys_of", "profile_path", "profile_sources", "profiles_setting",
    "raise_problems", "read_config_file", "resolve", "same_value", "save_profile_values",
    "save_values", "set_value", "show_value", "unknown_key_message", "validate",
    "write_config_file",
]
