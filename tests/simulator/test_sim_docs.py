"""The simulator's documentation keeps up with its commands, routes and knobs."""

from __future__ import annotations

import re
from pathlib import Path

from soong_plugins.lambda_labs import SIM_COMMANDS
from soong_plugins.lambda_labs.simulator import control
from soong_plugins.lambda_labs.simulator.app import SETTING_RULES
from soong_plugins.lambda_labs.simulator.faults import FAULT_NAMES

DOCS = Path(__file__).resolve().parents[2] / "docs"


def test_the_command_group_page_describes_every_sim_command() -> None:
    page = (DOCS / "commands" / "sim.md").read_text()
    for name in SIM_COMMANDS:
        assert f"## soong {name}" in page, f"docs/commands/sim.md lacks `soong {name}`"


def test_every_control_route_and_knob_is_documented() -> None:
    page = (DOCS / "simulator.md").read_text()
    routes = set(re.findall(r"`(?:GET|PUT|POST|PATCH|DELETE) (/_sim/[^`?]*)", page))
    for route in control.ROUTES:
        assert route.template in routes, f"docs/simulator.md lacks {route.method} {route.template}"
    for knob in [*SETTING_RULES, *FAULT_NAMES, "speed", "rate_limit", "account_active"]:
        assert f"| `{knob}` |" in page, f"docs/simulator.md lacks knob {knob}"
