"""``soong plugins``: what is loaded, from which distribution, implementing which hooks."""

from __future__ import annotations

from typing import ClassVar

from cleo.formatters.formatter import Formatter
from cleo.helpers import option
from cleo.io.inputs.option import Option
from cleo.io.outputs.output import Type

from soong_core.cli.command import SoongCommand


class PluginsCommand(SoongCommand):
    name = "plugins"
    description = "List plugins: name, distribution, version, status and the hooks they implement."
    options: ClassVar[list[Option]] = [
        option("json", description="Print JSON (a list of objects) instead of a table."),
    ]

    def handle(self) -> int:
        infos = self.plugins.info()
        if self.option("json"):
            import json

            rows = [{"name": p.name, "distribution": p.distribution, "version": p.version,
                     "builtin": p.builtin, "status": p.status, "hooks": list(p.hooks),
                     "error": p.error} for p in infos]
            self.io.write_line(json.dumps(rows, indent=2), type=Type.RAW)
            return 0
        header = ("NAME", "DISTRIBUTION", "VERSION", "STATUS", "HOOKS")
        rows = [(p.name, p.distribution, p.version, p.status,
                 p.error if p.error else ", ".join(h.removeprefix("soong_") for h in p.hooks) or "-")
                for p in infos]
        widths = [max(len(r[i]) for r in [header, *rows]) for i in range(4)]
        for number, row in enumerate([header, *rows]):
            cells = [cell.ljust(width) for cell, width in zip(row, widths)] + [row[4]]
            line = "  ".join(cells)
            self.io.write_line(f"<b>{line}</b>" if number == 0 else Formatter.escape(line))
        return 0

