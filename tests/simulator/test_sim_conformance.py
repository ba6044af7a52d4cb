"""schemathesis, with the official spec, against a simulator: every operation, every phase
that needs no links (examples, coverage, fuzzing), 90 seconds, four checks.

The only allowlist is the documented one: the statuses docs/simulator.md lists, per
operation, as answers the spec does not list (section "Statuses the spec does not
list"). The test reads that table, asserts it equals :data:`DEVIATIONS`, adds exactly
those responses to a copy of the spec, and requires schemathesis to pass on the copy.
"""

from __future__ import annotations

import copy
import json
import os
import re
import shutil
import subprocess
import sys
from importlib import resources
from pathlib import Path
from typing import Any, Callable

import pytest

from soong_plugins.lambda_labs.simulator.testing import SimHarness

DOCS = Path(__file__).resolve().parents[2] / "docs" / "simulator.md"
SECTION = "## Statuses the spec does not list"

DEVIATIONS: frozenset[tuple[str, str, int]] = frozenset({
    ("POST", "/instance-operations/restart", 400),
    ("POST", "/instance-operations/terminate", 400),
    ("PUT", "/firewall-rules", 400),
    ("PATCH", "/firewall-rulesets/global", 400),
    ("PATCH", "/firewall-rulesets/{id}", 400),
})
"""(method, path under /api/v1, status): a body the schema rejects answers 400
``global/invalid-parameters`` on operations whose spec lists no 400."""

CHECKS = ("not_a_server_error", "status_code_conformance", "content_type_conformance",
          "response_schema_conformance")
MAX_TIME = 90


def documented_deviations(page: str) -> set[tuple[str, str, int]]:
    """The per-operation rows of the docs' table: ``| `METHOD /path` | STATUS ...``."""
    assert SECTION in page, f"docs/simulator.md lacks the section {SECTION!r}"
    section = page.split(SECTION, 1)[1].split("\n## ", 1)[0]
    rows = re.findall(r"^\| `(GET|POST|PUT|PATCH|DELETE) (/[^`]*)` \| (\d{3})\b", section,
                      re.MULTILINE)
    return {(method, path, int(status)) for method, path, status in rows}


def test_the_allowlist_is_the_documented_list() -> None:
    assert documented_deviations(DOCS.read_text()) == set(DEVIATIONS)


def test_each_deviation_is_an_operation_the_spec_does_not_list_the_status_for() -> None:
    spec = _spec()
    for method, path, status in DEVIATIONS:
        operation = spec["paths"]["/api/v1" + path][method.lower()]
        assert str(status) not in operation["responses"], (method, path, status)


def _spec() -> dict[str, Any]:
    text = (resources.files("soong_plugins.lambda_labs.spec")
            / "lambda-cloud-openapi-1.8.3.json").read_text()
    spec: dict[str, Any] = json.loads(text)
    return spec


def spec_with_deviations() -> dict[str, Any]:
    """The spec, plus each documented deviation as a response of its operation (the
    envelope of ``global/invalid-parameters``, as the spec's other 400s have it)."""
    spec = copy.deepcopy(_spec())
    invalid = spec["paths"]["/api/v1/ssh-keys"]["post"]["responses"]["400"]
    for method, path, status in DEVIATIONS:
        assert status == 400, "only 400 envelopes are modelled here"
        responses = spec["paths"]["/api/v1" + path][method.lower()]["responses"]
        responses[str(status)] = copy.deepcopy(invalid)
    return spec


def _schemathesis() -> str | None:
    beside = Path(sys.executable).with_name("st")
    if beside.exists():
        return str(beside)
    return shutil.which("st")


@pytest.mark.slow
def test_schemathesis_finds_nothing_beyond_the_documented_deviations(
        sim_factory: Callable[..., SimHarness], tmp_path: Path) -> None:
    st = _schemathesis()
    if st is None:
        if os.environ.get("CI") == "true":
            pytest.fail("schemathesis (the `st` command) is not installed: it is in the "
                        "test extra (pip install -e '.[test]')")
        pytest.skip("schemathesis is not installed (pip install 'schemathesis>=4.32,<5')")
    from soong_core.clock import RealClock

    # Wall time, short boots: what schemathesis launches becomes active during the run.
    simulator = sim_factory(rate_limit=False, clock=RealClock(), boot_seconds=1.0,
                            terminate_seconds=1.0)
    schema = tmp_path / "spec.json"
    schema.write_text(json.dumps(spec_with_deviations()))
    command = [st, "run", str(schema), "--url", simulator.url,
               "-H", f"Authorization: Bearer {simulator.api_key}",
               "--phases", "examples,coverage,fuzzing", "--max-time", str(MAX_TIME),
               "--checks", ",".join(CHECKS), "--generation-database", "none",
               "--no-color", "--output-truncate", "false"]
    env = {**os.environ, "NO_COLOR": "1", "SCHEMATHESIS_TELEMETRY": "false"}
    done = subprocess.run(command, cwd=tmp_path, env=env, capture_output=True, text=True,
                          timeout=MAX_TIME + 120)
    output = done.stdout + done.stderr
    output = output.replace(simulator.api_key, "[key]")
    assert done.returncode == 0, output[-20000:]
    assert re.search(r"Tested: 24\b", output), output[-4000:]  # every operation ran
