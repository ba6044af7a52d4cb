"""The agent's HTTP API (DESIGN Interfaces, "agent API"): small, strict, uncrashable.

A threaded :mod:`http.server` on the configured address. Every request needs the
instance's bearer token (compared with :func:`hmac.compare_digest`); every error is
``{"error": {"code", "message"}}`` JSON. Each connection has its own thread and socket
timeout, so a slow or half-open client blocks nobody else, and at most
``api.max_connections`` are served at once (more are closed at once). Bodies are
JSON objects of at most 64 KiB (a bigger ``Content-Length`` is refused before a byte
of the body is read). Anything a handler raises becomes a 500 and one log line.

The accept loop waits on the listening socket and a wake pipe, with no timeout: the
server never wakes up by itself (``serve_forever`` would poll twice a second).
"""

from __future__ import annotations

import hmac
import json
import math
import os
import selectors
import socket
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import TYPE_CHECKING, Any, Callable

from instance_agent.daemon import Refusal

if TYPE_CHECKING:
    from instance_agent.daemon import Agent

MAX_BODY = 64 * 1024
MAX_SOURCE = 200
CUTOFF_TIMEOUTS = 3
"""A whole exchange (request line, headers, body, answer) gets this many socket timeouts."""
ROUTES = {"/health": "GET", "/status": "GET", "/extend": "POST", "/activity": "POST",
          "/shutdown": "POST"}


class AgentServer(ThreadingHTTPServer):
    daemon_threads = True
    block_on_close = False
    allow_reuse_address = True

    def __init__(self, agent: Agent, bind: str, port: int, token: str, *,
                 timeout: float = 10.0, max_connections: int = 32,
                 log: Callable[[str], None] | None = None) -> None:
        self.agent = agent
        self.token = token.encode("utf-8")
        self.request_timeout = timeout
        self.log = log or agent.log
        self.address_family = socket.AF_INET6 if ":" in bind else socket.AF_INET
        self._slots = threading.BoundedSemaphore(max_connections)
        self._wake_r, self._wake_w = os.pipe()
        self._closing = False
        super().__init__((bind, port), Handler)

    @property
    def port(self) -> int:
        return int(self.server_address[1])

    def serve(self) -> None:
        """Accept connections until :meth:`stop`; no periodic wakeup."""
        with selectors.DefaultSelector() as selector:
            selector.register(self.socket, selectors.EVENT_READ)
            selector.register(self._wake_r, selectors.EVENT_READ)
            while not self._closing:
                for key, _ in selector.select():
                    if key.fileobj == self._wake_r:
                        return
                    self._accept()

    def _accept(self) -> None:
        """One connection, as socketserver's ``_handle_request_noblock`` takes it."""
        try:
            request, client_address = self.get_request()
        except OSError:
            return
        try:
            self.process_request(request, client_address)
        except Exception:
            self.handle_error(request, client_address)
            self.shutdown_request(request)

    def start(self) -> threading.Thread:
        thread = threading.Thread(target=self.serve, name="agent-api", daemon=True)
        thread.start()
        return thread

    def stop(self) -> None:
        self._closing = True
        try:
            os.write(self._wake_w, b"x")
        except OSError:
            pass

    def server_close(self) -> None:
        super().server_close()
        for descriptor in (self._wake_r, self._wake_w):
            try:
                os.close(descriptor)
            except OSError:
                pass

    def process_request(self, request: Any, client_address: Any) -> None:
        if not self._slots.acquire(blocking=False):
            self.shutdown_request(request)
            return
        try:
            super().process_request(request, client_address)
        except BaseException:
            self._slots.release()
            raise

    def process_request_thread(self, request: Any, client_address: Any) -> None:
        try:
            super().process_request_thread(request, client_address)
        finally:
            self._slots.release()

    def handle_error(self, request: Any, client_address: Any) -> None:
        import sys

        kind = sys.exc_info()[0]
        self.log(f"api: connection error: {kind.__name__ if kind else 'unknown'}")


class Handler(BaseHTTPRequestHandler):
    server: AgentServer
    server_version = "soong-agent"
    sys_version = ""
    protocol_version = "HTTP/1.0"

    def setup(self) -> None:
        super().setup()
        self.connection.settimeout(self.server.request_timeout)
        # A client that trickles a byte before each socket timeout would hold its slot
        # for ever: the whole exchange gets a few timeouts, then the socket is shut.
        self._cutoff = threading.Timer(self.server.request_timeout * CUTOFF_TIMEOUTS,
                                       self._cut_off)
        self._cutoff.daemon = True
        self._cutoff.start()

    def finish(self) -> None:
        self._cutoff.cancel()
        try:
            super().finish()
        except OSError:
            pass

    def _cut_off(self) -> None:
        try:
            self.connection.shutdown(socket.SHUT_RDWR)
        except OSError:
            pass

    def log_message(self, format: str, *args: Any) -> None:
        """Silent: the agent logs decisions, not requests (and never a header)."""

    def handle_one_request(self) -> None:
        try:
            self.raw_requestline = self.rfile.readline(65537)
            if len(self.raw_requestline) > 65536:
                self.requestline = self.request_version = self.command = ""
                self.send_error(414)
                return
            if not self.raw_requestline:
                self.close_connection = True
                return
            if not self.parse_request():
                return
            self._respond()
            self.wfile.flush()
        except (TimeoutError, socket.timeout):
            self.close_connection = True
        except (ConnectionError, BrokenPipeError):
            self.close_connection = True

    def send_error(self, code: int, message: str | None = None,
                   explain: str | None = None) -> None:
        """http.server's own errors (bad request line, headers) as JSON, too."""
        self.close_connection = True
        try:
            self._send(code, {"error": {"code": _CODES.get(code, "bad_request"),
                                        "message": message or self.responses.get(
                                            code, ("error",))[0]}})
        except OSError:
            pass

    # -- dispatch ---------------------------------------------------------------------

    def _respond(self) -> None:
        try:
            status, body = self._route()
        except Refusal as refusal:
            status, body = refusal.status, _error(refusal.code, refusal.message,
                                                  **refusal.extra)
        except Exception as exc:
            self.server.log(f"api: {self.command} {self._path_for_log()} failed: "
                            f"{type(exc).__name__}: {' '.join(str(exc).split())[:200]}")
            status, body = 500, _error("internal", "the agent failed to answer this request; "
                                       "enforcement goes on")
        self._send(status, body)

    def _path_for_log(self) -> str:
        path = self.path.split("?", 1)[0]
        return path if path in ROUTES else "(other path)"

    def _route(self) -> tuple[int, Any]:
        if not self._authorized():
            raise Refusal(401, "unauthorized", "a valid bearer token is required")
        path = self.path.split("?", 1)[0]
        method = ROUTES.get(path)
        if method is None:
            raise Refusal(404, "not_found", "no such endpoint (GET /health, GET /status, "
                          "POST /extend, POST /activity, POST /shutdown)")
        if self.command != method:
            raise Refusal(405, "method_not_allowed", f"{path} takes {method}", allow=method)
        agent = self.server.agent
        if method == "GET":
            return 200, agent.health() if path == "/health" else agent.status()
        body = self._body()
        if path == "/extend":
            _only(body, {"hours", "expected_deadline"})
            hours = _number(body, "hours", required=True)
            expected = _number(body, "expected_deadline", required=True)
            assert hours is not None and expected is not None
            if hours <= 0:
                raise Refusal(400, "invalid", f"hours must be more than 0, got {hours!r}")
            return 200, agent.extend(hours, expected)
        if path == "/activity":
            _only(body, {"source"})
            return 200, agent.activity(_text(body, "source") or "api")
        _only(body, {"reason"})
        return 202, agent.shutdown(_text(body, "reason") or "")

    def _authorized(self) -> bool:
        header = self.headers.get("Authorization", "")
        scheme, _, credential = header.partition(" ")
        given = credential.strip().encode("utf-8", "surrogateescape")
        expected = self.server.token
        ok = hmac.compare_digest(given, expected)
        return scheme.lower() == "bearer" and ok

    def _body(self) -> dict[str, Any]:
        if self.headers.get("Transfer-Encoding"):
            self.close_connection = True
            raise Refusal(411, "length_required", "send a Content-Length (chunked bodies are "
                          "not accepted)")
        length_header = self.headers.get("Content-Length")
        if length_header is None:
            return {}
        length_text = length_header.strip()
        if not length_text.isdigit() or len(length_text) > 12:
            self.close_connection = True
            raise Refusal(400, "invalid", "Content-Length must be a number of bytes")
        length = int(length_text)
        if length > MAX_BODY:
            self.close_connection = True
            raise Refusal(413, "too_large", f"bodies are at most {MAX_BODY} bytes")
        raw = self.rfile.read(length) if length else b""
        if len(raw) < length:
            self.close_connection = True
            raise Refusal(400, "invalid", "the body ended before Content-Length bytes")
        if not raw.strip():
            return {}
        try:
            data = json.loads(raw.decode("utf-8"), parse_constant=_no_constant,
                              object_pairs_hook=_no_duplicates)
        except RecursionError:
            raise Refusal(400, "invalid", "the body is nested too deeply") from None
        except (UnicodeDecodeError, ValueError) as exc:
            raise Refusal(400, "invalid_json", f"the body is not valid JSON: "
                          f"{' '.join(str(exc).split())[:200]}") from None
        if not isinstance(data, dict):
            raise Refusal(400, "invalid", "the body must be a JSON object")
        return data

    def _send(self, status: int, body: Any) -> None:
        data = json.dumps(body, allow_nan=False).encode("utf-8")
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.send_header("Cache-Control", "no-store")
        if status == 401:
            self.send_header("WWW-Authenticate", 'Bearer realm="soong-agent"')
        if status == 405 and isinstance(body, dict):
            self.send_header("Allow", str(body.get("error", {}).get("allow", "")))
        if self.close_connection:
            self.send_header("Connection", "close")
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(data)


_CODES = {400: "bad_request", 404: "not_found", 405: "method_not_allowed",
          408: "timeout", 413: "too_large", 414: "too_large", 431: "too_large",
          501: "method_not_allowed", 505: "bad_request"}


def _error(code: str, message: str, **extra: Any) -> dict[str, Any]:
    error: dict[str, Any] = {"code": code, "message": message}
    error.update(extra)
    return {"error": error}


def _no_constant(name: str) -> Any:
    raise ValueError(f"{name} is not a JSON number")


def _no_duplicates(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    data: dict[str, Any] = {}
    for key, value in pairs:
        if key in data:
            raise ValueError(f"duplicate key {key!r}")
        data[key] = value
    return data


def _only(body: dict[str, Any], allowed: set[str]) -> None:
    unknown = sorted(set(body) - allowed)
    if unknown:
        raise Refusal(400, "invalid", f"unknown field {unknown[0][:40]!r} (allowed: "
                      f"{', '.join(sorted(allowed))})")


def _number(body: dict[str, Any], key: str, *, required: bool = False) -> float | None:
    if key not in body:
        if required:
            raise Refusal(400, "invalid", f"{key} is required")
        return None
    value = body[key]
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise Refusal(400, "invalid", f"{key} must be a number")
    try:
        number = float(value)
    except OverflowError:
        raise Refusal(400, "invalid", f"{key} is too large") from None
    if not math.isfinite(number):
        raise Refusal(400, "invalid", f"{key} must be finite")
    return number


def _text(body: dict[str, Any], key: str) -> str | None:
    value = body.get(key)
    if value is None:
        return None
    if not isinstance(value, str):
        raise Refusal(400, "invalid", f"{key} must be a string")
    if len(value) > MAX_SOURCE:
        raise Refusal(400, "invalid", f"{key} is at most {MAX_SOURCE} characters")
    return " ".join(value.split())
