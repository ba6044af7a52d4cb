"""``soong stop``: terminate instances, in one batched call, after saying what they cost."""

from __future__ import annotations

from typing import Any, ClassVar

from cleo.helpers import argument, option
from cleo.io.inputs.argument import Argument
from cleo.io.inputs.option import Option

from soong_core.cli.command import SoongCommand


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
            chosen = [select_instance(instances, ref) for ref in refs] if refs else \
                [select_instance(instances, None)]
            unmanaged = []
        chosen = list({i.id: i for i in chosen}.values())
        console = make_console(self.io)
        console.print(_summary(chosen, soong))
        count = f"{len(chosen)} instances" if len(chosen) > 1 else chosen[0].id
        self.confirm_or_exit(f"Terminate {count}? Their local disks are deleted.",
                             yes=self.option("yes"))
        with Phases(self.io, f"terminating {count}") as phases:
            soong.stop_instances(chosen)
            if not self.option("no-wait"):
                soong.wait_until_gone([i.id for i in chosen], on_poll=lambda left: phases.update(
                    f"waiting for {len(left)} to terminate"))
        done = "terminated" if not self.option("no-wait") else "terminating"
        for instance in chosen:
            console.print(f"{instance.id} {done}")
        self._mention_unmanaged(unmanaged)
        return 0

    def _mention_unmanaged(self, unmanaged: list[Any]) -> None:
        if unmanaged:
            ids = ", ".join(i.id for i in unmanaged)
            self.line(f"left running (not launched by soong; stop them by id): {ids}")


def _summary(instances: list[Any], soong: Any) -> Any:
    """What stops, how long it ran and what it cost so far."""
    from rich.table import Table

    from soong_core.costs import accrued, format_money, format_rate
    from soong_core.policy import format_duration

    now = soong.clock.now()
    table = Table(title="to terminate", title_justify="left", box=None, pad_edge=False)
    for column in ("ID", "NAME", "STATE", "GPU", "UPTIME", "RATE", "COST SO FAR"):
        table.add_column(column, justify="right" if column in ("RATE", "COST SO FAR") else "left")
    total = 0
    for i in instances:
        cost = accrued(i.price_cents_per_hour, i.launched_at, now)
        total += cost or 0
        uptime = format_duration(now - i.launched_at) if i.launched_at else "?"
        table.add_row(i.id, i.name or "-", i.state.value, i.type_name or "?", uptime,
                      format_rate(i.price_cents_per_hour), format_money(cost))
    if len(instances) > 1:
        table.add_row("", "", "", "", "", "total", format_money(total))
    return table
