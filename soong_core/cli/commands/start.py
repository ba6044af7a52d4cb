"""``soong start``: price it, confirm, launch, and wait until it is usable."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, ClassVar

from cleo.helpers import option
from cleo.io.inputs.option import Option

from soong_core.cli.command import SoongCommand

if TYPE_CHECKING:
    from soong_core.api import LaunchPlan, Soong
    from soong_core.interfaces import Provider


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
        option("user-data", description="Your own cloud-init part (a #! script or a "
               "#cloud-config file) to run at boot, after the lease agent's.", flag=False),
        option("yes", "y", description="Launch without asking."),
    ]

    def handle(self) -> int:
        from soong_core.cli.console import Phases, make_console
        from soong_core.errors import UsageError
        from soong_core.interfaces import require_manageable

        if self.option("wait") and self.option("no-wait"):
            raise UsageError("--wait and --no-wait contradict each other", hints=["give one"])
        user_data = _user_data(self.option("user-data"))
        soong = self.soong
        require_manageable(soong.provider)  # before anything is waited for or shown
        name = _checked_name(self.option("name"), soong.provider)
        regions = list(dict.fromkeys(self.option("region") or []))
        gpu = self.option("gpu") or soong.config["defaults"]["gpu"]
        if self.option("wait-for-capacity") and gpu:
            timeout = _minutes(self.option("timeout"))
            with Phases(self.io, f"waiting for capacity for {gpu}") as phases:
                found = soong.wait_for_capacity(
                    gpu, regions, timeout=timeout,
                    on_poll=lambda n: phases.update(f"waiting for capacity for {gpu} "
                                                    f"(checked {_times(n)})"))
            regions = [r for r in regions if r in found] or found
        elif self.option("timeout") is not None:
            raise UsageError("--timeout applies only with --wait-for-capacity")
        filesystem = self.option("filesystem") or soong.provider.default_filesystem
        plan = soong.plan_launch(gpu, regions=regions or None, hours=_hours(self.option("hours")),
                                 name=name, model=self.option("model"),
                                 filesystem_names=(filesystem,) if filesystem else (),
                                 user_data=user_data)
        missing_filesystem = self._missing_filesystem(filesystem, plan.request.regions[0]
                                                      if plan.request.regions else None)
        console = make_console(self.io)
        console.print(_panel(plan, soong, filesystem, missing_filesystem))
        self.confirm_or_exit("Launch it?", yes=self.option("yes"))
        if missing_filesystem and filesystem:
            with Phases(self.io, f"creating filesystem {filesystem} in {missing_filesystem}"):
                soong.provider.create_filesystem(filesystem, missing_filesystem)
        with Phases(self.io, f"launching {plan.instance_type.name}") as phases:
            instance = soong.launch(plan=plan)
            if self.option("no-wait"):
                ready = instance
            else:
                try:
                    ready = soong.wait_until_ready(instance.id, on_state=phases.follow)
                    soong.wait_for_contributions(ready, plan, on_phase=phases.update)
                except KeyboardInterrupt:
                    raise _interrupted(instance.id, plan) from None
        if self.io.output.is_quiet():
            self._print_id(ready.id)
        else:
            self._report(ready, waited=not self.option("no-wait"))
        return 0

    def _print_id(self, instance_id: str) -> None:
        """Under ``-q``, the one thing a script needs: the instance id, alone on stdout
        (``id=$(soong -q start -y)``)."""
        from cleo.io.outputs.output import Type, Verbosity

        from soong_core.text import printable

        self.io.write_line(printable(instance_id), verbosity=Verbosity.QUIET, type=Type.RAW)

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
        from soong_core.text import rich_literal

        console = make_console(self.io)
        # the provider's text, shown literally (control characters escaped, no markup)
        id_, ip = rich_literal(instance.id), rich_literal(instance.ip)
        where = f" in {rich_literal(instance.region)}" if instance.region else ""
        if waited:
            console.print(f"[green]{id_} is active[/] at {ip}{where}.")
            ssh = self.soong.config.get("ssh") or {}
            key = f"-i {rich_literal(ssh['key_path'])} " if ssh.get("key_path") else ""
            user = rich_literal(ssh.get("user") or "ubuntu")
            console.print(f"  connect:  ssh {key}{user}@{ip}")
        else:
            console.print(f"{id_} is {instance.state.value}{where}; it is billing from now.")
            console.print(f"  watch it: {rich_literal(self.command_line('status --instance-id'))} "
                          f"{id_}")
        console.print(f"  see it:   {rich_literal(self.command_line('status'))}")
        console.print(f"  stop it:  {rich_literal(self.command_line('stop'))} {id_}")


USER_DATA_READ_MAX = 2_000_000
"""More than any provider takes: a bigger ``--user-data`` file is refused unread."""


def _user_data(path: str | None) -> str | None:
    """The text of ``--user-data FILE``: UTF-8 text, a ``#!`` script or a
    ``#cloud-config`` file; anything else is a one-line usage error."""
    from soong_core.errors import UsageError
    from soong_core.models import part_type

    if path is None:
        return None
    try:
        with open(path, "rb") as handle:
            raw = handle.read(USER_DATA_READ_MAX + 1)
    except OSError as exc:
        raise UsageError(f"cannot read --user-data {path}: {exc.strerror or exc}") from None
    if len(raw) > USER_DATA_READ_MAX:
        raise UsageError(f"--user-data {path} is over {USER_DATA_READ_MAX:,} bytes: no "
                         "provider takes that much user_data")
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError:
        text = "\0"
    if "\0" in text:
        raise UsageError(f"--user-data {path} is not text (user_data must be plain UTF-8)")
    try:
        part_type(text)
    except ValueError as exc:
        raise UsageError(f"--user-data {path}: {exc}") from None
    return text


def _times(count: int) -> str:
    return "1 time" if count == 1 else f"{count} times"


def _hours(text: str | None) -> float | None:
    from soong_core.numbers import number_option

    return number_option(text, "--hours", unit="hours")


def _minutes(text: str | None) -> float | None:
    """``--timeout`` in seconds."""
    from soong_core.numbers import number_option

    minutes = number_option(text, "--timeout", unit="minutes", above=0)
    return None if minutes is None else minutes * 60


def _interrupted(instance_id: str, plan: LaunchPlan) -> Exception:
    from soong_core.costs import format_rate
    from soong_core.errors import SoongError

    return SoongError(
        f"interrupted: {instance_id} is already launched and billing "
        f"({format_rate(plan.instance_type.price_cents_per_hour)})",
        hints=[f"stop it: `soong stop {instance_id}`", "or follow it: `soong status`"],
        exit_code=130)


LABEL_WIDTH = len("hard limit")
NOT_ENFORCED = "nothing: stop it yourself"
"""What the panel says of a limit nothing on the instance enforces (DESIGN, "Who
enforces what is declared"): the user, not soong, must stop it then."""


def _checked_name(name: str | None, provider: Provider) -> str | None:
    """``--name``, refused (exit 2) before the panel when it holds a control character
    (it would reach terminals in the panel and the status table) or is longer than the
    provider takes (which would refuse it only at launch)."""
    from soong_core.errors import UsageError
    from soong_core.text import control_character, printable

    if name is None:
        return None
    bad = control_character(name)
    if bad is not None:
        raise UsageError(f"--name '{printable(name)}' holds the control character "
                         f"{printable(bad)}",
                         hints=["give a name of printable characters: letters, digits, "
                                "spaces, punctuation"])
    limit = provider.name_max_length
    if limit is not None and len(name) > limit:
        raise UsageError(f"--name is {len(name)} characters: provider {provider.name!r} "
                         f"takes at most {limit}", hints=["give a shorter name"])
    return name


def _enforcer(plugins: Any) -> str:
    from soong_core.text import rich_literal

    if not plugins:
        return f"[red]{NOT_ENFORCED}[/]"
    return f"[green]{rich_literal(', '.join(plugins))}[/]"


def _panel(plan: LaunchPlan, soong: Soong, filesystem: str | None, create_in: str | None
           ) -> Any:
    from rich.console import Group
    from rich.panel import Panel
    from rich.table import Table

    from soong_core.budget import budget_settings, describe_budget
    from soong_core.costs import format_money, format_rate
    from soong_core.text import rich_literal

    request, itype = plan.request, plan.instance_type

    def grid(*widths: int | None) -> Any:
        table = Table.grid(padding=(0, 2))
        table.add_column(style="bold", min_width=LABEL_WIDTH)
        for width in widths:
            table.add_column(max_width=width)
        return table

    facts = grid(72)
    description = itype.description or itype.gpu_description
    facts.add_row("GPU", rich_literal(f"{itype.name}  {description}".rstrip()))
    facts.add_row("rate", format_rate(itype.price_cents_per_hour))
    facts.add_row("regions", rich_literal(", ".join(request.regions)) + (
        "  (tried in order)" if len(request.regions) > 1 else ""))
    facts.add_row("budget", describe_budget(plan.admission,
                                            budget_settings(soong.config).max_dollars))
    if request.model:
        facts.add_row("model", rich_literal(request.model))
    if filesystem:
        note = f"  (will be created in {rich_literal(create_in)})" if create_in else ""
        facts.add_row("filesystem", rich_literal(filesystem) + note)

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
                f"filesystem {rich_literal(filesystem)} survive.")
    else:
        disk = ("Stopping deletes the instance and its local disk: nothing on it survives "
                "(attach a filesystem with --filesystem to keep files).")
    notes = grid(72)
    notes.add_row("[yellow]note[/]", f"[yellow]{disk}[/]")
    return Panel(Group(facts, "", limits, "", notes),
                 title=f"launch {rich_literal(request.name or itype.name)}", expand=False)
