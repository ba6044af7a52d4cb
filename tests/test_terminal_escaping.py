"""The terminal is the user's: a provider's text never sends it a command (issue 10, 4).

An instance name, a type's description, an id, a reason in history and an API's error
message are shown with their control characters escaped (``\\x1b`` as four visible
characters) and with rich or cleo markup printed literally; ``start --name`` refuses
control characters and over-long names before the panel.
"""

from __future__ import annotations

import json
import time
from typing import Any, Callable

import pytest

from soong_core import Soong
from soong_core.config import write_config_file
from soong_core.errors import SoongError
from soong_core.fake import DEFAULT_TYPES, FakeProvider, FakeProviderPlugin
from soong_core.history import History, namespace_for
from soong_core.models import Event, EventKind, Instance, InstanceType
from soong_core.plugins import Plugins
from soong_core.testing import CliResult, SoongEnv
from soong_core.text import cleo_literal, control_character, printable, rich_literal

HOSTILE = "\x1b[2J\x1b]0;pwned\x07"
"""Clears the screen and sets the window title."""
HOSTILE_SHOWN = "\\x1b[2J\\x1b]0;pwned\\x07"
NEWLINE, NEWLINE_SHOWN = "a\nb", "a\\nb"
MARKUP = "[red]x[/red]"
CONFIG = {"defaults": {"provider": "fake", "gpu": "gpu_1x_a10", "region": "us-east-1",
                       "lease_hours": 2}}

Run = Callable[..., CliResult]


def assert_inert(text: str) -> None:
    """No byte of ``text`` can move the cursor, clear, retitle or ring: no ESC, no BEL,
    no C1 CSI, and every line break is the renderer's own."""
    for char in ("\x1b", "\x07", "\x9b", "\r"):
        assert char not in text, (char, text)


@pytest.fixture
def cloud(soong_env: SoongEnv, register_plugin: Any) -> FakeProvider:
    hostile_type = InstanceType("gpu_1x_evil", 75, f"1x evil {HOSTILE} {MARKUP}", "evil", 1,
                                30, 200, 1400, ("us-east-1",))
    provider = FakeProvider(types=(*DEFAULT_TYPES, hostile_type), boot_seconds=0)
    provider.add_ssh_key("soong", "ssh-ed25519 AAAAtest soong")
    register_plugin(FakeProviderPlugin(provider), "fake")
    write_config_file(soong_env.config_file, CONFIG)
    return provider


@pytest.fixture
def launch(cloud: FakeProvider, plugins: Plugins) -> Callable[..., Instance]:
    """Launch through the embedding API, which does not check names: a provider's text
    can hold anything, whoever named the instance."""
    def launch(name: str) -> Instance:
        with Soong(CONFIG, plugins=plugins) as soong:
            return soong.launch(hours=2, name=name)

    return launch


def launches(provider: FakeProvider) -> list[Any]:
    return [request for call, request in provider.calls if call == "launch"]


# -- the helper ---------------------------------------------------------------------------


@pytest.mark.parametrize(("raw", "shown"), [
    (HOSTILE, HOSTILE_SHOWN),
    (NEWLINE, NEWLINE_SHOWN),
    ("tab\there\r", "tab\\there\\r"),
    ("nul\x00 del\x7f csi\x9b nel\x85", "nul\\x00 del\\x7f csi\\x9b nel\\x85"),
    ("line\u2028para\u2029", "line\\u2028para\\u2029"),
    ("abc\u202etxt.exe", "abc\\u202etxt.exe"),  # right-to-left override: would show "exe.txt"
    ("plain: [red]x[/red] <info>ü 日本 🚀", "plain: [red]x[/red] <info>ü 日本 🚀"),
])
def test_printable_escapes_control_characters_and_keeps_the_rest(raw: str, shown: str) -> None:
    assert printable(raw) == shown
    assert control_character(raw) == (None if raw == shown else next(
        c for c in raw if printable(c) != c))


def test_printable_multiline_keeps_newlines_only() -> None:
    assert printable("one\ntwo\x1b", multiline=True) == "one\ntwo\\x1b"
    assert printable(42) == "42"


def test_the_literal_forms_print_exactly_the_printable_text() -> None:
    import io

    from cleo.formatters.formatter import Formatter
    from rich.console import Console

    for raw in (HOSTILE, MARKUP, "<error>x</error> \\ y", "a\\[b] [bold]c"):
        buffer = io.StringIO()
        Console(file=buffer, width=200, color_system=None).print(rich_literal(raw))
        assert buffer.getvalue() == printable(raw) + "\n"
        assert Formatter(decorated=True).format(cleo_literal(raw)) == printable(raw)


# -- start --name ---------------------------------------------------------------------------


@pytest.mark.parametrize(("name", "shown"), [(HOSTILE, HOSTILE_SHOWN), (NEWLINE, NEWLINE_SHOWN),
                                             ("tab\tname", "tab\\tname"), ("c1\x9b", "c1\\x9b")])
def test_start_refuses_a_name_with_control_characters_before_the_panel(
        run_cli: Run, cloud: FakeProvider, name: str, shown: str) -> None:
    result = run_cli(["start", "-y", "--name", name])
    assert result.exit_code == 2
    assert result.stdout == ""  # no panel
    first, *hints = result.stderr.splitlines()
    assert first.startswith(f"error: --name '{shown}' holds the control character")
    assert len(hints) == 1
    assert_inert(result.stderr)
    assert launches(cloud) == [] and cloud.calls == []  # not even priced


def test_start_refuses_a_name_longer_than_the_provider_takes(run_cli: Run,
                                                              cloud: FakeProvider) -> None:
    cloud.name_max_length = 64
    result = run_cli(["start", "-y", "--name", "n" * 65])
    assert result.exit_code == 2 and result.stdout == ""
    assert result.stderr.splitlines()[0] == ("error: --name is 65 characters: provider 'fake' "
                                             "takes at most 64")
    assert launches(cloud) == []
    accepted = run_cli(["start", "-y", "--name", "n" * 64])
    assert accepted.exit_code == 0, accepted.stderr
    assert [r.name for r in launches(cloud)] == ["n" * 64]


def test_lambda_declares_the_specs_name_limit() -> None:
    from pathlib import Path

    from soong_plugins.lambda_labs.provider import LambdaProvider

    spec = json.loads((Path(__file__).resolve().parent.parent / "soong_plugins" / "lambda_labs"
                       / "spec" / "lambda-cloud-openapi-1.8.3.json").read_text())
    limit = spec["components"]["schemas"]["InstanceLaunchRequest"]["properties"]["name"]
    assert LambdaProvider.name_max_length == limit["maxLength"] == 64


@pytest.mark.parametrize("ansi", ["--no-ansi", "--ansi"])
def test_the_panel_shows_markup_in_a_name_and_a_providers_description_literally(
        run_cli: Run, cloud: FakeProvider, ansi: str) -> None:
    result = run_cli(["start", ansi, "-y", "--gpu", "gpu_1x_evil", "--name", MARKUP,
                      "--model", "[bold]m"])
    assert result.exit_code == 0, result.stderr
    assert f"launch {MARKUP}" in result.stdout  # the panel's title
    assert f"1x evil {HOSTILE_SHOWN} {MARKUP}" in result.stdout  # the type's description
    assert "[bold]m" in result.stdout
    assert "\x07" not in result.stdout and "\x1b[2J" not in result.stdout
    assert "\x1b]" not in result.stdout
    if ansi == "--no-ansi":
        assert_inert(result.stdout + result.stderr)


# -- status, history, stop, errors -----------------------------------------------------------


@pytest.mark.parametrize("ansi", ["--no-ansi", "--ansi"])
def test_the_status_table_escapes_names_and_keeps_one_row_each(
        run_cli: Run, launch: Callable[..., Instance], ansi: str) -> None:
    for name in (HOSTILE, NEWLINE, MARKUP):
        launch(name)
    result = run_cli(f"status {ansi}")
    assert result.exit_code == 0, result.stderr
    lines = result.stdout.splitlines()
    rows = [line for line in lines if "fake-000" in line]
    assert len(rows) == 3  # a newline in a name breaks no row
    for shown, row in zip((HOSTILE_SHOWN, NEWLINE_SHOWN, MARKUP), rows):
        assert shown in row
    assert "\x07" not in result.stdout and "\x1b[2J" not in result.stdout
    assert "\x1b]" not in result.stdout
    if ansi == "--no-ansi":
        assert_inert(result.stdout)


def test_status_json_keeps_the_name_exact_and_the_bytes_inert(
        run_cli: Run, launch: Callable[..., Instance]) -> None:
    launch(HOSTILE + NEWLINE)
    result = run_cli("status --json")
    assert_inert(result.stdout)
    [instance] = json.loads(result.stdout)["instances"]
    assert instance["name"] == HOSTILE + NEWLINE


def test_history_escapes_ids_and_reasons(run_cli: Run, cloud: FakeProvider) -> None:
    with History.open(namespace=namespace_for("fake")) as history:
        history.record(Event(EventKind.TERMINATE, f"fake-{HOSTILE}", at=time.time() - 60,
                             provider="fake", reason=f"{MARKUP}{NEWLINE}<error>y</error>"))
    result = run_cli("status --history")
    assert result.exit_code == 0, result.stderr
    [row] = result.stdout.splitlines()[1:]
    assert "fake-\\x1b" in row  # a short id: a prefix, cut between characters, not escapes
    assert f"{MARKUP}{NEWLINE_SHOWN}<error>y</error>" in row
    assert_inert(result.stdout + result.stderr)


def test_stop_shows_names_and_ids_literally(run_cli: Run, launch: Callable[..., Instance],
                                            cloud: FakeProvider) -> None:
    first = launch(HOSTILE)
    second = launch(MARKUP)
    result = run_cli(f"stop -y {first.id} {second.id}")
    assert result.exit_code == 0, result.stderr
    assert HOSTILE_SHOWN in result.stdout and MARKUP in result.stdout
    assert f"{first.id} terminated" in result.stdout
    assert_inert(result.stdout + result.stderr)


def test_the_start_report_prints_a_providers_ip_literally(run_cli: Run,
                                                           cloud: FakeProvider) -> None:
    from dataclasses import replace

    listed = cloud.list_instances

    def odd_ip() -> list[Instance]:
        return [replace(i, ip=f"[red]10.0.0.1{HOSTILE}") for i in listed()]

    cloud.list_instances = odd_ip  # type: ignore[method-assign]
    cloud.get_instance = lambda instance_id: next(  # type: ignore[method-assign]
        (i for i in odd_ip() if i.id == instance_id), None)
    result = run_cli("start -y")
    assert result.exit_code == 0, result.stderr
    assert f"at [red]10.0.0.1{HOSTILE_SHOWN}" in result.stdout
    assert f"@[red]10.0.0.1{HOSTILE_SHOWN}" in result.stdout  # the ssh line
    assert_inert(result.stdout + result.stderr)


def test_an_api_error_message_is_escaped_on_the_error_line(run_cli: Run,
                                                           cloud: FakeProvider) -> None:
    def refuse() -> list[Instance]:
        raise SoongError(f"the API said: {HOSTILE} <error>{MARKUP}</error>{NEWLINE}",
                         hints=[f"retry {HOSTILE}"])

    cloud.list_instances = refuse  # type: ignore[method-assign]
    result = run_cli("status")
    assert result.exit_code == 1
    assert result.stderr.splitlines() == [
        f"error: the API said: {HOSTILE_SHOWN} <error>{MARKUP}</error>{NEWLINE_SHOWN}",
        f"  retry {HOSTILE_SHOWN}"]
    assert_inert(result.stderr)


def test_phases_print_a_providers_text_literally(run_cli: Run, cloud: FakeProvider) -> None:
    name = f"gpu[bold]{HOSTILE}"
    cloud.types[name] = InstanceType(name, 75, "", "", 1, 30, 200, 1400, ("us-east-1",))
    result = run_cli(["start", "-y", "--gpu", name])
    assert result.exit_code == 0, result.stderr
    assert f"launching gpu[bold]{HOSTILE_SHOWN}..." in result.stderr
    assert_inert(result.stdout + result.stderr)

