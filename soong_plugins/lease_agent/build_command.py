"""``soong agent build [-o FILE]``: write the lease agent's zipapp."""

from __future__ import annotations

from typing import ClassVar

from cleo.helpers import option
from cleo.io.inputs.option import Option

from soong_core.cli.command import SoongCommand

DEFAULT_OUTPUT = "soong-agent.pyz"


class AgentBuildCommand(SoongCommand):
    name = "agent build"
    description = "Build the lease agent's zipapp (what runs on every instance)."
    help = ("Writes one file holding the agent, the core modules it runs, pluggy and the "
            "modules plugins name for the instance (<comment>soong_agent_bundle_modules"
            "</comment>), and prints its path and size. Default output: "
            f"<comment>./{DEFAULT_OUTPUT}</comment>. Check it with "
            "<comment>python3 -I FILE --self-test</comment>; "
            "<comment>python3 -I FILE --example-config</comment> prints a complete config.")
    options: ClassVar[list[Option]] = [
        option("output", "o", description="Where to write the zipapp.", flag=False,
               default=DEFAULT_OUTPUT),
    ]

    def handle(self) -> int:
        from soong_core.text import cleo_literal
        from soong_plugins.lease_agent.bundle import build_zipapp

        from soong_plugins.lease_agent.bundle import SIZE_WARNING

        bundle = build_zipapp(self.option("output"), self.plugins.agent_bundle_modules())
        self.line(cleo_literal(f"wrote {bundle.path} ({bundle.size:,} bytes, "
                               f"{len(bundle.modules)} modules)"))
        if bundle.size > SIZE_WARNING:
            self.line_error(cleo_literal(
                f"warning: {bundle.size:,} bytes is near the 1 MB user_data limit once "
                f"base64-encoded"))
        return 0
