"""Host entries: ``ssh soong-<name>`` (and any editor's remote mode) reaches an instance.

soong keeps one file of its own, ``$XDG_DATA_HOME/soong/ssh/config``, with a ``Host
soong-<name-or-short-id>`` block per active instance holding exactly the settings of
:mod:`.settings` (the block is :meth:`SshTarget.host_block`). :func:`sync` rewrites it
from what the core has just seen (``soong_instances_seen``): an instance that became
active gets its block, one that ended loses it and its known_hosts lines, and a
complete list of an account also removes the blocks of that account's instances it no
longer shows. The file is replaced only when its text changes, under a lock (two soong
processes may sync at once).

The user's ``~/.ssh/config`` gets one ``Include`` of that file, at its top (OpenSSH
reads an ``Include`` inside a ``Host`` block only for that block's hosts): added the
first time soong writes an entry, never twice, into the file a symlinked config points
at, with the previous text kept beside it (``config.soong-backup``).
``soong ssh --remove-include`` takes it out and keeps it out (a marker file in soong's
ssh folder) until ``--add-include``. ``ssh.host_entries: false`` turns all of this off.

Each block is preceded by a marker line, ``# soong-entry {"instance": ..., "account":
...}``, which is how a later sync knows whose block it is: a block of another account
(a second profile) is left alone by this account's lists.
"""

from __future__ import annotations

import json
import os
import re
import shlex
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterable, Mapping, Sequence

from soong_core.errors import SoongError
from soong_core.files import locked, private_dir, soong_dir, write_private
from soong_core.models import Instance, InstanceState

PREFIX = "soong-"
MARKER = "# soong-entry "
NAME_MAX = 48
"""Longest name part of a Host alias (the rest of a long instance name is cut)."""

HEADER = (
    "# soong's ssh Host entries: one per active instance, written by `soong start`,\n"
    "# `soong status` and `soong stop`. Edits here are lost at the next rewrite.\n"
    "# ~/.ssh/config includes this file (`soong ssh --remove-include` undoes that).\n"
)
INCLUDE_COMMENT = ("# Added by soong: Host entries of your instances "
                   "(`soong ssh --remove-include` removes these lines).")
BACKUP_SUFFIX = ".soong-backup"


def config_path() -> Path:
    return soong_dir("data") / "ssh" / "config"


def user_config_path() -> Path:
    """``~/.ssh/config``, ``~`` from ``$HOME`` (tests point it at a temporary home)."""
    home = os.environ.get("HOME") or os.path.expanduser("~")
    return Path(home) / ".ssh" / "config"


def _opt_out_path() -> Path:
    return config_path().with_name("include-removed")


@dataclass(frozen=True)
class Entry:
    instance_id: str
    account: str
    host: str
    """The alias, ``soong-...``."""
    block: str
    """``Host ...`` and its settings, newline-terminated."""

    def text(self) -> str:
        marker = json.dumps({"instance": self.instance_id, "account": self.account},
                            sort_keys=True)
        return f"{MARKER}{marker}\n{self.block}"


# -- soong's file ---------------------------------------------------------------------------


def read_entries(path: Path | None = None) -> list[Entry]:
    """The entries of soong's file, in order; text that is not an entry is dropped (the
    file is soong's own: a hand-made block would be lost at the next rewrite anyway)."""
    path = path or config_path()
    try:
        text = path.read_text(encoding="utf-8", errors="replace")
    except FileNotFoundError:
        return []
    except OSError as exc:
        raise SoongError(f"cannot read soong's ssh config {path}: {exc.strerror or exc}") \
            from None
    entries: list[Entry] = []
    current: dict[str, Any] | None = None
    lines: list[str] = []

    def close() -> None:
        if current is None:
            return
        block = [line for line in lines if line.strip() and not line.startswith("#")]
        if block and block[0].startswith("Host "):
            entries.append(Entry(str(current["instance"]), str(current["account"]),
                                 block[0].split(None, 1)[1].strip(),
                                 "\n".join(block) + "\n"))

    for line in text.splitlines():
        if line.startswith(MARKER):
            close()
            lines = []
            try:
                found = json.loads(line[len(MARKER):])
            except ValueError:
                found = None
            current = found if (isinstance(found, dict)
                                and isinstance(found.get("instance"), str)
                                and isinstance(found.get("account"), str)) else None
        elif current is not None:
            lines.append(line)
    close()
    return entries


def render(entries: Iterable[Entry]) -> str:
    return HEADER + "".join("\n" + entry.text() for entry in entries)


def sanitise(name: str) -> str:
    """An instance name as the part of a Host alias: lower case (OpenSSH matches host
    names without case), letters, digits, ``.``, ``_`` and ``-``; anything else becomes
    ``-``. Empty when nothing usable is left."""
    cleaned = re.sub(r"[^a-z0-9._-]+", "-", name.lower())
    cleaned = re.sub(r"-{2,}", "-", cleaned).strip("-.")
    return cleaned[:NAME_MAX].rstrip("-.")


def _base(instance: Instance) -> str:
    return sanitise(instance.name or "") or instance.id.lower()[:8]


def alias_for(instance: Instance, taken: set[str], current: str | None = None) -> str:
    """The Host alias of ``instance``: ``soong-<name>``, else with its short id added,
    else with its whole id. ``current`` (its alias so far) is kept while it still fits
    the name, so an alias does not move because another instance came or went."""
    base, short = _base(instance), instance.id.lower()[:8]
    candidates = [PREFIX + base, f"{PREFIX}{base}-{short}",
                  f"{PREFIX}{base}-{sanitise(instance.id) or short}"]
    if current in candidates and current not in taken:
        return current
    for candidate in candidates:
        if candidate not in taken:
            return candidate
    return f"{PREFIX}{sanitise(instance.id)}"


@dataclass(frozen=True)
class Synced:
    written: bool
    """Whether soong's file changed."""
    forgotten: tuple[str, ...]
    """Instances seen ended, or absent from a complete list: their entries and host
    keys are gone (if they had any)."""


def sync(instances: Sequence[Instance], *, complete: bool, account: str,
         section: Mapping[str, Any]) -> Synced:
    """Bring soong's file up to date with ``instances`` (see the module docstring)."""
    from soong_plugins.fabric_tunnel.hostkeys import HostKeys
    from soong_plugins.fabric_tunnel.settings import target_for

    path = config_path()
    try:
        private_dir(path.parent)
        with locked(path.with_name("config.lock")):
            before = read_entries(path)
            by_id = {entry.instance_id: entry for entry in before}
            gone: list[str] = []
            problems: list[SoongError] = []
            seen = {instance.id for instance in instances}
            # what ended goes first, so that its names are free for what is new
            for instance in instances:
                if not instance.state.billing:  # ended or terminating
                    by_id.pop(instance.id, None)
                    gone.append(instance.id)
            if complete:
                for instance_id, entry in list(by_id.items()):
                    if entry.account == account and instance_id not in seen:
                        del by_id[instance_id]
                        gone.append(instance_id)
            taken = {entry.host for entry in by_id.values()}
            for instance in instances:
                if instance.state is InstanceState.ACTIVE and instance.ip:
                    old = by_id.get(instance.id)
                    if old is not None:
                        taken.discard(old.host)
                    alias = alias_for(instance, taken, old.host if old else None)
                    try:
                        block = target_for(instance, section).host_block(alias)
                    except SoongError as exc:  # one bad reply spoils no other entry
                        problems.append(exc)
                        by_id.pop(instance.id, None)
                        continue
                    by_id[instance.id] = Entry(instance.id, account, alias, block)
                    taken.add(alias)
                # booting, unhealthy, or active without an address: as it was
            after = list(by_id.values())
            written = after != before
            if written:
                write_private(path, render(after))
            if gone:
                HostKeys().forget(*gone)
    except OSError as exc:
        raise SoongError(f"cannot update soong's ssh config {path}: {exc.strerror or exc}") \
            from None
    if written and after and not _opt_out_path().exists():
        add_include()
    if problems:
        first = problems[0]
        more = f" (and {len(problems) - 1} more)" if len(problems) > 1 else ""
        raise SoongError(f"no Host entry for {first.message}{more}", hints=first.hints)
    return Synced(written, tuple(gone))


def entry_of(instance_id: str) -> Entry | None:
    for entry in read_entries():
        if entry.instance_id == instance_id:
            return entry
    return None


# -- the user's ~/.ssh/config ---------------------------------------------------------------


INCLUDE_LINE = re.compile(r"\s*include(?:\s*=\s*|\s+)(?P<args>.*)", re.IGNORECASE)


def _includes_ours(line: str, ours: str) -> bool:
    """Whether ``line`` is an ``Include`` naming ``ours`` (among others, quoted or not,
    with ``~``)."""
    found = INCLUDE_LINE.match(line)
    if not found:
        return False
    try:
        args = shlex.split(found.group("args"), comments=True)
    except ValueError:
        return False
    return any(os.path.expanduser(arg) == ours for arg in args)


def _include_arg(path: Path) -> str:
    """``path`` as an ``Include`` argument: quoted when it has a space (``Include``
    expands ``~`` and globs, not ``%`` tokens)."""
    text = str(path)
    return f'"{text}"' if any(ch.isspace() for ch in text) else text


def _target(path: Path) -> Path:
    """Where writing ``path`` must go: a symlinked config's target (a dotfiles repo
    keeps its link)."""
    return Path(os.path.realpath(path)) if path.is_symlink() else path


def _read_user(path: Path) -> str | None:
    try:
        return path.read_text(encoding="utf-8")
    except FileNotFoundError:
        return None
    except UnicodeDecodeError:
        raise SoongError(f"{path} is not UTF-8 text: not changing it",
                         hints=[f"add `Include {config_path()}` at its top yourself"]) from None
    except OSError as exc:
        raise SoongError(f"cannot read {path}: {exc.strerror or exc}") from None


def _write_user(path: Path, old: str | None, new: str) -> None:
    """Replace the user's config atomically, keeping its mode, after copying the old
    text to ``<config>.soong-backup``."""
    target = _target(path)
    mode = None
    try:
        if old is not None:
            mode = target.stat().st_mode & 0o777
            write_private(target.with_name(target.name + BACKUP_SUFFIX), old)
        write_private(target, new)
        if mode is not None and mode != 0o600:
            os.chmod(target, mode)
    except OSError as exc:
        raise SoongError(f"cannot write {target}: {exc.strerror or exc}") from None


def add_include(path: Path | None = None) -> bool:
    """Put ``Include <soong's file>`` at the top of the user's config unless one is
    there already (anywhere); True when it was added. Clears the opt-out marker."""
    path = path or user_config_path()
    opt_out = _opt_out_path()
    if opt_out.exists():
        try:
            opt_out.unlink()
        except OSError as exc:
            raise SoongError(f"cannot remove {opt_out}: {exc.strerror or exc}") from None
    old = _read_user(path)
    ours = str(config_path())
    if old is not None and any(_includes_ours(line, ours) for line in old.splitlines()):
        return False
    if not path.parent.is_dir() and not path.is_symlink():
        try:
            private_dir(path.parent)
        except OSError as exc:
            raise SoongError(f"cannot create {path.parent}: {exc.strerror or exc}") from None
    head = f"{INCLUDE_COMMENT}\nInclude {_include_arg(config_path())}\n"
    _write_user(path, old, head + ("\n" + old if old else ""))
    return True


def remove_include(path: Path | None = None) -> bool:
    """Take soong's ``Include`` (and the comment soong put above it) out of the user's
    config, and keep it out (the marker :func:`sync` honours); True when one was there."""
    path = path or user_config_path()
    try:
        write_private(_opt_out_path(), "soong ssh --remove-include: do not add the Include "
                                       "again until `soong ssh --add-include`\n")
    except OSError as exc:
        raise SoongError(f"cannot write {_opt_out_path()}: {exc.strerror or exc}") from None
    old = _read_user(path)
    if old is None:
        return False
    ours = str(config_path())
    lines = old.splitlines(keepends=True)
    kept: list[str] = []
    removed = False
    for line in lines:
        if _includes_ours(line, ours):
            removed = True
            if kept and kept[-1].rstrip("\n") == INCLUDE_COMMENT:
                kept.pop()
            continue
        kept.append(line)
    if not removed:
        return False
    text = "".join(kept)
    if text.startswith("\n") and old.startswith(INCLUDE_COMMENT):
        text = text[1:]  # the blank line soong added after its lines
    _write_user(path, old, text)
    return True
