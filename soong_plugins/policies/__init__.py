"""Built-in plugin ``policies``: idle timeout, lease, hard timeout and budget.

Registered exactly like a third-party plugin. Each policy lives in its own module and
is imported only when its factory runs, so loading the plugin costs one small import.
The whole package is pure Python on the standard library and the core's pure modules:
the lease agent, once built, is to carry it and run the same code on the instance.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Callable, Mapping

from soong_core.hookspecs import hookimpl

if TYPE_CHECKING:
    from soong_core.interfaces import CostPolicy

Factory = Callable[[Mapping[str, Any]], "CostPolicy"]


def _lease(config: Mapping[str, Any]) -> CostPolicy:
    from soong_plugins.policies.lease import LeasePolicy

    return LeasePolicy.from_config(config)


def _hard(config: Mapping[str, Any]) -> CostPolicy:
    from soong_plugins.policies.hard import HardTimeoutPolicy

    return HardTimeoutPolicy.from_config(config)


def _idle(config: Mapping[str, Any]) -> CostPolicy:
    from soong_plugins.policies.idle import IdlePolicy

    return IdlePolicy.from_config(config)


def _budget(config: Mapping[str, Any]) -> CostPolicy:
    from soong_plugins.policies.budget import BudgetPolicy

    return BudgetPolicy.from_config(config)


@hookimpl
def soong_register_policies(register: Callable[[str, Factory], None]) -> None:
    register("lease", _lease)
    register("hard_timeout", _hard)
    register("idle", _idle)
    register("budget", _budget)


@hookimpl
def soong_agent_bundle_modules() -> list[str]:
    """This package and the core modules its policies import beyond models/clock."""
    return ["soong_plugins.policies", "soong_core.policy", "soong_core.display",
            "soong_core.costs", "soong_core.periods", "soong_core.budget"]
