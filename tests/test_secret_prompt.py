"""The hidden prompt never shows a key (issue 10, 5), tested on a real pseudo-terminal.

``soong configure`` and ``soong config set`` run in a subprocess whose terminal is a
pty this test holds: what the test reads from it is exactly what a user would see.
Enter alone keeps the current key with no second (visible) read; Ctrl-D cancels;
Ctrl-C leaves the terminal as it was; nothing typed is ever echoed. A cloud that
wants a key is installed as an entry point, so the real command line finds it.
"""

from __future__ import annotations

import io
import os
import select
import subprocess
import sys
import termios
import time
from pathlib import Path
from typing import Iterator

import pytest
import yaml

from soong_core.config import write_config_file
from soong_core.errors import SoongError
from soong_core.testing import SoongEnv

SECRET = "fake-api-key-0123456789abcdef"
OTHER = "typed-key-that-must-not-show-42"

KEYED_PLUGIN = f'''
from soong_core import hookimpl
from soong_core.clock import RealClock
from soong_core.errors import SoongError
from soong_core.fake import FakeProvider


class KeyedFake(FakeProvider):
    credential_key = "fakecloud.api_key"

    def __init__(self, key):
        super().__init__(RealClock(), boot_seconds=0)
        self.key = key

    def list_instance_types(self):
        if self.key not in ({SECRET!r}, {OTHER!r}):
            raise SoongError("invalid API key")
        return super().list_instance_types()


class Plugin:
    @hookimpl
    def soong_config_schema(self):
        return {{"fakecloud": {{"api_key": {{"type": "string", "nullable": True,
                                           "default": None, "meta": {{"secret": True}}}}}}}}

    @hookimpl
    def soong_register_providers(self, register):
        register("fakecloud", lambda config: KeyedFake(config["fakecloud"]["api_key"]))


plugin = Plugin()
'''

BOOT = ("import fcntl, runpy, sys, termios; fcntl.ioctl(0, termios.TIOCSCTTY, 0); "
        "sys.argv[0] = 'soong'; runpy.run_module('soong_core', run_name='__main__')")
"""Make the pty the child's controlling terminal (so Ctrl-C is a SIGINT, as for a
user), then run the command line as ``python -m soong_core`` would."""

CONFIGURE = ("configure", "--provider", "fakecloud", "--gpu", "gpu_1x_a10", "--region",
             "us-east-1", "--fallback-region", "us-west-1", "--model", "m", "--hours", "3",
             "--idle-minutes", "20", "--budget", "50", "--budget-period", "week",
             "--no-ssh-key")
"""Every setting as a flag: the key is the only question."""
KEY_PROMPT = b"API key: "
KEEP_PROMPT = b"API key (Enter keeps the current one): "
WAIT = 60.0
"""A generous bound on any one step, so a broken prompt fails instead of hanging."""


class Terminal:
    """A command running on a pty: ``expect`` what it shows, ``type`` what a user types."""

    def __init__(self, args: tuple[str, ...], env: dict[str, str]) -> None:
        self.controller, self.terminal = os.openpty()
        self.process = subprocess.Popen([sys.executable, "-c", BOOT, *args], stdin=self.terminal,
                                        stdout=self.terminal, stderr=self.terminal, env=env,
                                        start_new_session=True)
        self.shown = b""

    def _read(self, timeout: float) -> bool:
        ready, _, _ = select.select([self.controller], [], [], timeout)
        if not ready:
            return False
        try:
            chunk = os.read(self.controller, 4096)
        except OSError:
            return False
        self.shown += chunk
        return bool(chunk)

    def expect(self, text: bytes) -> None:
        deadline = time.monotonic() + WAIT
        while text not in self.shown:
            left = deadline - time.monotonic()
            if left <= 0 or (not self._read(left) and self.process.poll() is not None):
                raise AssertionError(f"{text!r} never appeared; the terminal shows "
                                     f"{self.shown!r}")

    def type(self, keys: bytes) -> None:
        os.write(self.controller, keys)

    def finish(self) -> int:
        """Wait for the command to exit (it must not wait for more input), then read
        everything it showed."""
        try:
            code = self.process.wait(timeout=WAIT)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()
            raise AssertionError(f"still waiting for input; the terminal shows "
                                 f"{self.shown!r}") from None
        while self._read(0):
            pass
        return code

    def echoes(self) -> bool:
        return bool(termios.tcgetattr(self.terminal)[3] & termios.ECHO)

    def close(self) -> None:
        if self.process.poll() is None:
            self.process.kill()
            self.process.wait()
        os.close(self.controller)
        os.close(self.terminal)


@pytest.fixture
def run_on_pty(soong_env: SoongEnv, tmp_path: Path) -> Iterator[type[Terminal]]:
    site = tmp_path / "site"
    dist = site / "keyed_fake-1.0.dist-info"
    dist.mkdir(parents=True)
    (dist / "METADATA").write_text("Metadata-Version: 2.1\nName: keyed-fake\nVersion: 1.0\n")
    (dist / "entry_points.txt").write_text("[soong]\nkeyed = keyed_fake:plugin\n")
    (site / "keyed_fake.py").write_text(KEYED_PLUGIN)
    environ = {k: v for k, v in os.environ.items() if not k.startswith(("SOONG_", "LAMBDA_"))}
    environ.update(soong_env.environ(), PYTHONPATH=str(site), TERM="xterm", NO_COLOR="1")
    opened: list[Terminal] = []

    class Opened(Terminal):
        def __init__(self, *args: str) -> None:
            super().__init__(args, environ)
            opened.append(self)

    yield Opened
    for terminal in opened:
        terminal.close()


def saved_key(env: SoongEnv) -> str | None:
    return (yaml.safe_load(env.config_file.read_text()).get("fakecloud") or {}).get("api_key")


def test_a_typed_key_is_never_shown_and_is_saved(run_on_pty: type[Terminal],
                                                 soong_env: SoongEnv) -> None:
    terminal = run_on_pty(*CONFIGURE)
    terminal.expect(KEY_PROMPT)
    assert not terminal.echoes()  # off before the question shows
    terminal.type(SECRET.encode() + b"\r")
    assert terminal.finish() == 0, terminal.shown
    assert SECRET.encode() not in terminal.shown
    assert b"API key works" in terminal.shown
    assert terminal.echoes()  # given back
    assert saved_key(soong_env) == SECRET


def test_enter_alone_keeps_the_current_key_with_no_second_read(run_on_pty: type[Terminal],
                                                               soong_env: SoongEnv) -> None:
    write_config_file(soong_env.config_file, {"fakecloud": {"api_key": SECRET}})
    terminal = run_on_pty(*CONFIGURE)
    terminal.expect(KEEP_PROMPT)
    terminal.type(b"\r")
    assert terminal.finish() == 0, terminal.shown  # nothing more was read
    after = terminal.shown.split(KEEP_PROMPT, 1)[1]
    assert b"API key works" in after and b"API key:" not in after and b"?" not in after
    assert saved_key(soong_env) == SECRET


def test_ctrl_d_cancels_and_saves_nothing(run_on_pty: type[Terminal],
                                          soong_env: SoongEnv) -> None:
    write_config_file(soong_env.config_file, {"fakecloud": {"api_key": SECRET}})
    before = soong_env.config_file.read_bytes()
    terminal = run_on_pty(*CONFIGURE)
    terminal.expect(KEEP_PROMPT)
    terminal.type(b"\x04")
    assert terminal.finish() == 1
    lines = terminal.shown.split(KEEP_PROMPT, 1)[1].decode().split()
    assert " ".join(lines) == "error: cancelled: nothing was saved"
    assert soong_env.config_file.read_bytes() == before
    assert terminal.echoes()


def test_ctrl_c_gives_the_terminal_back_with_echo_on(run_on_pty: type[Terminal],
                                                     soong_env: SoongEnv) -> None:
    terminal = run_on_pty(*CONFIGURE)
    terminal.expect(KEY_PROMPT)
    terminal.type(OTHER[:10].encode())  # half a key, then Ctrl-C
    terminal.type(b"\x03")
    assert terminal.finish() == 130
    assert b"interrupted" in terminal.shown and OTHER[:10].encode() not in terminal.shown
    assert terminal.echoes()
    assert not soong_env.config_file.exists()


def test_config_set_reads_a_secret_hidden_and_ctrl_d_cancels(run_on_pty: type[Terminal],
                                                             soong_env: SoongEnv) -> None:
    terminal = run_on_pty("config", "set", "fakecloud.api_key")
    terminal.expect(b"fakecloud.api_key: ")
    assert not terminal.echoes()
    terminal.type(OTHER.encode() + b"\r")
    assert terminal.finish() == 0, terminal.shown
    assert OTHER.encode() not in terminal.shown and terminal.echoes()
    assert saved_key(soong_env) == OTHER

    cancelled = run_on_pty("config", "set", "fakecloud.api_key")
    cancelled.expect(b"fakecloud.api_key: ")
    cancelled.type(b"\x04")
    assert cancelled.finish() == 1
    assert b"cancelled: nothing was saved" in cancelled.shown
    assert saved_key(soong_env) == OTHER


# -- without a terminal (piped input, in-process) ----------------------------------------------


def ask_piped(given: str) -> str:
    from cleo.io.buffered_io import BufferedIO
    from cleo.io.inputs.string_input import StringInput

    from soong_core.cli.command import SoongCommand

    piped = BufferedIO(StringInput(""))
    piped.input.set_stream(io.StringIO(given))
    command = SoongCommand()
    command._io = piped
    return command.ask_secret("secret: ")


@pytest.mark.parametrize(("given", "answer"), [("\n", ""), ("  k  \n", "k"), ("k", "k")])
def test_a_piped_line_is_the_answer(given: str, answer: str) -> None:
    assert ask_piped(given) == answer


def test_piped_end_of_input_cancels_as_ctrl_d_does() -> None:
    with pytest.raises(SoongError, match="^cancelled: nothing was saved$") as raised:
        ask_piped("")
    assert raised.value.exit_code == 1
