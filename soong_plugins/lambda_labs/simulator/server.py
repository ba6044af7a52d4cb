"""The HTTP side: a standard-library threading server and its request handler.

One request goes through, in order: read the body (so a keep-alive connection stays in
step whatever the answer), route (unknown path -> 404, wrong method -> 405, and any
method the server does not serve, TRACE or CONNECT, -> 405 too; HEAD is GET without
the body), check the key, then for API routes the account switch, the rate limits and the injected faults,
then the handler, then the optional added latency and the reply. Every request, whatever
its fate, is recorded once (request log, capture, test hook) by the simulator.

A request whose path starts ``/_from/<instance-id>`` comes from that instance's agent:
the prefix stands for the instance's own network address (the agent's provider URL is
given it in its override), so the edge's rate limits count it apart from the laptop's
requests (:meth:`.ratelimit.RateLimiter.admit`'s ``source``) and the request log says
whose it was. The rest of the path is routed as usual.

Errors are always the API's JSON envelope, never the stdlib's HTML error page (a 429
carries Cloudflare's plain text by default, as the real API's edge answers). The
``Date`` header of every reply carries the simulated cloud time, as a real API's carries
its clock.
"""

from __future__ import annotations

import contextlib
import json
import logging
import socket
import struct
import threading
import time
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import TYPE_CHECKING, Any
from urllib.parse import parse_qs, urlsplit

from soong_plugins.lambda_labs.simulator import errors
from soong_plugins.lambda_labs.simulator.api import LAUNCH_OPERATION
from soong_plugins.lambda_labs.simulator.errors import ApiError
from soong_plugins.lambda_labs.simulator.routes import Call
from soong_plugins.lambda_labs.simulator.validation import parse_body

if TYPE_CHECKING:
    from soong_plugins.lambda_labs.simulator.app import Simulator

log = logging.getLogger("soong.sim")

MAX_BODY_BYTES = 4 * 1024 * 1024
"""Bigger bodies are refused unread: a launch with the largest allowed user_data (1 MB),
JSON-escaped, stays far below."""

BODY_METHODS = frozenset({"POST", "PUT", "PATCH", "DELETE"})

FROM_PREFIX = "/_from/"
"""What an instance's own requests start with: ``/_from/<instance-id>/api/v1/...``."""


def from_instance(path: str) -> tuple[str | None, str]:
    """(the instance a request came from, or None; the path without the prefix)."""
    if not path.startswith(FROM_PREFIX):
        return None, path
    source, slash, rest = path[len(FROM_PREFIX):].partition("/")
    if not source or not slash:
        return None, path  # no instance named: routed as it is (a 404)
    return source, "/" + rest


@dataclass
class Exchange:
    """One request and what became of it: what the request log, the capture file and
    the test hook receive."""

    method: str
    path: str
    query: dict[str, str]
    ts: float
    """Wall time the request arrived (seconds since the epoch)."""
    sim_time: float = 0.0
    kind: str = "unknown"
    operation: str | None = None
    status: int | None = None
    """``None`` when no reply was sent (connection reset, dropped launch reply)."""
    fault: str | None = None
    duration_ms: float = 0.0
    request_body: bytes = b""
    response_body: Any = None
    headers: dict[str, str] = field(default_factory=dict)
    """Response headers the simulator added (``Retry-After``...)."""
    source: str | None = None
    """The instance whose agent sent it (``/_from/<id>``); ``None``: the laptop's."""

    def log_entry(self) -> dict[str, Any]:
        entry = {"ts": round(self.ts, 6), "sim_time": round(self.sim_time, 6),
                 "method": self.method, "path": self.path, "query": self.query,
                 "kind": self.kind, "operation": self.operation, "status": self.status,
                 "duration_ms": round(self.duration_ms, 3), "fault": self.fault}
        if self.source is not None:
            entry["source"] = self.source
        return entry


class SimulatorHTTPServer(ThreadingHTTPServer):
    """Serves one :class:`Simulator`; remembers open connections so ``stop`` can close
    idle keep-alive ones (otherwise their threads would serve after the stop)."""

    daemon_threads = True
    allow_reuse_address = True

    def __init__(self, address: tuple[str, int], simulator: Simulator) -> None:
        self.simulator = simulator
        self.stopping = False
        self._connections: set[socket.socket] = set()
        self._connections_lock = threading.Lock()
        super().__init__(address, SimulatorRequestHandler)

    def track(self, connection: socket.socket, open_: bool) -> None:
        with self._connections_lock:
            if open_:
                self._connections.add(connection)
            else:
                self._connections.discard(connection)

    def handle_error(self, request: Any, client_address: Any) -> None:
        """A client that went away before its answer (it timed out, it was killed) is
        normal for a server clients give up on: no traceback for it. Anything else is
        logged as a simulator bug (socketserver would print it to stderr)."""
        import sys

        error = sys.exc_info()[1]
        if isinstance(error, (BrokenPipeError, ConnectionResetError, ConnectionAbortedError)):
            log.debug("client %s went away before its answer", client_address)
            return
        log.error("simulator error serving %s: %s: %s", client_address,
                  type(error).__name__, error)

    def close_connections(self) -> None:
        self.stopping = True
        with self._connections_lock:
            connections = list(self._connections)
        for connection in connections:
            with contextlib.suppress(OSError):
                connection.shutdown(socket.SHUT_RDWR)


class SimulatorRequestHandler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server_version = "soong-simulator"
    sys_version = ""
    timeout = 120
    """Idle keep-alive connections are closed after this many wall seconds."""

    server: SimulatorHTTPServer

    def setup(self) -> None:
        super().setup()
        # Headers and body go out as two writes: without NODELAY, Nagle's algorithm and
        # the client's delayed ACK add ~40 ms to every answer on a kept-alive connection.
        with contextlib.suppress(OSError):
            self.connection.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self.server.track(self.connection, True)

    def finish(self) -> None:
        try:
            super().finish()
        finally:
            self.server.track(self.connection, False)

    def version_string(self) -> str:
        return self.server_version

    def date_time_string(self, timestamp: float | None = None) -> str:
        """The ``Date`` header: the simulated cloud's time (accelerated with ``--speed``),
        not the wall clock, so a client's clock-skew check compares the clock soong's
        ``sim`` profile shares with the simulator (http.server would use time.time())."""
        if timestamp is None:
            timestamp = self.server.simulator.cloud.now()
        return super().date_time_string(timestamp)

    def log_message(self, format: str, *args: Any) -> None:
        """Silenced: the request log records every request instead."""

    def send_error(self, code: int, message: str | None = None, explain: str | None = None) -> None:
        """Protocol-level errors (bad request line, oversized headers) in the API's envelope."""
        text = message or self.responses.get(code, ("error",))[0]
        error_code = "global/invalid-parameters" if code < 500 else "global/internal-error"
        self.close_connection = True
        with contextlib.suppress(OSError):
            self._send(code, ApiError(code, error_code, f"{text}.").body(), {})

    def parse_request(self) -> bool:
        """The stdlib answers a method without a ``do_`` method 501, unlogged: every
        method goes through the pipeline instead (routing answers 405 in the envelope,
        and the request log records it)."""
        if not super().parse_request():
            return False
        if not hasattr(self, "do_" + self.command):
            setattr(self, "do_" + self.command, self._handle)  # this connection's handler
        return True

    def do_GET(self) -> None:
        self._handle()

    def do_POST(self) -> None:
        self._handle()

    def do_PUT(self) -> None:
        self._handle()

    def do_PATCH(self) -> None:
        self._handle()

    def do_DELETE(self) -> None:
        self._handle()

    def do_HEAD(self) -> None:
        self._handle()

    # -- the pipeline -------------------------------------------------------------------

    def _handle(self) -> None:
        simulator = self.server.simulator
        if self.server.stopping:
            self.close_connection = True
            return
        started = time.monotonic()
        url = urlsplit(self.path)
        query = {key: values[0] for key, values in
                 parse_qs(url.query, keep_blank_values=True).items()}
        # CONNECT's target is host:port, which urlsplit would take for a scheme
        path = url.path if self.path.startswith("/") or url.netloc else self.path
        source, path = from_instance(path)
        exchange = Exchange(self.command, path, query, time.time(), source=source)
        reply = None
        try:
            reply = self._process(simulator, exchange)
        finally:
            # Recorded before the reply is written: whoever reads the log after an
            # answer finds the request in it.
            exchange.duration_ms = (time.monotonic() - started) * 1000
            exchange.sim_time = simulator.cloud.now()
            simulator.record(exchange)
        if reply is not None:
            self._send(*reply)

    def _process(self, simulator: Simulator, exchange: Exchange
                 ) -> tuple[int, Any, dict[str, str]] | None:
        """The reply to send, or ``None`` when the connection is to end without one."""
        headers: dict[str, str] = {}
        try:
            exchange.request_body = self._read_body()
            route, params = simulator.router.match(self.command, exchange.path)
            exchange.kind, exchange.operation = route.kind, route.operation
            simulator.authenticate(self.headers.get("Authorization"))
            if route.kind == "api":
                simulator.check_account()
                limited = simulator.limiter.admit(route.operation == LAUNCH_OPERATION,
                                                  source=exchange.source)
                if limited is not None:
                    exchange.fault = "rate_limited"
                    raise errors.rate_limited(*limited, body=simulator.limiter.body)
                if simulator.faults.draw_reset():
                    exchange.fault = "reset"
                    self._reset_connection()
                    return None
                injected = simulator.faults.draw_error()
                if injected is not None:
                    exchange.fault = "error"
                    raise errors.internal(injected)
            raw = exchange.request_body
            payload = route.handler(Call(simulator, params, exchange.query,
                                         lambda: parse_body(raw), raw))
            status, body = 200, {"data": payload}
            if route.operation == LAUNCH_OPERATION and simulator.faults.take_dropped_launch():
                exchange.fault = "dropped"
                self._delay(simulator, route.kind)
                self.close_connection = True  # the instance exists; the client never hears
                return None
        except ApiError as error:
            status, body, headers = error.status, error.payload(), error.headers
        except Exception:  # a bug: the client still gets the API's envelope
            log.exception("simulator error on %s %s", self.command, exchange.path)
            bug = errors.internal(500)
            status, body = bug.status, bug.body()
        self._delay(simulator, exchange.kind)
        exchange.status, exchange.response_body, exchange.headers = status, body, headers
        return status, body, headers

    def _delay(self, simulator: Simulator, kind: str) -> None:
        latency = simulator.faults.latency() if kind == "api" else 0.0
        if latency > 0:
            time.sleep(latency)  # wall time: HTTP behaviour is never accelerated

    def _read_body(self) -> bytes:
        if self.command not in BODY_METHODS:
            if self.headers.get("Content-Length", "0").strip() not in ("", "0") \
                    or self.headers.get("Transfer-Encoding"):
                self.close_connection = True  # a body left unread: the stream is out of step
            return b""
        if self.headers.get("Transfer-Encoding", "").lower() == "chunked":
            return self._read_chunked()
        text = self.headers.get("Content-Length")
        if not text:
            return b""
        try:
            length = int(text)
        except ValueError:
            length = -1
        if length < 0:
            self.close_connection = True
            raise errors.invalid_parameters(f"Invalid Content-Length {text!r}.")
        if length > MAX_BODY_BYTES:
            self.close_connection = True  # unread: the connection cannot be reused
            raise errors.invalid_parameters(
                f"Invalid request data: the body is {length} bytes, more than "
                f"{MAX_BODY_BYTES}.", "user_data may not exceed 1MB.")
        return self.rfile.read(length)

    def _read_chunked(self) -> bytes:
        data = bytearray()
        while True:
            line = self.rfile.readline(1024).strip()
            try:
                size = int(line.split(b";")[0], 16)
            except ValueError:
                self.close_connection = True
                raise errors.invalid_parameters("Malformed chunked body.") from None
            if size == 0:
                while self.rfile.readline(1024).strip():
                    pass  # trailers
                return bytes(data)
            if len(data) + size > MAX_BODY_BYTES:
                self.close_connection = True
                raise errors.invalid_parameters("Invalid request data: the body is too large.")
            data += self.rfile.read(size)
            self.rfile.readline(1024)

    def _reset_connection(self) -> None:
        """Abort the connection with a TCP RST (SO_LINGER 0), as a broken network does."""
        self.close_connection = True
        try:
            self.connection.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER,
                                       struct.pack("ii", 1, 0))
            self.connection.close()
        except OSError:
            pass

    def _send(self, status: int, body: Any, headers: dict[str, str]) -> None:
        """``body`` as JSON; a ``str`` body as plain text (the edge's 429)."""
        plain = isinstance(body, str)
        data = body.encode("utf-8") if plain else json.dumps(body).encode("utf-8")
        self.send_response(status)
        self.send_header("Content-Type", "text/plain; charset=UTF-8" if plain
                         else "application/json")
        self.send_header("Content-Length", str(len(data)))
        for name, value in headers.items():
            self.send_header(name, value)
        if self.close_connection:
            self.send_header("Connection", "close")
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(data)
