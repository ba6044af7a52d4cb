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
            "overridden by the file, overridden by the environment. Secrets (API keys) "
            "show at most their last 4 characters. The output is valid YAML.")
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
        self.io.write(text, type=Type.RAW)
        return 0
