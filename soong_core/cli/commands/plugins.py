"""``soong plugins``: what is loaded, from which distribution, what each registers and
which hooks it implements."""

from __future__ import annotations

from typing import ClassVar, Mapping, Sequence

from cleo.formatters.formatter import Formatter
from cleo.helpers import option
from cleo.io.inputs.option import Option
from cleo.io.outputs.output import Type

from soong_core.cli.command import SoongCommand


class PluginsCommand(SoongCommand):
    name = "plugins"
    description = ("List plugins: name, distribution, version, status, what each registers "
                   "and the hooks they implement.")
    options: ClassVar[list[Option]] = [
        option("json", description="Print JSON (a list of objects) instead of a table."),
    ]

    def handle(self) -> int:
        infos = self.plugins.info()
        registrations = self.plugins.registrations()
        if self.option("json"):
            import json

            rows = [{"name": p.name, "distribution": p.distribution, "version": p.version,
                     "builtin": p.builtin, "required": p.required,
                     "required_reason": p.required_reason, "status": p.status,
                     "registers": registrations[p.name], "hooks": list(p.hooks),
                     "error": p.error} for p in infos]
            self.io.write_line(json.dumps(rows, indent=2), type=Type.RAW)
            return 0
        header = ("NAME", "DISTRIBUTION", "VERSION", "STATUS", "REGISTERS", "HOOKS")
        table = [(p.name, p.distribution, p.version,
                 f"{p.status} (required)" if p.required else p.status,
                 describe_registrations(registrations[p.name]),
                 p.error if p.error else ", ".join(h.removeprefix("soong_") for h in p.hooks) or "-")
                for p in infos]
        self._table(header, table)
        return 0

    def _table(self, header: Sequence[str], rows: Sequence[Sequence[str]]) -> None:
        """Columns padded to their widest cell; the last one (possibly long) is not."""
        widths = [max(len(row[i]) for row in [header, *rows]) for i in range(len(header) - 1)]
        for number, row in enumerate([header, *rows]):
            cells = [cell.ljust(width) for cell, width in zip(row, widths)] + [row[-1]]
            line = "  ".join(cells)
            self.io.write_line(f"<b>{line}</b>" if number == 0 else Formatter.escape(line))


def describe_registrations(by_kind: Mapping[str, Sequence[str]]) -> str:
    """``policies: lease, idle; commands: sim up`` (kinds with names only), or ``-``."""
    parts = [f"{kind}: {', '.join(names)}" for kind, names in by_kind.items() if names]
    return "; ".join(parts) or "-"
