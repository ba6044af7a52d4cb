"""Host entries: soong's ssh config file, kept in step with what the core sees, and the
one ``Include`` of it in ``~/.ssh/config`` (the temporary HOME's)."""

from __future__ import annotations

import os
import shutil
import subprocess
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest

from soong_core.config import write_config_file
from soong_core.fake import FakeProvider
from soong_core.models import Instance, InstanceState
from soong_core.testing import SoongEnv, live_fake_cloud
from soong_plugins.fabric_tunnel import hostentries
from soong_plugins.fabric_tunnel.hostentries import (
    INCLUDE_COMMENT,
    add_include,
    config_path,
    read_entries,
    remove_include,
    sanitise,
    sync,
    user_config_path,
)
from soong_plugins.fabric_tunnel.hostkeys import HostKey, HostKeys

SECTION = {"user": "root", "key_path": "/keys/id test%1", "connect_timeout_seconds": 5,
           "keepalive_seconds": 30}
KEY = HostKey("ssh-ed25519", "AAAAC3NzaC1lZDI1NTE5AAAAIGk0bWlkZXVrZXlmb3J0ZXN0c29ubHkxMjM0NTY3")


def active(instance_id: str, name: str | None = None, ip: str = "198.51.100.7",
           **extra: Any) -> Instance:
    return Instance(instance_id, InstanceState.ACTIVE, provider="fake", name=name, ip=ip,
                    extra=extra)


def hosts() -> dict[str, str]:
    return {e.instance_id: e.host for e in read_entries()}


def test_active_instances_get_a_block_with_every_setting(soong_env: SoongEnv) -> None:
    done = sync([active("0a1b2c3d4e5f", "Train Run #1", ssh_port=2222)], complete=True,
                account="acct", section=SECTION)
    assert done.written
    (entry,) = read_entries()
    assert entry.host == "soong-train-run-1" and entry.account == "acct"
    lines = entry.block.splitlines()
    assert lines[0] == "Host soong-train-run-1"
    assert "    HostName 198.51.100.7" in lines and "    Port 2222" in lines
    assert "    User root" in lines and "    HostKeyAlias 0a1b2c3d4e5f" in lines
    assert '    IdentityFile "/keys/id test%%1"' in lines  # quoted, % doubled
    assert f"    UserKnownHostsFile {soong_env.data_home}/soong/ssh/known_hosts" in lines
    assert "    StrictHostKeyChecking yes" in lines and "    ServerAliveInterval 30" in lines


def test_rewritten_only_when_it_changes(soong_env: SoongEnv) -> None:
    one = [active("aaaa1111bbbb", "a")]
    assert sync(one, complete=True, account="acct", section=SECTION).written
    before = config_path().stat()
    assert not sync(one, complete=True, account="acct", section=SECTION).written
    assert config_path().stat().st_ino == before.st_ino  # not replaced
    moved = [active("aaaa1111bbbb", "a", ip="198.51.100.8")]
    assert sync(moved, complete=False, account="acct", section=SECTION).written
    assert "HostName 198.51.100.8" in read_entries()[0].block


def test_ended_instances_lose_their_block_and_host_keys(soong_env: SoongEnv) -> None:
    keys = HostKeys()
    for instance_id in ("keep0000", "ends0000", "gone0000", "other000"):
        keys.add(instance_id, KEY)
    sync([active("keep0000", "keep"), active("ends0000", "ends"), active("gone0000", "gone")],
         complete=True, account="acct", section=SECTION)
    sync([active("other000", "other")], complete=False, account="second", section=SECTION)
    booting = Instance("boot0000", InstanceState.BOOTING, provider="fake")
    listed = [active("keep0000", "keep"), replace(active("ends0000"), state=InstanceState.TERMINATED),
              booting]
    done = sync(listed, complete=True, account="acct", section=SECTION)
    assert sorted(done.forgotten) == ["ends0000", "gone0000"]
    # another account's entry is not this list's to judge
    assert hosts() == {"keep0000": "soong-keep", "other000": "soong-other"}
    assert keys.lookup("ends0000") == [] and keys.lookup("gone0000") == []
    assert keys.lookup("keep0000") == [KEY] and keys.lookup("other000") == [KEY]


def test_a_partial_look_removes_nothing_it_did_not_see_end(soong_env: SoongEnv) -> None:
    sync([active("aaaa0000", "a"), active("bbbb0000", "b")], complete=True, account="acct",
         section=SECTION)
    sync([active("cccc0000", "c")], complete=False, account="acct", section=SECTION)
    assert set(hosts()) == {"aaaa0000", "bbbb0000", "cccc0000"}
    terminating = replace(active("aaaa0000"), state=InstanceState.TERMINATING)
    sync([terminating], complete=False, account="acct", section=SECTION)
    assert set(hosts()) == {"bbbb0000", "cccc0000"}
    # an instance that is rebooting (no address for now) keeps its entry
    rebooting = Instance("bbbb0000", InstanceState.UNHEALTHY, provider="fake")
    sync([rebooting, active("cccc0000", "c")], complete=True, account="acct", section=SECTION)
    assert set(hosts()) == {"bbbb0000", "cccc0000"}


def test_names_are_sanitised_unique_and_stable(soong_env: SoongEnv) -> None:
    assert sanitise("  Ünïcode/../GPU Box!! ") == "n-code-..-gpu-box"
    assert sanitise("***") == "" and sanitise("x" * 80) == "x" * 48
    first, second = active("1111aaaa2222", "Train"), active("3333bbbb4444", "train")
    sync([first, second, active("5555cccc6666")], complete=True, account="acct",
         section=SECTION)
    assert hosts() == {"1111aaaa2222": "soong-train", "3333bbbb4444": "soong-train-3333bbbb",
                       "5555cccc6666": "soong-5555cccc"}  # no name: the short id
    # the first ends: the second keeps its alias (a user's `ssh soong-train-3333bbbb` works on)
    sync([second, active("5555cccc6666")], complete=True, account="acct", section=SECTION)
    assert hosts()["3333bbbb4444"] == "soong-train-3333bbbb"


def test_an_address_that_could_carry_options_gets_no_entry(soong_env: SoongEnv) -> None:
    from soong_core.errors import SoongError

    evil = active("eeee0000", "evil", ip="1.2.3.4\n    ProxyCommand touch /tmp/owned")
    with pytest.raises(SoongError, match="no Host entry for eeee0000 has an address soong "
                                         "will not connect to"):
        sync([evil, active("good0000", "good")], complete=True, account="acct",
             section=SECTION)
    assert "ProxyCommand" not in config_path().read_text()
    assert hosts() == {"good0000": "soong-good"}  # the others still have theirs


def test_the_include_is_added_once_at_the_top_with_a_backup(soong_env: SoongEnv) -> None:
    user = user_config_path()
    assert user == soong_env.home / ".ssh" / "config"
    user.parent.mkdir(mode=0o700)
    user.write_text("Host *\n    ForwardAgent no\n")
    user.chmod(0o644)
    for number in range(3):  # three changes, three rewrites: one Include
        sync([active(f"{number}" * 8, f"n{number}")], complete=False, account="acct",
             section=SECTION)
    text = user.read_text()
    assert text == (f"{INCLUDE_COMMENT}\nInclude {config_path()}\n\n"
                    "Host *\n    ForwardAgent no\n")
    assert (user.stat().st_mode & 0o777) == 0o644  # the user's mode kept
    assert Path(f"{user}.soong-backup").read_text() == "Host *\n    ForwardAgent no\n"
    assert not add_include()  # there already
    assert remove_include()
    assert user.read_text() == "Host *\n    ForwardAgent no\n"
    sync([active("99999999", "late")], complete=False, account="acct", section=SECTION)
    assert "Include" not in user.read_text()  # removed means kept out
    assert add_include() and user.read_text().count("Include ") == 1


def test_an_include_the_user_moved_or_wrote_is_not_added_again(soong_env: SoongEnv) -> None:
    user = user_config_path()
    user.parent.mkdir(mode=0o700)
    mine = f"Host work\n    User me\n\nInclude = ~/elsewhere \"{config_path()}\"\n"
    user.write_text(mine)
    sync([active("aaaa0000", "a")], complete=False, account="acct", section=SECTION)
    assert user.read_text() == mine


def test_a_symlinked_config_stays_a_link(soong_env: SoongEnv, tmp_path: Path) -> None:
    dotfiles = tmp_path / "dotfiles"
    dotfiles.mkdir()
    (dotfiles / "ssh_config").write_text("Host box\n")
    user = user_config_path()
    user.parent.mkdir(mode=0o700)
    user.symlink_to(dotfiles / "ssh_config")
    sync([active("aaaa0000", "a")], complete=False, account="acct", section=SECTION)
    assert user.is_symlink()
    assert (dotfiles / "ssh_config").read_text().endswith("\nHost box\n")
    assert "Include" in (dotfiles / "ssh_config").read_text()


def test_no_ssh_folder_is_created_private(soong_env: SoongEnv) -> None:
    sync([active("aaaa0000", "a")], complete=False, account="acct", section=SECTION)
    folder = soong_env.home / ".ssh"
    assert (folder.stat().st_mode & 0o777) == 0o700
    assert (folder / "config").read_text() == f"{INCLUDE_COMMENT}\nInclude {config_path()}\n"


@pytest.mark.skipif(shutil.which("ssh") is None and os.environ.get("CI") != "true",
                    reason="no OpenSSH client")
def test_openssh_reads_the_entry_as_soong_means_it(soong_env: SoongEnv, tmp_path: Path) -> None:
    """``ssh -G`` prints what a connection would use, without connecting (file names
    before their ``%`` tokens are expanded: the real connection through an odd path is
    in test_soong_ssh)."""
    odd = tmp_path / "key dir %h"
    sync([active("0a1b2c3d4e5f", "Box", ssh_port=2222)], complete=True, account="acct",
         section={**SECTION, "key_path": str(odd / "id")})
    done = subprocess.run(["ssh", "-G", "-F", str(user_config_path()), "soong-box"],
                          capture_output=True, text=True, check=True)
    seen = dict(line.split(" ", 1) for line in done.stdout.splitlines() if " " in line)
    assert seen["hostname"] == "198.51.100.7" and seen["port"] == "2222"
    assert seen["user"] == "root" and seen["hostkeyalias"] == "0a1b2c3d4e5f"
    assert seen["stricthostkeychecking"] in ("true", "yes")
    assert seen["identityfile"] == f"{odd}/id".replace("%", "%%")  # one word, % escaped
    assert seen["userknownhostsfile"] == str(hostentries.config_path().with_name("known_hosts"))
    # the command line soong runs says the same through -o
    from soong_plugins.fabric_tunnel.settings import target_for

    target = target_for(active("0a1b2c3d4e5f", "Box", ssh_port=2222),
                        {**SECTION, "key_path": str(odd / "id")})
    done = subprocess.run(["ssh", "-G", *target.options(), "root@198.51.100.7"],
                          capture_output=True, text=True, check=True)
    assert f"identityfile {odd}/id".replace("%", "%%") in done.stdout.splitlines()


# -- through the CLI: start, status and stop keep the entries --------------------------------


@pytest.fixture
def cloud(soong_env: SoongEnv, register_plugin: Any) -> FakeProvider:
    provider = live_fake_cloud(register_plugin)
    write_config_file(soong_env.config_file, {
        "defaults": {"provider": "fake", "gpu": "gpu_1x_a10", "region": "us-east-1",
                     "lease_hours": 2},
        "ssh": {"key_path": str(soong_env.home / "key")}})
    return provider


def test_three_starts_add_one_include_and_stop_clears_the_entries(
        run_cli: Any, cloud: FakeProvider, soong_env: SoongEnv) -> None:
    user = user_config_path()
    for name in ("exp", "exp", "other"):
        started = run_cli(f"start -y --name {name}")
        assert started.exit_code == 0, started.stderr
    assert user.read_text().count(f"Include {config_path()}") == 1
    assert sorted(hosts().values()) == ["soong-exp", "soong-exp-fake-000", "soong-other"]
    printed = run_cli("ssh --print-config other")
    assert printed.exit_code == 0, printed.stderr
    assert printed.stdout.startswith("Host soong-other\n    HostName 198.51.100.")
    every = run_cli("ssh --print-config")
    assert every.stdout.count("Host soong-") == 3
    # the provider ends one outside soong: `status` sees it gone
    cloud.terminate(["fake-0001"])
    assert run_cli("status").exit_code == 0
    assert sorted(hosts()) == ["fake-0002", "fake-0003"]
    stopped = run_cli("stop --all -y")
    assert stopped.exit_code == 0, stopped.stderr
    assert hosts() == {}
    assert user.read_text().count("Include ") == 1  # the Include stays, for the next one
    removed = run_cli("ssh --remove-include")
    assert removed.exit_code == 0 and "removed the Include" in removed.stdout
    assert not user.read_text().strip()


def test_host_entries_off_writes_nothing(run_cli: Any, cloud: FakeProvider,
                                         soong_env: SoongEnv) -> None:
    write_config_file(soong_env.config_file, {
        "defaults": {"provider": "fake", "gpu": "gpu_1x_a10", "region": "us-east-1",
                     "lease_hours": 2},
        "ssh": {"key_path": str(soong_env.home / "key"), "host_entries": False}})
    assert run_cli("start -y --name exp").exit_code == 0
    assert not config_path().exists() and not user_config_path().exists()
    printed = run_cli("ssh --print-config exp")  # what the entry would be
    assert printed.exit_code == 0 and printed.stdout.startswith("Host soong-exp\n")


def test_print_config_errors_are_one_line(run_cli: Any, cloud: FakeProvider) -> None:
    none = run_cli("ssh --print-config")
    assert none.exit_code == 1
    assert none.stderr.splitlines()[0] == ("error: no instance is active: there is no Host "
                                           "entry to print")
    both = run_cli("ssh --print-config --remove-include")
    assert both.exit_code == 2 and "cannot be given together" in both.stderr
    assert "Traceback" not in none.stderr + both.stderr


def _sync_many(account: str, count: int) -> None:
    for number in range(count):
        sync([active(f"{account}{number:04d}", f"{account}-{number}")], complete=False,
             account=account, section=SECTION)


def test_two_processes_syncing_at_once_lose_no_entry(soong_env: SoongEnv) -> None:
    """Each sync is a read-modify-write of one file: without the lock, one process's
    rewrite would drop what the other had just added."""
    import multiprocessing

    context = multiprocessing.get_context("fork")
    workers = [context.Process(target=_sync_many, args=(account, 25))
               for account in ("left", "right")]
    for worker in workers:
        worker.start()
    for worker in workers:
        worker.join(60)
        assert worker.exitcode == 0
    assert len(hosts()) == 50
