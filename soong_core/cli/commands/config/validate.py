"""``soong config validate``: check the configuration, say what is wrong, exit 2 if so."""

from __future__ import annotations

from soong_core.cli.command import SoongCommand


class ConfigValidateCommand(SoongCommand):
    name = "config validate"
    description = "Check the configuration file and environment; exit 2 with every problem."
    help = ("Loads the configuration exactly as other commands do (file, environment, "
            "plugin sections) and prints <info>config OK: PATH</info>, or one line per "
            "problem and exits with code 2.")

    def handle(self) -> int:
        from cleo.formatters.formatter import Formatter

        config = self.config  # raises ConfigError: the application prints it, exit 2
        note = "" if config.exists else " (no file: defaults apply)"
        if self.app.profile:
            from soong_core.config import profile_path

            note += f", profile {profile_path(self.app.profile)}"
        self.line(Formatter.escape(f"config OK: {config.path}{note}"))
        return 0
