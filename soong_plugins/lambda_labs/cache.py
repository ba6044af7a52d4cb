"""The instance-type catalogue, cached on disk, with a lifetime for each thing it says.

One file per endpoint under ``$XDG_CACHE_HOME/soong/lambda/`` holds the last
``GET /instance-types`` answer and when it came. That one answer says two things that
age at different speeds: the catalogue (which types are on sale, their specs and
prices) stands for :data:`CATALOGUE_TTL`, the capacity (which regions have room for
each type) only for :data:`CAPACITY_TTL`, and not at all once a launch was refused for
want of capacity (:meth:`TypeCache.invalidate_capacity`). A command run right after
another (``start`` after ``configure``) spends no request of its one-per-second
allowance on it; past its lifetimes the answer is still the best fallback when the
pricing call fails: estimates then use it, marked with its age, before falling back to
the bundled snapshot.

The file also records a fingerprint of the key that fetched it (a salted SHA-256, never
the key): a different key, say one ``soong configure`` is checking, never gets a fresh
hit from it, so the check really calls the API.
"""

from __future__ import annotations

import hashlib
import json
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

from soong_core.files import soong_dir, write_private
from soong_core.models import HOUR
from soong_plugins.lambda_labs.redact import get_logger

log = get_logger()

CATALOGUE_TTL = float(HOUR)
"""Seconds an answer stands for the catalogue: the types on sale, their specs and their
prices, which change by the week, not by the hour. Within it, an answer is current
prices even when the call that would renew it fails: estimates use it unmarked, and
only the capacity is unknown."""
CAPACITY_TTL = 10.0
"""Seconds an answer's capacity is believed, within one process and across processes:
capacity changes by the minute, and a region believed to have room costs a launch
attempt when it has none (the API takes one launch per 12 s). A ``--wait-for-capacity``
poll (every 10 s) therefore always asks anew. An insufficient-capacity answer to a
launch ends it at once (:meth:`TypeCache.invalidate_capacity`)."""
VERSION = 2


def default_cache_dir(environ: dict[str, str] | None = None) -> Path:
    """``$XDG_CACHE_HOME/soong/lambda`` (``~/.cache/soong/lambda``); a relative
    ``XDG_CACHE_HOME`` is ignored, as the XDG specification says."""
    return soong_dir("cache", environ) / "lambda"


def fingerprint(key: str | None) -> str | None:
    if not key:
        return None
    return hashlib.sha256(b"soong-type-cache\0" + key.encode("utf-8")).hexdigest()[:16]


@dataclass(frozen=True)
class Cached:
    data: Any
    fetched_at: float
    """Wall time (``time.time()``) of the answer."""
    key_fingerprint: str | None
    capacity_invalid: bool = False
    """A launch was refused for want of capacity since: its capacity is not believed."""

    def age(self, now: float) -> float:
        return max(0.0, now - self.fetched_at)


class TypeCache:
    """The cache file of one endpoint. Unreadable or foreign content counts as no cache;
    ``now`` is the clock that ages it (wall time)."""

    def __init__(self, endpoint: str, directory: Path | None = None, *,
                 now: Callable[[], float] = time.time) -> None:
        self.endpoint = endpoint
        digest = hashlib.sha256(endpoint.encode("utf-8")).hexdigest()[:16]
        self.path = (directory or default_cache_dir()) / f"instance-types-{digest}.json"
        self.now = now

    def load(self) -> Cached | None:
        """The cached answer, whatever its age."""
        try:
            document = json.loads(self.path.read_text(encoding="utf-8"))
        except FileNotFoundError:
            return None
        except (OSError, UnicodeDecodeError, ValueError) as exc:
            log.debug("ignoring the unreadable type cache %s: %s", self.path, exc)
            return None
        if not (isinstance(document, dict) and document.get("version") == VERSION
                and document.get("endpoint") == self.endpoint
                and isinstance(document.get("fetched_at"), (int, float))
                and isinstance(document.get("data"), dict)):
            return None
        key = document.get("key_fingerprint")
        return Cached(document["data"], float(document["fetched_at"]),
                      key if isinstance(key, str) else None,
                      document.get("capacity_invalid") is True)

    def with_capacity(self, key: str | None) -> Cached | None:
        """The cached answer if its capacity is still believed (younger than
        :data:`CAPACITY_TTL`, not invalidated) and it was fetched with ``key``."""
        cached = self._fetched_with(key)
        if cached is None or cached.capacity_invalid:
            return None
        return cached if cached.age(self.now()) < CAPACITY_TTL else None

    def catalogue(self, key: str | None) -> Cached | None:
        """The cached answer if it still stands for the catalogue and prices (younger
        than :data:`CATALOGUE_TTL`) and was fetched with ``key``; its capacity may be
        past believing."""
        cached = self._fetched_with(key)
        return cached if cached is not None and cached.age(self.now()) < CATALOGUE_TTL \
            else None

    def _fetched_with(self, key: str | None) -> Cached | None:
        cached = self.load()
        return cached if cached is not None and cached.key_fingerprint == fingerprint(key) \
            else None

    def save(self, data: Any, key: str | None) -> None:
        """Keep a fresh answer, fetched with ``key``, from now."""
        self._write({"fetched_at": self.now(), "capacity_invalid": False,
                     "key_fingerprint": fingerprint(key), "data": data})

    def invalidate_capacity(self) -> None:
        """Make the next question about capacity ask the API (the capacity the answer
        shows just proved wrong), keeping it for the catalogue and prices."""
        cached = self.load()
        if cached is not None and not cached.capacity_invalid:
            self._write({"fetched_at": cached.fetched_at, "capacity_invalid": True,
                         "key_fingerprint": cached.key_fingerprint, "data": cached.data})

    def _write(self, fields: dict[str, Any]) -> None:
        """Atomically (temp file, rename); a cache that cannot be written is only a
        debug line: it saves requests, nothing depends on it."""
        document = {"version": VERSION, "endpoint": self.endpoint, **fields}
        try:
            write_private(self.path, json.dumps(document))
        except OSError as exc:
            log.debug("cannot write the type cache %s: %s", self.path, exc)
