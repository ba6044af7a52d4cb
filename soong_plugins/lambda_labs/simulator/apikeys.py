"""The API keys a simulated account accepts: the primary one and any minted since.

The primary key lives in ``api-key`` (see :mod:`.store`): ``soong sim up`` prints it and
writes it into the profile, so it cannot be revoked here. ``POST /_sim/keys`` mints more
(the agent's separate key, a key for another client) and ``DELETE /_sim/keys/{prefix}``
revokes one, as a user does in the cloud dashboard; the revoked key's next request
answers 401.

Minted keys are kept in ``api-keys.json`` (0600) as SHA-256 digests with a prefix to
name them by: the key itself is answered once, when minted, and never stored, listed or
logged. Keys survive ``--reset`` and restarts, as a real account's keys outlive its
instances.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import logging
import secrets
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

from soong_plugins.lambda_labs.simulator.store import StoreError, move_aside, write_private

log = logging.getLogger("soong.sim")

KEYS_FILE = "api-keys.json"
KEY_PREFIX = "soong-sim-"
PREFIX_LENGTH = len(KEY_PREFIX) + 8
"""A key is named by its first 18 characters: the fixed ``soong-sim-`` and 8 random ones."""
NAME_MAX = 64
SCHEMA_VERSION = 1


def new_key() -> str:
    return KEY_PREFIX + secrets.token_urlsafe(32)


def key_prefix(key: str) -> str:
    """The part of ``key`` that names it: never more than half of it."""
    return key[:min(PREFIX_LENGTH, len(key) // 2)]


def digest(key: str) -> str:
    return hashlib.sha256(key.encode("utf-8")).hexdigest()


@dataclass(frozen=True)
class MintedKey:
    prefix: str
    sha256: str
    name: str
    created_at: float

    def to_json(self) -> dict[str, Any]:
        return {"prefix": self.prefix, "sha256": self.sha256, "name": self.name,
                "created_at": self.created_at}

    def listed(self) -> dict[str, Any]:
        return {"prefix": self.prefix, "name": self.name, "created_at": self.created_at,
                "primary": False}


class KeyRingError(Exception):
    """A key cannot be minted or revoked (one line; the caller maps it to an answer)."""

    def __init__(self, message: str, *, not_found: bool = False) -> None:
        super().__init__(message)
        self.not_found = not_found


class KeyRing:
    """The keys one state directory's account accepts.

    :param directory: the state directory (``api-keys.json`` lives there).
    :param primary: the primary key (from ``api-key``).
    :param now: the simulated clock's ``now``, for ``created_at``.
    """

    def __init__(self, directory: Path, primary: str, now: Callable[[], float]) -> None:
        self.path = directory / KEYS_FILE
        self.primary = primary
        self._now = now
        self._lock = threading.Lock()
        self.warnings: list[str] = []
        self._minted: list[MintedKey] = self._load()

    # -- the file -------------------------------------------------------------------------

    def _load(self) -> list[MintedKey]:
        try:
            raw = self.path.read_bytes()
        except FileNotFoundError:
            return []
        except IsADirectoryError:
            return self._recover("it is a directory")
        except OSError as exc:
            raise StoreError(f"cannot read the simulator's keys {self.path}: "
                             f"{exc.strerror or exc}") from None
        try:
            document = json.loads(raw.decode("utf-8"))
            return [self._entry(item) for item in self._items(document)]
        except (UnicodeDecodeError, json.JSONDecodeError, ValueError) as exc:
            return self._recover(str(exc))

    @staticmethod
    def _items(document: Any) -> list[Any]:
        if not isinstance(document, dict) or document.get("schema_version") != SCHEMA_VERSION \
                or not isinstance(document.get("keys"), list):
            raise ValueError(f"not a schema_version {SCHEMA_VERSION} object with a keys list")
        return list(document["keys"])

    @staticmethod
    def _entry(item: Any) -> MintedKey:
        if not isinstance(item, dict):
            raise ValueError("a key entry is not an object")
        prefix, sha, name, created = (item.get(k) for k in ("prefix", "sha256", "name",
                                                               "created_at"))
        if not (isinstance(prefix, str) and prefix and isinstance(sha, str) and len(sha) == 64
                and isinstance(name, str) and isinstance(created, (int, float))
                and not isinstance(created, bool)):
            raise ValueError(f"a key entry has wrong fields: {sorted(item)}")
        return MintedKey(prefix, sha, name, float(created))

    def _recover(self, problem: str) -> list[MintedKey]:
        moved = move_aside(self.path)
        warning = (f"simulator keys {self.path} were unreadable ({problem}): moved aside to "
                   f"{moved.name}; only the primary key is accepted until new ones are minted")
        log.warning("%s", warning)
        self.warnings.append(warning)
        return []

    def _save(self, minted: list[MintedKey]) -> None:
        document = {"schema_version": SCHEMA_VERSION, "keys": [k.to_json() for k in minted]}
        try:
            write_private(self.path, json.dumps(document, indent=1) + "\n")
        except OSError as exc:
            raise KeyRingError(f"cannot write the simulator's keys {self.path}: "
                               f"{exc.strerror or exc}") from None

    # -- what the server asks ---------------------------------------------------------------

    def accepts(self, candidate: str) -> bool:
        """Whether ``candidate`` is a live key (constant time per key compared)."""
        if not candidate:
            return False
        accepted = hmac.compare_digest(candidate.encode("utf-8"), self.primary.encode("utf-8"))
        hashed = digest(candidate)
        for key in self._minted:  # a list replaced whole on change: safe to iterate
            accepted |= hmac.compare_digest(hashed, key.sha256)
        return accepted

    def listing(self) -> list[dict[str, Any]]:
        primary = {"prefix": key_prefix(self.primary), "name": "primary", "created_at": None,
                   "primary": True}
        return [primary, *(key.listed() for key in self._minted)]

    def mint(self, name: str | None) -> dict[str, Any]:
        """A new key: stored (as a digest) before it is answered, so a key handed out is
        always one a restarted simulator still accepts."""
        label = "" if name is None else name
        if len(label) > NAME_MAX or not label.isprintable():
            raise KeyRingError(f"name must be printable text of at most {NAME_MAX} characters")
        with self._lock:
            taken = {key.prefix for key in self._minted} | {key_prefix(self.primary)}
            key = new_key()
            while key_prefix(key) in taken:
                key = new_key()
            entry = MintedKey(key_prefix(key), digest(key), label, self._now())
            minted = [*self._minted, entry]
            self._save(minted)
            self._minted = minted
        return {"key": key, **entry.listed()}

    def revoke(self, prefix: str) -> dict[str, Any]:
        """Stop accepting the minted key named by ``prefix`` at once. When the file cannot
        be written the key is still refused from now on, and the error says it would come
        back after a restart."""
        if prefix == key_prefix(self.primary):
            raise KeyRingError("the primary key cannot be revoked (soong sim up wrote it into "
                               "the profile): mint another with POST /_sim/keys")
        with self._lock:
            found = [key for key in self._minted if key.prefix == prefix]
            if not found:
                raise KeyRingError(f"no minted key has the prefix {prefix!r} (GET /_sim/keys "
                                   "lists them)", not_found=True)
            minted = [key for key in self._minted if key.prefix != prefix]
            self._minted = minted
            try:
                self._save(minted)
            except KeyRingError as exc:
                raise KeyRingError(f"{exc}: the key is refused now but would be accepted "
                                   "again after a restart") from None
        return found[0].listed()
