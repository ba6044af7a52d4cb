"""``soong extend HOURS [INSTANCE] [-y] [--to-max]``: more time on an instance's lease."""

from __future__ import annotations

from typing import TYPE_CHECKING, ClassVar

from cleo.helpers import argument, option
from cleo.io.inputs.argument import Argument
from cleo.io.inputs.option import Option

from soong_core.cli.command import SoongCommand

if TYPE_CHECKING:
    from soong_core.api import ExtensionPlan, Soong


class ExtendCommand(SoongCommand):
    name = "extend"
    description = "Extend an instance's lease by HOURS; never past its hard limit."
    help = ("With no INSTANCE, the single running instance. Shows what the extension "
            "costs, the new stop time and the budget, asks, then has what enforces the "
            "lease on the instance move it (the lease agent) and records it. The hard "
            "limit fixed at launch is never passed: an extension that would pass it is "
            "refused with the largest one possible, which <comment>--to-max</comment> "
            "takes. When the agent cannot be reached nothing is extended or recorded; "
            "running it again after a lost answer never extends twice.")
    arguments: ClassVar[list[Argument]] = [
        argument("hours", description="Hours to add to the lease."),
        argument("instance", description="The instance (id, unique prefix or name).",
                 optional=True),
    ]
    options: ClassVar[list[Option]] = [
        option("yes", "y", description="Extend without asking."),
        option("to-max", description="Stop at the hard limit if HOURS would pass it."),
    ]

    def handle(self) -> int:
        from soong_core.cli.console import make_console
        from soong_core.numbers import number_option
        from soong_core.select import select_instance
        from soong_core.text import printable, rich_literal

        hours = float(number_option(self.argument("hours"), "HOURS", unit="hours", above=0))
        soong = self.soong
        instance = select_instance(soong.instances(), self.argument("instance"),
                                   ended=soong.ended_instances)
        plan = soong.plan_extension(instance.id, hours, to_max=bool(self.option("to-max")),
                                    to_max_name="--to-max")
        console = make_console(self.io)
        console.print(_summary(plan, soong))
        extension = plan.extension
        self.confirm_or_exit(f"Extend {printable(instance.id)} by "
                             f"{_hours(extension.hours)}?", yes=self.option("yes"))
        done = soong.extend(instance.id, extension.hours, plan=plan)
        from soong_core.models import format_timestamp

        console.print(f"{rich_literal(done.instance_id)}: lease extended by "
                      f"{_hours(done.hours)}, now ends {format_timestamp(done.deadline)}",
                      markup=True)
        return 0


def _hours(hours: float) -> str:
    from soong_core.display import format_duration
    from soong_core.models import HOUR

    return format_duration(hours * HOUR)


def _summary(plan: ExtensionPlan, soong: Soong) -> str:
    from soong_core.budget import budget_settings, describe_budget
    from soong_core.costs import format_money
    from soong_core.display import format_duration
    from soong_core.models import format_timestamp
    from soong_core.text import rich_literal

    extension = plan.extension
    now = soong.clock.now()
    room = extension.hard_deadline - extension.deadline
    lines = [
        f"extend {rich_literal(extension.instance_id)} by {_hours(extension.hours)} = "
        f"{format_money(extension.cost)}",
        f"  lease ends   {format_timestamp(extension.previous)} -> "
        f"{format_timestamp(extension.deadline)} (in "
        f"{format_duration(max(0.0, extension.deadline - now))})",
        f"  hard limit   {format_timestamp(extension.hard_deadline)}"
        + (f" ({format_duration(room)} more possible after this)" if room > 0
           else " (reached: no further extension)"),
    ]
    cap = budget_settings(soong.config).max_dollars
    budget = describe_budget(plan.admission, cap)
    if cap is not None:
        left = cap - plan.admission.committed - extension.cost
        budget += f"; {format_money(max(left, 0 * left))} left after this"
    lines.append(f"  budget       {budget}")
    return "\n".join(lines)
