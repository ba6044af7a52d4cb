"""What the typed words become before cleo reads them: a negative number stays a value.

Imported by :class:`~soong_core.cli.application.SoongApplication` only when a word looks
like a negative number, so a run without one never compiles this.
"""

from __future__ import annotations

import re
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from soong_core.cli.application import SoongApplication

NEGATIVE_NUMBER = re.compile(r"^-(\d+\.?\d*|\.\d+)$")


def join_negative_numbers(app: SoongApplication, tokens: list[str]) -> list[str]:
    """``tokens`` with each negative number kept as a value (see
    :meth:`SoongApplication._join_negative_numbers`)."""
    flags = flag_names(app, tokens)
    joined: list[str] = []
    for index, token in enumerate(tokens):
        previous = joined[-1] if joined else ""
        if not NEGATIVE_NUMBER.match(token) or "--" in joined:
            joined.append(token)
        elif previous.startswith("--") and "=" not in previous and previous[2:] not in flags:
            joined[-1] = f"{previous}={token}"
        elif not any(t.startswith("-") and not NEGATIVE_NUMBER.match(t) for t in tokens[index:]):
            joined += ["--", token]  # an argument (`config set KEY -1`): options end here
        else:
            joined.append(token)
    return joined


def flag_names(app: SoongApplication, tokens: list[str]) -> set[str]:
    """Names of the options that take no value, global and of the command named in
    ``tokens`` (when it can be found)."""
    flags = {o.name for o in app.definition.options if o.is_flag()}
    words = [t for t in tokens if not t.startswith("-")]
    loader = app._command_loader
    for count in (2, 1):
        name = " ".join(words[:count])
        if len(words) >= count and loader and loader.has(name):
            try:
                command = loader.get(name)
            except Exception:  # a broken plugin command: cleo reports it later
                break
            flags |= {o.name for o in command.definition.options if o.is_flag()}
            break
    return flags
