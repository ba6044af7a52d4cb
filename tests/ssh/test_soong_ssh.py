"""``soong ssh`` as a user runs it (a process), against a simulated instance whose
address and port are the real test sshd's (POST /_sim/instances/{id}/network)."""

from __future__ import annotations

import os
import pwd
import shutil
import subprocess
from pathlib import Path
from typing import Any, Callable

import pytest

from soong_core.clock import AcceleratedClock
from soong_core.config import write_config_file
from soong_core.testing import CliResult, SoongEnv, run_soong
from soong_plugins.fabric_tunnel.hostentries import INCLUDE_COMMENT, config_path
from soong_plugins.fabric_tunnel.hostkeys import HostKeys, known_hosts_path
from soong_plugins.fabric_tunnel.testing import SshServer, keygen

pytestmark = pytest.mark.slow


def ssh(env: SoongEnv, *args: str) -> CliResult:
    return run_soong("ssh", *args, env=env, timeout=120)


def real_ssh_dir() -> Path:
    return Path(pwd.getpwuid(os.getuid()).pw_dir) / ".ssh"


def snapshot(folder: Path) -> dict[str, float]:
    if not folder.exists():
        return {}
    return {str(p): p.stat().st_mtime for p in folder.rglob("*")}


def test_a_command_runs_and_its_exit_code_is_soong_s(instance: str, sshd: SshServer,
                                                     soong_env: SoongEnv) -> None:
    real_before = snapshot(real_ssh_dir())
    home_before = snapshot(soong_env.home)
    done = ssh(soong_env, instance, "--", "echo", "hi")
    assert (done.exit_code, done.stdout) == (0, "hi\n"), done.stderr
    assert f"trusting the host key of {instance} on first use: {sshd.host_fingerprint}" \
        in done.stderr
    again = ssh(soong_env, "trainer", "--", "echo", "again")  # by name; the key is known
    assert (again.exit_code, again.stdout) == (0, "again\n") and "trusting" not in again.stderr
    assert ssh(soong_env, instance[:8], "--", "false").exit_code == 1
    assert ssh(soong_env, "--", "sh", "-c", "exit 7").exit_code == 7  # the running one
    assert HostKeys(known_hosts_path()).lookup(instance)  # soong's own file
    assert snapshot(real_ssh_dir()) == real_before  # the real ~/.ssh untouched
    # the temporary HOME gained one thing: ~/.ssh/config with the Include of the entries
    home = soong_env.home
    assert set(snapshot(home)) - set(home_before) == {f"{home}/.ssh", f"{home}/.ssh/config"}
    assert (home / ".ssh" / "config").read_text() == (
        f"{INCLUDE_COMMENT}\nInclude {config_path()}\n")


def test_the_host_entry_works_with_the_system_ssh(
        sim_factory: Callable[..., Any], sshd: SshServer, soong_env: SoongEnv,
        tmp_path: Path) -> None:
    """``ssh soong-NAME`` as a user (or an editor) runs it: OpenSSH reads ~/.ssh/config
    from passwd's home, so the temporary one is given with -F. The key sits where a
    space and a ``%`` must survive the config file."""
    odd = tmp_path / "my keys %d"
    odd.mkdir()
    key = odd / "id"
    shutil.copy(sshd.client_key, key)
    key.chmod(0o600)
    cloud = sim_factory(clock=AcceleratedClock(50.0), boot_seconds=0)
    instance_id = cloud.launch(name="Box 1")
    cloud.control("POST", f"/instances/{instance_id}/network",
                  {"ip": sshd.host, "ssh_port": sshd.port})
    write_config_file(soong_env.config_file, {
        "lambda": {"api_url": cloud.api_url, "api_key": cloud.api_key,
                   "account_id": "sim-account"},
        "ssh": {"user": "root", "key_path": str(key)}})
    assert ssh(soong_env, "--", "true").exit_code == 0  # records the host key
    printed = ssh(soong_env, "--print-config")
    assert printed.stdout.startswith("Host soong-box-1\n"), printed.stderr
    done = subprocess.run(
        ["ssh", "-F", str(soong_env.home / ".ssh" / "config"), "-o", "BatchMode=yes",
         "soong-box-1", "echo", "through the entry"],
        capture_output=True, text=True, timeout=60, env={**os.environ, **soong_env.environ()})
    assert (done.returncode, done.stdout) == (0, "through the entry\n"), done.stderr


def test_a_changed_host_key_is_refused_with_both_fingerprints(
        instance: str, sshd: SshServer, soong_env: SoongEnv) -> None:
    assert ssh(soong_env, instance, "--", "true").exit_code == 0
    old = sshd.host_fingerprint
    sshd.restart(new_host_key=True)
    refused = ssh(soong_env, instance, "--", "echo", "should not run")
    assert refused.exit_code == 1 and "should not run" not in refused.stdout
    assert old in refused.stderr and sshd.host_fingerprint in refused.stderr
    assert f"soong ssh --forget-host {instance}" in refused.stderr
    assert "Traceback" not in refused.stderr
    forgot = ssh(soong_env, "--forget-host", instance)
    assert forgot.exit_code == 0 and "forgot 1 host key" in forgot.stdout
    assert ssh(soong_env, instance, "--", "true").exit_code == 0


def test_a_wrong_key_is_one_line_with_a_hint(instance: str, soong_env: SoongEnv,
                                             tmp_path: Path) -> None:
    stranger = keygen(tmp_path / "stranger", "not authorized")
    write_config_file(soong_env.config_file, {
        **_config(soong_env), "ssh": {"user": "root", "key_path": str(stranger)}})
    refused = ssh(soong_env, instance, "--", "true")
    assert refused.exit_code == 1
    assert f"refused the key {stranger} for user root" in refused.stderr
    assert "ssh.key_path" in refused.stderr and "Traceback" not in refused.stderr


def test_a_stopped_sshd_is_one_line_with_a_hint(instance: str, sshd: SshServer,
                                                soong_env: SoongEnv) -> None:
    sshd.stop()
    refused = ssh(soong_env, instance, "--wait", "0", "--", "true")
    assert refused.exit_code == 1 and "refused the SSH connection" in refused.stderr
    assert "Traceback" not in refused.stderr


def test_bad_usage_is_one_line(instance: str, soong_env: SoongEnv) -> None:
    two = ssh(soong_env, instance, "extra")
    assert two.exit_code == 2 and "one instance, then the command after --" in two.stderr
    wait = ssh(soong_env, instance, "--wait", "soon", "--", "true")
    assert wait.exit_code == 2 and "--wait takes seconds" in wait.stderr


def _config(env: SoongEnv) -> dict[str, Any]:
    from soong_core.config import read_config_file

    return dict(read_config_file(env.config_file) or {})


def test_a_booting_instance_is_waited_for(sim_factory: Callable[..., Any], sshd: SshServer,
                                          soong_env: SoongEnv) -> None:
    cloud = sim_factory(clock=AcceleratedClock(50.0), boot_seconds=150)  # 3 wall seconds
    instance_id: str = cloud.launch()
    cloud.control("POST", f"/instances/{instance_id}/network",
                  {"ip": sshd.host, "ssh_port": sshd.port})
    assert cloud.instance(instance_id)["status"] == "booting"
    write_config_file(soong_env.config_file, {
        "lambda": {"api_url": cloud.api_url, "api_key": cloud.api_key,
                   "account_id": "sim-account"},
        "ssh": {"user": "root", "key_path": str(sshd.client_key)}})
    done = ssh(soong_env, instance_id, "--", "echo", "up")
    assert (done.exit_code, done.stdout) == (0, "up\n"), done.stderr
    assert "waiting for" in done.stderr


def test_several_words_arrive_as_arguments_one_word_is_a_shell_line() -> None:
    from soong_plugins.fabric_tunnel.settings import remote_command

    assert remote_command(["sh", "-c", "exit 7"]) == "sh -c 'exit 7'"
    assert remote_command(["nvidia-smi | head -1"]) == "nvidia-smi | head -1"
