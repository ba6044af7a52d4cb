"""Meta-test: every ``soong ...`` that the code or the docs tell a user to type names a
command and options that exist in the live command table.

A hint naming a command that was never built (``soong available``) sends the user
nowhere; so does one naming an option the command lacks (``start --lease``). This
reads backticked ``soong ...`` in the source (strings and comments alike: a comment
naming a command is documentation too) and in the docs, and the ``soong ...`` lines of
the docs' code blocks, and checks each against the application the console script
runs, with every built-in plugin loaded.
"""

from __future__ import annotations

import re
import shlex
from pathlib import Path

import pytest

from soong_core.cli.application import SoongApplication
from soong_core.plugins import make_plugins

ROOT = Path(__file__).resolve().parent.parent
SOURCES = [*sorted((ROOT / "soong_core").rglob("*.py")),
           *sorted((ROOT / "soong_plugins").rglob("*.py")),
           *sorted((ROOT / "examples").rglob("*.py"))]
DOCS = [ROOT / "README.md", *sorted((ROOT / "docs").rglob("*.md")),
        *sorted((ROOT / "examples").rglob("*.md"))]

BACKTICKED = re.compile(r"`(soong(?:\s[^`\n]*)?)`")
CODE_LINE = re.compile(r"^\s*(?:\$\s+)?(soong\s.*)$", re.MULTILINE)
GLOBAL_WITH_VALUE = {"--config", "--profile", "--api-timeout"}
PLACEHOLDER = re.compile(r"^(?:[A-Z][A-Z0-9_.-]*|\.\.\.|…|<.*>|\[.*\]|\{.*\})$")


def _table() -> tuple[dict[str, set[str]], set[str]]:
    """Command name -> its option names (long and short), and the global options."""
    app = SoongApplication(plugins=make_plugins(entry_points=False, disabled=()))
    loader = app._command_loader
    assert loader is not None
    commands = {}
    for name in loader.names:
        definition = loader.get(name).definition
        commands[name] = {f"--{o.name}" for o in definition.options} | {
            f"-{o.shortcut}" for o in definition.options if o.shortcut}
    for name in ("list", "help"):
        commands[name] = set()
    options = {f"--{o.name}" for o in app.definition.options}
    options |= {f"-{o.shortcut}" for o in app.definition.options if o.shortcut}
    options |= {"-vv", "-vvv"}
    return commands, options


COMMANDS, GLOBALS = _table()
NAMESPACES = {name.split()[0] for name in COMMANDS if " " in name}


def _mentions() -> list[tuple[str, str]]:
    found = []
    for path in SOURCES + DOCS:
        text = path.read_text()
        where = str(path.relative_to(ROOT))
        found += [(where, m.group(1)) for m in BACKTICKED.finditer(text)]
        if path.suffix == ".md":
            blocks = re.findall(r"^```[a-z]*\n(.*?)^```", text, re.MULTILINE | re.DOTALL)
            for block in blocks:
                found += [(where, m.group(1)) for m in CODE_LINE.finditer(block)]
    return found


MENTIONS = _mentions()


def problem(text: str) -> str | None:
    """What is wrong with the command line ``text`` (``None``: it leads somewhere)."""
    line = text.split("#", 1)[0].split("|", 1)[0].split("&&", 1)[0].split(";", 1)[0]
    line = re.sub(r"\[[^\]]*\]", "", line)  # [global options], [VALUE]
    line = re.sub(r"\{[^}]*\}", "", line)  # an f-string's {where}: filled in at run time
    try:
        words = shlex.split(line)
    except ValueError:
        words = line.split()
    words = words[1:]  # "soong"
    while words and words[0].startswith("-"):  # global options before the command
        option = words.pop(0).split("=", 1)
        if option[0] not in GLOBALS:
            return f"no global option {option[0]}"
        if option[0] in GLOBAL_WITH_VALUE and len(option) == 1 and words:
            words.pop(0)
    if not words or PLACEHOLDER.match(words[0]):
        return None  # `soong`, `soong --sim COMMAND`
    if words[0] in NAMESPACES and (len(words) == 1 or PLACEHOLDER.match(words[1])):
        return None  # `soong config`, `soong sim ...`: the group's list
    if words[0] in NAMESPACES and "/" in words[1]:  # `soong sim up/status/down`
        missing = [w for w in words[1].split("/") if f"{words[0]} {w}" not in COMMANDS]
        return f"no command {words[0]} {'/'.join(missing)}" if missing else None
    name = next((" ".join(words[:n]) for n in (2, 1) if " ".join(words[:n]) in COMMANDS),
                None)
    if name is None:
        return f"no command {' '.join(words[:2])!r}"
    for word in words[name.count(" ") + 1:]:
        option = word.split("=", 1)[0]
        if option.startswith("-") and not PLACEHOLDER.match(option) and option != "--":
            if option not in COMMANDS[name] and option not in GLOBALS:
                return f"`soong {name}` has no option {option}"
    return None


def test_the_scan_finds_the_commands_we_know_are_mentioned() -> None:
    texts = [text for _, text in MENTIONS]
    assert any(t.startswith("soong sim up") for t in texts)
    assert any(t.startswith("soong config set") for t in texts)
    assert len(MENTIONS) > 50


@pytest.mark.parametrize("text,expected", [
    ("soong available", "no command 'available'"),
    ("soong resize abc 2", "no command 'resize abc'"),
    ("soong start --lease 6", "`soong start` has no option --lease"),
    ("soong --sim status --json", None),
    ("soong --profile work stop --all -y", None),
    ("soong --sim COMMAND", None),
    ("soong config set budget.max_dollars 20", None),
    ("soong config", None),
    ("soong sim up/status/down", None),
    ("soong sim up/nope", "no command sim nope"),
    ("soong [global options] COMMAND [options]", None),
    ("soong sim up{escape(where)}", None),
    ("soong --nope status", "no global option --nope"),
])
def test_problem_tells_a_dead_end_from_a_real_command(text: str, expected: str | None) -> None:
    assert problem(text) == expected


def test_every_soong_command_the_code_and_docs_mention_exists() -> None:
    dead = [f"{where}: `{text}`: {why}" for where, text in MENTIONS
            if (why := problem(text)) is not None]
    assert not dead, "hints that lead nowhere:\n" + "\n".join(dead)
