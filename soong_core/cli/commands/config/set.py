"""``soong config set KEY [VALUE]``: change one key of the file, validated first."""

from __future__ import annotations

import logging
import os
from typing import ClassVar

from cleo.formatters.formatter import Formatter
from cleo.helpers import argument
from cleo.io.inputs.argument import Argument

from soong_core.cli.command import SoongCommand
from soong_core.errors import UsageError

log = logging.getLogger("soong.config")


class ConfigSetCommand(SoongCommand):
    name = "config set"
    description = "Set one key (section.key) in the configuration file."
    help = ("Parses VALUE by the key's type (numbers, true/false, comma-separated lists, "
            "<comment>null</comment> to unset a nullable key), validates the whole file "
            "and only then writes it (atomically, mode 0600), keeping every other key. "
            "Comments in the file are not kept.\n\n"
            "Omit VALUE to be prompted for it (hidden for secrets) or to read it from "
            "standard input: a secret given as an argument is visible in process lists "
            "and shell history.")
    arguments: ClassVar[list[Argument]] = [
        argument("key", description="The key, as section.key (e.g. defaults.lease_hours)."),
        argument("value", description="The new value; omit it to be prompted or to read "
                                      "standard input.", optional=True),
    ]

    def handle(self) -> int:
        from soong_core.config import build_schema, set_value, show_value

        key = self.argument("key")
        schema = build_schema(self.plugins)
        schema.rules(key)  # an unknown key fails before any prompt
        secret = schema.is_secret(key)
        text = self.argument("value")
        if text is None:
            text = self._read_value(key, secret)
        elif secret:
            log.warning("%s is a secret: as an argument it is visible in process lists and "
                        "shell history; omit VALUE to be prompted for it", key)
        config = set_value(self.app.config_path, key, text, plugins=self.plugins,
                           partial_plugins=self.app.no_plugins)
        shown = show_value(config.get(key), secret=secret)
        self.line(f"{Formatter.escape(key)} = {Formatter.escape(shown)} "
                  f"(saved in {Formatter.escape(str(config.path))})")
        self._warn_if_shadowed(key, schema.env_names())
        return 0

    def _read_value(self, key: str, secret: bool) -> str:
        """Prompt on a terminal (hidden for a secret); otherwise read one line of stdin.

        The stream is read directly: cleo's ``read_line`` answers nothing when input
        is piped, which is exactly when a script hands us a secret this way.
        """
        stream = self.io.input.stream
        text = ""
        if stream is not None and stream.isatty():
            if self.io.is_interactive():
                answer = self.secret(f"{key}: ") if secret else self.ask(f"{key}: ")
                text = answer or ""
        elif stream is not None:
            text = stream.readline().rstrip("\r\n")
        if not text:
            raise UsageError(f"no value given for {key}",
                             hints=["give VALUE, or type it at the prompt, or pipe it on "
                                    "standard input"])
        return text

    def _warn_if_shadowed(self, key: str, env_names: dict[str, str]) -> None:
        """The environment wins over the file: say so, or the change seems to do nothing."""
        for var, target in env_names.items():
            if target == key and var in os.environ:
                log.warning("$%s is set and overrides %s from the file", var, key)
