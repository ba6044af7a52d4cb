"""The lease agent: a small daemon on every instance that stops it when its lease ends,
its hard limit passes or nobody uses it (docs/agent.md). Standard library, pluggy and the
core's pure modules only: it runs on the instance's bare ``python3``."""

from __future__ import annotations

from soong_core import __version__

__all__ = ["__version__"]
