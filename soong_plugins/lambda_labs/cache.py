"""The instance-type catalogue, cached on disk for a short while.

One file per endpoint under ``$XDG_CACHE_HOME/soong/lambda/`` holding the last
``GET /instance-types`` answer and when it came. Within :data:`TTL` it is used as is, so
a command run right after another (``start`` after ``status``, ``configure`` twice)
spends no request of its one-per-second allowance on prices. Past the TTL it is still
the best fallback when the pricing call fails: estimates then use it, marked with its
age, before falling back to the bundled snapshot.

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
from soong_plugins.lambda_labs.redact import get_logger

log = get_logger()

TTL = 60.0
"""Seconds a cached catalogue is used without asking: capacity changes by the minute."""
VERSION = 1


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
    expired: bool = False

    def age(self, now: float) -> float:
        return max(0.0, now - self.fetched_at)


class TypeCache:
    """The cache file of one endpoint. Unreadable or foreign content counts as no cache."""

    def __init__(self, endpoint: str, directory: Path | None = None, *, ttl: float = TTL,
                 now: Callable[[], float] = time.time) -> None:
        self.endpoint = endpoint
        digest = hashlib.sha256(endpoint.encode("utf-8")).hexdigest()[:16]
        self.path = (directory or default_cache_dir()) / f"instance-types-{digest}.json"
        self.ttl = ttl
        self.now = now

    def load(self) -> Cached | None:
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
                      key if isinstance(key, str) else None, document.get("expired") is True)

    def fresh(self, key: str | None) -> Cached | None:
        """The cached answer if it is younger than the TTL and fetched with ``key``."""
        cached = self.load()
        if cached is None or cached.expired or cached.key_fingerprint != fingerprint(key):
            return None
        return cached if cached.age(self.now()) < self.ttl else None

    def save(self, data: Any, key: str | None) -> None:
        """Keep a fresh answer, fetched with ``key``, from now."""
        self._write({"fetched_at": self.now(), "expired": False,
                     "key_fingerprint": fingerprint(key), "data": data})

    def expire(self) -> None:
        """Make the next read ask the API (the capacity it shows just proved wrong),
        keeping the content as the fallback for prices."""
        cached = self.load()
        if cached is not None and not cached.expired:
            self._write({"fetched_at": cached.fetched_at, "expired": True,
                         "key_fingerprint": cached.key_fingerprint, "data": cached.data})

    def _write(self, fields: dict[str, Any]) -> None:
        """Atomically (temp file, rename); a cache that cannot be written is only a
        debug line: it saves requests, nothing depends on it."""
        document = {"version": VERSION, "endpoint": self.endpoint, **fields}
        try:
            write_private(self.path, json.dumps(document))
        except OSError as exc:
            log.debug("cannot write the type cache %s: %s", self.path, exc)
