"""``soong sim up``: start the local Lambda Cloud simulator and point ``--sim`` at it."""

from __future__ import annotations

import json
import logging
from typing import TYPE_CHECKING, Any, ClassVar

from cleo.formatters.formatter import Formatter
from cleo.helpers import option
from cleo.io.inputs.option import Option
from cleo.io.outputs.output import Type

from soong_core.cli.command import SoongCommand
from soong_core.errors import UsageError
from soong_plugins.lambda_labs.commands._common import (
    DEFAULT_PROFILE,
    STATE_DIR_OPTION,
    daemon_error,
    profile_file,
    profile_name,
    state_store,
)

if TYPE_CHECKING:
    from soong_plugins.lambda_labs.simulator.options import StartOptions

log = logging.getLogger("soong.sim")


class SimUpCommand(SoongCommand):
    name = "sim up"
    description = "Start the local Lambda Cloud simulator (no account, no money)."
    help = ("Starts a simulator of the Lambda Cloud API on 127.0.0.1 in the background, "
            "waits until it answers, and prints its URL and the API key it accepts. It "
            "also writes the config profile <comment>sim</comment> (another with the global "
            "<comment>--profile NAME</comment>), so <comment>soong --sim COMMAND</comment> "
            "uses it. The cloud (instances, keys, filesystems, clock) and its account "
            "are kept in the state directory across restarts; options not given keep "
            "their stored values. A second simulator needs its own "
            "<comment>--state-dir</comment> and <comment>--profile</comment>.\n\n"
            "Simulated time runs <comment>--speed</comment> times faster than the wall "
            "clock: boot delays and billing follow it, rate limits do not.")
    options: ClassVar[list[Option]] = [
        option("port", description="Port to listen on (0: any free port).", flag=False,
               default="0"),
        option("speed", description="Simulated seconds per wall second [default: as "
               "stored, else 1].", flag=False),
        option("boot-seconds", description="Simulated seconds from launch to active "
               "[default: as stored, else 60].", flag=False),
        option("terminate-seconds", description="Simulated seconds from terminating to "
               "terminated [default: as stored, else 10].", flag=False),
        option("terminate-ended", description="A terminate naming an instance the API "
               "still lists as ended: return (it comes back unchanged) or 404 (the whole "
               "call fails) [default: as stored, else return].", flag=False),
        option("rate-limit", description="How the API's rate limits (1 request/s; "
               "launches 1 per 12 s, 5 per minute) are enforced: edge (a burst of 3 around "
               "1/s, as Lambda's edge counts), strict (1/s, no burst) or off "
               "[default: edge].", flag=False),
        option("rate-limit-body", description="What a 429 carries: text (Cloudflare's "
               "'error code: 1015', as the real API) or json (the API's error envelope).",
               flag=False, default="text"),
        option("no-rate-limit", description="Do not enforce the API's rate limits "
               "(--rate-limit off)."),
        option("capacity", description="Instances that fit per type and region, as "
               "TYPE:REGION=N ('*' for all); repeatable.", flag=False, multiple=True),
        option("reset", description="Forget the stored cloud first (the key, the account "
               "and the time reached stay)."),
        option("capture-bodies", description="Also append request and response bodies "
               "(user_data and private keys redacted) to this JSON-lines file.", flag=False),
        option("foreground", description="Serve in this terminal until Ctrl-C instead of "
               "in the background."),
        option("json", description="Print the URL, key and pid as JSON."),
        STATE_DIR_OPTION,
    ]

    def handle(self) -> int:
        from soong_plugins.lambda_labs.simulator import daemon
        from soong_plugins.lambda_labs.simulator.app import SimulatorError
        from soong_plugins.lambda_labs.simulator.store import StoreError

        start_options = self._start_options()
        store = state_store(self.option("state-dir"))
        profile = profile_file(profile_name(self))
        try:
            if self.option("foreground"):
                daemon.run_foreground(store, start_options, profile,
                                      lambda sim: self._report(sim.pid_record(), sim.api_key,
                                                               str(profile), sim.warnings,
                                                               foreground=True))
                self.line("simulator stopped")
                return 0
            ready = daemon.start(store, start_options, profile)
            key = store.api_key()
        except (daemon.DaemonError, SimulatorError, StoreError) as exc:
            raise daemon_error(exc) from None
        self._drop_copies(profile_name(self))
        self._report(ready, key, str(profile), ready.get("warnings") or [], foreground=False)
        return 0

    def _drop_copies(self, name: str) -> None:
        """A profile written by an older ``configure`` may hold copies of main-file keys
        that outrank later changes there: drop them (one warning names them). The
        simulator wrote its own keys; a main config that cannot be read leaves the
        profile as it is (the next command reports the problem)."""
        from soong_core.config import profile_keys_of, save_profile_values
        from soong_core.errors import ConfigError
        from soong_plugins.lambda_labs.provider import LambdaProvider

        try:
            save_profile_values(name, {}, config=self.app.config_path,
                                keep=profile_keys_of(LambdaProvider), plugins=self.plugins,
                                partial_plugins=self.app.no_plugins)
        except ConfigError as exc:
            log.warning("the profile %s was left as it is: %s", name, exc.message)

    def _start_options(self) -> StartOptions:
        from soong_plugins.lambda_labs.simulator import options as opts

        try:
            result = opts.StartOptions(port=opts.parse_port(self.option("port")))
            if self.option("speed") is not None:
                result.speed = opts.parse_speed(self.option("speed"))
            for flag in ("boot-seconds", "terminate-seconds"):
                if self.option(flag) is not None:
                    setattr(result, flag.replace("-", "_"),
                            opts.parse_seconds(self.option(flag), f"--{flag}"))
            if self.option("terminate-ended") is not None:
                result.terminate_ended = opts.parse_terminate_ended(
                    self.option("terminate-ended"))
            mode = self.option("rate-limit")
            if mode is not None:
                result.rate_limit = opts.parse_rate_limit(mode)
            if self.option("no-rate-limit"):
                if result.rate_limit != "off" and mode is not None:
                    raise ValueError(f"--no-rate-limit contradicts --rate-limit {mode}: "
                                     "give one of them")
                result.rate_limit = "off"
            result.rate_limit_body = opts.parse_rate_limit_body(self.option("rate-limit-body"))
            result.capacity = [opts.parse_capacity(text) for text in self.option("capacity")]
            result.reset = bool(self.option("reset"))
            capture = self.option("capture-bodies")
            if capture is not None:
                if not capture.strip():
                    raise ValueError("--capture-bodies must name a file")
                from pathlib import Path

                result.capture_path = str(Path(capture).expanduser().absolute())
        except ValueError as exc:
            raise UsageError(str(exc)) from None
        return result

    def _report(self, ready: dict[str, Any], key: str, profile: str, warnings: list[str],
                *, foreground: bool) -> None:
        for warning in warnings:
            log.warning("%s", warning)
        if self.option("json"):
            shown = {"api_url": ready["api_url"], "url": ready["url"], "api_key": key,
                     "pid": ready["pid"], "port": ready["port"],
                     "state_dir": ready["state_dir"], "profile": profile,
                     "account_id": ready.get("account_id")}
            self.io.write_line(json.dumps(shown), type=Type.RAW)
            return
        escape = Formatter.escape
        self.line(f"simulator running at <info>{escape(ready['api_url'])}</info> "
                  f"(pid {ready['pid']})")
        self.line(f"API key: {escape(key)}  (accepted only by this simulator)")
        self.line(f"state:   {escape(ready['state_dir'])}")
        name = profile_name(self)
        use = "--sim" if name == DEFAULT_PROFILE else f"--profile {name}"
        self.line(f"profile: {escape(profile)}: run `soong {use} COMMAND` to use it")
        self.line(f"try:     curl -u {escape(key)}: {escape(ready['api_url'])}/instance-types")
        if foreground:
            self.line("serving in the foreground; Ctrl-C stops it")
