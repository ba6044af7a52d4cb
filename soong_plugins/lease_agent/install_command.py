"""``soong agent install [INSTANCE]``: (re)install the lease agent on a running instance.

The fix when ``soong start`` found no agent answering (its user_data failed, the agent
died for good, or the instance was launched without it): the install script a launch
carries (:mod:`.userdata`), built from the instance's own launch tags (its deadlines do
not move; a lease extended since, as history has it, is the extended one) with a new
token, is run over SSH as root (``sudo -n`` for another login
user), its text on the connection's stdin (it holds the agent's key and token: never a
command line). The instance's token is replaced only once the script succeeded; then
soong waits for the agent's first answer, as ``start`` does.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, ClassVar

from cleo.helpers import argument, option
from cleo.io.inputs.argument import Argument
from cleo.io.inputs.option import Option

from soong_core.cli.command import SoongCommand

if TYPE_CHECKING:
    from soong_core.models import Instance

REMOTE = 'if [ "$(id -u)" = 0 ]; then exec bash -s; else exec sudo -n bash -s; fi'
"""The installer's shell on the instance: root's bash, reading the script from stdin."""
DEFAULT_WAIT_S = 300
RUN_LIMIT_S = 300.0
"""Wall seconds the installer may run over SSH."""
OUTPUT_LINES = 5
"""Lines of a failed installer's output shown."""


class AgentInstallCommand(SoongCommand):
    name = "agent install"
    description = "Install (or reinstall) the lease agent on a running instance over SSH."
    help = ("With no INSTANCE, the single running instance. The fix when <comment>soong "
            "start</comment> said its lease agent did not answer: the install script a "
            "launch carries runs again over SSH, as root, with the instance's own launch "
            "deadlines and a new token, and soong waits for the agent's first answer. "
            "Only instances launched by soong have deadlines to enforce.")
    needs_credential = True
    arguments: ClassVar[list[Argument]] = [
        argument("instance", description="The instance (id, unique prefix or name).",
                 optional=True),
    ]
    options: ClassVar[list[Option]] = [
        option("wait", description="Seconds to wait for the instance's sshd.", flag=False,
               default=str(DEFAULT_WAIT_S)),
    ]

    def handle(self) -> int:
        import secrets

        from soong_core.cli.console import Phases
        from soong_core.errors import SoongError
        from soong_core.numbers import number_option
        from soong_core.select import select_instance
        from soong_core.text import cleo_literal
        from soong_plugins.fabric_tunnel.connect import check_login, wait_for_sshd
        from soong_plugins.fabric_tunnel.settings import target_for
        from soong_plugins.lease_agent import bundle_modules, tokens
        from soong_plugins.lease_agent.ready import wait_for_agent
        from soong_plugins.lease_agent.userdata import (
            AgentSetupError, agent_config, install_script, zipapp,
        )

        wait = float(number_option(self.option("wait"), "--wait", unit="seconds", minimum=0))
        soong = self.soong
        instance = select_instance(soong.instances(), self.argument("instance"),
                                   ended=soong.ended_instances)
        self._check_installable(instance)
        token = secrets.token_urlsafe(32)
        extended = soong.history.current_lease_deadline(instance.id)
        try:
            script = install_script(zipapp(bundle_modules()), agent_config(
                instance.tags, soong.config, token, lease_deadline=extended))
        except AgentSetupError as exc:
            raise SoongError(f"cannot install the lease agent on {instance.id}: {exc}") from None
        target = target_for(instance, soong.config.get("ssh") or {})
        wait_for_sshd(target, wait, io=self.io)
        new = check_login(target)
        if new is not None:
            self.line_error(cleo_literal(f"trusting the host key of {instance.id} on first "
                                         f"use: {new}"))
        with Phases(self.io, f"installing the lease agent on {instance.id}"):
            self._run(target.ssh_argv([REMOTE], tty=False), script, instance)
        try:
            tokens.write_token(instance.id, token)
        except (OSError, ValueError) as exc:
            raise SoongError(f"the lease agent runs on {instance.id}, but its new token "
                             f"cannot be kept in {tokens.agents_dir()}: "
                             f"{getattr(exc, 'strerror', None) or exc}",
                             hints=["fix that folder, then run `soong agent install` "
                                    "again"]) from None
        with Phases(self.io, f"waiting for the lease agent of {instance.id}") as phases:
            health = wait_for_agent(instance, soong.config, on_phase=phases.update)
        version = health.get("version") if isinstance(health, dict) else None
        self.line(cleo_literal(f"the lease agent of {instance.id} answers"
                               + (f" (version {version})" if version else "")
                               + ": it enforces the instance's lease, idle timeout and hard "
                                 "limit"))
        return 0

    @staticmethod
    def _check_installable(instance: Instance) -> None:
        from soong_core.errors import SoongError
        from soong_core.models import InstanceState

        if not instance.managed or instance.initial_lease_deadline is None \
                or instance.hard_deadline is None:
            raise SoongError(f"{instance.id} was not launched by soong: it carries no lease "
                             "or hard limit for an agent to enforce",
                             hints=[f"stop it with `soong stop {instance.id}` when you are "
                                    "done"])
        if instance.state is not InstanceState.ACTIVE or not instance.ip:
            raise SoongError(f"{instance.id} is {instance.state.value}: the agent installs "
                             "on an active instance",
                             hints=["wait until `soong status` shows it active"])

    @staticmethod
    def _run(argv: list[str], script: str, instance: Instance) -> None:
        import subprocess

        from soong_core.errors import SoongError
        from soong_core.text import printable

        try:
            done = subprocess.run(argv, input=script.encode("utf-8"), capture_output=True,
                                  timeout=RUN_LIMIT_S, check=False)
        except FileNotFoundError:
            raise SoongError("no `ssh` command on this machine",
                             hints=["install OpenSSH's client (openssh-client)"]) from None
        except subprocess.TimeoutExpired:
            raise SoongError(f"the lease agent's installer ran over {RUN_LIMIT_S:g} s on "
                             f"{instance.id}: its limits are NOT enforced on the instance",
                             hints=[f"look at it with `soong ssh {instance.id}`, or stop it "
                                    f"with `soong stop {instance.id}`"]) from None
        if done.returncode == 0:
            return
        output = (done.stderr or done.stdout).decode("utf-8", "replace").strip().splitlines()
        said = " | ".join(printable(line) for line in output[-OUTPUT_LINES:]) or "no output"
        raise SoongError(f"the lease agent's installer failed on {instance.id} (exit "
                         f"{done.returncode}: {said}): its limits are NOT enforced on the "
                         "instance, which bills until you stop it",
                         hints=[f"stop it with `soong stop {instance.id}`; a login user "
                                "other than root needs passwordless sudo"])
