"""The policy engine: run every cost policy on an instance and combine their verdicts.

The CLI (to show "stops in 1h45m: lease_expired") calls :func:`evaluate`, and the
watchdog and the lease agent (to enforce it; neither is built yet) are to call the same
function, so they cannot disagree about when an instance's limits fall due. The rules of combination:

* policies that return ``None`` have no opinion and are ignored;
* the action is the most severe (terminate > warn > keep) of the individual
  decisions: each policy decides whether *its* time has come;
* the earliest deadline wins, and when several policies share it the combined
  decision carries all their reasons (an instance extended up to its hard limit stops
  for ``lease_expired`` and ``hard_timeout`` at once);
* ``next_check`` is the earliest moment any verdict can change with time alone, so the
  agent sleeps until then instead of polling. A change of the view itself (new
  activity, an extension) is the caller's cue to evaluate again.

Standard library and the core's pure modules only: the agent carries this module to a
bare ``python3``.
"""

from __future__ import annotations

import logging
from abc import abstractmethod
from typing import TYPE_CHECKING, Any, Callable, ClassVar, Iterable, Mapping, Sequence, Tuple

from soong_core.display import format_duration
from soong_core.interfaces import CostPolicy
from soong_core.models import Action, Decision, InstanceView, Timestamp

if TYPE_CHECKING:
    from typing_extensions import Self  # typing's from 3.11; the agent runs on 3.10

log = logging.getLogger("soong.policy")

NamedPolicies = Sequence[Tuple[str, "CostPolicy"]]
"""The policies to run, as ``(name, policy)`` pairs: the name is what a decision's
reasons and errors report. A plugin registry gives them with ``create_all(config)``;
policies in hand with ``[(p.name, p) for p in policies]``."""

ErrorHandler = Callable[[str, BaseException], None]

NO_LIMIT_MESSAGE = "no limit applies"


def describe(action: Action, reasons: Iterable[str], deadline: Timestamp | None,
             now: Timestamp) -> str:
    """The one line users read: ``"stops in 1h45m: lease_expired"`` or ``"stop now: ..."``."""
    why = ", ".join(reasons)
    if deadline is None:
        if action is Action.TERMINATE:
            return f"stop now: {why}" if why else "stop now"
        return f"{action.value}: {why}" if why else NO_LIMIT_MESSAGE
    if action is Action.TERMINATE or now >= deadline:
        late = now - deadline
        text = f"stop now: {why}" if why else "stop now"
        return f"{text} (limit passed {format_duration(late)} ago)" if late >= 1 else text
    text = f"stops in {format_duration(deadline - now)}"
    return f"{text}: {why}" if why else text


# -- building blocks for policies --------------------------------------------------


def deadline_decision(reason: str, deadline: Timestamp, now: Timestamp,
                      warn_before_s: float) -> Decision:
    """The verdict of a policy that stops an instance at ``deadline``.

    KEEP before the warning window (look again when it opens), WARN inside the last
    ``warn_before_s`` seconds (look again at the deadline), TERMINATE at or after the
    deadline: exactly at the deadline is already too late, so an instance never bills
    past its limit by waiting for one more tick. After the deadline there is nothing
    left to wait for, so ``next_check`` is ``None``.
    """
    if now >= deadline:
        return Decision(Action.TERMINATE, (reason,), deadline, None,
                        describe(Action.TERMINATE, (reason,), deadline, now))
    warn_start = deadline - max(0.0, warn_before_s)
    if now >= warn_start:
        return Decision(Action.WARN, (reason,), deadline, deadline,
                        describe(Action.WARN, (reason,), deadline, now))
    return Decision(Action.KEEP, (reason,), deadline, warn_start,
                    describe(Action.KEEP, (reason,), deadline, now))


class DeadlinePolicy(CostPolicy):
    """A policy that stops an instance at one deadline its view carries, for one reason.

    The lease and the hard timeout are this class, parameterised by their ``name``,
    their ``reason`` and which deadline (:meth:`deadline`); the verdict is
    :func:`deadline_decision` for both. Subclass it for any other fixed deadline.
    The limit's length lives in the view (fixed per instance), not in config.
    """

    reason: ClassVar[str] = ""

    @classmethod
    def from_config(cls, config: Mapping[str, Any]) -> Self:
        """The deadline is in the view (from the launch tags and extensions), not in config."""
        return cls()

    @abstractmethod
    def deadline(self, view: InstanceView) -> Timestamp:
        """Which of the view's deadlines this policy enforces."""

    def evaluate(self, view: InstanceView, now: Timestamp) -> Decision:
        return deadline_decision(self.reason, self.deadline(view), now, view.warn_before_s)


# -- the engine ----------------------------------------------------------------------


def _log_error(name: str, exc: BaseException) -> None:
    log.warning("cost policy %r failed: %s: %s (ignored; the other policies still apply)",
                name, type(exc).__name__, " ".join(str(exc).split()))


def evaluate_each(policies: NamedPolicies, view: InstanceView, now: Timestamp, *,
                  on_error: ErrorHandler | None = None) -> list[tuple[str, Decision]]:
    """Each policy's own decision, by name, leaving out those with no opinion.

    A policy that raises, or returns something that is not a Decision, is reported to
    ``on_error`` (default: one warning line) and left out: one broken third-party
    policy must not stop the built-in limits from being enforced.
    """
    report = on_error or _log_error
    results: list[tuple[str, Decision]] = []
    for name, policy in policies:
        try:
            decision = policy.evaluate(view, now)
            if decision is not None and not isinstance(decision, Decision):
                raise TypeError(f"evaluate returned {type(decision).__name__}, not a Decision")
        except Exception as exc:
            report(name, exc)
            continue
        if decision is not None:
            results.append((name, decision))
    return results


def combine(decisions: Iterable[Decision | tuple[str, Decision] | None], now: Timestamp) -> Decision:
    """Fold individual decisions into one (see the module docstring for the rules).

    A TERMINATE without a deadline counts as due ``now``. When the combined action is
    TERMINATE, the reasons come from the terminating decisions only, so the reason an
    instance is stopped for always names a policy that asked for it.
    """
    found: list[Decision] = []
    for item in decisions:
        decision = item[1] if isinstance(item, tuple) else item
        if decision is not None:
            found.append(decision)
    if not found:
        return Decision(Action.KEEP, message=NO_LIMIT_MESSAGE)

    action = max((d.action for d in found), key=lambda a: a.severity)

    def due(d: Decision) -> Timestamp | None:
        if d.deadline is None and d.action is Action.TERMINATE:
            return now
        return d.deadline

    pool = [d for d in found if d.action is Action.TERMINATE] if action is Action.TERMINATE else found
    deadlines = [t for t in map(due, pool) if t is not None]
    if deadlines:
        deadline: Timestamp | None = min(deadlines)
        chosen = [d for d in pool if due(d) == deadline]
    else:
        deadline = None
        chosen = [d for d in pool if d.action is action]
    reasons: list[str] = []
    for d in chosen:
        reasons.extend(r for r in d.reasons if r not in reasons)
    checks = [d.next_check for d in found if d.next_check is not None]
    next_check = min(checks) if checks else None
    return Decision(action, tuple(reasons), deadline, next_check,
                    describe(action, reasons, deadline, now))


def evaluate(policies: NamedPolicies, view: InstanceView, now: Timestamp, *,
             on_error: ErrorHandler | None = None) -> Decision:
    """The combined decision of every policy for ``view`` at ``now``.

    For example ``evaluate(plugins.policies().create_all(config), view,
    clock.now()).message`` is ``"stops in 1h45m: lease_expired"``.
    """
    return combine(evaluate_each(policies, view, now, on_error=on_error), now)
