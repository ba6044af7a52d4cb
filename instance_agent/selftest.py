"""The bundle's half of ``--self-test``: that this zipapp carries all it needs and runs
from itself alone.

The zipapp's entry point (written by ``soong agent build``) calls :func:`check_bundle`
before handing ``--self-test`` to :func:`instance_agent.__main__.main` (which checks the
example config, the policies and the API). Here: the Python is 3.10+, every module the
bundle's manifest lists imports, and each comes from inside the archive, not from a
checkout or a site-packages that happens to be on the path (run it with ``python3 -I``).
"""

from __future__ import annotations

import sys
from typing import IO, Any

MANIFEST = "soong-agent-bundle.json"
OWN_PACKAGES = ("instance_agent", "soong_core", "soong_plugins", "pluggy")


def archive_path() -> str | None:
    """The zipapp this package was imported from, or None (a plain checkout)."""
    import instance_agent

    loader = getattr(getattr(instance_agent, "__spec__", None), "loader", None)
    archive = getattr(loader, "archive", None)
    return archive if isinstance(archive, str) else None


def problems() -> tuple[list[str], str]:
    """(what is wrong, a summary line) of the bundle this runs from."""
    import importlib
    import json
    import os
    import zipfile

    found: list[str] = []
    if sys.version_info < (3, 10):
        found.append(f"python {sys.version.split()[0]} is older than 3.10")
    archive = archive_path()
    if archive is None:
        return found + ["not running from a bundle (build one with `soong agent build`)"], ""
    with zipfile.ZipFile(archive) as bundle:
        manifest: Any = json.loads(bundle.read(MANIFEST))
    modules = manifest.get("modules") if isinstance(manifest, dict) else None
    if not isinstance(modules, list) or not modules:
        return found + [f"{MANIFEST} lists no modules"], ""
    inside = os.path.join(archive, "")
    for name in modules:
        try:
            module = importlib.import_module(name)
        except Exception as exc:  # any failure to import is the finding
            found.append(f"{name}: cannot import: {type(exc).__name__}: "
                         f"{' '.join(str(exc).split())}")
            continue
        where = getattr(module, "__file__", None) or ""
        if not where.startswith(inside):
            found.append(f"{name} comes from {where or 'nowhere'}, not from the bundle")
    for name, module in sorted(sys.modules.items()):
        if name.split(".")[0] in OWN_PACKAGES:
            where = getattr(module, "__file__", None) or ""
            if where and not where.startswith(inside):
                found.append(f"{name} was loaded from {where}, outside the bundle")
    isolated = "isolated" if sys.flags.isolated else "NOT isolated (run with python3 -I)"
    summary = (f"bundle ok: {len(modules)} modules from {archive}, version "
               f"{manifest.get('version')}, python {sys.version.split()[0]}, {isolated}")
    return found, summary


def check_bundle(out: IO[str] | None = None) -> int:
    """Print the bundle check's result; 0 when it passed, 1 (each problem named) when not."""
    stream = out or sys.stdout
    try:
        found, summary = problems()
    except Exception as exc:  # a broken archive or manifest: say so, no traceback
        found, summary = [f"cannot read the bundle: {type(exc).__name__}: {exc}"], ""
    if found:
        for problem in found:
            print(f"soong-agent self-test FAILED: {problem}", file=sys.stderr)
        return 1
    print(f"soong-agent self-test: {summary}", file=stream)
    return 0
