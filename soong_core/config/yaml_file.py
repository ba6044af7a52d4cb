"""The YAML file: read with positions in every error and duplicate keys refused, written
atomically with mode 0600.

yaml is imported by the functions that need it (``soong --help`` must stay fast).
"""

from __future__ import annotations

import functools
import logging
import os
import stat
from pathlib import Path
from typing import Any, Mapping

from soong_core.config.paths import default_config_path
from soong_core.errors import ConfigError
from soong_core.files import write_private

log = logging.getLogger("soong.config")


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
        kinds: dict[type, str] = {list: "a list", str: "a string"}
        kind = kinds.get(type(document), type(document).__name__)
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


def write_config_file(path: Path, document: Mapping[str, Any]) -> None:
    """Write ``document`` as YAML atomically (temp file + rename), mode 0600.

    The parent directory is created 0700 when missing. A symlinked config file stays
    a symlink: its target is replaced. Comments in the old file are not kept.
    """
    import yaml

    target = Path(os.path.realpath(path))
    text = yaml.safe_dump(plain(document), sort_keys=False, default_flow_style=False,
                          allow_unicode=True)
    try:
        write_private(target, text)
    except OSError as exc:
        raise ConfigError(f"cannot write {target}: {exc.strerror or exc}") from None


def plain(value: Any) -> Any:
    """Mappings to dicts and tuples to lists, so safe_dump writes plain YAML."""
    if isinstance(value, Mapping):
        return {k: plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [plain(v) for v in value]
    return value
