"""``python -m soong_plugins.lambda_labs.simulator``: run a simulator in this process.

This is what ``soong sim up`` starts in the background (and what a developer may run by
hand). The API key is never an argument: it lives in the state directory. With
``--ready-fd N``, one JSON line on file descriptor N tells the starter the outcome:
``{"ok": true, "pid": ..., "url": ..., "warnings": [...]}`` once the port listens, or
``{"ok": false, "error": "...", "hints": [...], "exit_code": N}`` (2: the profile belongs
to another simulator, a usage error; 1: anything else).
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import signal
import sys
from typing import Any

from soong_plugins.lambda_labs.simulator import options as opts
from soong_plugins.lambda_labs.simulator.requestlog import CAPTURE_ENV


def _type(parse: Any, *extra: Any) -> Any:
    def convert(text: str) -> Any:
        try:
            return parse(text, *extra)
        except ValueError as exc:
            raise argparse.ArgumentTypeError(str(exc)) from None

    return convert


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m soong_plugins.lambda_labs.simulator",
                                     description="Serve a simulated Lambda Cloud on 127.0.0.1.")
    parser.add_argument("--state-dir", required=True)
    parser.add_argument("--port", type=_type(opts.parse_port), default=0)
    parser.add_argument("--speed", type=_type(opts.parse_speed))
    parser.add_argument("--boot-seconds", type=_type(opts.parse_seconds, "--boot-seconds"))
    parser.add_argument("--terminate-seconds",
                        type=_type(opts.parse_seconds, "--terminate-seconds"))
    parser.add_argument("--terminate-ended", type=_type(opts.parse_terminate_ended))
    parser.add_argument("--rate-limit", type=_type(opts.parse_rate_limit), default="edge")
    parser.add_argument("--rate-limit-body", type=_type(opts.parse_rate_limit_body),
                        default="text")
    parser.add_argument("--no-rate-limit", action="store_true", help="--rate-limit off")
    parser.add_argument("--capacity", action="append", default=[],
                        type=_type(opts.parse_capacity))
    parser.add_argument("--reset", action="store_true")
    parser.add_argument("--capture", help=f"body capture file (or ${CAPTURE_ENV})")
    parser.add_argument("--profile", help="soong config profile to keep pointed at us")
    parser.add_argument("--pid-file", action="store_true")
    parser.add_argument("--ready-fd", type=int)
    return parser


def _tell(fd: int | None, message: dict[str, Any]) -> None:
    if fd is None:
        return
    try:
        os.write(fd, (json.dumps(message) + "\n").encode())
        os.close(fd)
    except OSError:
        pass  # the starter went away; serve anyway


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.INFO, stream=sys.stderr,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    from soong_plugins.lambda_labs.simulator.app import (
        ProfileTaken,
        Simulator,
        SimulatorError,
        StateTaken,
    )

    try:
        simulator = Simulator(
            args.state_dir, port=args.port, speed=args.speed, boot_seconds=args.boot_seconds,
            terminate_seconds=args.terminate_seconds, terminate_ended=args.terminate_ended,
            rate_limit="off" if args.no_rate_limit else args.rate_limit,
            rate_limit_body=args.rate_limit_body,
            capacity=args.capacity, reset=args.reset,
            capture_path=args.capture or os.environ.get(CAPTURE_ENV) or None,
            pid_file=args.pid_file, profile_path=args.profile)
        simulator.bind()
    except SimulatorError as exc:
        _tell(args.ready_fd, {"ok": False, "error": str(exc), "hints": list(exc.hints),
                              "exit_code": exc.exit_code,
                              "refused": isinstance(exc, (StateTaken, ProfileTaken))})
        print(f"error: {exc}", file=sys.stderr)
        return 1

    def stop(signum: int, frame: object) -> None:
        logging.getLogger("soong.sim").info("signal %d: stopping", signum)
        simulator.stop()

    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)
    logging.getLogger("soong.sim").info("serving %s (pid %d, state %s)", simulator.api_url,
                                        os.getpid(), simulator.store.directory)
    _tell(args.ready_fd, {"ok": True, **simulator.pid_record(),
                          "warnings": simulator.warnings})
    simulator.serve_forever()
    return 0


if __name__ == "__main__":
    sys.exit(main())
