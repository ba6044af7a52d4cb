"""``soong plugins``: what each plugin registers, required plugins, and refusing to
disable one (in-process and through the real command line)."""

from __future__ import annotations

import json
import types
from typing import Any

from soong_core import hookimpl
from soong_core.fake import FakeProvider
from soong_core.testing import SoongEnv, run_soong

KINDS = ["providers", "policies", "reporters", "tunnel_backends", "activity_sources", "commands"]


def table_rows(stdout: str) -> dict[str, dict[str, str]]:
    """``{plugin name: {column: cell}}``, cutting each line at the header's column starts."""
    header, *lines = stdout.splitlines()
    columns = header.split()
    starts = [header.index(column) for column in columns]
    ends = [*starts[1:], None]
    rows = {}
    for line in lines:
        cells = {column: line[start:end].strip()
                 for column, start, end in zip(columns, starts, ends)}
        rows[cells["NAME"]] = cells
    return rows


def third_party() -> types.ModuleType:
    module = types.ModuleType("extras")
    module.soong_register_providers = hookimpl(
        lambda register: register("fake", lambda config: FakeProvider()))
    module.soong_register_policies = hookimpl(
        lambda register: (register("curfew", object), register("weekend", object)))
    module.soong_register_commands = hookimpl(lambda register: register("extras hello", object))
    return module


def test_table_shows_what_each_builtin_registers(run_cli: Any) -> None:
    result = run_cli("plugins")
    assert result.exit_code == 0
    assert result.stdout.splitlines()[0].split() == [
        "NAME", "DISTRIBUTION", "VERSION", "STATUS", "REGISTERS", "HOOKS"]
    rows = table_rows(result.stdout)
    assert rows["lambda_labs"]["REGISTERS"] == \
        "providers: lambda; commands: sim up, sim status, sim down"
    assert rows["policies"]["REGISTERS"] == "policies: lease, hard_timeout, idle, budget"
    assert rows["reporters"]["REGISTERS"] == "reporters: table, json"
    assert rows["fabric_tunnel"]["REGISTERS"] == (
        "tunnel_backends: fabric; commands: ssh, tunnel start, tunnel status, tunnel stop")
    assert rows["lease_agent"]["REGISTERS"] == (
        "tunnel_backends: direct; commands: agent build, agent status, agent install")
    assert rows["policies"]["STATUS"] == "loaded (required)"
    assert rows["reporters"]["STATUS"] == "loaded"
    assert rows["policies"]["HOOKS"] == "agent_bundle_modules, register_policies"


def test_json_has_every_kind_and_required(run_cli: Any) -> None:
    rows = {row["name"]: row for row in json.loads(run_cli("plugins --json").stdout)}
    assert all(list(row["registers"]) == KINDS for row in rows.values())
    assert rows["lambda_labs"]["registers"]["providers"] == ["lambda"]
    assert rows["lambda_labs"]["registers"]["commands"] == ["sim up", "sim status", "sim down"]
    assert rows["policies"]["registers"] == {
        **{kind: [] for kind in KINDS}, "policies": ["lease", "hard_timeout", "idle", "budget"]}
    assert rows["reporters"]["registers"]["reporters"] == ["table", "json"]
    assert rows["policies"]["required"] is True
    assert "no budget is checked" in rows["policies"]["required_reason"]
    assert {name for name, row in rows.items() if row["required"]} == {"policies"}
    assert rows["reporters"]["required_reason"] is None


def test_a_third_party_plugin_shows_its_registrations(run_cli: Any, register_plugin: Any) -> None:
    register_plugin(third_party(), "extras")
    rows = table_rows(run_cli("plugins").stdout)
    assert rows["extras"]["REGISTERS"] == \
        "providers: fake; policies: curfew, weekend; commands: extras hello"
    assert rows["extras"]["STATUS"] == "loaded"
    [extras] = [r for r in json.loads(run_cli("plugins --json").stdout) if r["name"] == "extras"]
    assert extras["registers"] == {**{kind: [] for kind in KINDS}, "providers": ["fake"],
                                   "policies": ["curfew", "weekend"], "commands": ["extras hello"]}
    assert (extras["builtin"], extras["required"]) == (False, False)


def test_disabling_a_required_plugin_is_refused_by_the_real_cli(soong_env: SoongEnv) -> None:
    expected = ("error: plugin 'policies' is required and cannot be disabled: it registers the "
                "lease, hard_timeout and budget policies; without it no limit applies and no "
                "budget is checked")
    for args in (["plugins"], ["plugins", "--json"], ["status"], ["--help"]):
        result = run_soong(*args, env=soong_env,
                           extra_env={"SOONG_DISABLE_PLUGINS": "reporters, policies"})
        assert result.exit_code == 2, (args, result)
        assert result.stdout == ""
        lines = result.stderr.splitlines()
        assert lines == [expected, "  remove policies from SOONG_DISABLE_PLUGINS"], args
        assert "Traceback" not in result.stderr


def test_disabling_a_plugin_that_is_not_required_still_works(soong_env: SoongEnv) -> None:
    result = run_soong("plugins", env=soong_env, extra_env={"SOONG_DISABLE_PLUGINS": "reporters"})
    assert (result.exit_code, result.stderr) == (0, "")
    rows = table_rows(result.stdout)
    assert rows["reporters"]["STATUS"] == "disabled"
    assert rows["reporters"]["REGISTERS"] == "-"
    assert rows["policies"]["STATUS"] == "loaded (required)"
    assert rows["policies"]["REGISTERS"] == "policies: lease, hard_timeout, idle, budget"
