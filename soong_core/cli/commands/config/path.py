"""``soong config path``: which configuration file soong reads (or the profile's)."""

from __future__ import annotations

from cleo.io.outputs.output import Type

from soong_core.cli.command import SoongCommand


class ConfigPathCommand(SoongCommand):
    name = "config path"
    description = ("Print the path of the configuration file in use, or of the profile "
                   "(it may not exist yet).")
    help = ("Without a profile: the <comment>--config</comment> path if given, else "
            "$XDG_CONFIG_HOME/soong/config.yaml (~/.config/soong/config.yaml). Under "
            "<comment>--profile NAME</comment> (or <comment>--sim</comment>): the profile's "
            "file, $XDG_CONFIG_HOME/soong/profiles/NAME.yaml, which "
            "<comment>soong config set</comment> then writes.")

    def handle(self) -> int:
        from soong_core.config import config_path, profile_path

        profile = self.app.profile
        path = profile_path(profile) if profile else config_path(self.app.config_path)
        self.io.write_line(str(path), type=Type.RAW)
        return 0
