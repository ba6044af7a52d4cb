"""The base of every soong command: access to the application's plugins and config."""

from __future__ import annotations

from typing import TYPE_CHECKING, cast

from cleo.commands.command import Command

if TYPE_CHECKING:
    from soong_core.cli.application import SoongApplication
    from soong_core.plugins import Plugins


class SoongCommand(Command):
    @property
    def app(self) -> SoongApplication:
        from soong_core.cli.application import SoongApplication

        application = self.application
        if not isinstance(application, SoongApplication):
            raise RuntimeError(f"command {self.name!r} runs only inside the soong application")
        return cast("SoongApplication", application)

    @property
    def plugins(self) -> Plugins:
        return self.app.plugins
