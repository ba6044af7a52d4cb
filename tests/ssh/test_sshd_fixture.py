"""The test sshd itself: a root login with the test's key works through the system
``ssh``, a wrong key is refused, a restart keeps the host key unless asked not to, and
the service behind it answers through a real port forward."""

from __future__ import annotations

import subprocess
import time
from pathlib import Path

import pytest

from soong_core.urlopen import opener
from soong_core.testing import LocalServer, free_port
from soong_plugins.fabric_tunnel.testing import SERVICE_BODY, SshServer, keygen


def ssh(server: SshServer, key: Path, *args: str,
        known_hosts: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        ["ssh", "-F", "/dev/null", "-i", str(key), "-p", str(server.port),
         "-o", "BatchMode=yes", "-o", "IdentitiesOnly=yes", "-o", "ConnectTimeout=10",
         "-o", f"UserKnownHostsFile={known_hosts}", "-o", "StrictHostKeyChecking=yes",
         "-o", "HostKeyAlias=test-instance", f"{server.user}@{server.host}", *args],
        stdin=subprocess.DEVNULL, capture_output=True, text=True, timeout=60)


def trust(server: SshServer, known_hosts: Path) -> None:
    """A known_hosts line for the server's host key under the alias ``test-instance``."""
    key_type, key = server.host_public_key.read_text().split()[:2]
    known_hosts.write_text(f"test-instance {key_type} {key}\n")


def test_a_root_login_runs_a_command_and_a_wrong_key_is_refused(sshd: SshServer,
                                                                 tmp_path: Path) -> None:
    known = tmp_path / "known_hosts"
    trust(sshd, known)
    done = ssh(sshd, sshd.client_key, "echo", "hi", known_hosts=known)
    assert (done.returncode, done.stdout) == (0, "hi\n"), done.stderr
    assert ssh(sshd, sshd.client_key, "false", known_hosts=known).returncode == 1
    stranger = keygen(tmp_path / "stranger", "not authorized")
    refused = ssh(sshd, stranger, "true", known_hosts=known)
    assert refused.returncode == 255 and "Permission denied" in refused.stderr


def test_a_restart_keeps_the_host_key_unless_it_is_renewed(sshd: SshServer,
                                                           tmp_path: Path) -> None:
    known = tmp_path / "known_hosts"
    trust(sshd, known)
    before = sshd.host_fingerprint
    sshd.restart()
    assert sshd.host_fingerprint == before
    assert ssh(sshd, sshd.client_key, "true", known_hosts=known).returncode == 0
    sshd.restart(new_host_key=True)
    assert sshd.host_fingerprint != before
    changed = ssh(sshd, sshd.client_key, "true", known_hosts=known)
    assert changed.returncode == 255
    assert "REMOTE HOST IDENTIFICATION HAS CHANGED" in changed.stderr


def test_the_service_behind_it_answers_through_a_forward(sshd: SshServer,
                                                         instance_service: LocalServer,
                                                         tmp_path: Path) -> None:
    known = tmp_path / "known_hosts"
    trust(sshd, known)
    local = free_port()
    forward = subprocess.Popen(
        ["ssh", "-F", "/dev/null", "-i", str(sshd.client_key), "-p", str(sshd.port), "-N",
         "-o", "BatchMode=yes", "-o", "IdentitiesOnly=yes", "-o", "ExitOnForwardFailure=yes",
         "-o", f"UserKnownHostsFile={known}", "-o", "StrictHostKeyChecking=yes",
         "-o", "HostKeyAlias=test-instance",
         "-L", f"127.0.0.1:{local}:127.0.0.1:{instance_service.port}",
         f"{sshd.user}@{sshd.host}"], stdin=subprocess.DEVNULL, stderr=subprocess.PIPE)
    try:
        end = time.monotonic() + 30
        while True:
            try:
                url = f"http://127.0.0.1:{local}/"
                with opener(url).open(url, timeout=5) as answer:
                    assert answer.read() == SERVICE_BODY
                break
            except OSError:
                assert forward.poll() is None, forward.stderr.read() if forward.stderr else ""
                assert time.monotonic() < end, "the forward never answered"
                time.sleep(0.1)
    finally:
        forward.terminate()
        forward.wait(timeout=10)


def test_without_sshd_it_skips_here_and_fails_under_ci(monkeypatch: pytest.MonkeyPatch) -> None:
    from soong_plugins.fabric_tunnel import testing

    monkeypatch.setattr(testing, "SSHD", "/nonexistent/sshd")
    monkeypatch.delenv("CI", raising=False)
    with pytest.raises(pytest.skip.Exception, match="openssh-server"):
        testing.require_sshd()
    monkeypatch.setenv("CI", "true")
    with pytest.raises(pytest.fail.Exception, match="CI=true: a missing component fails"):
        testing.require_sshd()
