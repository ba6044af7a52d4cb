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
    description = "Set one key (section.key) in the configuration file, or in the profile."
    help = ("Parses VALUE by the key's type (numbers, true/false, comma-separated lists, "
            "<comment>null</comment> to unset a nullable key), validates the whole file "
            "and only then writes it (atomically, mode 0600), keeping every other key. "
            "Comments in the file are not kept.\n\n"
            "Under <comment>--profile NAME</comment> (or <comment>--sim</comment>) the key "
            "is written in that profile, which must exist; keys there that only repeat "
            "the main file are removed (one warning names them).\n\n"
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
        profile = self.app.profile
        keep = self._profile_keys() if profile is not None else ()
        config = set_value(self.app.config_path, key, text, plugins=self.plugins,
                           partial_plugins=self.app.no_plugins, profile=profile, keep=keep)
        shown = show_value(config.get(key), secret=secret)
        self.line(f"{Formatter.escape(key)} = {Formatter.escape(shown)} "
                  f"(saved in {Formatter.escape(str(config.path))})")
        if profile is None:  # a profile outranks the environment: nothing shadows it
            self._warn_if_shadowed(key, schema.env_names())
            self._warn_if_profiles_set(key)
        return 0

    def _profile_keys(self) -> set[str] | None:
        """The keys that point the profile at its cloud (the provider's), which a write
        there keeps; ``None`` when the provider cannot be made (a broken profile: then
        nothing is removed, and the value being set may be the fix)."""
        from soong_core.config import profile_keys_of
        from soong_core.errors import SoongError

        try:
            return profile_keys_of(self.soong.provider)
        except SoongError as exc:
            log.debug("profile %s: provider unknown (%s): nothing removed from it",
                      self.app.profile, exc.message)
            return None

    def _read_value(self, key: str, secret: bool) -> str:
        """Prompt on a terminal (a secret with echo off, never echoed: ``ask_secret``,
        where Ctrl-D cancels); otherwise read one line of stdin.

        The stream is read directly: cleo's ``read_line`` answers nothing when input
        is piped, which is exactly when a script hands us a secret this way.
        """
        stream = self.io.input.stream
        text = ""
        if stream is not None and stream.isatty():
            if self.io.is_interactive():
                text = self.ask_secret(f"{key}: ") if secret else self.ask(f"{key}: ") or ""
        elif stream is not None:
            text = stream.readline().rstrip("\r\n")
        if not text:
            raise UsageError(f"no value given for {key}",
                             hints=["give VALUE, or type it at the prompt, or pipe it on "
                                    "standard input"])
        return text

    def _warn_if_profiles_set(self, key: str) -> None:
        """A profile that sets the key wins under its ``--profile``: say which do."""
        from soong_core.config import profiles_setting

        for name in profiles_setting(key):
            flag = "--sim" if name == "sim" else f"--profile {name}"
            log.warning("profile %s sets %s too, which wins under %s: add %s to this "
                        "command to change it there", name, key, flag, flag)

    def _warn_if_shadowed(self, key: str, env_names: dict[str, str]) -> None:
        """The environment wins over the file: say so, or the change seems to do nothing."""
        for var, target in env_names.items():
            if target == key and var in os.environ:
                log.warning("$%s is set and overrides %s from the file", var, key)
