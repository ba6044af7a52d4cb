"""``soong stop``: terminate instances, in one batched call, after saying what they cost."""

from __future__ import annotations

from typing import TYPE_CHECKING, ClassVar

from cleo.helpers import argument, option
from cleo.io.inputs.argument import Argument
from cleo.io.inputs.option import Option

from soong_core.cli.command import SoongCommand

if TYPE_CHECKING:
    from rich.table import Table

    from soong_core.api import Soong
    from soong_core.models import Instance


class StopCommand(SoongCommand):
    name = "stop"
    description = "Terminate instances (one batched call); asks first, naming what they cost."
    help = ("With no INSTANCE, stops the single running instance. INSTANCE is an id, a "
            "unique id prefix or a name. <comment>--all</comment> stops every running "
            "instance soong launched; others (launched elsewhere) only by id.\n\n"
            "Terminating deletes an instance and its local disk: only attached filesystems "
            "survive.")
    arguments: ClassVar[list[Argument]] = [
        argument("instance", description="Instances to stop (id, unique prefix or name).",
                 optional=True, multiple=True),
    ]
    options: ClassVar[list[Option]] = [
        option("all", description="Stop every running instance soong launched."),
        option("yes", "y", description="Stop without asking."),
        option("no-wait", description="Return once the provider accepted the termination."),
    ]

    def handle(self) -> int:
        from soong_core.cli.console import Phases, make_console
        from soong_core.errors import UsageError
        from soong_core.select import select_instance
        from soong_core.text import printable, rich_literal

        refs = list(self.argument("instance") or [])
        if refs and self.option("all"):
            raise UsageError("give instances or --all, not both")
        soong = self.soong
        instances = soong.instances()
        if self.option("all"):
            chosen = [i for i in instances if i.managed and i.state.billing]
            unmanaged = [i for i in instances if not i.managed and i.state.billing]
            if not chosen:
                self.line("no running instance launched by soong: nothing to stop")
                self._mention_unmanaged(unmanaged)
                return 0
        else:
            # a stale id the provider forgot is matched against history, to say it ended
            chosen = [select_instance(instances, ref, ended=soong.ended_instances)
                      for ref in refs] if refs else [select_instance(instances, None)]
            unmanaged = []
        chosen = list({i.id: i for i in chosen}.values())
        for instance in chosen:
            if not instance.state.billing:
                self.line(_already_ended(instance, soong))
        chosen = [i for i in chosen if i.state.billing]
        if not chosen:
            return 0  # what was asked holds already: none of them bills
        console = make_console(self.io)
        console.print(_summary(chosen, soong))
        count = f"{len(chosen)} instances" if len(chosen) > 1 else printable(chosen[0].id)
        self.confirm_or_exit(f"Terminate {count}? Their local disks are deleted.",
                             yes=self.option("yes"))
        with Phases(self.io, f"terminating {count}") as phases:
            soong.stop_instances(chosen)
            if not self.option("no-wait"):
                soong.wait_until_gone([i.id for i in chosen], on_poll=lambda left: phases.update(
                    f"waiting for {len(left)} to terminate"))
        done = "terminated" if not self.option("no-wait") else "terminating"
        for instance in chosen:
            console.print(f"{rich_literal(instance.id)} {done}")
        self._mention_unmanaged(unmanaged)
        return 0

    def _mention_unmanaged(self, unmanaged: list[Instance]) -> None:
        if unmanaged:
            from soong_core.text import cleo_literal

            ids = cleo_literal(", ".join(i.id for i in unmanaged))
            self.line(f"left running (not launched by soong; stop them by id): {ids}")


def _already_ended(instance: Instance, soong: Soong) -> str:
    """``instance X is already terminated (ended 5m ago: manual): nothing to stop``, with
    when and why as history has them (a cleo-safe line)."""
    from soong_core.models import InstanceState
    from soong_core.display import format_duration
    from soong_core.text import cleo_literal

    line = f"instance {instance.id} is already {instance.state.value}"
    end = soong.termination(instance.id)
    if end is not None:
        when = "stopped" if instance.state is InstanceState.TERMINATING else "ended"
        why = f": {end.reason}{' (inferred)' if end.inferred else ''}" if end.reason else ""
        line += f" ({when} {format_duration(max(0.0, soong.clock.now() - end.at))} ago{why})"
    return cleo_literal(f"{line}: nothing to stop")


def _summary(instances: list[Instance], soong: Soong) -> Table:
    """What stops, how long it ran and what it cost so far."""
    from decimal import Decimal

    from rich.table import Table

    from soong_core.costs import accrued, format_money, format_rate
    from soong_core.display import format_duration
    from soong_core.text import rich_literal

    now = soong.clock.now()
    table = Table(title="to terminate", title_justify="left", box=None, pad_edge=False)
    for column in ("ID", "NAME", "STATE", "GPU", "UPTIME", "RATE", "COST SO FAR"):
        table.add_column(column, justify="right" if column in ("RATE", "COST SO FAR") else "left")
    total = Decimal(0)
    for i in instances:
        cost = accrued(i.price_cents_per_hour, i.launched_at, now)
        total += cost or 0
        uptime = format_duration(now - i.launched_at) if i.launched_at else "?"
        table.add_row(rich_literal(i.id), rich_literal(i.name or "-"), i.state.value,
                      rich_literal(i.type_name or "?"), uptime,
                      format_rate(i.price_cents_per_hour), format_money(cost))
    if len(instances) > 1:
        table.add_row("", "", "", "", "", "total", format_money(total))
    return table
