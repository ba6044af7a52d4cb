"""The agent's zipapp (soong_plugins.lease_agent.bundle, `soong agent build`): it builds
the same bytes twice, carries what the agent imports, and its self-test passes under every
Python found, in isolation."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

from soong_core.testing import agent_pythons
from soong_plugins.lease_agent.bundle import MANIFEST, BundleError, build_zipapp, zipapp_bytes

ROOT = Path(__file__).resolve().parents[2]
PLUGIN_MODULES = ["soong_plugins.policies", "soong_core.policy", "soong_core.display",
                  "soong_core.costs", "soong_core.periods", "soong_core.budget"]


INTERPRETERS = agent_pythons()


@pytest.fixture(scope="module")
def bundle(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("bundle") / "soong-agent.pyz"
    build_zipapp(path, PLUGIN_MODULES)
    return path


def _self_test(python: str, bundle: Path, cwd: Path, *, isolated: bool = True,
               env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    flags = ["-I"] if isolated else []
    return subprocess.run([python, *flags, str(bundle), "--self-test"], cwd=cwd,
                          capture_output=True, text=True, timeout=120,
                          env=env if env is not None else dict(os.environ))


def test_some_interpreter_is_found() -> None:
    assert INTERPRETERS, "no Python 3.10+ answers -c pass"


@pytest.mark.slow
@pytest.mark.parametrize("python", INTERPRETERS)
def test_self_test_passes_in_isolation_under_every_python(python: str, bundle: Path,
                                                          tmp_path: Path) -> None:
    result = _self_test(python, bundle, tmp_path)
    assert "soong-agent self-test: bundle ok:" in result.stdout, result.stderr
    assert f"from {bundle}" in result.stdout and ", isolated" in result.stdout
    assert result.returncode == 0, result.stdout + result.stderr
    assert result.stdout.strip().splitlines()[-1] == "self-test ok"


@pytest.mark.slow
def test_self_test_catches_a_module_missing_from_the_bundle(bundle: Path,
                                                            tmp_path: Path) -> None:
    """A bundle without soong_core.errors, run where the checkout is importable: the
    import succeeds, from the wrong place, and the self-test says so."""
    broken = tmp_path / "broken.pyz"
    with zipfile.ZipFile(bundle) as source, zipfile.ZipFile(broken, "w") as target:
        for info in source.infolist():
            if info.filename != "soong_core/errors.py":
                target.writestr(info, source.read(info.filename))
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    result = _self_test(sys.executable, broken, tmp_path, isolated=False, env=env)
    assert result.returncode == 1
    assert f"soong_core.errors comes from {ROOT}" in result.stderr
    assert "not from the bundle" in result.stderr
    assert "Traceback" not in result.stderr


def test_the_manifest_lists_what_the_agent_needs(bundle: Path) -> None:
    with zipfile.ZipFile(bundle) as archive:
        names = set(archive.namelist())
        manifest = json.loads(archive.read(MANIFEST))
        entry = archive.read("__main__.py").decode()
    modules = set(manifest["modules"])
    for needed in ["instance_agent", "instance_agent.terminate", "instance_agent.selftest",
                   "soong_core", "soong_core.models", "soong_core.clock", "soong_core.policy",
                   "soong_core.hookspecs", "soong_plugins", "soong_plugins.policies.lease",
                   "pluggy", "pluggy._manager", *PLUGIN_MODULES]:
        assert needed in modules, needed
    assert "pluggy/LICENSE" in names
    # the CLI, the config loader and the provider never travel
    assert not [m for m in modules if m.startswith(("soong_core.cli", "soong_core.config",
                                                    "soong_plugins.lambda_labs",
                                                    "soong_core.api", "soong_core.history"))]
    assert manifest["plugin_modules"] == PLUGIN_MODULES
    assert "from instance_agent.__main__ import main" in entry
    assert bundle.read_bytes().startswith(b"#!/usr/bin/env python3\n")


def test_builds_are_byte_identical(tmp_path: Path) -> None:
    first, second = tmp_path / "a.pyz", tmp_path / "b.pyz"
    built = build_zipapp(first, PLUGIN_MODULES)
    build_zipapp(second, PLUGIN_MODULES)
    assert first.read_bytes() == second.read_bytes()
    assert built.size == first.stat().st_size
    with zipfile.ZipFile(first) as archive:
        infos = archive.infolist()
    assert [i.filename for i in infos] == sorted(i.filename for i in infos)
    assert {i.date_time for i in infos} == {(1980, 1, 1, 0, 0, 0)}


def test_a_third_party_plugin_module_travels_whole() -> None:
    pytest.importorskip("soong_curfew")  # examples/soong-curfew (tests/conftest.py)
    _, modules = zipapp_bytes(["soong_curfew"])
    assert "soong_curfew" in modules


def test_a_module_that_imports_a_third_party_fails_the_build(tmp_path: Path,
                                                             monkeypatch: pytest.MonkeyPatch
                                                             ) -> None:
    (tmp_path / "needs_yaml.py").write_text("import json\nimport yaml\n")
    (tmp_path / "guarded_ok.py").write_text(
        "from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n    import cleo\n"
        "try:\n    import yaml\nexcept ImportError:\n    yaml = None\n"
        "def later():\n    import requests\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    with pytest.raises(BundleError, match="needs_yaml imports yaml, which is neither the "
                                          "standard library nor bundled"):
        zipapp_bytes(["needs_yaml"])
    with pytest.raises(BundleError, match="requests"):  # a named module's lazy imports count
        zipapp_bytes(["guarded_ok"])
    with pytest.raises(BundleError, match="'no_such_module_here': no such pure-Python module"):
        zipapp_bytes(["no_such_module_here"])


# -- the command ----------------------------------------------------------------------------

def _soong(*args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "soong_core", *args], cwd=cwd,
                          capture_output=True, text=True, timeout=120)


@pytest.mark.slow
def test_command_writes_the_bundle_and_prints_its_size(tmp_path: Path) -> None:
    result = _soong("agent", "build", cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    written = tmp_path / "soong-agent.pyz"
    size = written.stat().st_size
    assert result.stdout.strip().startswith(f"wrote soong-agent.pyz ({size:,} bytes, ")
    result = _soong("agent", "build", "-o", str(tmp_path / "other.pyz"), cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    assert (tmp_path / "other.pyz").read_bytes() == written.read_bytes()
    with zipfile.ZipFile(written) as archive:  # the plugins' hook answers are in it
        manifest = json.loads(archive.read(MANIFEST))
    assert "soong_plugins.policies" in manifest["plugin_modules"]


@pytest.mark.slow
@pytest.mark.parametrize("target,shown", [
    ("missing-dir/agent.pyz", "No such file or directory"),
    (".", "it is a directory"),
])
def test_command_errors_are_one_line(tmp_path: Path, target: str, shown: str) -> None:
    result = _soong("agent", "build", "-o", target, cwd=tmp_path)
    assert result.returncode != 0
    assert "Traceback" not in result.stderr + result.stdout
    assert f"cannot write the agent to {target}" in result.stderr
    assert shown in result.stderr
    assert not list(tmp_path.glob("**/.*.tmp"))
