"""The agent's user_data script: every path under ${SOONG_ROOT}, no secret on a command
line, and, run in a sandbox, exactly the agent's files, which the agent accepts."""

from __future__ import annotations

import json
import re
import subprocess

from deploy_kit import API_KEY, CONFIG, LAUNCHED, TOKEN, Sandbox, Script, python3

INTERPRETERS = {"/bin/bash", "/usr/bin/python3"}
HEREDOC = re.compile(r"<<'?([A-Z_]+)'?")


def shell_lines(script: str) -> list[tuple[str, bool]]:
    """(line, is data) for each line: data is a heredoc's body (not run by the shell)."""
    lines: list[tuple[str, bool]] = []
    marker: str | None = None
    for line in script.split("\n"):
        if marker is not None:
            lines.append((line, line != marker))
            if line == marker:
                marker = None
            continue
        lines.append((line, False))
        found = HEREDOC.search(line)
        if found:
            marker = found.group(1)
    return lines


def quoted_heredoc_body(script: str, marker: str) -> str:
    start = script.index(f"<<'{marker}'\n") + len(f"<<'{marker}'\n")
    return script[start:script.index(f"\n{marker}\n", start)]


def test_every_absolute_path_the_script_touches_is_under_soong_root(agent_script: Script) -> None:
    code = [line for line, data in shell_lines(agent_script.text) if not data]
    assert 'ROOT="${SOONG_ROOT:-}"' in code
    outside = []
    for line in code:
        if line.startswith("#") and not line.startswith("#!"):
            continue  # a comment
        for found in re.finditer(r"(?<![\w.:/])/[A-Za-z][\w./-]*", line):
            before = line[:found.start()]
            if before.endswith(("$ROOT", "${ROOT}")) or found.group() in INTERPRETERS:
                continue
            outside.append((found.group(), line))
    assert outside == []
    # and the ones it does touch are these, all of them under the root
    touched = {m.group(1) for line in code for m in re.finditer(r"\$\{?ROOT\}?(/[\w./-]+)", line)}
    assert touched == {"/opt/soong", "/etc/soong", "/etc/systemd/system",
                       "/opt/soong/agent.pyz.tmp", "/opt/soong/agent.pyz",
                       "/etc/soong/agent.json.tmp", "/etc/soong/agent.json",
                       "/etc/systemd/system/soong-agent.service.tmp",
                       "/etc/systemd/system/soong-agent.service"}


def test_the_script_starts_strict_and_its_secrets_are_only_in_the_quoted_config(
        agent_script: Script) -> None:
    lines = agent_script.text.split("\n")
    assert lines[0] == "#!/bin/bash"
    assert lines.index("set -euo pipefail") < lines.index("umask 077") < \
        lines.index('ROOT="${SOONG_ROOT:-}"')
    code = "\n".join(line for line, data in shell_lines(agent_script.text) if not data)
    assert TOKEN not in code and API_KEY not in code  # no secret on any command line
    body = quoted_heredoc_body(agent_script.text, "SOONG_AGENT_CONFIG")
    assert json.loads(body) == agent_script.config
    assert agent_script.text.count(TOKEN) == 1 and agent_script.text.count(API_KEY) == 1


def test_the_config_carries_the_launch_facts_and_the_soong_config(agent_script: Script) -> None:
    config = agent_script.config
    assert config["instance"] == {
        "launch_id": "launch-abc", "launched_at": LAUNCHED,
        "lease_deadline": LAUNCHED + 2 * 3600, "hard_deadline": LAUNCHED + 8 * 3600,
        "idle_timeout_seconds": 1800.0, "idle_grace_seconds": 300.0,
        "warn_before_seconds": 600.0}
    assert config["api"] == {"port": 8799, "token": TOKEN}
    assert config["provider"] == {"api_url": CONFIG["lambda"]["api_url"], "api_key": API_KEY,
                                  "launch_id": "launch-abc"}


def test_the_script_installs_exactly_the_agent_and_the_agent_accepts_its_config(
        agent_script: Script, sandbox: Sandbox) -> None:
    done = sandbox.run(agent_script.text)
    assert done.returncode == 0, done.stderr
    assert sandbox.files() == {"opt/soong/agent.pyz": 0o644, "etc/soong/agent.json": 0o600,
                               "etc/systemd/system/soong-agent.service": 0o644}
    assert sandbox.log.read_text().splitlines() == [
        "daemon-reload", "enable soong-agent.service", "restart soong-agent.service"]
    assert json.loads((sandbox.root / "etc/soong/agent.json").read_text()) == agent_script.config
    unit = (sandbox.root / "etc/systemd/system/soong-agent.service").read_text().splitlines()
    root = sandbox.root
    assert unit == [
        "[Unit]", "Description=soong lease agent", "After=network-online.target",
        "Wants=network-online.target", "[Service]", f"Environment=SOONG_ROOT={root}",
        f"ExecStart=/usr/bin/python3 -I {root}/opt/soong/agent.pyz --config "
        f"{root}/etc/soong/agent.json",
        "Restart=always", "RestartSec=2", "[Install]", "WantedBy=multi-user.target"]
    checked = subprocess.run(
        [python3(), "-I", str(root / "opt/soong/agent.pyz"), "--check", "--config",
         str(root / "etc/soong/agent.json")],
        env={"SOONG_ROOT": str(root), "PATH": "/usr/bin:/bin"}, capture_output=True,
        text=True, timeout=60)
    assert checked.returncode == 0, checked.stderr
    assert "is valid" in checked.stdout
    assert TOKEN not in checked.stdout + checked.stderr


def test_a_second_run_replaces_the_files_in_place(agent_script: Script, sandbox: Sandbox) -> None:
    assert sandbox.run(agent_script.text).returncode == 0
    (sandbox.root / "etc/soong/agent.json").write_text("{}")
    again = sandbox.run(agent_script.text)
    assert again.returncode == 0, again.stderr
    assert json.loads((sandbox.root / "etc/soong/agent.json").read_text()) == agent_script.config
    assert set(sandbox.files()) == {"opt/soong/agent.pyz", "etc/soong/agent.json",
                                    "etc/systemd/system/soong-agent.service"}


def test_a_failing_step_stops_the_script(agent_script: Script, sandbox: Sandbox) -> None:
    (sandbox.root / "etc").write_text("a file where a folder belongs")
    failed = sandbox.run(agent_script.text)
    assert failed.returncode != 0
    assert sandbox.log.exists() is False  # nothing was started
