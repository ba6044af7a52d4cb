"""The agent tokens the laptop keeps: ``$XDG_DATA_HOME/soong/agents/<instance-id>.token``.

Each launch's ``finish`` mints a token before the instance has an id, so it is written
first as ``launch-<launch-id>.token`` (0600, in a 0700 folder: :func:`write_pending`);
the ``launch`` event, which names the instance, renames it (:func:`adopt`). A pending
token whose instance turns up later in a listing (a launch history could not record)
is adopted then. The token goes when the instance ends: its ``terminate`` event, or a
listing that shows it ended or no longer lists it. A listing judges only the tokens
recorded under its own account (``<instance-id>.account`` beside the token, written
the first time a listing of that account shows the instance).

Standard library and :mod:`soong_core.files` only; nothing here prints a token.
"""

from __future__ import annotations

import os
import re
import time
from pathlib import Path

from soong_core.files import soong_dir, write_private
from soong_core.models import HOUR

SAFE_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,127}$")
PENDING_PREFIX = "launch-"
SUFFIX = ".token"
ACCOUNT_SUFFIX = ".account"
PENDING_MAX_AGE = 24.0 * HOUR
"""A pending token no listing has adopted after this long (wall seconds) belongs to a
launch that produced no instance: it is removed."""


def agents_dir() -> Path:
    """``$XDG_DATA_HOME/soong/agents``, read at call time."""
    return soong_dir("data") / "agents"


def _checked(identifier: str, what: str) -> str:
    if not SAFE_ID.match(identifier) or (what == "instance id"
                                          and identifier.startswith(PENDING_PREFIX)):
        raise ValueError(f"{what} {identifier!r} cannot name a token file")
    return identifier


def token_path(instance_id: str) -> Path:
    return agents_dir() / f"{_checked(instance_id, 'instance id')}{SUFFIX}"


def pending_path(launch_id: str) -> Path:
    return agents_dir() / f"{PENDING_PREFIX}{_checked(launch_id, 'launch id')}{SUFFIX}"


def write_pending(launch_id: str, token: str) -> Path:
    """Keep ``token`` for the launch ``launch_id`` (0600). :class:`OSError` when it
    cannot be written: the launch must then not go ahead (nobody could reach its agent)."""
    path = pending_path(launch_id)
    write_private(path, token + "\n")
    return path


def write_token(instance_id: str, token: str) -> Path:
    """Keep ``token`` as the instance's (0600), replacing the one kept before (``soong
    agent install`` gave its agent a new one)."""
    path = token_path(instance_id)
    write_private(path, token + "\n")
    return path


def adopt(launch_id: str, instance_id: str) -> bool:
    """Rename the launch's pending token to the instance's; False when there is none."""
    source = pending_path(launch_id)
    try:
        os.replace(source, token_path(instance_id))
    except FileNotFoundError:
        return False
    return True


def read_token(instance_id: str) -> str | None:
    """The instance's agent token, or None when this machine keeps none for it."""
    try:
        text = token_path(instance_id).read_text(encoding="utf-8").strip()
    except (OSError, UnicodeDecodeError, ValueError):
        return None
    return text or None


def remove_token(instance_id: str) -> None:
    """Forget the instance's token (and the account it was seen under); no error when
    there is none."""
    try:
        path = token_path(instance_id)
    except ValueError:
        return
    for each in (path, path.with_suffix(ACCOUNT_SUFFIX)):
        try:
            each.unlink()
        except FileNotFoundError:
            pass


def kept_instances() -> list[str]:
    """The instance ids this machine keeps a token for."""
    try:
        names = sorted(p.name for p in agents_dir().iterdir())
    except OSError:
        return []
    return [name[:-len(SUFFIX)] for name in names
            if name.endswith(SUFFIX) and not name.startswith(PENDING_PREFIX)]


def account_of(instance_id: str) -> str | None:
    try:
        return token_path(instance_id).with_suffix(ACCOUNT_SUFFIX).read_text(
            encoding="utf-8").strip() or None
    except (OSError, UnicodeDecodeError, ValueError):
        return None


def note_account(instance_id: str, account: str) -> None:
    """Record the account a listing saw the instance under (once)."""
    if account_of(instance_id) is None:
        write_private(token_path(instance_id).with_suffix(ACCOUNT_SUFFIX), account + "\n")


def drop_stale_pending(now: float | None = None) -> None:
    """Remove pending tokens older than :data:`PENDING_MAX_AGE`."""
    now = time.time() if now is None else now
    try:
        paths = [p for p in agents_dir().iterdir() if p.name.startswith(PENDING_PREFIX)]
    except OSError:
        return
    for path in paths:
        try:
            if now - path.stat().st_mtime > PENDING_MAX_AGE:
                path.unlink()
        except OSError:
            pass
