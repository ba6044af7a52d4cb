"""``soong start``: price it, confirm, launch, and wait until it is usable."""

from __future__ import annotations

from typing import Any, ClassVar

from cleo.helpers import option
from cleo.io.inputs.option import Option

from soong_core.cli.command import SoongCommand


class StartCommand(SoongCommand):
    name = "start"
    description = "Launch an instance: shows its cost and limits, asks, launches, waits until ready."
    options: ClassVar[list[Option]] = [
        option("gpu", description="Instance type (default: defaults.gpu).", flag=False),
        option("region", description="Region to launch in; repeat for fallbacks, tried in order "
               "(default: defaults.region then defaults.fallback_regions).", flag=False,
               multiple=True),
        option("hours", description="Lease in hours (default: defaults.lease_hours); "
               "never past the hard limit.", flag=False),
        option("name", description="A name for the instance.", flag=False),
        option("model", description="The model it will serve (default: defaults.model).",
               flag=False),
        option("filesystem", description="Persistent filesystem to attach; created in the "
               "launch region after confirmation if missing.", flag=False),
        option("no-wait", description="Return once the launch is accepted; do not wait for "
               "the instance to become active."),
        option("wait", description="Wait until the instance is active (the default)."),
        option("wait-for-capacity", description="If no region has the type now, poll until "
               "one does."),
        option("timeout", description="With --wait-for-capacity: give up after this many "
               "minutes (default: wait forever).", flag=False),
        option("yes", "y", description="Launch without asking."),
    ]

    def handle(self) -> int:
        from soong_core.cli.console import Phases, make_console
        from soong_core.errors import UsageError

        if self.option("wait") and self.option("no-wait"):
            raise UsageError("--wait and --no-wait contradict each other", hints=["give one"])
        soong = self.soong
        regions = list(dict.fromkeys(self.option("region") or []))
        gpu = self.option("gpu") or soong.config["defaults"]["gpu"]
        if self.option("wait-for-capacity") and gpu:
            timeout = _minutes(self.option("timeout"))
            with Phases(self.io, f"waiting for capacity for {gpu}") as phases:
                found = soong.wait_for_capacity(
                    gpu, regions, timeout=timeout,
                    on_poll=lambda n: phases.update(f"waiting for capacity for {gpu} "
                                                    f"(checked {n} times)"))
            regions = [r for r in regions if r in found] or found
        elif self.option("timeout") is not None:
            raise UsageError("--timeout applies only with --wait-for-capacity")
        filesystem = self.option("filesystem") or getattr(soong.provider, "default_filesystem", None)
        plan = soong.plan_launch(gpu, regions=regions or None, hours=_hours(self.option("hours")),
                                 name=self.option("name"), model=self.option("model"),
                                 filesystem_names=(filesystem,) if filesystem else ())
        missing_filesystem = self._missing_filesystem(filesystem, plan.request.regions[0]
                                                      if plan.request.regions else None)
        console = make_console(self.io)
        console.print(_panel(plan, soong, filesystem, missing_filesystem))
        self.confirm_or_exit("Launch it?", yes=self.option("yes"))
        if missing_filesystem:
            with Phases(self.io, f"creating filesystem {filesystem} in {missing_filesystem}"):
                soong.provider.create_filesystem(filesystem, missing_filesystem)
        with Phases(self.io, f"launching {plan.instance_type.name}") as phases:
            instance = soong.launch(plan=plan)
            if self.option("no-wait"):
                ready = instance
            else:
                try:
                    ready = soong.wait_until_ready(instance.id, on_state=phases.follow)
                except KeyboardInterrupt:
                    raise _interrupted(instance.id, plan) from None
        self._report(ready, waited=not self.option("no-wait"))
        return 0

    def _missing_filesystem(self, name: str | None, region: str | None) -> str | None:
        """The region to create ``name`` in, when it does not exist yet; else None."""
        from soong_core.errors import UsageError
        from soong_core.interfaces import Capability

        if not name:
            return None
        provider = self.soong.provider
        provider.require(Capability.FILESYSTEMS)
        for filesystem in provider.list_filesystems():
            if filesystem.name == name:
                if region and filesystem.region != region:
                    raise UsageError(f"filesystem {name} is in {filesystem.region}, not {region}",
                                     hints=[f"launch there with --region {filesystem.region}"])
                return None
        return region

    def _report(self, instance: Any, *, waited: bool) -> None:
        from soong_core.cli.console import make_console

        console = make_console(self.io)
        where = f" in {instance.region}" if instance.region else ""
        if waited:
            console.print(f"[green]{instance.id} is active[/] at {instance.ip}{where}.")
            ssh = self.soong.config.get("ssh") or {}
            key = f"-i {ssh['key_path']} " if ssh.get("key_path") else ""
            console.print(f"  connect:  ssh {key}{ssh.get('user') or 'ubuntu'}@{instance.ip}")
        else:
            console.print(f"{instance.id} is {instance.state.value}{where}; it is billing from now.")
            console.print(f"  watch it: soong status --instance-id {instance.id}")
        console.print("  see it:   soong status")
        console.print(f"  stop it:  soong stop {instance.id}")


def _hours(text: str | None) -> float | None:
    from soong_core.errors import UsageError

    if text is None:
        return None
    try:
        return float(text)
    except ValueError:
        raise UsageError(f"--hours {text!r} is not a number of hours") from None


def _minutes(text: str | None) -> float | None:
    from soong_core.errors import UsageError

    if text is None:
        return None
    try:
        minutes = float(text)
    except ValueError:
        raise UsageError(f"--timeout {text!r} is not a number of minutes") from None
    if not minutes > 0:
        raise UsageError(f"--timeout must be more than 0 minutes, not {text}")
    return minutes * 60


def _interrupted(instance_id: str, plan: Any) -> Exception:
    from soong_core.costs import format_rate
    from soong_core.errors import SoongError

    return SoongError(
        f"interrupted: {instance_id} is already launched and billing "
        f"({format_rate(plan.instance_type.price_cents_per_hour)})",
        hints=[f"stop it: soong stop {instance_id}", "or follow it: soong status"],
        exit_code=130)


LABEL_WIDTH = len("hard limit")
NOT_ENFORCED = "nothing: stop it yourself"
"""What the panel says of a limit nothing on the instance enforces (DESIGN, "Who
enforces what is declared"): the user, not soong, must stop it then."""


def _enforcer(plugins: Any) -> str:
    from rich.markup import escape

    if not plugins:
        return f"[red]{NOT_ENFORCED}[/]"
    return f"[green]{escape(', '.join(plugins))}[/]"


def _panel(plan: Any, soong: Any, filesystem: str | None, create_in: str | None) -> Any:
    from rich.console import Group
    from rich.markup import escape
    from rich.panel import Panel
    from rich.table import Table

    from soong_core.budget import budget_settings, describe_budget
    from soong_core.costs import format_money, format_rate

    request, itype = plan.request, plan.instance_type

    def grid(*widths: int | None) -> Any:
        table = Table.grid(padding=(0, 2))
        table.add_column(style="bold", min_width=LABEL_WIDTH)
        for width in widths:
            table.add_column(max_width=width)
        return table

    facts = grid(72)
    facts.add_row("GPU", escape(f"{itype.name}  {itype.description or itype.gpu_description}"
                                .rstrip()))
    facts.add_row("rate", format_rate(itype.price_cents_per_hour))
    facts.add_row("regions", escape(", ".join(request.regions)) + (
        "  (tried in order)" if len(request.regions) > 1 else ""))
    facts.add_row("budget", describe_budget(plan.admission,
                                            budget_settings(soong.config).max_dollars))
    if request.model:
        facts.add_row("model", escape(request.model))
    if filesystem:
        note = f"  (will be created in {create_in})" if create_in else ""
        facts.add_row("filesystem", escape(filesystem) + note)

    limits = grid(None, None)
    limits.add_row("[dim]limit[/]", "", "[dim]enforced by[/]")
    enforcement = plan.enforcement
    idle = soong.config["defaults"]["idle_timeout_minutes"]
    for label, limit, text in (
            ("lease", "lease", f"{request.lease_hours:g} h = {format_money(plan.lease_cost)}"),
            ("hard limit", "hard", f"{request.hard_timeout_hours:g} h = "
                                   f"{format_money(plan.hard_limit_cost)}  (never extended)"),
            ("idle stop", "idle", f"after {idle:g} min without use")):
        limits.add_row(label, text, _enforcer(enforcement.get(limit, ())))

    if filesystem:
        disk = (f"Stopping deletes the instance and its local disk; only files on "
                f"filesystem {escape(filesystem)} survive.")
    else:
        disk = ("Stopping deletes the instance and its local disk: nothing on it survives "
                "(attach a filesystem with --filesystem to keep files).")
    notes = grid(72)
    notes.add_row("[yellow]note[/]", f"[yellow]{disk}[/]")
    return Panel(Group(facts, "", limits, "", notes), title=f"launch {request.name or itype.name}",
                 expand=False)
