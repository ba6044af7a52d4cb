"""soong-curfew: an example third-party soong plugin.

It uses three hooks, through the entry point ``curfew`` in group ``soong``:
a cost policy, a config section (``curfew.hour``), and the modules the lease agent
must carry so the instance enforces the curfew itself.
"""

from __future__ import annotations

from typing import Any, Callable, Mapping

from soong_core import hookimpl


@hookimpl
def soong_register_policies(register: Callable[..., None]) -> None:
    def factory(config: Mapping[str, Any]) -> Any:
        from soong_curfew.policy import CurfewPolicy

        return CurfewPolicy(hour=config.get("curfew", {}).get("hour", 19))

    register("curfew", factory)


@hookimpl
def soong_config_schema() -> dict[str, Any]:
    return {"curfew": {"hour": {"type": "integer", "min": 0, "max": 23, "default": 19}}}


@hookimpl
def soong_agent_bundle_modules() -> list[str]:
    return ["soong_curfew"]
