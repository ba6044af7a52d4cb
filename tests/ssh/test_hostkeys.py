"""Host keys by instance id, against the real test sshd: first use records, the same
key passes, a renewed host key is refused with both fingerprints until forgotten."""

from __future__ import annotations

from pathlib import Path

import pytest

from soong_core.errors import SoongError
from soong_plugins.fabric_tunnel.hostkeys import (
    HostKey,
    HostKeyChanged,
    HostKeys,
    HostKeyUnknown,
    changed_from,
    fetch_host_key,
    known_hosts_path,
    strict_client,
)
from soong_plugins.fabric_tunnel.testing import SshServer

INSTANCE = "0920582c7ff041399e34823a0be62549"


def test_the_file_is_soong_s_own_under_xdg_data(tmp_path: Path) -> None:
    assert known_hosts_path().parts[-3:] == ("soong", "ssh", "known_hosts")
    assert ".ssh" not in known_hosts_path().parts


def test_first_use_records_then_a_changed_key_is_refused(sshd: SshServer,
                                                         tmp_path: Path) -> None:
    keys = HostKeys(tmp_path / "known_hosts")
    presented = fetch_host_key(sshd.host, sshd.port)
    assert presented.fingerprint == sshd.host_fingerprint  # as ssh-keygen -l prints it
    assert keys.trust_first(INSTANCE, presented) is True
    assert keys.trust_first(INSTANCE, fetch_host_key(sshd.host, sshd.port)) is False
    assert oct((tmp_path / "known_hosts").stat().st_mode & 0o777) == "0o600"
    old = sshd.host_fingerprint
    sshd.restart(new_host_key=True)
    with pytest.raises(HostKeyChanged) as changed:
        keys.trust_first(INSTANCE, fetch_host_key(sshd.host, sshd.port))
    assert old in str(changed.value) and sshd.host_fingerprint in str(changed.value)
    assert f"soong ssh --forget-host {INSTANCE}" in " ".join(changed.value.hints)
    assert keys.forget(INSTANCE) == 1
    assert keys.trust_first(INSTANCE, fetch_host_key(sshd.host, sshd.port)) is True


def test_the_system_ssh_reads_the_entries_by_alias(sshd: SshServer, tmp_path: Path) -> None:
    import subprocess

    keys = HostKeys(tmp_path / "known_hosts")
    keys.trust_first(INSTANCE, fetch_host_key(sshd.host, sshd.port))
    done = subprocess.run(
        ["ssh", "-F", "/dev/null", "-i", str(sshd.client_key), "-p", str(sshd.port),
         "-o", "BatchMode=yes", "-o", "IdentitiesOnly=yes",
         "-o", f"UserKnownHostsFile={keys.path}", "-o", "StrictHostKeyChecking=yes",
         "-o", f"HostKeyAlias={INSTANCE}", f"root@{sshd.host}", "echo", "hi"],
        stdin=subprocess.DEVNULL, capture_output=True, text=True, timeout=60)
    assert (done.returncode, done.stdout) == (0, "hi\n"), done.stderr


def test_paramiko_connects_only_with_the_recorded_key(sshd: SshServer, tmp_path: Path) -> None:
    import paramiko

    keys = HostKeys(tmp_path / "known_hosts")

    def connect() -> None:
        client = strict_client(keys, INSTANCE, sshd.host, sshd.port)
        try:
            try:
                client.connect(sshd.host, sshd.port, username="root",
                               key_filename=str(sshd.client_key), look_for_keys=False,
                               allow_agent=False, timeout=10)
            except paramiko.BadHostKeyException as bad:
                raise changed_from(keys, INSTANCE, bad) from None
            _, out, _ = client.exec_command("echo hi")
            assert out.read() == b"hi\n"
        finally:
            client.close()

    with pytest.raises(HostKeyUnknown):
        connect()  # strict: nothing recorded yet, nothing recorded by trying
    assert keys.lookup(INSTANCE) == []
    keys.trust_first(INSTANCE, fetch_host_key(sshd.host, sshd.port))
    connect()
    sshd.restart(new_host_key=True)
    with pytest.raises(HostKeyChanged) as changed:
        connect()
    assert sshd.host_fingerprint in str(changed.value)


def test_other_lines_are_kept_and_a_bad_alias_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "known_hosts"
    path.write_text("# mine\nother ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIOmZ\n")
    keys = HostKeys(path)
    key = HostKey("ssh-ed25519", "AAAAC3NzaC1lZDI1NTE5AAAAIB2u")
    keys.add(INSTANCE, key)
    assert keys.lookup(INSTANCE) == [key]
    keys.forget(INSTANCE)
    assert path.read_text() == "# mine\nother ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIOmZ\n"
    with pytest.raises(SoongError, match="cannot name a host key"):
        keys.add("* evil", key)


def test_with_several_host_keys_paramiko_asks_for_the_recorded_type(sshd: SshServer,
                                                                    tmp_path: Path) -> None:
    """A real instance has RSA, ECDSA and Ed25519 host keys: recording one at first
    contact must not make a later connection see another as 'changed'."""
    import subprocess

    import paramiko

    rsa = tmp_path / "ssh_host_rsa_key"
    subprocess.run(["ssh-keygen", "-q", "-t", "rsa", "-b", "2048", "-N", "", "-f", str(rsa)],
                   check=True, timeout=60)
    plain = sshd.config_text
    sshd.config_text = lambda: plain() + f"HostKey {rsa}\n"  # type: ignore[method-assign]
    sshd.restart()
    keys = HostKeys(tmp_path / "known_hosts")
    rsa_key = (rsa.with_name(rsa.name + ".pub").read_text().split()[:2])
    keys.add(INSTANCE, HostKey(rsa_key[0], rsa_key[1]))  # as if first contact got RSA
    client = strict_client(keys, INSTANCE, sshd.host, sshd.port)
    try:
        client.connect(sshd.host, sshd.port, username="root", key_filename=str(sshd.client_key),
                       look_for_keys=False, allow_agent=False, timeout=10)
        assert client.get_transport().get_remote_server_key().get_name() == "ssh-rsa"
    except paramiko.BadHostKeyException as bad:
        raise AssertionError(f"negotiated another key: {bad}") from None
    finally:
        client.close()


def test_listing_commands_imports_no_ssh_library() -> None:
    import subprocess
    import sys

    code = ("import sys; from soong_core.cli.application import SoongApplication; "
            "from soong_core.plugins import make_plugins; "
            "app = SoongApplication(make_plugins(entry_points=False)); app.all(); "
            "import soong_plugins.fabric_tunnel.ssh_command; "
            "print(sorted(m for m in ('paramiko', 'fabric', 'invoke') if m in sys.modules))")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          timeout=60)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "[]"
