"""``soong config path``: which configuration file soong reads."""

from __future__ import annotations

from cleo.io.outputs.output import Type

from soong_core.cli.command import SoongCommand


class ConfigPathCommand(SoongCommand):
    name = "config path"
    description = "Print the path of the configuration file in use (it may not exist yet)."
    help = ("The <comment>--config</comment> path if given, else "
            "$XDG_CONFIG_HOME/soong/config.yaml (~/.config/soong/config.yaml).")

    def handle(self) -> int:
        from soong_core.config import config_path

        self.io.write_line(str(config_path(self.app.config_path)), type=Type.RAW)
        return 0
