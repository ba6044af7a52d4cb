"""docs/agent.md keeps up with the agent: every config key, endpoint and flag is there."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any, Iterator

import pytest

from instance_agent.config import COMMENT, example_config

DOC = Path(__file__).resolve().parents[2] / "docs" / "agent.md"


def key_paths(value: Any, prefix: str = "") -> Iterator[str]:
    """``instance.lease_deadline``, ``pre_stop[].command``...: every key of ``value``."""
    if isinstance(value, dict):
        for key, inner in value.items():
            if key == COMMENT:
                continue
            path = f"{prefix}.{key}" if prefix else key
            yield path
            if key != "settings":  # free-form: what third-party policies read
                yield from key_paths(inner, path)
    elif isinstance(value, list):
        for inner in value:
            yield from key_paths(inner, f"{prefix}[]")


KEYS = sorted(set(key_paths(example_config())))


def test_the_example_has_every_section() -> None:
    assert {"schema_version", "instance.hard_deadline", "api.token", "provider.api_key",
            "pre_stop[].command", "clock.mode", "paths.state", "log.max_bytes",
            "plugins"} <= set(KEYS)


@pytest.mark.parametrize("key", KEYS)
def test_every_config_key_is_documented(key: str) -> None:
    assert f"`{key}`" in DOC.read_text(), f"docs/agent.md does not document `{key}`"


@pytest.mark.parametrize("text", ["GET /health", "GET /status", "POST /extend",
                                  "POST /activity", "POST /shutdown", "--config",
                                  "--override", "--example-config", "--self-test", "--check"])
def test_every_endpoint_and_flag_is_documented(text: str) -> None:
    assert text in DOC.read_text()


def test_the_accelerated_clock_keys_are_the_ones_the_clock_reads() -> None:
    from soong_core.clock import AcceleratedClock

    written = set(AcceleratedClock(2.0).to_config())
    documented = set(re.findall(r"`clock\.(\w+)`", DOC.read_text()))
    assert written <= documented
