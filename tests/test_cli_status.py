"""``soong status``: the table, --json, --history, --stopped, selection, and the reporters.

CLI runs use real time (the command's clock comes from config); instances are launched
beforehand through the embedding API on a ManualClock set to ``time.time()`` minus an
offset, with half a minute of slack so that a slow test never crosses a displayed
minute. Reporter tests at the end use a ManualClock throughout.
"""

from __future__ import annotations

import io
import json
import re
import socket
import time
from decimal import Decimal
from pathlib import Path
from typing import Any, Callable

import jsonschema
import pytest

from soong_core import Soong
from soong_core.clock import ManualClock
from soong_core.config import write_config_file
from soong_core.errors import SoongError
from soong_core.fake import DeclaringPlugin, FakeProvider
from soong_core.models import (
    Action,
    Decision,
    Instance,
    InstanceState,
    InstanceStatus,
    LaunchRequest,
)
from soong_core.plugins import Plugins, make_plugins
from soong_core.testing import CliResult, SoongEnv, run_soong
from soong_plugins.reporters.facts import wants_ansi
from soong_plugins.reporters.json_report import JsonReporter
from soong_plugins.reporters.table import TableReporter

HOUR = 3600
SLACK = 30
CONFIG = {"defaults": {"provider": "fake", "gpu": "gpu_1x_a10", "region": "us-east-1",
                       "lease_hours": 2, "hard_timeout_hours": 8}}
SCHEMA_PATH = Path(__file__).resolve().parent.parent / "docs" / "status.schema.json"
ESC = "\x1b["

Run = Callable[..., CliResult]


@pytest.fixture
def cloud(soong_env: SoongEnv, fake_provider: FakeProvider, clock: ManualClock) -> FakeProvider:
    """The fake cloud as the configured provider; instances are active at once."""
    write_config_file(soong_env.config_file, {"defaults": {"provider": "fake"}})
    fake_provider.add_ssh_key("soong", "ssh-ed25519 AAAAtest soong")
    fake_provider.boot_seconds = 0
    clock.set(time.time())
    return fake_provider


@pytest.fixture
def launch(cloud: FakeProvider, plugins: Plugins, clock: ManualClock) -> Callable[..., Instance]:
    def launch(*, ago: float, hours: float, name: str | None = None) -> Instance:
        """Launch ``ago`` seconds before now (plus the slack) with a lease of ``hours``."""
        clock.set(time.time() - ago - SLACK)
        with Soong(CONFIG, plugins=plugins, clock=clock) as soong:
            instance = soong.launch(hours=hours, name=name)
        clock.set(time.time())
        return instance

    return launch


@pytest.fixture
def enforced(register_plugin: Callable[..., str]) -> None:
    """Launches declare lease and hard limit enforced (as the lease agent will), so an
    instance that vanishes past its lease is inferred ``lease_expired``."""
    register_plugin(DeclaringPlugin(("lease", "hard")), "enforcer")


def unmanaged(cloud: FakeProvider, name: str) -> Instance:
    """An instance launched outside soong: no soong tags."""
    return cloud.launch(LaunchRequest("gpu_1x_a100", ("us-west-2",), name=name))


def schema_validator(definition: str | None = None) -> jsonschema.protocols.Validator:
    schema = json.loads(SCHEMA_PATH.read_text())
    if definition is not None:
        schema = {"$schema": schema["$schema"], "$defs": schema["$defs"],
                  "$ref": f"#/$defs/{definition}"}
    cls = jsonschema.validators.validator_for(schema)
    cls.check_schema(schema)
    return cls(schema, format_checker=cls.FORMAT_CHECKER)


def row(stdout: str, text: str) -> str:
    [line] = [line for line in stdout.splitlines() if text in line]
    return line


# -- the table ------------------------------------------------------------------------


def test_table_shows_state_costs_and_the_next_stop_with_its_reason(
        run_cli: Run, launch: Callable[..., Instance]) -> None:
    instance = launch(ago=HOUR + 30 * 60, hours=4, name="train")
    result = run_cli("status")
    assert result.exit_code == 0, result.stderr
    lines = result.stdout.splitlines()
    assert lines[0].split() == ["ID", "NAME", "STATE", "IP", "GPU", "UPTIME", "LEFT", "IDLE",
                                "COST", "EST.", "TOTAL", "NEXT", "STOP"]
    assert row(result.stdout, "train").split() == [
        instance.id, "train", "active", "198.51.100.2", "gpu_1x_a10", "1h30m", "2h29m", "?",
        "$1.13", "$3.00", "2h29m:", "lease_expired", "(not", "enforced:", "stop", "it",
        "yourself)"]  # nothing on the instance enforces its lease yet
    assert ESC not in result.stdout  # not a terminal: plain
    assert result.stderr == ""


def test_an_instance_past_its_lease_is_red_and_still_billing(
        run_cli: Run, launch: Callable[..., Instance]) -> None:
    launch(ago=5 * HOUR, hours=2, name="late")
    launch(ago=HOUR, hours=4, name="fine")
    plain = run_cli("status").stdout
    late = row(plain, "late")
    assert "expired" in late.split() and "$3.76" in late.split()  # billed to now
    assert late.endswith("still billing: lease_expired passed 3h ago")
    coloured = run_cli("status --ansi").stdout
    assert "\x1b[31m" in row(coloured, "late")
    assert "still billing" in row(coloured, "late")
    assert "\x1b[31m" not in row(coloured, "fine")  # only that row is red
    assert "\x1b[32mactive" in row(coloured, "fine")  # active is green


def test_an_instance_without_soong_tags_is_unmanaged_with_unknown_uptime(
        run_cli: Run, cloud: FakeProvider) -> None:
    unmanaged(cloud, "by-hand")
    cells = row(run_cli("status").stdout, "by-hand").split()
    assert cells[2:] == ["active", "198.51.100.2", "gpu_1x_a100", "?", "?", "?", "?",
                         "?", "unmanaged"]


def test_ansi_and_no_ansi_decide_colour(run_cli: Run, launch: Callable[..., Instance]) -> None:
    launch(ago=HOUR, hours=4, name="train")
    assert ESC in run_cli("status --ansi").stdout
    plain = run_cli("status --no-ansi").stdout
    assert ESC not in plain and "lease_expired" in row(plain, "train")


def test_no_instances_is_a_friendly_line(run_cli: Run, cloud: FakeProvider) -> None:
    result = run_cli("status")
    assert (result.exit_code, result.stdout) == (0, "no instances; start one with `soong start`\n")
    document = json.loads(run_cli("status --json").stdout)
    assert document["instances"] == []
    schema_validator().validate(document)


def test_an_unreachable_provider_is_one_line_with_a_hint(
        run_cli: Run, cloud: FakeProvider, monkeypatch: pytest.MonkeyPatch) -> None:
    def down() -> list[Instance]:
        raise SoongError("cannot reach the cloud at http://127.0.0.1:9", hints=["is it up?"])

    monkeypatch.setattr(cloud, "list_instances", down)
    for args in ("status", "status --json", "status --history"):
        result = run_cli(args)
        assert result.exit_code == 1
        assert result.stderr.splitlines() == [
            "error: cannot reach the cloud at http://127.0.0.1:9", "  is it up?"]
        assert result.stdout == ""


# -- --json -----------------------------------------------------------------------------


def test_json_follows_the_documented_schema_and_is_all_of_stdout(
        run_cli: Run, launch: Callable[..., Instance], cloud: FakeProvider,
        enforced: None) -> None:
    instance = launch(ago=HOUR + 30 * 60, hours=4, name="train")
    launch(ago=5 * HOUR, hours=2, name="late")
    unmanaged(cloud, "by-hand")
    gone = launch(ago=3 * HOUR, hours=2, name="gone")
    cloud.terminate([gone.id])  # vanished: the reconciliation notes it on stderr
    result = run_cli("status --json")
    assert result.exit_code == 0
    document = json.loads(result.stdout)  # the whole of stdout is one JSON document
    schema_validator().validate(document)
    assert "note: instance " + gone.id + " ended: lease_expired (inferred)" in result.stderr
    by_name = {i["name"]: i for i in document["instances"]}
    assert set(by_name) == {"train", "late", "by-hand"}
    train = by_name["train"]
    assert train["id"] == instance.id and train["state"] == "active"
    assert (train["cost_so_far"], train["estimated_total"], train["price_per_hour"]) == (
        "1.13", "3.00", "0.75")
    assert train["managed"] is True and train["overdue"] is False
    assert 5400 <= train["uptime_s"] < 5400 + 2 * SLACK
    assert train["next_stop"]["reasons"] == ["lease_expired"]
    assert train["next_stop"]["action"] == "keep"
    assert train["next_stop"]["at"] == train["lease_deadline"]
    assert train["ended"] is None and train["details"] == {}
    assert train["enforcement"] == {"lease": ["enforcer"], "idle": [], "hard": ["enforcer"]}
    assert train["next_stop"]["enforced_by"] == ["enforcer"]
    assert by_name["late"]["overdue"] is True and by_name["late"]["time_left_s"] < -3 * HOUR + 1
    assert by_name["late"]["next_stop"]["action"] == "terminate"
    hand = by_name["by-hand"]
    assert (hand["managed"], hand["uptime_s"], hand["cost_so_far"], hand["launched_at"],
            hand["next_stop"], hand["price_per_hour"]) == (False, None, None, None, None, "1.29")
    assert hand["enforcement"] is None


def test_the_schema_rejects_what_it_promises_never_to_print(
        run_cli: Run, launch: Callable[..., Instance]) -> None:
    launch(ago=HOUR, hours=4, name="train")
    document = json.loads(run_cli("status --json").stdout)
    validator = schema_validator()
    validator.validate(document)
    for key, bad in [("cost_so_far", 1.13), ("cost_so_far", "1.1"), ("launched_at", "yesterday"),
                     ("state", "running")]:
        broken = json.loads(json.dumps(document))
        broken["instances"][0][key] = bad
        assert not validator.is_valid(broken), (key, bad)
    missing = json.loads(json.dumps(document))
    del missing["instances"][0]["estimated_total"]
    assert not validator.is_valid(missing)


# -- --history and --stopped ----------------------------------------------------------


def test_history_shows_an_inferred_termination_with_its_cost(
        run_cli: Run, launch: Callable[..., Instance], cloud: FakeProvider,
        enforced: None) -> None:
    gone = launch(ago=3 * HOUR, hours=2, name="gone")
    cloud.terminate([gone.id])
    result = run_cli("status --history")
    assert result.exit_code == 0
    lines = result.stdout.splitlines()
    assert lines[0].split() == ["TIME", "KIND", "INSTANCE", "REASON", "COST"]
    launch_row, end_row = lines[1].split(), lines[2].split()
    assert launch_row[1:] == ["launch", gone.id, "-", "$1.50"]
    assert end_row[1:] == ["terminate", gone.id, "lease_expired", "(inferred)", "$0.00-$1.50"]
    assert "ended: lease_expired (inferred)" in result.stderr
    again = run_cli("status --history")
    assert again.stdout == result.stdout and again.stderr == ""  # recorded once


def test_history_json_follows_the_schema(run_cli: Run, launch: Callable[..., Instance],
                                         cloud: FakeProvider, enforced: None) -> None:
    gone = launch(ago=3 * HOUR, hours=2, name="gone")
    cloud.terminate([gone.id])
    result = run_cli("status --history --json")
    document = json.loads(result.stdout)
    schema_validator("history").validate(document)
    kinds = [(e["kind"], e["reason"], e["inferred"], e["cost"], e["cost_min"])
             for e in document["events"]]
    assert kinds == [("launch_intent", None, False, "1.50", None),
                     ("launch", None, False, "1.50", None),
                     ("terminate", "lease_expired", True, "1.50", "0.00")]
    intent, launched = document["events"][:2]
    assert intent["instance_id"] == launched["detail"]["launch_id"] != launched["instance_id"]


def test_an_ending_nothing_explains_is_external_with_its_cost_range(
        run_cli: Run, launch: Callable[..., Instance], cloud: FakeProvider) -> None:
    gone = launch(ago=3 * HOUR, hours=2, name="gone")
    assert run_cli("status").exit_code == 0  # seen billing now, 3 h after its launch
    cloud.terminate([gone.id])
    result = run_cli("status --history")
    # seen billing a moment before it was seen gone: the range is under a cent wide
    assert f"note: instance {gone.id} ended: external (inferred), cost $2.2" in result.stderr
    end_row = result.stdout.splitlines()[-1].split()
    assert end_row[1:4] == ["terminate", gone.id, "external"]
    assert re.fullmatch(r"\$2\.2[0-9]", end_row[-1]), end_row
    document = json.loads(run_cli("status --history --json").stdout)
    schema_validator("history").validate(document)
    end = document["events"][-1]
    assert (end["reason"], end["inferred"]) == ("external", True)
    assert Decimal(end["cost_min"]) <= Decimal(end["cost"])


def test_history_hours_sets_the_window(run_cli: Run, launch: Callable[..., Instance]) -> None:
    launch(ago=3 * HOUR, hours=4, name="older")
    assert "launch" in run_cli("status --history").stdout
    result = run_cli("status --history --hours 1")
    assert result.stdout.startswith("no events in the last 1h")
    assert json.loads(run_cli("status --history --hours 1 --json").stdout)["events"] == []


def test_stopped_adds_instances_that_ended_in_the_window(
        run_cli: Run, launch: Callable[..., Instance], cloud: FakeProvider,
        enforced: None) -> None:
    launch(ago=HOUR, hours=4, name="train")
    gone = launch(ago=3 * HOUR, hours=2, name="gone")
    cloud.terminate([gone.id])
    plain = run_cli("status")
    assert gone.id not in plain.stdout
    stopped = run_cli("status --stopped").stdout
    cells = row(stopped, gone.id).split()
    assert cells[2] == "terminated" and cells[5] == "2h"  # uptime to its end, not to now
    assert row(stopped, gone.id).split()[-5:] == ["$0.00-$1.50", "$1.50", "ended:",
                                                  "lease_expired", "(inferred)"]
    assert "train" in stopped
    assert gone.id not in run_cli("status --stopped --hours 0.5").stdout
    document = json.loads(run_cli("status --stopped --json").stdout)
    schema_validator().validate(document)
    [ended] = [i for i in document["instances"] if i["id"] == gone.id]
    assert ended["ended"]["reason"] == "lease_expired" and ended["ended"]["inferred"] is True
    assert ended["ended"]["cost_min"] == "0.00"
    assert ended["state"] == "terminated" and ended["cost_so_far"] == "1.50"
    assert ended["next_stop"] is None


BAD_HOURS = "error: --hours must be a number of hours greater than 0, got "


@pytest.mark.parametrize("args, message", [
    ("status --history --hours 0", BAD_HOURS + "'0'"),
    ("status --stopped --hours=-2", BAD_HOURS + "'-2'"),
    ("status --history --hours soon", BAD_HOURS + "'soon'"),
    ("status --history --hours nan", BAD_HOURS + "'nan'"),
    ("status --hours 3", "error: --hours applies only with --history or --stopped"),
    ("status --history --stopped", "error: --history and --stopped cannot be combined"),
])
def test_bad_options_exit_2_with_one_line(run_cli: Run, cloud: FakeProvider, args: str,
                                          message: str) -> None:
    result = run_cli(args)
    assert result.exit_code == 2
    assert result.stderr.splitlines()[0] == message
    assert "Traceback" not in result.stderr and result.stdout == ""


# -- --instance-id ------------------------------------------------------------------------


def test_instance_id_selects_by_id_prefix_or_name(run_cli: Run,
                                                  launch: Callable[..., Instance]) -> None:
    first = launch(ago=HOUR, hours=4, name="train")
    second = launch(ago=HOUR, hours=4, name="serve")
    for ref in (second.id, "serve", second.id[:-1] + second.id[-1]):
        result = run_cli(["status", "--instance-id", ref])
        assert result.exit_code == 0
        assert "serve" in result.stdout and first.id not in result.stdout
    document = json.loads(run_cli("status -i train --json").stdout)
    assert [i["id"] for i in document["instances"]] == [first.id]


def test_an_unknown_or_ambiguous_instance_lists_the_candidates(
        run_cli: Run, launch: Callable[..., Instance]) -> None:
    first = launch(ago=HOUR, hours=4, name="train")
    second = launch(ago=HOUR, hours=4, name="serve")
    unknown = run_cli("status --instance-id nope")
    assert unknown.exit_code == 1 and unknown.stdout == ""
    assert unknown.stderr.splitlines()[0] == (
        f"error: no instance matches 'nope'; candidates: {first.id} (train, active), "
        f"{second.id} (serve, active)")
    ambiguous = run_cli("status --instance-id fake-")
    assert ambiguous.exit_code == 1
    assert ambiguous.stderr.splitlines()[0] == (
        f"error: 'fake-' matches 2 instances: {first.id} (train, active), "
        f"{second.id} (serve, active)")
    as_json = run_cli("status -i nope --json")
    assert (as_json.exit_code, as_json.stdout) == (1, "")  # no half document on stdout


def test_history_instance_id_reaches_instances_that_are_gone(
        run_cli: Run, launch: Callable[..., Instance], cloud: FakeProvider) -> None:
    keep = launch(ago=HOUR, hours=4, name="train")
    gone = launch(ago=3 * HOUR, hours=2, name="gone")
    cloud.terminate([gone.id])
    document = json.loads(run_cli(["status", "--history", "--json", "-i", gone.id]).stdout)
    intent, *rest = document["events"]
    assert intent["kind"] == "launch_intent" and intent["instance_id"] == gone.launch_id
    assert {e["instance_id"] for e in rest} == {gone.id}
    assert len(rest) == 2
    assert keep.id not in run_cli(["status", "--history", "-i", gone.id]).stdout


# -- colour on a real terminal ---------------------------------------------------------------


SEEDED_PLUGIN = '''
import time
from soong_core.fake import FakeProvider, FakeProviderPlugin
from soong_core.models import LaunchRequest, format_timestamp

now = time.time()
provider = FakeProvider(boot_seconds=0)
provider.launch(LaunchRequest("gpu_1x_a10", ("us-east-1",), name="late", tags={
    "soong:launch-id": "seeded", "soong:launched-at": format_timestamp(now - 5 * 3600),
    "soong:lease-deadline": format_timestamp(now - 3 * 3600),
    "soong:hard-deadline": format_timestamp(now + 3 * 3600)}))
plugin = FakeProviderPlugin(provider)
'''


@pytest.mark.slow
def test_colour_on_a_terminal_only_and_never_with_no_color_or_no_ansi(
        soong_env: SoongEnv, tmp_path: Path) -> None:
    """A real ``soong status`` process, with a fake cloud installed as an entry point."""
    from test_cli import run_on_tty  # tests/ is on sys.path (rootdir conftest)

    site = tmp_path / "site"
    dist = site / "seeded_fake-1.0.dist-info"
    dist.mkdir(parents=True)
    (dist / "METADATA").write_text("Metadata-Version: 2.1\nName: seeded-fake\nVersion: 1.0\n")
    (dist / "entry_points.txt").write_text("[soong]\nseeded = seeded_fake:plugin\n")
    (site / "seeded_fake.py").write_text(SEEDED_PLUGIN)
    write_config_file(soong_env.config_file, {"defaults": {"provider": "fake"}})
    extra = {"PYTHONPATH": str(site)}

    terminal = run_on_tty("status", env=soong_env, extra_env=extra)
    assert "still billing" in terminal and "\x1b[31m" in terminal
    for args, more in [(("status",), {"NO_COLOR": "1"}), (("--no-ansi", "status"), {})]:
        plain = run_on_tty(*args, env=soong_env, extra_env={**extra, **more})
        assert "still billing" in plain and ESC not in plain
    piped = run_soong("status", env=soong_env, extra_env=extra)
    assert piped.exit_code == 0 and "still billing" in piped.stdout and ESC not in piped.stdout


# -- the reporters, on a manual clock ----------------------------------------------------------


class TtyBuffer(io.StringIO):
    def isatty(self) -> bool:
        return True


def test_wants_ansi_honours_an_explicit_decision_then_no_color_then_the_terminal() -> None:
    tty = TtyBuffer()
    assert wants_ansi(tty, environ={}) is True
    assert wants_ansi(tty, environ={"NO_COLOR": "1"}) is False
    assert wants_ansi(tty, environ={"NO_COLOR": ""}) is True  # no-color.org: empty is unset
    assert wants_ansi(io.StringIO(), environ={}) is False
    explicit = io.StringIO()
    explicit.ansi = True  # type: ignore[attr-defined]
    assert wants_ansi(explicit, environ={"NO_COLOR": "1"}) is True


def test_table_reporter_colours_states_and_warnings(
        plugins: Plugins, fake_provider: FakeProvider, clock: ManualClock,
        monkeypatch: pytest.MonkeyPatch) -> None:
    fake_provider.add_ssh_key("soong", "ssh-ed25519 AAAAtest soong")
    monkeypatch.delenv("NO_COLOR", raising=False)
    with Soong(CONFIG, plugins=plugins, clock=clock) as soong:
        booting = soong.launch(hours=2, name="fresh")
        fake_provider.boot_seconds = 0
        soon = soong.launch(hours=1, name="soon")
        clock.advance(55 * 60)  # 5 minutes left on "soon": inside the warning window
        fake_provider.boot_seconds = 3600
        preempted = soong.launch(hours=2, name="gone")
        fake_provider.set_state(preempted.id, InstanceState.PREEMPTED)
        reporter = TableReporter(soong.config, clock=clock)
        out = TtyBuffer()
        reporter.render(soong.status(), out)
        text = out.getvalue()
        assert "\x1b[33mbooting" in row(text, "fresh")
        assert "\x1b[33m5m: lease_expired" in row(text, "soon")  # a warning is yellow
        assert "\x1b[35mpreempted" in row(text, "gone")
        assert booting.id[:8] in text and soon.id[:8] in text
        monkeypatch.setenv("NO_COLOR", "1")
        plain = io.StringIO()
        reporter.render(soong.status(), plain)
        assert ESC not in plain.getvalue()
        no_colour_tty = TtyBuffer()
        reporter.render(soong.status(), no_colour_tty)
        assert ESC not in no_colour_tty.getvalue()
        assert row(plain.getvalue(), "gone").split()[-1] == "preempted"


def test_json_reporter_writes_money_as_strings_and_times_in_utc(
        plugins: Plugins, fake_provider: FakeProvider, clock: ManualClock) -> None:
    fake_provider.add_ssh_key("soong", "ssh-ed25519 AAAAtest soong")
    clock.set(1_800_000_000.0)  # 2027-01-15T08:00:00Z
    with Soong(CONFIG, plugins=plugins, clock=clock) as soong:
        soong.launch(hours=2, name="exact")
        clock.advance(HOUR + 1)
        out = io.StringIO()
        JsonReporter(soong.config, clock=clock).render(soong.status(), out)
    document = json.loads(out.getvalue())
    schema_validator().validate(document)
    assert document["generated_at"] == "2027-01-15T09:00:01Z"
    [item] = document["instances"]
    assert (item["launched_at"], item["lease_deadline"], item["hard_deadline"]) == (
        "2027-01-15T08:00:00Z", "2027-01-15T10:00:00Z", "2027-01-15T16:00:00Z")
    assert (item["uptime_s"], item["time_left_s"], item["next_stop"]["in_s"]) == (3601, 3599, 3599)
    assert item["cost_so_far"] == "0.75"  # 0.7502...: rounded to cents, as text
    assert item["estimated_total"] == "1.50"


def test_plugin_details_reach_json_safely() -> None:
    instance = Instance("i-1", InstanceState.ACTIVE)
    status = InstanceStatus(instance, Decision(Action.KEEP), details={
        "agent": {"spent": Decimal("0.10"), "ports": (8000, 8001), "load": float("nan")}})
    out = io.StringIO()
    JsonReporter({}, clock=ManualClock()).render([status], out)
    document = json.loads(out.getvalue())
    schema_validator().validate(document)
    assert document["instances"][0]["details"] == {
        "agent": {"spent": "0.10", "ports": [8000, 8001], "load": None}}


def test_json_details_history_comes_from_the_typed_ending_and_plugins_keep_theirs() -> None:
    from soong_core.models import Ended

    instance = Instance("i-1", InstanceState.PREEMPTED)
    status = InstanceStatus(instance, None, details={"agent": {"ok": True}},
                            ended=Ended(reason="preempted", inferred=False,
                                        at=1_800_000_000.0, cost_min=Decimal("0.75")))
    out = io.StringIO()
    JsonReporter({}, clock=ManualClock()).render([status], out)
    document = json.loads(out.getvalue())
    schema_validator().validate(document)
    [item] = document["instances"]
    assert item["details"] == {"agent": {"ok": True}, "history": {
        "reason": "preempted", "inferred": False, "ended_at": 1_800_000_000.0,
        "cost_min": "0.75"}}
    assert item["ended"] == {"at": "2027-01-15T08:00:00Z", "reason": "preempted",
                             "inferred": False, "cost_min": "0.75"}
    assert status.details == {"agent": {"ok": True}}  # the status itself is left as it was


def test_json_of_a_listed_ended_instance_keeps_details_history(
        run_cli: Run, launch: Callable[..., Instance], cloud: FakeProvider) -> None:
    gone = launch(ago=HOUR, hours=2, name="gone")
    cloud.set_state(gone.id, InstanceState.PREEMPTED)
    document = json.loads(run_cli("status --json").stdout)
    schema_validator().validate(document)
    [item] = document["instances"]
    history = item["details"]["history"]
    # never seen billing before it was seen ended: decimal text, unrounded, as before
    assert (history["reason"], history["inferred"], history["cost_min"]) == (
        "preempted", False, "0")
    assert isinstance(history["ended_at"], float)
    assert item["ended"]["reason"] == "preempted"


# -- fast where a user waits: large tables, no key at all ---------------------------------------

HOSTILE_NAME = "\x1b[2J\x1b]0;pwned\x07[red]x[/red] \u6f22\u5b57"
"""Escapes, markup and two wide characters: what a provider's name may hold."""
HOSTILE_SHOWN = "\\x1b[2J\\x1b]0;pwned\\x07[red]x[/red] \u6f22\u5b57"
SGR = re.compile(r"\x1b\[[0-9;]*m")


def varied_statuses(soong: Soong, fake_provider: FakeProvider, clock: ManualClock
                    ) -> list[InstanceStatus]:
    """Overdue, warned, active, preempted, booting and unmanaged instances."""
    fake_provider.boot_seconds = 0
    soong.launch(hours=1, name="late")
    clock.advance(70 * 60)  # "late" bills 10 minutes past its lease
    soong.launch(hours=1, name="soon")
    clock.advance(55 * 60)  # 5 minutes left on "soon": inside the warning window
    soong.launch(hours=2, name=HOSTILE_NAME)
    fake_provider.set_state(soong.launch(hours=2, name="gone").id, InstanceState.PREEMPTED)
    fake_provider.boot_seconds = 3600
    soong.launch(hours=2, name="fresh")
    fake_provider.launch(LaunchRequest("gpu_1x_a10", ("us-east-1",), name="stranger"))
    return list(soong.status())


@pytest.mark.parametrize("ansi", [False, True])
def test_the_padded_layout_prints_what_the_table_prints(
        plugins: Plugins, fake_provider: FakeProvider, clock: ManualClock, ansi: bool) -> None:
    """The same characters, line by line, whichever layout; on a terminal the same
    styles on each line too; a provider's text stays escaped in both."""
    from soong_core.display import facts_of
    from soong_core.select import short_ids
    from soong_core.tables import render_table
    from soong_plugins.reporters.table import TABLE_COLUMNS, table_row

    fake_provider.add_ssh_key("soong", "ssh-ed25519 AAAAtest soong")
    with Soong(CONFIG, plugins=plugins, clock=clock) as soong:
        statuses = varied_statuses(soong, fake_provider, clock)
    facts = [facts_of(status, clock.now()) for status in statuses]
    shorts = short_ids([f.status.instance.id for f in facts])
    rows = [table_row(fact, shorts[fact.status.instance.id]) for fact in facts]
    table = render_table(TABLE_COLUMNS, rows, ansi=ansi, header_rule=True, rows_max=len(rows))
    padded = render_table(TABLE_COLUMNS, rows, ansi=ansi, header_rule=True, rows_max=0)
    assert "still billing" in table and "preempted" in table and "unmanaged" in table
    assert HOSTILE_SHOWN in table and "\x07" not in table and "\x1b[2J" not in table
    if not ansi:
        assert padded == table and ESC not in padded
        return
    assert SGR.sub("", padded) == SGR.sub("", table)
    for ours, rich_table in zip(padded.splitlines(), table.splitlines()):
        assert set(SGR.findall(ours)) == set(SGR.findall(rich_table)), rich_table


def test_past_200_rows_status_lays_out_text_not_a_rich_table(
        monkeypatch: pytest.MonkeyPatch) -> None:
    """rich's Table is built for 200 instances and not for 201 (it costs 0.43 s for
    1,000), and the 201 rows are all there, one a line."""
    import rich.table

    from soong_core.tables import TABLE_ROWS_MAX

    built: list[int] = []
    real_init = rich.table.Table.__init__

    def counting_init(self: Any, *args: Any, **kwargs: Any) -> None:
        built.append(1)
        real_init(self, *args, **kwargs)

    monkeypatch.setattr(rich.table.Table, "__init__", counting_init)
    reporter = TableReporter({}, clock=ManualClock(1_800_000_000.0))

    def render(count: int) -> str:
        statuses = [InstanceStatus(Instance(f"i-{n:04d}", InstanceState.ACTIVE,
                                            name=f"box-{n}"), Decision(Action.KEEP))
                    for n in range(count)]
        out = io.StringIO()
        reporter.render(statuses, out)
        return out.getvalue()

    assert TABLE_ROWS_MAX == 200
    render(200)
    assert built == [1]
    text = render(201)
    assert built == [1]  # not built again
    lines = text.splitlines()
    assert lines[0].split() == ["ID", "NAME", "STATE", "IP", "GPU", "UPTIME", "LEFT", "IDLE",
                                "COST", "EST.", "TOTAL", "NEXT", "STOP"]
    assert len(lines) == 202 and lines[-1].split()[:3] == ["i-0200", "box-200", "active"]


def seed_history(count: int, *, hostile_at: int) -> None:
    from soong_core.history import History, namespace_for
    from soong_core.models import Event, EventKind

    now = time.time()
    with History.open(namespace=namespace_for("fake")) as history:
        for n in range(count):
            reason = HOSTILE_NAME if n == hostile_at else "manual"
            history.record(Event(EventKind.TERMINATE, f"fake-{n:05d}", at=now - 3600 + n,
                                 provider="fake", reason=reason, cost=Decimal("0.25")))


@pytest.mark.parametrize("ansi", ["--no-ansi", "--ansi"])
def test_a_long_history_keeps_its_columns_and_escapes(run_cli: Run, cloud: FakeProvider,
                                                      ansi: str) -> None:
    seed_history(250, hostile_at=7)
    result = run_cli(f"status --history {ansi}")
    assert result.exit_code == 0, result.stderr
    lines = SGR.sub("", result.stdout).splitlines()
    assert lines[0].split() == ["TIME", "KIND", "INSTANCE", "REASON", "COST"]
    assert len(lines) == 251
    assert lines[1].split()[1:] == ["terminate", "fake-00000", "manual", "$0.25"]
    assert HOSTILE_SHOWN in row(result.stdout, "fake-00007")
    assert "\x07" not in result.stdout and "\x1b[2J" not in result.stdout
    if ansi == "--no-ansi":
        assert ESC not in result.stdout
    costs = {line.rstrip()[-5:] for line in lines[1:]}
    assert costs == {"$0.25"}  # right-justified: the column ends where every row ends


def test_a_history_table_and_padded_text_agree(run_cli: Run, cloud: FakeProvider,
                                               monkeypatch: pytest.MonkeyPatch) -> None:
    """The 250 events as a rich Table (threshold lifted) and as padded text: one text."""
    import soong_core.tables as tables

    seed_history(250, hostile_at=3)
    padded = run_cli("status --history").stdout
    real = tables.render_table
    monkeypatch.setattr(tables, "render_table",
                        lambda *a, **k: real(*a, **{**k, "rows_max": 10_000}))
    assert run_cli("status --history").stdout == padded


IMPORTS_AFTER_RUN = """
import json, sys
from soong_core.cli.application import SoongApplication
application = SoongApplication()
application.auto_exits(False)
code = application.run()
print(json.dumps({"code": code, "modules": sorted(sys.modules)}))
"""
"""``soong ARGS`` in this interpreter, then the exit code and every module it imported."""


def test_status_without_any_key_fails_before_yaml_cerberus_and_requests(
        soong_env: SoongEnv) -> None:
    import os
    import subprocess
    import sys

    from soong_core.testing import ENV_PREFIXES

    environ = {k: v for k, v in os.environ.items() if not k.startswith(ENV_PREFIXES)}
    done = subprocess.run([sys.executable, "-c", IMPORTS_AFTER_RUN, "status"],
                          capture_output=True, text=True, timeout=60,
                          env={**environ, **soong_env.environ()})
    report = json.loads(done.stdout)
    assert (report["code"], done.stderr.splitlines()) == (
        2, ["error: no Lambda Cloud API key: run `soong configure` or set LAMBDA_API_KEY"])
    modules = set(report["modules"])
    assert "soong_core.cli.commands.status" in modules
    assert not modules & {"requests", "urllib3", "yaml", "cerberus", "rich", "sqlite3"}


@pytest.mark.parametrize("where", ["file", "environment", "profile", "bad variable"])
def test_a_key_anywhere_is_still_read_in_full(
        run_cli: Run, soong_env: SoongEnv, monkeypatch: pytest.MonkeyPatch, where: str) -> None:
    """With a key in the file, the environment or a profile, status goes on to the API
    (here a closed loopback port, read as a simulator that is not running); a variable
    the config reads is checked first, as always."""
    from soong_core.config import profile_path

    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    section = {"api_url": f"http://127.0.0.1:{port}/api/v1", "api_key": "soong-test-key-1"}
    args = "status"
    if where == "file":
        write_config_file(soong_env.config_file, {"lambda": section})
    elif where == "environment":
        monkeypatch.setenv("LAMBDA_API_KEY", section["api_key"])
        monkeypatch.setenv("SOONG_LAMBDA_API_URL", section["api_url"])
    elif where == "profile":
        write_config_file(profile_path("other"), {"lambda": section})
        args = "--profile other status"
    else:
        monkeypatch.setenv("SOONG_DEFAULTS_LEASE_HOURS", "soon")
    result = run_cli(args)
    first = result.stderr.splitlines()[0]
    if where == "bad variable":
        assert result.exit_code == 2 and "SOONG_DEFAULTS_LEASE_HOURS" in first
    else:
        assert result.exit_code == 1 and first.startswith("error: simulator not running")


def test_missing_credential_reads_the_schema_and_the_environment_only(plugins: Plugins) -> None:
    from soong_core.cli.credentials import missing_credential
    from soong_core.config import build_schema
    from soong_plugins.lambda_labs import MISSING_KEY_MESSAGE
    from soong_plugins.lambda_labs.errors import MissingApiKeyError

    schema = build_schema(plugins)
    assert missing_credential(schema, {}) == MISSING_KEY_MESSAGE
    assert MissingApiKeyError().message == MISSING_KEY_MESSAGE
    for variable in ("LAMBDA_API_KEY", "SOONG_LAMBDA_API_KEY", "SOONG_DEFAULTS_PROVIDER",
                     "SOONG_BUDGET_MAX_DOLLARS"):
        assert missing_credential(schema, {variable: ""}) is None, variable
    assert missing_credential(schema, {"SOONG_DISABLE_PLUGINS": "x", "HOME": "/h"}) is not None
    without = build_schema(make_plugins(entry_points=False, disabled=("lambda_labs",)))
    assert missing_credential(without, {}) is None  # no provider declares a credential
