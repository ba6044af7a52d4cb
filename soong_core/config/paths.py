"""Where the files are: the main file and the profiles beside it."""

from __future__ import annotations

import os
import re
from pathlib import Path
from typing import Mapping

from soong_core.errors import ConfigError
from soong_core.files import soong_dir

PROFILE_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]*$")


def default_config_path(environ: Mapping[str, str] | None = None) -> Path:
    """``$XDG_CONFIG_HOME/soong/config.yaml``, ``~/.config/soong/config.yaml`` without it.

    A relative ``XDG_CONFIG_HOME`` is ignored, as the XDG specification says.
    """
    return soong_dir("config", environ) / "config.yaml"


def config_path(explicit: str | os.PathLike[str] | None = None,
                environ: Mapping[str, str] | None = None) -> Path:
    """The file in use: ``explicit`` (``--config``, ``~`` expanded) or the default."""
    if explicit is not None and str(explicit):
        return Path(os.path.expanduser(os.fspath(explicit)))
    return default_config_path(environ)


def is_explicit(path: str | os.PathLike[str] | None) -> bool:
    """Whether a path was named (``--config PATH``); then the file must exist to be read."""
    return path is not None and bool(str(path))


def profile_path(name: str, environ: Mapping[str, str] | None = None) -> Path:
    """``$XDG_CONFIG_HOME/soong/profiles/NAME.yaml``: a profile layered by ``--profile NAME``.

    Profiles hold a few keys that switch soong to another cloud or account at once
    (``--sim`` is ``--profile sim``, which ``soong sim up`` writes).
    """
    if not PROFILE_NAME.match(name):
        raise ConfigError(f"invalid profile name {name!r}",
                          hints=["use letters, digits, '-', '_' and '.'"])
    return default_config_path(environ).parent / "profiles" / f"{name}.yaml"


def no_profile(name: str, path: Path) -> ConfigError:
    """The error for a profile whose file does not exist."""
    return ConfigError(f"no profile {name!r}: {path} does not exist",
                       hints=[f"profiles are YAML files in {path.parent}; "
                              "`soong sim up` writes the 'sim' profile"])
