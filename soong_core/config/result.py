"""The result: a validated, read-only configuration that knows where each value came from."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Iterator, Mapping
from types import MappingProxyType

from soong_core.config.layers import DEFAULT, Source
from soong_core.config.messages import mask_secret
from soong_core.config.schema import ConfigSchema


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
    ``config.get("defaults.lease_hours")`` reads one key. Every value has passed the
    schema: code reading it needs no check of its own.
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

    def get(self, key: str, default: Any = None) -> Any:
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
