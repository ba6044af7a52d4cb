"""Which instance a command means: ``soong stop abc``, ``status --instance-id``.

Every command that acts on one instance resolves the user's words the same way, so a
habit learnt with one command works with all of them:

* no reference: the single running (billing) instance, since most users run one at a
  time and should not have to copy an id;
* a full id, then an exact name, then a unique id prefix (exact matches win over
  prefixes, as a short git hash loses to a branch name). Ids match in any case
  (``soong stop ABC`` finds ``abc123...``): a provider's ids are generated, and their
  case is no part of what a user remembers or copies from a screen. Names match
  exactly, case included: they are the user's own words, and ``Exp`` and ``exp`` may
  be two instances;
* anything else fails with one line naming the candidates, so the next attempt is
  a copy and paste away.

Pure logic over :class:`~soong_core.models.Instance` objects: the caller decides which
instances are candidates (the provider's list, or ended ones from history as well).
"""

from __future__ import annotations

import os
from typing import Callable, Iterable, Sequence

from soong_core.errors import SoongError, UsageError
from soong_core.models import Instance

SHORT_ID_MIN = 8
"""Shortest id prefix shown in tables: enough to be unique among most accounts' ids."""

MIN_SAVING = 4
"""An id is cut only when that saves this many characters: ``fake-0001`` shown as
``fake-000`` would hide the part that tells instances apart and save nothing."""

MAX_LISTED = 10
"""Candidates named in an error line; beyond that the line says how many more."""

LIST_HINT = "run `soong status` to list instances"


def short_ids(ids: Sequence[str], minimum: int = SHORT_ID_MIN) -> dict[str, str]:
    """Each id cut to its shortest prefix (at least ``minimum`` long) that no other id
    in ``ids`` shares, or whole when that saves under :data:`MIN_SAVING` characters:
    what tables show, and what :func:`select_instance` accepts back.

    In sorted order an id shares its longest common prefix with a neighbour, so one
    pass over the sorted ids is enough (a fleet of thousands stays instant).
    """
    ordered = sorted(set(ids))
    result = {}
    for index, instance_id in enumerate(ordered):
        shared = 0
        for neighbour in ordered[max(0, index - 1):index] + ordered[index + 1:index + 2]:
            shared = max(shared, len(os.path.commonprefix([instance_id, neighbour])))
        length = max(minimum, shared + 1)
        result[instance_id] = instance_id if len(instance_id) - length < MIN_SAVING \
            else instance_id[:length]
    return result


def describe_candidate(instance: Instance) -> str:
    """``"fake-0001 (exp-1, active)"``: what an error line says about one candidate."""
    name = instance.name or "no name"
    return f"{instance.id} ({name}, {instance.state.value})"


def describe_candidates(instances: Iterable[Instance], limit: int = MAX_LISTED) -> str:
    """Up to ``limit`` candidates, comma-separated, then ``"and N more"``."""
    items = list(instances)
    shown = ", ".join(describe_candidate(i) for i in items[:limit])
    if len(items) > limit:
        shown += f" and {len(items) - limit} more"
    return shown


def select_instance(instances: Sequence[Instance], ref: str | None, *,
                    ended: Callable[[], Sequence[Instance]] | None = None) -> Instance:
    """The instance ``ref`` names among ``instances``.

    :param instances: the candidates, typically ``Soong.instances()``.
    :param ref: a full id, an exact name or a unique id prefix (ids in any case);
        ``None`` means "the single running instance" (one whose state bills).
    :param ended: instances that ended and that ``instances`` no longer holds (history
        remembers them, the provider forgot them), called only when nothing in
        ``instances`` matches ``ref``: so that ``soong stop OLD`` can say OLD has already
        ended, where it would otherwise say nothing matches. They never make a match in
        ``instances`` ambiguous.
    :raises UsageError: ``ref`` is empty or blank (exit 2).
    :raises SoongError: nothing matches, or several do (exit 1); the message is one line
        listing the candidates as ``id (name, state)``.
    """
    if ref is None:
        return _the_running_one(instances)
    wanted = ref.strip()
    if not wanted:
        raise UsageError("an empty instance reference names no instance",
                         hints=["give an id, a unique id prefix or a name"])
    found = _match(instances, wanted)
    if found is None and ended is not None:
        found = _match(ended(), wanted)
    if found is not None:
        return found
    if not instances:
        raise SoongError(f"no instance matches {wanted!r}: there are no instances",
                         hints=["start one with `soong start`"])
    raise SoongError(f"no instance matches {wanted!r}; candidates: "
                     f"{describe_candidates(instances)}", hints=[LIST_HINT])


def _match(instances: Sequence[Instance], wanted: str) -> Instance | None:
    """The one instance ``wanted`` names by full id, exact name or id prefix (in any
    case), in that order; ``None`` when nothing matches; an error when several do."""
    for instance in instances:
        if instance.id == wanted:
            return instance
    by_name = [i for i in instances if i.name is not None and i.name == wanted]
    if len(by_name) == 1:
        return by_name[0]
    if by_name:
        raise SoongError(f"{len(by_name)} instances are named {wanted!r}: "
                         f"{describe_candidates(by_name)}", hints=["give the id instead"])
    folded = wanted.casefold()
    by_prefix = [i for i in instances if i.id.casefold().startswith(folded)]
    if len(by_prefix) == 1:
        return by_prefix[0]
    if by_prefix:
        raise SoongError(f"{wanted!r} matches {len(by_prefix)} instances: "
                         f"{describe_candidates(by_prefix)}",
                         hints=["give more characters of the id, or the name"])
    return None


def _the_running_one(instances: Sequence[Instance]) -> Instance:
    running = [i for i in instances if i.state.billing]
    if len(running) == 1:
        return running[0]
    if not running:
        raise SoongError("no running instance", hints=["start one with `soong start`"])
    raise SoongError(f"{len(running)} instances are running, say which: "
                     f"{describe_candidates(running)}",
                     hints=["give an id, a unique id prefix or a name"])
