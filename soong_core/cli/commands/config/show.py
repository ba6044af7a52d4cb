"""``soong config show``: the effective configuration, secrets masked."""

from __future__ import annotations

from typing import ClassVar

from cleo.helpers import option
from cleo.io.inputs.option import Option
from cleo.io.outputs.output import Type

from soong_core.cli.command import SoongCommand


class ConfigShowCommand(SoongCommand):
    name = "config show"
    description = ("Print the effective configuration (defaults, file, environment), "
                   "secrets masked.")
    help = ("Prints every key of every section, as soong will use it: the defaults, "
            "overridden by the file, overridden by the environment (and by the profile, "
            "under <comment>--profile NAME</comment> or <comment>--sim</comment>). Secrets "
            "(API keys) show at most their last 4 characters. The output is valid YAML; "
            "under a profile it starts with comment lines naming the profile's file and "
            "the keys it sets (<comment>--json</comment> has the same shape either way).")
    options: ClassVar[list[Option]] = [
        option("json", description="Print JSON instead of YAML."),
    ]

    def handle(self) -> int:
        data = self.config.to_dict(mask_secrets=True)
        if self.option("json"):
            import json

            text = json.dumps(data, indent=2) + "\n"
        else:
            import yaml

            text = yaml.safe_dump(data, sort_keys=False, default_flow_style=False,
                                  allow_unicode=True)
            if self.app.profile:
                text = self._profile_comment() + text
        self.io.write(text, type=Type.RAW)
        return 0

    def _profile_comment(self) -> str:
        """``# profile sim: PATH`` and ``# it sets: KEY, ...``: which values are the
        profile's (the rest: the main file, the environment, the defaults)."""
        from soong_core.config import profile_path, profile_sources

        name = self.app.profile
        assert name is not None
        keys = profile_sources(self.config, name)
        return (f"# profile {name}: {_one_line(str(profile_path(name)))}\n"
                f"# it sets: {', '.join(keys) or 'nothing'} (the rest: "
                f"{_one_line(str(self.config.path))}, the environment, the defaults)\n")


def _one_line(text: str) -> str:
    """A path inside a YAML comment: a newline in it would end the comment."""
    return text.replace("\r", "\\r").replace("\n", "\\n")
