"""One helper each, in the core (issue 11): numbers typed by users, durations, the hour,
public keys, private directories, backoff, and the display helpers reporters share.

Each helper is tested for what it does, and the code base is searched for the copies it
replaced, so a second one written later fails here with the place to look.
"""

from __future__ import annotations

import ast
import os
import stat
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from urllib3.util.retry import Retry

from soong_core.errors import UsageError
from soong_core.files import private_dir
from soong_core.numbers import expectation, number_option, parse_number

REPO = Path(__file__).resolve().parent.parent
PACKAGES = ("soong_core", "soong_plugins", "instance_agent")


def _sources() -> Iterator[tuple[str, ast.Module]]:
    for package in PACKAGES:
        for path in sorted((REPO / package).rglob("*.py")):
            relative = path.relative_to(REPO).as_posix()
            yield relative, ast.parse(path.read_text(encoding="utf-8"), relative)


# -- numbers typed by a user ------------------------------------------------------------


@pytest.mark.parametrize(("text", "rules", "value"), [
    ("4", {}, 4), (" 2.5 ", {}, 2.5), ("4.0", {}, 4), ("-3", {}, -3), ("1e3", {}, 1000),
    ("0", {"minimum": 0}, 0), ("65535", {"integer": True, "maximum": 65535}, 65535),
    ("0.5", {"above": 0}, 0.5), (7, {}, 7), (2.0, {"integer": True}, 2),
])
def test_parse_number_accepts(text: Any, rules: dict[str, Any], value: float) -> None:
    parsed = parse_number(text, "--x", **rules)
    assert parsed == value and type(parsed) is type(value)


@pytest.mark.parametrize(("text", "rules", "message"), [
    ("lots", {"unit": "hours"}, "--hours must be a number of hours, got 'lots'"),
    ("nan", {}, "--hours must be a number, got 'nan'"),
    ("inf", {"minimum": 0}, "--hours must be a number >= 0, got 'inf'"),
    ("-1e999", {}, "--hours must be a number, got '-1e999'"),
    ("0", {"unit": "hours", "above": 0}, "--hours must be a number of hours greater than 0, got '0'"),
    ("8.0", {"integer": True}, "--hours must be an integer, got '8.0'"),
    ("70000", {"integer": True, "minimum": 0, "maximum": 65535},
     "--hours must be an integer from 0 to 65535, got '70000'"),
    ("9", {"maximum": 8, "above": 0}, "--hours must be a number greater than 0 and at most 8, got '9'"),
    ("3", {"maximum": 2}, "--hours must be a number <= 2, got '3'"),
    ("0", {"minimum": 0.001, "maximum": 1e6, "note": "per second"},
     "--hours must be a number from 0.001 to 1e+06 (per second), got '0'"),
    ("", {}, "--hours must be a number, got ''"),
    (True, {}, "--hours must be a number, got True"),
    (2.5, {"integer": True, "unit": "slots"}, "--hours must be a whole number of slots, got 2.5"),
])
def test_parse_number_refuses_with_one_line_naming_what_was_expected(
        text: Any, rules: dict[str, Any], message: str) -> None:
    with pytest.raises(ValueError) as caught:
        parse_number(text, "--hours", **rules)
    assert str(caught.value) == message
    assert str(caught.value).endswith(f"got {text!r}")
    assert f"must be {expectation(**rules)}, " in message


def test_number_option_is_a_usage_error_or_none() -> None:
    assert number_option(None, "--timeout", above=0) is None
    assert number_option("90", "--timeout", above=0) == 90
    with pytest.raises(UsageError) as caught:
        number_option("soon", "--timeout", unit="minutes", above=0)
    assert caught.value.exit_code == 2
    assert str(caught.value) == "--timeout must be a number of minutes greater than 0, got 'soon'"


def test_the_simulators_options_use_the_one_parser() -> None:
    from soong_plugins.lambda_labs.simulator import options

    with pytest.raises(ValueError, match=r"^--capacity '\*:\*=-1': N must be an integer >= 0, "
                                         r"got '-1'$"):
        options.parse_capacity("*:*=-1")
    with pytest.raises(ValueError, match=r"^--terminate-seconds must be a number of seconds >= 0,"
                                         r" got 'nan'$"):
        options.parse_seconds("nan", "--terminate-seconds")
    assert options.parse_seconds("3", "--boot-seconds") == 3.0
    assert isinstance(options.parse_speed("2"), float)


NUMBER_CALLS = {"float", "int"}
"""Calls that turn typed text into a number by hand."""
PARSERS_ALLOWED = {
    "soong_core/numbers.py",
}


def test_no_command_or_option_parser_converts_text_by_hand() -> None:
    """``float(text)`` in a command, or in the simulator's option parsing, is a hand
    parser beside :func:`soong_core.numbers.parse_number`."""
    where = ("soong_core/cli/", "soong_plugins/lambda_labs/commands/",
             "soong_plugins/lambda_labs/simulator/options.py")
    found = []
    for relative, tree in _sources():
        if not relative.startswith(where) or relative in PARSERS_ALLOWED:
            continue
        for node in ast.walk(tree):
            if isinstance(node, ast.Try):
                for inner in ast.walk(ast.Module(body=node.body, type_ignores=[])):
                    if isinstance(inner, ast.Call) and isinstance(inner.func, ast.Name) \
                            and inner.func.id in NUMBER_CALLS \
                            and any(h.type is not None and "ValueError" in ast.unparse(h.type)
                                    for h in node.handlers):
                        found.append(f"{relative}:{inner.lineno}")
    assert not found, f"hand-written number parsers: {found}"


# -- the hour and durations ---------------------------------------------------------------


def test_one_hour_constant_in_the_core() -> None:
    """Seconds per hour are ``soong_core.models.HOUR``; a bare ``3600`` (or ``86400``)
    anywhere else is a second definition."""
    found = []
    for relative, tree in _sources():
        for node in ast.walk(tree):
            if isinstance(node, ast.Constant) and type(node.value) in (int, float) \
                    and node.value in (3600, 86400):
                found.append(f"{relative}:{node.lineno}")
    models_hour = [f for f in found if f.startswith("soong_core/models.py:")]
    assert len(models_hour) == 1, found
    others = [f for f in found if f not in models_hour
              and not f.startswith("soong_plugins/lambda_labs/pacing.py:")]
    assert not others, f"seconds per hour or day written out again: {others}"


def test_one_duration_formatter() -> None:
    """Durations are worded by ``soong_core.display.format_duration``; the clock-skew
    message keeps its own (rounded up, to the second), since the limit it names is 60 s."""
    allowed = {("soong_core/display.py", "format_duration"), ("soong_core/clock.py", "_format_skew")}
    found = set()
    for relative, tree in _sources():
        for node in ast.walk(tree):
            if isinstance(node, ast.FunctionDef) and any(
                    word in node.name for word in ("duration", "_skew")) \
                    and node.name.startswith(("format", "_format", "duration", "_duration")):
                found.add((relative, node.name))
    assert found == allowed


def test_sim_status_shows_uptime_like_every_other_duration() -> None:
    from soong_core.display import format_duration
    from soong_plugins.lambda_labs.commands import sim_status

    lines: list[str] = []
    command = sim_status.SimStatusCommand.__new__(sim_status.SimStatusCommand)
    command.line = lines.append  # type: ignore[method-assign]
    command._show({"api_url": "http://127.0.0.1:1", "pid": 1, "uptime_seconds": 3 * 3600 + 310.7,
                   "speed": None, "sim_time": 0, "boot_seconds": 0, "rate_limit": True,
                   "instances": {}, "state_dir": "/tmp/sim"})
    assert "uptime:     3h5m" in lines
    assert format_duration(3 * 3600 + 310.7) == "3h5m"


def test_the_policy_engine_words_deadlines_with_the_display_helper() -> None:
    from soong_core import display, policy
    from soong_core.models import Action

    assert policy.format_duration is display.format_duration
    assert policy.describe(Action.KEEP, ["lease_expired"], 6300.0, 0.0) == (
        "stops in 1h45m: lease_expired")


# -- display helpers live in the core -------------------------------------------------------


def test_reporters_take_their_helpers_from_the_core() -> None:
    from soong_core import display
    from soong_plugins.reporters import facts

    for name in ("EMPTY_MESSAGE", "Ended", "Facts", "facts_of", "wants_ansi"):
        assert getattr(facts, name) is getattr(display, name), name
    importers = []
    for relative, tree in _sources():
        for node in ast.walk(tree):
            if isinstance(node, ast.ImportFrom) and node.module == "soong_plugins.reporters.facts":
                importers.append(relative)
            if isinstance(node, ast.ImportFrom) and node.module == "soong_core.policy" \
                    and any(alias.name == "format_duration" for alias in node.names):
                importers.append(relative)
    assert not importers, f"import display helpers from soong_core.display: {importers}"


# -- public keys ----------------------------------------------------------------------------


def test_public_keys_are_compared_in_one_place() -> None:
    """``key.split()[:2]`` (type and data, no comment) only in ``models.same_public_key``."""
    found = []
    for relative, tree in _sources():
        for node in ast.walk(tree):
            if isinstance(node, ast.Subscript) and isinstance(node.slice, ast.Slice) \
                    and isinstance(node.value, ast.Call) \
                    and isinstance(node.value.func, ast.Attribute) \
                    and node.value.func.attr == "split" and not node.value.args \
                    and isinstance(node.slice.upper, ast.Constant) and node.slice.upper.value == 2:
                found.append(f"{relative}:{node.lineno}")
    assert len(set(found)) == 1 and found[0].startswith("soong_core/models.py:"), found


# -- private directories -----------------------------------------------------------------------


@pytest.fixture
def umask_022() -> Iterator[None]:
    old = os.umask(0o022)
    try:
        yield
    finally:
        os.umask(old)


def _mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def test_private_dir_makes_every_missing_parent_0700(tmp_path: Path, umask_022: None) -> None:
    (tmp_path / "kept").mkdir(mode=0o755)
    target = tmp_path / "kept" / "a" / "b" / "c"
    private_dir(target)
    assert [_mode(p) for p in (target, target.parent, target.parent.parent)] == [0o700] * 3
    assert _mode(tmp_path / "kept") == 0o755  # an existing directory keeps its mode
    private_dir(target)  # already there: nothing to do


@pytest.mark.parametrize("depth", [0, 2])
def test_private_dir_refuses_a_file_in_the_way(tmp_path: Path, depth: int) -> None:
    (tmp_path / "file").write_text("x")
    target = tmp_path.joinpath("file", *["sub"] * depth)
    with pytest.raises(NotADirectoryError, match="file exists and is not a directory"):
        private_dir(target)


def test_private_dir_lets_another_process_win_the_race(tmp_path: Path,
                                                       monkeypatch: pytest.MonkeyPatch) -> None:
    """Two processes creating the same directory: the one that loses carries on."""
    target = tmp_path / "a" / "b"
    real_mkdir = Path.mkdir

    def racing_mkdir(self: Path, mode: int = 0o777, parents: bool = False,
                     exist_ok: bool = False) -> None:
        real_mkdir(self, mode, parents, exist_ok)  # the other process, just before us
        raise FileExistsError(str(self))

    monkeypatch.setattr(Path, "mkdir", racing_mkdir)
    private_dir(target)
    assert target.is_dir()


def test_private_dir_lets_another_process_create_it_while_it_looks(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The directory appears between "is it a directory?" and "does something exist
    there?" (CI met this with two soong processes sharing the pacing file)."""
    target = tmp_path / "cache" / "soong"
    real_is_dir = Path.is_dir
    looks: list[Path] = []

    def is_dir_then_created(self: Path) -> bool:
        answer = real_is_dir(self)
        if self == target.parent and not looks:
            looks.append(self)
            target.parent.mkdir()  # the other process, right after our first look
        return answer

    monkeypatch.setattr(Path, "is_dir", is_dir_then_created)
    private_dir(target)
    assert looks and real_is_dir(target)


def test_history_makes_its_directories_with_the_one_helper(tmp_path: Path,
                                                           umask_022: None) -> None:
    from soong_core.history import History

    path = tmp_path / "data" / "soong" / "history.sqlite3"
    History.open(path, namespace="test").close()
    assert _mode(path.parent) == _mode(path.parent.parent) == 0o700
    for relative, tree in _sources():
        if relative == "soong_core/files.py":
            continue
        for node in ast.walk(tree):
            if isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute) \
                    and node.func.attr == "mkdir" \
                    and any(k.arg == "mode" for k in node.keywords):
                pytest.fail(f"{relative}:{node.lineno}: a private directory made by hand; "
                            "use soong_core.files.private_dir")


def test_history_names_a_file_in_the_way_of_its_directory(tmp_path: Path) -> None:
    from soong_core.errors import SoongError
    from soong_core.history import History

    (tmp_path / "data").write_text("not a directory")
    with pytest.raises(SoongError, match=r"^cannot open the history database .*: .*data exists "
                                         r"and is not a directory$"):
        History.open(tmp_path / "data" / "history.sqlite3", namespace="test")


# -- backoff -------------------------------------------------------------------------------------


def test_backoff_is_urllib3_retry_configuration(monkeypatch: pytest.MonkeyPatch) -> None:
    from soong_plugins.lambda_labs import transport

    config = transport.backoff_config()
    assert isinstance(config, Retry)
    assert (config.backoff_factor, config.backoff_max, config.backoff_jitter) == (
        transport.BACKOFF_BASE / 2, transport.BACKOFF_MAX, transport.JITTER)
    monkeypatch.setattr(transport, "JITTER", 0.0)
    assert [transport.backoff(n) for n in range(1, 9)] == [0.5, 1, 2, 4, 8, 16, 20, 20]
    monkeypatch.setattr(transport, "JITTER", 0.5)
    for n in range(1, 9):
        wait = transport.backoff(n)
        least = min(transport.BACKOFF_MAX, transport.BACKOFF_BASE * 2 ** (n - 1))
        assert least <= wait <= min(transport.BACKOFF_MAX, least + 0.5)


def test_the_launch_loop_waits_the_transports_backoff(monkeypatch: pytest.MonkeyPatch) -> None:
    """Launch attempts that never reached the server wait :func:`transport.backoff`,
    computed by urllib3's ``Retry.get_backoff_time``, not a copy of the formula."""
    from soong_plugins.lambda_labs import client, errors, transport

    asked: list[int] = []

    class Recording(Retry):
        def get_backoff_time(self) -> float:
            asked.append(len(self.history))
            return super().get_backoff_time()

    monkeypatch.setattr(transport, "Retry", Recording)
    monkeypatch.setattr(transport, "JITTER", 0.0)
    monkeypatch.setattr(transport, "BACKOFF_BASE", 0.1)

    class Unreachable:
        api_url = "https://cloud.example"

        def __init__(self) -> None:
            self.pauses: list[float] = []

        def request(self, *args: Any, **kwargs: Any) -> Any:
            error = errors.ConnectionFailedError("no connection")
            error.maybe_sent = False
            raise error

        def pause(self, seconds: float) -> bool:
            self.pauses.append(seconds)
            return True

    unreachable = Unreachable()
    with pytest.raises(errors.ConnectionFailedError):
        client.LambdaClient(unreachable).launch(  # type: ignore[arg-type]
            {}, "launch-1", action="launching", region="us-east-1")
    waits = client.LAUNCH_ATTEMPTS - 1
    assert unreachable.pauses == [0.1 * 2 ** i for i in range(waits)]
    assert asked == [n + 1 for n in range(1, waits + 1)]
