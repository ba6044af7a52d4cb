"""The agent's zipapp: what travels to every instance.

:func:`build_zipapp` writes one file that ``python3 -I agent.pyz`` runs on the
instance's bare Python (3.10+): the package ``instance_agent`` whole, the core modules it
needs, pluggy (its source files, from the installed package) and the modules plugins name
through ``soong_agent_bundle_modules`` (whole, when a package). What the agent needs from
the core is found, not listed by hand: starting from the agent and the named modules, it
follows their imports of ``soong_core`` / ``soong_plugins`` (every import in the agent's
own modules and the named ones; the module-level imports of the core modules so reached:
a core module's lazy imports serve the CLI, not the agent). An import of anything that is
neither the standard library nor bundled fails the build, naming both modules (a
``TYPE_CHECKING`` block or a ``try`` that catches the ImportError is exempt).

The archive is deterministic: sorted entries, fixed timestamps and modes, so two builds
of one tree are byte-identical. ``soong-agent-bundle.json`` at its root lists what it
carries; the entry point checks the bundle against it on ``--self-test``
(:mod:`instance_agent.selftest`) and then hands over to ``instance_agent``'s ``main``.
"""

from __future__ import annotations

import ast
import io
import json
import os
import sys
import zipfile
from dataclasses import dataclass
from pathlib import Path
from typing import Iterable, Iterator, Sequence

from soong_core.errors import SoongError

AGENT_PACKAGE = "instance_agent"
CORE_MODULES: tuple[str, ...] = (
    "soong_core", "soong_core.models", "soong_core.clock", "soong_core.errors",
    "soong_core.interfaces", "soong_core.policy", "soong_core.hookspecs",
)
"""The pure core the agent runs on (DESIGN, "The agent travels light"); imports add more."""
AGENT_PLUGINS: tuple[str, ...] = ("soong_plugins.policies", "soong_plugins.activity")
"""The built-in plugins the agent always loads (its policies and activity sources): in
every bundle, whole, whatever plugins the building CLI has enabled."""
FIRST_PARTY = ("soong_core", "soong_plugins", AGENT_PACKAGE)
ALLOWED_THIRD_PARTY = frozenset({"pluggy"})
MANIFEST = "soong-agent-bundle.json"
SHEBANG = b"#!/usr/bin/env python3\n"
FIXED_TIME = (1980, 1, 1, 0, 0, 0)
SIZE_WARNING = 700 * 1024
"""Over this, the base64 of the bundle nears the API's 1 MB ``user_data`` limit."""

ENTRY_POINT = '''\
"""soong's lease agent (a zipapp built by `soong agent build`): python3 -I THIS --help."""
import sys

if sys.version_info < (3, 10):
    sys.exit("soong-agent needs Python 3.10 or newer, this is " + sys.version.split()[0])
if "--self-test" in sys.argv[1:]:
    from instance_agent.selftest import check_bundle

    if check_bundle() != 0:
        sys.exit(1)
from instance_agent.__main__ import main

sys.exit(main())
'''


class BundleError(SoongError):
    """The bundle cannot be built (a module not found, an import it cannot carry)."""


@dataclass(frozen=True)
class Bundle:
    """What :func:`build_zipapp` wrote."""

    path: Path
    size: int
    modules: tuple[str, ...]
    """Every module in the archive (pluggy's included), sorted."""


def _stdlib() -> frozenset[str]:
    names = getattr(sys, "stdlib_module_names", None)  # 3.10+
    return frozenset(names) | {"__future__"} if names else frozenset({"__future__"})


def _is_first_party(name: str) -> bool:
    return name.split(".")[0] in FIRST_PARTY


def _find(name: str) -> tuple[Path, bool]:
    """(the module's file, whether it is a package), without importing it."""
    import importlib.util

    try:
        spec = importlib.util.find_spec(name)
    except (ImportError, ValueError) as exc:
        raise BundleError(f"cannot bundle {name!r}: {exc}") from None
    if spec is None or not spec.origin or not spec.origin.endswith(".py"):
        raise BundleError(f"cannot bundle {name!r}: no such pure-Python module",
                          hints=["modules to bundle must be importable .py files here"])
    return Path(spec.origin), spec.submodule_search_locations is not None


def _package_modules(name: str, directory: Path) -> Iterator[str]:
    """``name`` and every module under its directory (no tests, no caches)."""
    for path in sorted(directory.rglob("*.py")):
        parts = path.relative_to(directory).with_suffix("").parts
        if "__pycache__" in parts or any(p.startswith("test") for p in parts):
            continue
        if parts[-1] == "__init__":
            parts = parts[:-1]
        yield ".".join((name, *parts))


def _guarded(node: ast.AST) -> bool:
    """True for ``if TYPE_CHECKING:`` and for a ``try`` that catches ImportError."""
    if isinstance(node, ast.If):
        test = node.test
        return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or (
            isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING")
    if isinstance(node, ast.Try):
        for handler in node.handlers:
            caught = handler.type
            names = caught.elts if isinstance(caught, ast.Tuple) else [caught]
            if any(isinstance(n, ast.Name) and n.id in ("ImportError", "ModuleNotFoundError",
                                                        "Exception") for n in names):
                return True
    return False


def _imports(tree: ast.Module, module: str, is_package: bool, *, deep: bool
             ) -> Iterator[tuple[str, bool]]:
    """(imported module name, guarded) for each import: the module level only, or every
    one when ``deep``. ``from X import Y`` yields ``X.Y`` too (Y may be a submodule)."""
    package = module if is_package else module.rpartition(".")[0]

    def visit(nodes: Iterable[ast.AST], guarded: bool) -> Iterator[tuple[str, bool]]:
        for node in nodes:
            if isinstance(node, ast.Import):
                for alias in node.names:
                    yield alias.name, guarded
            elif isinstance(node, ast.ImportFrom):
                base = node.module or ""
                if node.level:
                    parent = package.split(".")
                    parent = parent[:len(parent) - node.level + 1]
                    base = ".".join([*parent, *([base] if base else [])])
                if base != "__future__":
                    yield base, guarded
                    for alias in node.names:  # maybe a submodule, maybe a name: optional
                        yield f"{base}.{alias.name}", True
            elif isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.Lambda)):
                if deep:
                    yield from visit(ast.iter_child_nodes(node), guarded)
            elif isinstance(node, ast.If) and _guarded(node):
                yield from visit(node.orelse, guarded)
            elif isinstance(node, ast.Try) and _guarded(node):
                yield from visit(node.body, True)
                yield from visit([*node.orelse, *node.finalbody,
                                  *[s for h in node.handlers for s in h.body]], guarded)
            else:
                yield from visit(ast.iter_child_nodes(node), guarded)

    yield from visit(tree.body, False)


def collect(extra: Sequence[str] = ()) -> dict[str, Path]:
    """Module name -> source file of everything first-party the bundle carries."""
    found: dict[str, Path] = {}
    deep: set[str] = set()
    queue: list[str] = []
    stdlib = _stdlib()

    def add(name: str, *, whole: bool, agent_side: bool) -> None:
        path, is_package = _find(name)
        names = list(_package_modules(name, path.parent)) if whole and is_package else [name]
        for each in names:
            if agent_side:
                deep.add(each)
            if each not in found:
                found[each] = _find(each)[0] if each != name else path
                queue.append(each)
        parts = name.split(".")
        for cut in range(1, len(parts)):  # parents' __init__: importing needs them
            parent = ".".join(parts[:cut])
            if parent not in found:
                found[parent] = _find(parent)[0]
                queue.append(parent)

    add(AGENT_PACKAGE, whole=True, agent_side=True)
    for name in AGENT_PLUGINS:
        add(name, whole=True, agent_side=True)
    for name in CORE_MODULES:
        add(name, whole=False, agent_side=False)
    for name in extra:
        add(name, whole=True, agent_side=True)
    allowed = ALLOWED_THIRD_PARTY | {name.split(".")[0] for name in extra}
    done: set[str] = set()
    while queue:
        module = queue.pop()
        if module in done:
            continue
        done.add(module)
        path = found[module]
        tree = ast.parse(path.read_text(encoding="utf-8"), str(path))
        for name, guarded in _imports(tree, module, path.name == "__init__.py",
                                      deep=module in deep):
            top = name.split(".")[0]
            if _is_first_party(name) or top in allowed - ALLOWED_THIRD_PARTY:
                try:
                    add(name, whole=False, agent_side=False)
                except BundleError:
                    if not guarded:
                        raise BundleError(f"{module} imports {name}, which cannot be "
                                          f"bundled") from None
            elif not guarded and top not in stdlib and top not in allowed:
                raise BundleError(f"{module} imports {top}, which is neither the standard "
                                  f"library nor bundled",
                                  hints=["the agent runs on the instance's bare python3: "
                                         "bundle only pure-Python, stdlib-only modules"])
    return found


def _pluggy_files() -> dict[str, bytes]:
    """Archive name -> bytes of the installed pluggy's source files (and its licence)."""
    import importlib.metadata

    path, _ = _find("pluggy")
    files = {f"pluggy/{p.relative_to(path.parent).as_posix()}": p.read_bytes()
             for p in sorted(path.parent.rglob("*.py")) if "__pycache__" not in p.parts}
    try:
        distribution = importlib.metadata.distribution("pluggy")
        for entry in distribution.files or ():
            if Path(str(entry)).name.upper().startswith("LICENSE"):
                files["pluggy/LICENSE"] = Path(str(distribution.locate_file(entry))).read_bytes()
                break
    except (importlib.metadata.PackageNotFoundError, OSError):
        pass
    return files


def _archive_name(module: str, path: Path) -> str:
    parts = module.split(".")
    if path.name == "__init__.py":
        return "/".join([*parts, "__init__.py"])
    return "/".join(parts) + ".py"


def _module_name(archive_name: str) -> str:
    parts = archive_name[:-len(".py")].split("/")
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def zipapp_bytes(modules: Sequence[str] = ()) -> tuple[bytes, tuple[str, ...]]:
    """The archive (shebang included) and the modules it carries."""
    from soong_core import __version__

    entries = {_archive_name(name, path): path.read_bytes()
               for name, path in collect(modules).items()}
    entries.update(_pluggy_files())
    carried = tuple(sorted(_module_name(n) for n in entries if n.endswith(".py")))
    manifest = {"schema_version": 1, "version": __version__, "requires_python": ">=3.10",
                "modules": list(carried), "plugin_modules": list(modules)}
    entries[MANIFEST] = (json.dumps(manifest, indent=1, sort_keys=True) + "\n").encode()
    entries["__main__.py"] = ENTRY_POINT.encode()
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as archive:
        for name in sorted(entries):
            info = zipfile.ZipInfo(name, date_time=FIXED_TIME)
            info.compress_type = zipfile.ZIP_DEFLATED
            info.external_attr = 0o644 << 16
            info.create_system = 3  # unix, whatever builds it
            archive.writestr(info, entries[name], compresslevel=9)
    return SHEBANG + buffer.getvalue(), carried


def build_zipapp(out_path: str | os.PathLike[str], modules: Sequence[str] = ()) -> Bundle:
    """Write the agent's zipapp to ``out_path`` (atomically); ``modules``: what plugins
    named through ``soong_agent_bundle_modules``. :class:`BundleError` on failure."""
    target = Path(out_path)
    data, carried = zipapp_bytes(modules)
    if target.is_dir():
        raise BundleError(f"cannot write the agent to {target}: it is a directory")
    temporary = target.with_name(f".{target.name}.{os.getpid()}.tmp")
    try:
        temporary.write_bytes(data)
        temporary.chmod(0o644)
        os.replace(temporary, target)
    except OSError as exc:
        try:
            temporary.unlink()
        except OSError:
            pass
        raise BundleError(f"cannot write the agent to {target}: "
                          f"{exc.strerror or exc}") from None
    return Bundle(path=target, size=len(data), modules=carried)
