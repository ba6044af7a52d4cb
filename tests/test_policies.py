"""Cost policies and the policy engine: every boundary of every built-in policy."""

from __future__ import annotations

import json
import math
import subprocess
import sys
import textwrap
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from soong_core.clock import ManualClock
from soong_core.display import format_duration
from soong_core.interfaces import CostPolicy
from soong_core.models import Action, Decision, InstanceView, Reason
from soong_core.plugins import Plugins
from soong_core.policy import (
    NO_LIMIT_MESSAGE,
    DeadlinePolicy,
    combine,
    deadline_decision,
    evaluate,
    evaluate_each,
)
from soong_plugins.policies import soong_agent_bundle_modules
from soong_plugins.policies.budget import BudgetPolicy
from soong_plugins.policies.hard import HardTimeoutPolicy
from soong_plugins.policies.idle import IdlePolicy, idle_deadline
from soong_plugins.policies.lease import LeasePolicy

REPO = Path(__file__).resolve().parent.parent
HOUR = 3600.0
MINUTE = 60.0
WARN = 10 * MINUTE
GRACE = 10 * MINUTE
IDLE = 30 * MINUTE


def make_view(clock: ManualClock, *, lease_h: float = 4, hard_h: float = 8, **changes: Any) -> InstanceView:
    """An instance launched at the clock's current time with the default limits."""
    launched = clock.now()
    view = InstanceView("i-1", launched, launched + lease_h * HOUR, launched + hard_h * HOUR,
                        idle_timeout_s=IDLE, idle_grace_s=GRACE, warn_before_s=WARN)
    return replace(view, **changes)


def builtins() -> list[tuple[str, CostPolicy]]:
    return named(LeasePolicy(), HardTimeoutPolicy(), IdlePolicy(), BudgetPolicy())


def named(*policies: CostPolicy) -> list[tuple[str, CostPolicy]]:
    """``(name, policy)`` pairs, what the engine runs over."""
    return [(policy.name, policy) for policy in policies]


@pytest.fixture
def active(clock: ManualClock) -> InstanceView:
    """Idle disabled so that lease and hard timeout can be looked at alone."""
    return make_view(clock, idle_timeout_s=None)


# -- format_duration -------------------------------------------------------------------


@pytest.mark.parametrize(("seconds", "text"), [
    (0, "0s"), (45, "45s"), (59.9, "59s"), (60, "1m"), (3 * 60 + 45, "3m"),
    (3599, "59m"), (3600, "1h"), (6300, "1h45m"), (6359, "1h45m"), (7 * 3600 + 60, "7h1m"),
    (86_400, "1d"), (86_400 + 3 * 3600 + 59 * 60, "1d3h"), (-90, "-1m"), (-0.5, "0s"),
])
def test_format_duration(seconds: float, text: str) -> None:
    assert format_duration(seconds) == text


@pytest.mark.parametrize("bad", [math.nan, math.inf, -math.inf])
def test_format_duration_refuses_non_finite(bad: float) -> None:
    with pytest.raises(ValueError):
        format_duration(bad)


# -- deadline policies: lease and hard timeout ------------------------------------------


@pytest.mark.parametrize(("policy", "field", "reason"), [
    (LeasePolicy(), "lease_deadline", "lease_expired"),
    (HardTimeoutPolicy(), "hard_deadline", "hard_timeout"),
])
class TestDeadlinePolicy:
    def test_keep_before_warning_window(self, policy: CostPolicy, field: str, reason: str,
                                        clock: ManualClock, active: InstanceView) -> None:
        deadline = getattr(active, field)
        clock.set(deadline - WARN - 1)
        decision = policy.evaluate(active, clock.now())
        assert decision == Decision(Action.KEEP, (reason,), deadline, deadline - WARN,
                                    decision.message)
        assert decision.message == f"stops in 10m: {reason}"

    def test_warn_from_the_start_of_the_window(self, policy: CostPolicy, field: str, reason: str,
                                               clock: ManualClock, active: InstanceView) -> None:
        deadline = getattr(active, field)
        for at in (deadline - WARN, deadline - 1):
            clock.set(at)
            decision = policy.evaluate(active, clock.now())
            assert decision.action is Action.WARN, at - deadline
            assert decision.next_check == deadline
            assert decision.reasons == (reason,)

    def test_terminate_exactly_at_and_after_the_deadline(self, policy: CostPolicy, field: str,
                                                         reason: str, clock: ManualClock,
                                                         active: InstanceView) -> None:
        deadline = getattr(active, field)
        for at in (deadline, deadline + 1, deadline + 5 * HOUR):
            clock.set(at)
            decision = policy.evaluate(active, clock.now())
            assert decision.action is Action.TERMINATE
            assert decision.reasons == (reason,)
            assert decision.deadline == deadline
            assert decision.next_check is None

    def test_no_warning_window(self, policy: CostPolicy, field: str, reason: str,
                               clock: ManualClock, active: InstanceView) -> None:
        view = replace(active, warn_before_s=0)
        deadline = getattr(view, field)
        clock.set(deadline - 1)
        decision = policy.evaluate(view, clock.now())
        assert (decision.action, decision.next_check) == (Action.KEEP, deadline)


def test_lease_and_hard_timeout_are_one_deadline_policy_with_two_parameters() -> None:
    """One verdict for both (the engine's deadline_decision), parameterised by name,
    reason and which deadline: neither carries its own copy of the logic."""
    for policy in (LeasePolicy(), HardTimeoutPolicy()):
        assert isinstance(policy, DeadlinePolicy)
        assert type(policy).evaluate is DeadlinePolicy.evaluate
    assert isinstance(LeasePolicy.from_config({}), LeasePolicy)
    assert isinstance(HardTimeoutPolicy.from_config({}), HardTimeoutPolicy)


def test_a_deadline_policy_is_one_subclass_away(clock: ManualClock,
                                                active: InstanceView) -> None:
    class Midway(DeadlinePolicy):
        name = "midway"
        reason = "midway"

        def deadline(self, view: InstanceView) -> float:
            return (view.launched_at + view.lease_deadline) / 2

    halfway = (active.launched_at + active.lease_deadline) / 2
    clock.set(halfway)
    decision = Midway().evaluate(active, clock.now())
    assert (decision.action, decision.reasons, decision.deadline) == (
        Action.TERMINATE, ("midway",), halfway)
    with pytest.raises(TypeError):
        DeadlinePolicy()  # type: ignore[abstract]  # which deadline is not optional


def test_extension_moves_the_lease_not_the_hard_deadline(clock: ManualClock,
                                                         active: InstanceView) -> None:
    extended = replace(active, lease_deadline=active.lease_deadline + 2 * HOUR)
    clock.set(active.lease_deadline)
    assert LeasePolicy().evaluate(active, clock.now()).action is Action.TERMINATE
    assert LeasePolicy().evaluate(extended, clock.now()).action is Action.KEEP
    assert HardTimeoutPolicy().evaluate(extended, clock.now()).deadline == active.hard_deadline


def test_lease_extended_past_the_hard_deadline_still_stops_at_the_hard_deadline(
        clock: ManualClock, active: InstanceView) -> None:
    view = replace(active, lease_deadline=active.hard_deadline + 10 * HOUR,
                   last_activity_at=active.hard_deadline)
    clock.set(active.hard_deadline)
    decision = evaluate(builtins(), view, clock.now())
    assert decision.action is Action.TERMINATE
    assert decision.reasons == ("hard_timeout",)
    assert decision.deadline == active.hard_deadline
    clock.set(active.hard_deadline - 1)
    assert evaluate(builtins(), view, clock.now()).action is Action.WARN


def test_lease_extended_up_to_the_hard_deadline_reports_both_reasons(
        clock: ManualClock, active: InstanceView) -> None:
    view = replace(active, lease_deadline=active.hard_deadline)
    clock.set(view.hard_deadline - 105 * MINUTE)
    decision = evaluate(builtins(), view, clock.now())
    assert decision.action is Action.KEEP
    assert set(decision.reasons) == {"lease_expired", "hard_timeout"}
    assert decision.message == "stops in 1h45m: lease_expired, hard_timeout"
    clock.set(view.hard_deadline)
    decision = evaluate(builtins(), view, clock.now())
    assert decision.action is Action.TERMINATE
    assert decision.reasons == ("lease_expired", "hard_timeout")
    assert decision.message == "stop now: lease_expired, hard_timeout"


# -- idle -------------------------------------------------------------------------------


def test_idle_without_activity_counts_from_launch(clock: ManualClock) -> None:
    view = make_view(clock)
    launched = view.launched_at
    policy = IdlePolicy()
    assert idle_deadline(view) == launched + IDLE
    assert policy.evaluate(view, launched).next_check == launched + IDLE - WARN
    assert policy.evaluate(view, launched + IDLE - WARN - 1).action is Action.KEEP
    assert policy.evaluate(view, launched + IDLE - WARN).action is Action.WARN
    assert policy.evaluate(view, launched + IDLE - 1).action is Action.WARN
    decision = policy.evaluate(view, launched + IDLE)
    assert (decision.action, decision.reasons) == (Action.TERMINATE, ("idle_timeout",))


def test_idle_cannot_fire_inside_the_boot_grace_period(clock: ManualClock) -> None:
    """A timeout shorter than the grace period waits for the grace period to end."""
    view = make_view(clock, idle_timeout_s=5 * MINUTE, idle_grace_s=20 * MINUTE)
    launched = view.launched_at
    policy = IdlePolicy()
    for at in (launched + 5 * MINUTE, launched + 19 * MINUTE, launched + 20 * MINUTE - 1):
        assert policy.evaluate(view, at).action is not Action.TERMINATE, at - launched
    decision = policy.evaluate(view, launched + 20 * MINUTE)
    assert decision.action is Action.TERMINATE
    assert decision.deadline == launched + 20 * MINUTE


def test_activity_inside_grace_keeps_the_grace_deadline_if_it_is_later(clock: ManualClock) -> None:
    view = make_view(clock, idle_timeout_s=5 * MINUTE, idle_grace_s=20 * MINUTE)
    active = replace(view, last_activity_at=view.launched_at + 2 * MINUTE)
    assert idle_deadline(active) == view.launched_at + 20 * MINUTE
    late = replace(view, last_activity_at=view.launched_at + 18 * MINUTE)
    assert idle_deadline(late) == view.launched_at + 23 * MINUTE


def test_activity_resets_idle(clock: ManualClock) -> None:
    view = make_view(clock)
    clock.advance(IDLE)
    assert IdlePolicy().evaluate(view, clock.now()).action is Action.TERMINATE
    used = replace(view, last_activity_at=clock.now() - 1)
    decision = IdlePolicy().evaluate(used, clock.now())
    assert decision.action is Action.KEEP
    assert decision.deadline == clock.now() - 1 + IDLE
    assert decision.next_check == clock.now() - 1 + IDLE - WARN


@pytest.mark.parametrize("timeout", [None, 0])
def test_idle_disabled(clock: ManualClock, timeout: float | None) -> None:
    view = make_view(clock, idle_timeout_s=timeout)
    assert IdlePolicy().evaluate(view, view.launched_at + 100 * HOUR) is None
    decision = evaluate(builtins(), view, view.launched_at + HOUR)
    assert "idle_timeout" not in decision.reasons


# -- the engine ---------------------------------------------------------------------------


class Fixed(CostPolicy):
    """A policy that returns whatever it was given, to drive the engine directly."""

    name = "fixed"

    def __init__(self, decision: Decision | None) -> None:
        self.decision = decision

    def evaluate(self, view: InstanceView, now: float) -> Decision | None:
        return self.decision


class Broken(CostPolicy):
    name = "broken"

    def evaluate(self, view: InstanceView, now: float) -> Decision | None:
        raise RuntimeError("boom")


def test_engine_earliest_deadline_wins_and_next_check_is_the_earliest(
        clock: ManualClock) -> None:
    view = make_view(clock)
    now = view.launched_at + 5 * MINUTE
    decision = evaluate(builtins(), view, now)
    assert decision.action is Action.KEEP
    assert decision.reasons == ("idle_timeout",)
    assert decision.deadline == view.launched_at + IDLE
    assert decision.next_check == view.launched_at + IDLE - WARN
    assert decision.message == "stops in 25m: idle_timeout"


def test_engine_next_check_comes_from_any_policy(clock: ManualClock) -> None:
    """A later deadline can have an earlier next check (its warning window opens first)."""
    soon = deadline_decision("a", 1000.0, 0.0, warn_before_s=0)
    later = deadline_decision("b", 1100.0, 0.0, warn_before_s=500)
    decision = combine([soon, later], 0.0)
    assert (decision.deadline, decision.reasons, decision.next_check) == (1000.0, ("a",), 600.0)


def test_engine_most_severe_action_wins(clock: ManualClock) -> None:
    view = make_view(clock)
    now = view.lease_deadline + 1
    view = replace(view, last_activity_at=now)  # idle: keep; lease: terminate
    decision = evaluate(builtins(), view, now)
    assert decision.action is Action.TERMINATE
    assert decision.reasons == ("lease_expired",)
    assert decision.message == "stop now: lease_expired (limit passed 1s ago)"


def test_engine_terminate_reasons_name_only_terminating_policies() -> None:
    keep_early = Decision(Action.KEEP, ("early",), deadline=50.0, next_check=40.0)
    kill = Decision(Action.TERMINATE, ("custom",), deadline=None)
    decision = combine([keep_early, kill], 30.0)
    assert decision.action is Action.TERMINATE
    assert decision.reasons == ("custom",)
    assert decision.deadline == 30.0
    assert decision.next_check == 40.0


def test_engine_ignores_none_and_reports_broken_policies(clock: ManualClock) -> None:
    view = make_view(clock)
    errors: list[tuple[str, str]] = []
    policies = [("silent", Fixed(None)), ("broken", Broken()), ("liar", Fixed("terminate")),
                ("lease", LeasePolicy())]
    results = evaluate_each(policies, view, view.launched_at,
                            on_error=lambda name, exc: errors.append((name, type(exc).__name__)))
    assert [name for name, _ in results] == ["lease"]
    assert errors == [("broken", "RuntimeError"), ("liar", "TypeError")]
    decision = evaluate(policies, view, view.launched_at, on_error=lambda n, e: None)
    assert decision.reasons == ("lease_expired",)


def test_engine_with_no_opinion_keeps_without_deadline(clock: ManualClock) -> None:
    view = make_view(clock)
    decision = evaluate([("fixed", Fixed(None)), ("budget", BudgetPolicy())], view, clock.now())
    assert decision == Decision(Action.KEEP, (), None, None, NO_LIMIT_MESSAGE)
    assert evaluate([], view, clock.now()).action is Action.KEEP


def test_engine_runs_named_pairs_from_objects_or_the_plugin_registry(plugins: Plugins,
                                                                     clock: ManualClock) -> None:
    view = make_view(clock)
    by_pairs = evaluate(builtins(), view, clock.now())
    by_registry = evaluate(plugins.policies().create_all({}), view, clock.now())
    assert by_pairs == by_registry
    assert [n for n, _ in plugins.policies().create_all({})] == [
        "lease", "hard_timeout", "idle", "budget"]


def test_the_agent_can_sleep_until_next_check(clock: ManualClock) -> None:
    """Following next_check from launch visits warn, then terminate, at the exact moments."""
    view = make_view(clock, lease_h=1)
    seen: list[tuple[float, Action]] = []
    for _ in range(10):
        decision = evaluate(builtins(), view, clock.now())
        seen.append((clock.now() - view.launched_at, decision.action))
        if decision.action is Action.TERMINATE:
            break
        assert decision.next_check is not None and decision.next_check > clock.now()
        clock.set(decision.next_check)
    assert seen == [(0, Action.KEEP), (IDLE - WARN, Action.WARN), (IDLE, Action.TERMINATE)]


# -- properties ----------------------------------------------------------------------------

times = st.floats(min_value=0, max_value=1e6, allow_nan=False)


@given(st.lists(st.tuples(times, st.floats(min_value=0, max_value=1e4)), max_size=6), times)
def test_property_engine_deadline_is_the_min_and_action_the_max(
        limits: list[tuple[float, float]], now: float) -> None:
    decisions = [deadline_decision(f"r{i}", deadline, now, warn)
                 for i, (deadline, warn) in enumerate(limits)]
    combined = combine(decisions, now)
    if not decisions:
        assert combined.deadline is None and combined.action is Action.KEEP
        return
    assert combined.action is max((d.action for d in decisions), key=lambda a: a.severity)
    if combined.action is Action.TERMINATE:
        assert combined.deadline == min(d.deadline for d in decisions  # type: ignore[type-var]
                                        if d.action is Action.TERMINATE)
    else:
        assert combined.deadline == min(deadline for deadline, _ in limits)
        assert combined.next_check is not None and combined.next_check > now
    assert set(combined.reasons) == {f"r{i}" for i, d in enumerate(decisions)
                                     if d.deadline == combined.deadline}


@given(launch=times, lease=st.floats(0, 1e5), hard=st.floats(0, 1e5),
       idle=st.one_of(st.none(), st.floats(1, 1e5)), grace=st.floats(0, 1e4),
       activity=st.one_of(st.none(), st.floats(0, 2e5)), offset=st.floats(0, 3e5))
def test_property_builtin_deadline_is_the_earliest_limit(
        launch: float, lease: float, hard: float, idle: float | None, grace: float,
        activity: float | None, offset: float) -> None:
    view = InstanceView("i", launch, launch + lease, launch + hard,
                        last_activity_at=None if activity is None else launch + activity,
                        idle_timeout_s=idle, idle_grace_s=grace)
    now = launch + offset
    decision = evaluate(builtins(), view, now)
    limits = [view.lease_deadline, view.hard_deadline]
    if idle is not None:
        limits.append(idle_deadline(view))  # type: ignore[arg-type]
    if decision.action is Action.TERMINATE:
        assert decision.deadline == min(limits) <= now
    else:
        assert decision.deadline == min(limits) > now
    if idle is not None and now < launch + grace:
        assert "idle_timeout" not in (decision.reasons if decision.action is Action.TERMINATE
                                      else ())


# -- the plugin ------------------------------------------------------------------------------


def test_plugin_registers_the_four_policies(plugins: Plugins) -> None:
    registry = plugins.policies()
    assert registry.names() == ["lease", "hard_timeout", "idle", "budget"]
    created = {name: registry.create(name, {}) for name in registry.names()}
    assert isinstance(created["lease"], LeasePolicy)
    assert isinstance(created["hard_timeout"], HardTimeoutPolicy)
    assert isinstance(created["idle"], IdlePolicy)
    assert isinstance(created["budget"], BudgetPolicy)
    assert {name: p.name for name, p in created.items()} == {n: n for n in created}
    assert {p.reason for p in created.values() if hasattr(p, "reason")} == {
        Reason.LEASE_EXPIRED.value, Reason.HARD_TIMEOUT.value, Reason.IDLE_TIMEOUT.value}


def test_plugin_names_its_bundle_modules(plugins: Plugins) -> None:
    assert "soong_plugins.policies" in plugins.agent_bundle_modules()
    # the engine's "stops in 1h45m" is worded by the display module: it travels too
    assert {"soong_core.policy", "soong_core.display"} <= set(soong_agent_bundle_modules())
    assert set(soong_agent_bundle_modules()) <= set(plugins.agent_bundle_modules())


PURE_CORE = {"soong_core", "soong_core.models", "soong_core.clock", "soong_core.interfaces",
             "soong_core.errors", "soong_core.hookspecs", "soong_core.policy",
             "soong_core.display", "soong_core.costs", "soong_core.budget",
             "soong_core.periods"}
FORBIDDEN = {"yaml", "cerberus", "requests", "urllib3", "cleo", "rich", "fabric", "paramiko",
             "hypothesis", "pytest"}


def _imports_in_isolation(statements: str) -> dict[str, Any]:
    """Run ``statements`` under ``python -I`` (no PYTHONPATH, no user site) and report
    which modules they added to ``sys.modules`` and where the soong ones came from."""
    code = textwrap.dedent(f"""
        import json, sys
        sys.path.insert(0, {str(REPO)!r})
        before = set(sys.modules)
    """) + textwrap.dedent(statements) + textwrap.dedent("""
        new = sorted(set(sys.modules) - before)
        files = {m: getattr(sys.modules[m], "__file__", None) for m in new
                 if m.split(".")[0] in ("soong_core", "soong_plugins")}
        print(json.dumps({"new": new, "files": files,
                          "stdlib": sorted(sys.stdlib_module_names)}))
    """)
    result = subprocess.run([sys.executable, "-I", "-c", code], capture_output=True,
                            text=True, timeout=60, check=False)
    assert result.returncode == 0, result.stderr
    return json.loads(result.stdout)


@pytest.mark.slow
def test_policy_modules_import_only_the_stdlib_pure_core_and_pluggy() -> None:
    report = _imports_in_isolation("""
        import soong_plugins.policies.lease, soong_plugins.policies.idle
        import soong_plugins.policies.hard, soong_plugins.policies.budget
        import soong_core.policy, soong_core.costs, soong_core.budget
        from soong_plugins.policies import soong_register_policies, soong_agent_bundle_modules
        soong_register_policies(lambda name, factory: factory({}))
        for module in soong_agent_bundle_modules():
            __import__(module)
    """)
    new = set(report["new"])
    tops = {name.split(".")[0] for name in new}
    assert not tops & FORBIDDEN
    outside = tops - set(report["stdlib"]) - {"soong_core", "soong_plugins", "pluggy"}
    assert not outside, f"policy code pulls in {sorted(outside)}"
    core = {name for name in new if name.split(".")[0] == "soong_core"}
    assert core <= PURE_CORE, f"impure core modules imported: {sorted(core - PURE_CORE)}"
    assert {"soong_plugins.policies.lease", "soong_core.policy"} <= new
    for name, path in report["files"].items():
        assert path is None or Path(path).resolve().is_relative_to(REPO), (name, path)


@pytest.mark.slow
def test_loading_the_plugin_imports_no_policy_module() -> None:
    report = _imports_in_isolation("import soong_plugins.policies")
    new = set(report["new"])
    assert "soong_plugins.policies" in new
    assert not {m for m in new if m.startswith("soong_plugins.policies.")}
    assert "soong_core.policy" not in new
