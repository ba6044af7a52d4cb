"""``--api-timeout``: a silent API stops a command after the deadline, not minutes later.

The servers here are real sockets on 127.0.0.1 that accept connections and never answer
(or answer only what a test scripts). Real seconds pass only in the attempts that wait
for them (a second or two in all); pacing and backoff run on the virtual timer of
``conftest.py``. The assertions count attempts and read the errors, never the clock.
"""

from __future__ import annotations

import http.server
import json
import socket
import threading
from pathlib import Path
from typing import Any, Callable, Iterator

import pytest

from soong_core.config import default_config_path, write_config_file
from soong_core.testing import CliResult
from soong_plugins.lambda_labs import errors, transport
from soong_plugins.lambda_labs.client import LambdaClient
from soong_plugins.lambda_labs.pacing import GENERAL, VERSION, VirtualTimer
from soong_plugins.lambda_labs.provider import LambdaProvider
from soong_plugins.lambda_labs.transport import Transport

KEY = "soong-test-key-000000"


class SilentServer:
    """Accepts connections and reads what comes, never answering; counts the
    connections (one per attempt: a timed-out connection is never reused)."""

    def __init__(self, answer_from: int | None = None) -> None:
        self.sock = socket.create_server(("127.0.0.1", 0))
        self.port = self.sock.getsockname()[1]
        self.answer_from = answer_from
        """From this connection (1-based) on, answer ``{"data": []}``."""
        self.accepted = 0
        self._held: list[socket.socket] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._serve, daemon=True)
        self._thread.start()

    @property
    def api_url(self) -> str:
        return f"http://127.0.0.1:{self.port}/api/v1"

    def _serve(self) -> None:
        while not self._stop.is_set():
            try:
                conn, _ = self.sock.accept()
            except OSError:
                return
            self.accepted += 1
            if self.answer_from is not None and self.accepted >= self.answer_from:
                threading.Thread(target=self._answer, args=(conn,), daemon=True).start()
            else:
                self._held.append(conn)

    @staticmethod
    def _answer(conn: socket.socket) -> None:
        with conn:
            data = b""
            while b"\r\n\r\n" not in data:
                chunk = conn.recv(4096)
                if not chunk:
                    return
                data += chunk
            body = b'{"data": []}'
            conn.sendall(b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\n"
                         b"Connection: close\r\nContent-Length: " + str(len(body)).encode()
                         + b"\r\n\r\n" + body)

    def close(self) -> None:
        self._stop.set()
        self.sock.close()
        for conn in self._held:
            conn.close()


@pytest.fixture
def silent() -> Iterator[SilentServer]:
    server = SilentServer()
    try:
        yield server
    finally:
        server.close()


def test_a_silent_api_is_given_up_at_the_deadline_in_one_attempt(silent: SilentServer) -> None:
    # The read timeout is 30 s and three read retries are allowed: before the deadline,
    # this took 4 attempts and two minutes.
    client = Transport(silent.api_url, KEY, api_timeout=0.5)
    with pytest.raises(errors.ApiDeadlineError) as caught:
        client.request("GET", "/instances")
    assert caught.value.message == (f"the Lambda Cloud API at 127.0.0.1:{silent.port} did not "
                                    "answer within 0.5 s (--api-timeout)")
    assert "soong sim status" in caught.value.hints[0]  # loopback: a simulator
    assert caught.value.hints[1] == "or give it longer: --api-timeout SECONDS"
    assert silent.accepted == 1


def test_retries_and_their_backoff_stay_within_the_deadline(
        silent: SilentServer, monkeypatch: pytest.MonkeyPatch, timer: VirtualTimer) -> None:
    # Of 2 s: 0.3 s for the first attempt, 0.5 s of backoff, 0.6 s more for the pacing's
    # slot (the virtual clock did not move while the attempt waited), 0.3 s for the second
    # attempt. The 1 s backoff before a third would pass the deadline: none follows.
    monkeypatch.setattr(transport, "JITTER", 0.0)
    client = Transport(silent.api_url, KEY, timeout=(5.0, 0.3), api_timeout=2)
    with pytest.raises(errors.ApiDeadlineError) as caught:
        client.request("GET", "/instances")
    assert "did not answer within 2 s (--api-timeout)" in caught.value.message
    assert silent.accepted == 2
    assert timer.sleeps == [0.5, pytest.approx(1 / GENERAL.rate - 0.5)]


def test_the_deadline_is_not_papered_over_by_a_cached_price_list(silent: SilentServer) -> None:
    provider = LambdaProvider(silent.api_url, KEY, api_timeout=0.5)
    with pytest.raises(errors.ApiDeadlineError):  # the command ends: no bundled prices
        provider.list_instance_types()
    assert provider.catalogue_source == "none" and silent.accepted == 1


def test_a_read_retry_within_the_deadline_still_gets_the_answer() -> None:
    server = SilentServer(answer_from=2)
    try:
        client = Transport(server.api_url, KEY, timeout=(5.0, 0.3), api_timeout=10)
        reply = client.request("GET", "/instances")
    finally:
        server.close()
    assert reply.ok and reply.retries == 1 and server.accepted == 2


def test_an_answer_starts_the_count_afresh_and_each_thread_counts_its_own() -> None:
    budget = transport.ApiBudget(10)
    budget.charge(9)
    assert budget.left() == pytest.approx(1) and not budget.fits(1)
    other: list[float] = []
    thread = threading.Thread(target=lambda: other.append(budget.left()))
    thread.start()
    thread.join()
    assert other == [10]  # a watchdog thread's silence is not this thread's
    budget.answered()
    assert budget.left() == 10 and budget.cap((5.0, 30.0)) == (5.0, 10)
    assert transport.ApiBudget(None).fits(1e9)


def test_a_launch_past_the_deadline_is_not_retried_nor_reconciled(silent: SilentServer) -> None:
    client = LambdaClient(Transport(silent.api_url, KEY, api_timeout=0.5))
    with pytest.raises(errors.ApiDeadlineError) as caught:
        client.launch({"region_name": "us-east-1"}, "launch-1", action="launching",
                      region="us-east-1")
    assert silent.accepted == 1  # no listing, no second launch: the next command adopts it
    assert caught.value.nothing_launched is False  # it was sent: its fate is unknown


class RetryLater(http.server.BaseHTTPRequestHandler):
    """503 with ``Retry-After: 30``, to every request; counts them."""

    seen = 0

    def do_GET(self) -> None:
        type(self).seen += 1
        body = json.dumps({"error": {"code": "provider/internal-unavailable",
                                     "message": "Down for maintenance"}}).encode()
        self.send_response(503)
        self.send_header("Retry-After", "30")
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, format: str, *args: Any) -> None:
        pass


def test_a_retry_after_past_the_deadline_reports_the_answer_at_once(
        timer: VirtualTimer) -> None:
    handler = type("Handler", (RetryLater,), {"seen": 0})
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        url = f"http://127.0.0.1:{server.server_address[1]}/api/v1"
        provider = LambdaProvider(url, KEY, api_timeout=10)
        with pytest.raises(errors.ProviderUnavailableError) as caught:
            provider.list_instances()
    finally:
        server.shutdown()
        server.server_close()
    assert caught.value.message == ("Lambda Cloud is unavailable (HTTP 503): "
                                    "provider/internal-unavailable (listing instances)")
    assert handler.seen == 1 and timer.slept == 0  # 30 s would pass the 10 s deadline


def test_a_rate_limit_booked_past_the_deadline_sends_nothing(
        silent: SilentServer, timer: VirtualTimer) -> None:
    client = Transport(silent.api_url, KEY, api_timeout=5)
    path = client.limiter.path
    assert path is not None
    now = timer.time()
    # what other processes of this account left: a queue 30 s long
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps({"version": VERSION, "written_at": now,
                                "general": {"tokens": 0.0, "updated": now + 30},
                                "launch": {"tokens": 5.0, "updated": now}}))
    with pytest.raises(errors.ApiDeadlineError) as caught:
        client.request("GET", "/instances")
    assert caught.value.message == ("gave up on Lambda Cloud after 5 s (--api-timeout): the "
                                    "account's rate limit has no free slot for 31 s")
    assert "other soong commands" in caught.value.hints[0]
    assert silent.accepted == 0 and timer.slept == 0
    booked = json.loads(path.read_text())
    assert booked["general"]["updated"] == now + 30  # nothing was booked for it


def test_from_config_takes_the_api_timeout_default_and_flag() -> None:
    def seconds(config: dict[str, Any]) -> float | None:
        return LambdaProvider.from_config(config).client.transport.budget.seconds

    assert seconds({}) == transport.API_TIMEOUT == 60
    assert seconds({"defaults": {"api_timeout_seconds": 7}}) == 7
    assert seconds({"defaults": {"api_timeout_seconds": "junk"}}) == 60


def test_status_against_a_silent_api_is_one_line_after_the_api_timeout(
        silent: SilentServer, run_cli: Callable[..., CliResult], tmp_path: Path) -> None:
    write_config_file(default_config_path(), {"lambda": {"api_url": silent.api_url,
                                                         "api_key": KEY}})
    result = run_cli("--api-timeout 1 status")
    assert result.exit_code == 1, result.stderr
    shown = [line for line in result.stderr.splitlines() if line.startswith("error:")]
    assert shown == [f"error: the Lambda Cloud API at 127.0.0.1:{silent.port} did not answer "
                     "within 1 s (--api-timeout)"]
    assert "Traceback" not in result.stderr and silent.accepted == 1
