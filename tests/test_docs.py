"""Meta-tests: the documentation and the test suite keep up with the code."""

from __future__ import annotations

import inspect
import re
from pathlib import Path

import pytest

from soong_core import hookspecs
from soong_core.cli.application import COMMANDS

ROOT = Path(__file__).resolve().parent.parent
DOCS = ROOT / "docs"

HOOKS = sorted(name for name, obj in inspect.getmembers(hookspecs, inspect.isfunction)
               if name.startswith("soong_"))


def test_there_are_hooks() -> None:
    assert len(HOOKS) >= 11


@pytest.mark.parametrize("hook", HOOKS)
def test_every_hook_has_a_docstring_and_a_section(hook: str) -> None:
    doc = inspect.getdoc(getattr(hookspecs, hook)) or ""
    assert ":return:" in doc and "Called" in doc, f"{hook}: say when it is called and what it returns"
    headings = re.findall(r"^## (\S+)$", (DOCS / "hooks.md").read_text(), re.MULTILINE)
    assert hook in headings, f"docs/hooks.md has no '## {hook}' section"


@pytest.mark.parametrize("hook", HOOKS)
def test_every_hook_has_a_test(hook: str) -> None:
    users = [path.name for path in (ROOT / "tests").rglob("test_*.py")
             if path.name != "test_docs.py" and re.search(rf"\b{hook}\b", path.read_text())]
    assert users, f"no test mentions {hook}"


def test_every_command_group_has_a_page() -> None:
    """Core commands and those the built-in plugins add (``soong sim ...``)."""
    from soong_core.plugins import make_plugins

    builtin = make_plugins(entry_points=False, disabled=()).commands().names()
    for name in [*COMMANDS, *builtin]:
        group = name.split()[0]
        page = DOCS / "commands" / f"{group}.md"
        assert page.is_file(), f"docs/commands/{group}.md is missing"
        assert f"soong {name}" in page.read_text(), f"{page.name} does not mention `soong {name}`"


def test_relative_links_in_docs_resolve() -> None:
    for page in [ROOT / "README.md", *DOCS.rglob("*.md")]:
        for target in re.findall(r"\]\(([^)#:]+)(?:#[^)]*)?\)", page.read_text()):
            assert (page.parent / target).exists(), f"{page.relative_to(ROOT)} links to {target}"


def setup_commands() -> list[str]:
    readme = (ROOT / "README.md").read_text()
    section = readme.split("## Set up", 1)[1].split("\n## ", 1)[0]
    return [line.strip() for line in section.splitlines() if line.startswith("    ")]


def test_readme_has_exactly_two_setup_commands_and_ci_runs_the_second() -> None:
    commands = setup_commands()
    assert len(commands) == 2, commands
    install, test = commands
    assert "pip install" in install and "pytest" in test
    ci = (ROOT / ".ci" / "run").read_text().splitlines()
    assert test in ci, ".ci/run must run the README's test command verbatim"
