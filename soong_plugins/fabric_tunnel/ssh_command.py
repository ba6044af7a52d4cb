"""``soong ssh [INSTANCE] [-- COMMAND...]``: a shell, or a command, on an instance.

soong checks the connection itself first (with paramiko: the host key against soong's
known_hosts, trusting it on first use; then the login), so every failure is one line
with what to do; then it hands the terminal to the system ``ssh`` with exactly the
settings of :mod:`.settings`, and its exit code is ``soong ssh``'s. On an instance that
is still booting it waits (a spinner, ``--wait`` seconds at most) for its address and
its sshd.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, ClassVar

from cleo.helpers import argument, option
from cleo.io.inputs.argument import Argument
from cleo.io.inputs.option import Option

from soong_core.cli.command import SoongCommand

if TYPE_CHECKING:
    from soong_core.models import Instance
    from soong_plugins.fabric_tunnel.settings import SshTarget

DEFAULT_WAIT_S = 300
POLL_S = 2.0


class SshCommand(SoongCommand):
    name = "ssh"
    description = "Open a shell on an instance, or run a command there (after --)."
    help = ("With no INSTANCE, the single running instance. INSTANCE is an id, a unique "
            "id prefix or a name. <comment>soong ssh INSTANCE -- nvidia-smi</comment> runs "
            "a command; its exit code is soong's. One word after -- is a shell line as it is "
            "(<comment>-- 'nvidia-smi | head'</comment>); several are quoted each, so they "
            "arrive as the arguments they were.\n\n"
            "Host keys are soong's own, by instance id: the first connection records the "
            "key the instance presents (its fingerprint is printed once), every later one "
            "must present it. A changed key is refused; after checking it, "
            "<comment>--forget-host INSTANCE</comment> clears the old one.\n\n"
            "Every active instance also has a Host entry, <comment>Host soong-NAME</comment>, "
            "in soong's own ssh config file, which soong includes from ~/.ssh/config: "
            "<comment>ssh soong-NAME</comment> (or an editor's remote mode) connects with "
            "the same settings. <comment>--print-config</comment> shows the entries; "
            "<comment>--remove-include</comment> takes the Include out of ~/.ssh/config "
            "and keeps it out, <comment>--add-include</comment> puts it back.")
    needs_credential = True
    arguments: ClassVar[list[Argument]] = [
        argument("words", description="The instance, then -- and a command to run.",
                 optional=True, multiple=True),
    ]
    options: ClassVar[list[Option]] = [
        option("forget-host", description="Forget the instance's recorded host key, then exit."),
        option("print-config", description="Print the Host entry of the instance (of every "
                                           "active one when none is named), then exit."),
        option("remove-include", description="Take soong's Include out of ~/.ssh/config "
                                             "(and keep it out), then exit."),
        option("add-include", description="Put soong's Include back at the top of "
                                          "~/.ssh/config, then exit."),
        option("wait", description="Seconds to wait for a booting instance and its sshd.",
               flag=False, default=str(DEFAULT_WAIT_S)),
    ]

    def handle(self) -> int:
        from soong_core.errors import UsageError
        from soong_core.select import select_instance

        instance_words, command = self._split()
        if len(instance_words) > 1:
            raise UsageError(f"one instance, then the command after --: got "
                             f"{' '.join(instance_words)!r}",
                             hints=["soong ssh INSTANCE -- COMMAND ARGS..."])
        ref = instance_words[0] if instance_words else None
        wait = _seconds(self.option("wait"))
        actions = [name for name in ("forget-host", "print-config", "remove-include",
                                     "add-include") if self.option(name)]
        if len(actions) > 1:
            raise UsageError(f"--{actions[0]} and --{actions[1]} cannot be given together")
        if actions and command:
            raise UsageError(f"--{actions[0]} runs no command: drop what follows --")
        if self.option("remove-include") or self.option("add-include"):
            if ref is not None:
                raise UsageError(f"--{actions[0]} takes no instance")
            return self._include(add=bool(self.option("add-include")))
        soong = self.soong
        if self.option("forget-host"):
            return self._forget(ref)
        if self.option("print-config"):
            return self._print_config(ref)
        instance = select_instance(soong.instances(), ref, ended=soong.ended_instances)
        instance = self._until_reachable(instance, wait)
        from soong_plugins.fabric_tunnel.settings import target_for

        target = target_for(instance, soong.config.get("ssh") or {})
        self._check(target, wait)
        return self._hand_over(target, command)

    # -- the pieces -----------------------------------------------------------------------

    def _split(self) -> tuple[list[str], list[str]]:
        """(words before ``--``, words after it): cleo gives them as one list."""
        words = list(self.argument("words") or [])
        tokens = getattr(self.io.input, "_tokens", None)
        if isinstance(tokens, list) and "--" in tokens:
            after = len(tokens) - tokens.index("--") - 1
            return words[:len(words) - after], words[len(words) - after:]
        return words, []

    def _forget(self, ref: str | None) -> int:
        from soong_core.errors import UsageError
        from soong_plugins.fabric_tunnel.hostkeys import HostKeys

        if ref is None:
            raise UsageError("--forget-host needs the instance (its id, as the refusal named "
                             "it)")
        keys = HostKeys()
        alias = ref
        try:
            from soong_core.select import select_instance

            alias = select_instance(self.soong.instances(), ref,
                                    ended=self.soong.ended_instances).id
        except Exception:
            pass  # an instance the provider forgot: its id as given
        removed = keys.forget(alias)
        self.line(f"forgot {removed} host key(s) of {alias}" if removed
                  else f"no host key recorded for {alias}")
        return 0

    def _include(self, *, add: bool) -> int:
        from soong_core.text import cleo_literal
        from soong_plugins.fabric_tunnel import hostentries

        user, ours = hostentries.user_config_path(), hostentries.config_path()
        if add:
            done = hostentries.add_include(user)
            self.line(cleo_literal(f"added `Include {ours}` at the top of {user}" if done
                                   else f"{user} already includes {ours}"))
            return 0
        done = hostentries.remove_include(user)
        self.line(cleo_literal(f"removed the Include of {ours} from {user}" if done
                               else f"{user} has no Include of {ours}"))
        self.line(cleo_literal("soong will not add it again; `soong ssh --add-include` "
                               "puts it back"))
        return 0

    def _print_config(self, ref: str | None) -> int:
        """The Host entries (as soong's file has them after this listing synced it)."""
        from io import StringIO

        from cleo.io.outputs.output import Type

        from soong_core.errors import SoongError
        from soong_core.models import InstanceState
        from soong_core.select import select_instance
        from soong_plugins.fabric_tunnel import hostentries
        from soong_plugins.fabric_tunnel.settings import target_for

        soong = self.soong
        listed = soong.instances()
        chosen = ([select_instance(listed, ref, ended=soong.ended_instances)] if ref
                  else [i for i in listed if i.state.billing])
        entries = {e.instance_id: e for e in hostentries.read_entries()}
        section = soong.config.get("ssh") or {}
        out = StringIO()
        for instance in chosen:
            if not (instance.state is InstanceState.ACTIVE and instance.ip):
                if ref is None:
                    continue
                raise SoongError(f"{instance.id} has no Host entry: it is "
                                 f"{instance.state.value}" + ("" if instance.ip
                                                               else " and has no address yet"),
                                 hints=["wait until it is active: `soong status`"])
            entry = entries.get(instance.id)
            if entry is None:  # host_entries off: what the entry would be
                taken = {e.host for e in entries.values()}
                block = target_for(instance, section).host_block(
                    hostentries.alias_for(instance, taken))
            else:
                block = entry.block
            out.write(("\n" if out.tell() else "") + block)
        if not out.tell():
            raise SoongError("no instance is active: there is no Host entry to print",
                             hints=["start one with `soong start`"])
        self.io.write(out.getvalue(), type=Type.RAW)
        return 0

    def _until_reachable(self, instance: Instance, wait: float) -> Instance:
        """``instance`` once it has an address (waiting while it boots)."""
        import time

        from soong_core.cli.console import Phases
        from soong_core.errors import SoongError
        from soong_core.models import InstanceState

        if instance.ip and instance.state is InstanceState.ACTIVE:
            return instance
        if not instance.state.billing or instance.state is InstanceState.TERMINATING:
            raise SoongError(f"{instance.id} is {instance.state.value}: there is nothing to "
                             "connect to", hints=["start one with `soong start`"])
        end = time.monotonic() + wait
        with Phases(self.io, f"waiting for {instance.id} to boot") as phases:
            while not (instance.ip and instance.state is InstanceState.ACTIVE):
                if time.monotonic() > end:
                    raise SoongError(f"{instance.id} is still {instance.state.value} after "
                                     f"{wait:g} s", hints=["try again later, or give "
                                                           "--wait SECONDS"])
                time.sleep(POLL_S)
                found = self.soong.provider.get_instance(instance.id)
                if found is None or not found.state.billing:
                    raise SoongError(f"{instance.id} ended while booting")
                instance = found
                phases.update(f"waiting for {instance.id} ({instance.state.value})")
        return instance

    def _check(self, target: SshTarget, wait: float) -> None:
        """The host key (trusted on first use) and the login, with one-line errors."""
        from soong_plugins.fabric_tunnel.connect import check_login, wait_for_sshd

        wait_for_sshd(target, wait, io=self.io)
        new = check_login(target)
        if new is not None:
            from soong_core.text import cleo_literal

            self.line_error(cleo_literal(f"trusting the host key of {target.instance_id} "
                                         f"on first use: {new}"))

    def _hand_over(self, target: SshTarget, command: list[str]) -> int:
        import signal
        import subprocess

        from soong_core.errors import SoongError

        argv = target.ssh_argv(command)
        previous = signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C is the remote's
        try:
            return subprocess.run(argv, check=False).returncode
        except FileNotFoundError:
            raise SoongError("no `ssh` command on this machine",
                             hints=["install OpenSSH's client (openssh-client)"]) from None
        finally:
            signal.signal(signal.SIGINT, previous)


def _seconds(value: Any) -> float:
    from soong_core.errors import UsageError
    from soong_core.models import HOUR

    try:
        seconds = float(value)
    except (TypeError, ValueError):
        seconds = -1.0
    if not 0 <= seconds <= 24 * HOUR:
        raise UsageError(f"--wait takes seconds from 0 to {24 * HOUR}, got {value!r}")
    return seconds
