"""Fixtures of the deployment tests: one launch's agent script (the zipapp built once
per session) and a sandbox root with a do-nothing ``systemctl``."""

from __future__ import annotations

from pathlib import Path

import pytest
from deploy_kit import CONFIG, TOKEN, Sandbox, Script, launch_request


@pytest.fixture(scope="session")
def agent_script() -> Script:
    from soong_plugins.lease_agent.userdata import agent_config, install_script, zipapp

    config = agent_config(launch_request().tags, CONFIG, TOKEN)
    return Script(install_script(zipapp([]), config), config)


@pytest.fixture
def sandbox(tmp_path: Path) -> Sandbox:
    stubs = tmp_path / "stubs"
    stubs.mkdir()
    log = stubs / "systemctl.log"
    systemctl = stubs / "systemctl"
    systemctl.write_text(f'#!/bin/sh\necho "$*" >> "{log}"\n')
    systemctl.chmod(0o755)
    root = tmp_path / "root"
    root.mkdir()
    return Sandbox(root, log)
