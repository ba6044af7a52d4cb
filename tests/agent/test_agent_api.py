"""The agent's HTTP API in process: the token, every error class, slow clients, a fuzz
run that leaves the server alive and the agent enforcing, and no secret in any answer."""

from __future__ import annotations

import json
import socket
import time
from pathlib import Path
from typing import Any, Iterator

import pytest
from agent_units import API_KEY, HOUR, START, TOKEN, Api, Lines, agent, config
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from soong_core.clock import ManualClock

LEASE = START + 4 * HOUR


@pytest.fixture
def clock() -> ManualClock:
    return ManualClock(START)


@pytest.fixture
def lines() -> Lines:
    return Lines()


@pytest.fixture
def the_agent(tmp_path: Path, clock: ManualClock, lines: Lines) -> Any:
    return agent(tmp_path, clock, cfg=config(tmp_path, instance={"idle_timeout_seconds": None}),
                 log=lines)


@pytest.fixture
def api(the_agent: Any) -> Iterator[Api]:
    server = Api(the_agent, timeout=1.0, max_connections=8)
    try:
        yield server
    finally:
        server.close()


def error_code(body: Any) -> str:
    assert isinstance(body, dict) and set(body) == {"error"}, body
    assert isinstance(body["error"]["message"], str) and body["error"]["message"]
    return str(body["error"]["code"])


def test_health_and_status_answer_with_the_token(api: Api) -> None:
    status, body, answer = api.request("GET", "/health")
    assert status == 200 and body["ok"] is True
    assert answer.getheader("Content-Type") == "application/json"
    status, body, _ = api.request("GET", "/status")
    assert status == 200 and body["lease_deadline"] == LEASE


@pytest.mark.parametrize("token", [None, "", "wrong-token-0123456789abcdef", TOKEN + "x",
                                   TOKEN[:-1]])
@pytest.mark.parametrize(("method", "path"), [("GET", "/health"), ("GET", "/status"),
                                              ("POST", "/extend"), ("POST", "/activity"),
                                              ("POST", "/shutdown"), ("GET", "/nothing"),
                                              ("DELETE", "/status")])
def test_every_endpoint_needs_the_token(api: Api, the_agent: Any, method: str, path: str,
                                        token: str | None) -> None:
    status, body, answer = api.request(method, path, {"hours": 1, "expected_deadline": LEASE},
                                       token=token)
    assert status == 401 and error_code(body) == "unauthorized"
    assert answer.getheader("WWW-Authenticate", "").startswith("Bearer")
    assert the_agent.state.lease_deadline == LEASE and the_agent._shutdown_note is None


def test_other_schemes_are_refused(api: Api) -> None:
    status, _, _ = api.request("GET", "/health", token=None,
                               headers={"Authorization": f"Basic {TOKEN}"})
    assert status == 401


def test_unknown_paths_and_methods(api: Api) -> None:
    assert api.request("GET", "/nothing")[0] == 404
    assert api.request("GET", "/status/")[0] == 404
    status, body, answer = api.request("POST", "/status", {})
    assert status == 405 and error_code(body) == "method_not_allowed"
    assert answer.getheader("Allow") == "GET"
    assert api.request("GET", "/extend")[0] == 405
    for method in ("PUT", "DELETE", "PATCH", "OPTIONS", "FROB"):
        assert api.request(method, "/status")[0] == 405


def test_extend_through_the_api_is_idempotent(api: Api, the_agent: Any) -> None:
    body = {"hours": 1, "expected_deadline": LEASE}
    status, first, _ = api.request("POST", "/extend", body)
    assert status == 200 and first["lease_deadline"] == LEASE + HOUR
    status, again, _ = api.request("POST", "/extend", body)
    assert status == 409 and error_code(again) == "deadline_changed"
    assert again["error"]["lease_deadline"] == LEASE + HOUR
    assert the_agent.state.lease_deadline == LEASE + HOUR


def test_extend_past_the_hard_deadline_is_409_with_the_largest(api: Api) -> None:
    status, body, _ = api.request("POST", "/extend", {"hours": 5, "expected_deadline": LEASE})
    assert status == 409 and error_code(body) == "past_hard_deadline"
    assert body["error"]["max_hours"] == 4


@pytest.mark.parametrize("body", [
    {"hours": True, "expected_deadline": LEASE},
    {"hours": "1", "expected_deadline": LEASE},
    {"hours": 0, "expected_deadline": LEASE},
    {"hours": -1, "expected_deadline": LEASE},
    {"hours": None, "expected_deadline": LEASE},
    {"hours": [1], "expected_deadline": LEASE},
    {"hours": 1},
    {"expected_deadline": LEASE},
    {"hours": 1, "expected_deadline": False},
    {"hours": 1, "expected_deadline": LEASE, "extra": 1},
])
def test_extend_refuses_wrong_bodies(api: Api, the_agent: Any, body: Any) -> None:
    status, answer, _ = api.request("POST", "/extend", body)
    assert status == 400, answer
    error_code(answer)
    assert the_agent.state.lease_deadline == LEASE


@pytest.mark.parametrize("raw", [b"{", b"[1]", b"null", b'"text"', b"\xff\xfe",
                                 b'{"hours": NaN, "expected_deadline": 1}',
                                 b'{"hours": Infinity, "expected_deadline": 1}',
                                 b'{"hours": -Infinity, "expected_deadline": 1}',
                                 b'{"hours": 1e999, "expected_deadline": 1}',
                                 b'{"hours": 1, "hours": 2, "expected_deadline": 1}',
                                 b"[" * 100000])
def test_malformed_json_is_400(api: Api, raw: bytes) -> None:
    status, body, _ = api.request("POST", "/extend", raw=raw)
    assert status in (400, 413), body
    error_code(body)


def test_a_body_over_64_kib_is_413_unread(api: Api) -> None:
    with socket.create_connection(("127.0.0.1", api.port), timeout=10) as sock:
        sock.sendall(b"POST /extend HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer "
                     + TOKEN.encode() + b"\r\nContent-Length: 65537\r\n\r\n")
        reply = _read_reply(sock)  # answered before a single byte of the body was sent
    assert reply.startswith(b"HTTP/1.0 413")
    assert json.loads(reply.split(b"\r\n\r\n", 1)[1])["error"]["code"] == "too_large"


@pytest.mark.parametrize("headers", [{"Content-Length": "abc"}, {"Content-Length": "-1"},
                                     {"Transfer-Encoding": "chunked"}])
def test_bad_or_missing_lengths(api: Api, headers: dict[str, str]) -> None:
    extra = "".join(f"{k}: {v}\r\n" for k, v in headers.items())
    with socket.create_connection(("127.0.0.1", api.port), timeout=10) as sock:
        sock.sendall(f"POST /activity HTTP/1.1\r\nAuthorization: Bearer {TOKEN}\r\n{extra}\r\n"
                     .encode())
        reply = _read_reply(sock)
    assert reply.split(b" ")[1] in (b"400", b"411"), reply


def test_activity_and_shutdown(api: Api, the_agent: Any, clock: ManualClock) -> None:
    clock.advance(60)
    status, body, _ = api.request("POST", "/activity", {"source": "jupyter"})
    assert status == 200 and body["last_activity_at"] == START + 60
    assert the_agent.state.last_activity_source == "api (jupyter)"
    assert api.request("POST", "/activity")[0] == 200  # no body at all is fine
    assert api.request("POST", "/activity", {"source": 5})[0] == 400
    status, body, _ = api.request("POST", "/shutdown", {"reason": "done"})
    assert status == 202 and body["reason"] == "manual"
    assert the_agent.step().reason == "manual"
    status, body, _ = api.request("POST", "/extend", {"hours": 1, "expected_deadline": LEASE})
    assert status == 409 and error_code(body) == "terminating"


def test_status_and_health_are_never_activity(api: Api, the_agent: Any,
                                              clock: ManualClock) -> None:
    clock.advance(100)
    for _ in range(3):
        api.request("GET", "/status")
        api.request("GET", "/health")
    assert the_agent.state.last_activity_at is None


def test_a_slow_or_half_open_client_blocks_nobody(api: Api) -> None:
    silent = socket.create_connection(("127.0.0.1", api.port), timeout=10)
    partial = socket.create_connection(("127.0.0.1", api.port), timeout=10)
    partial.sendall(b"POST /activity HTTP/1.1\r\nContent-Length: 10\r\n")  # never finished
    try:
        assert api.request("GET", "/health")[0] == 200
        # each is cut off at its socket timeout (1 s here): recv sees the close
        assert _read_reply(silent) == b""
        assert _read_reply(partial) == b""
    finally:
        silent.close()
        partial.close()
    assert api.request("GET", "/health")[0] == 200


def test_connections_over_the_cap_are_closed_and_the_cap_recovers(the_agent: Any) -> None:
    api = Api(the_agent, timeout=30, max_connections=2)
    try:
        held = [socket.create_connection(("127.0.0.1", api.port), timeout=10) for _ in range(2)]
        _wait(lambda: _refused(api), "the third connection to be refused")
        for sock in held:
            sock.close()
        _wait(lambda: _healthy(api), "the slots to free up")
    finally:
        api.close()


def test_no_answer_carries_a_secret(api: Api, the_agent: Any,
                                                    lines: Lines) -> None:
    seen = []
    for method, path, body in [("GET", "/status", None), ("GET", "/health", None),
                               ("POST", "/extend", {"hours": 99, "expected_deadline": LEASE}),
                               ("POST", "/extend", {"hours": 1, "expected_deadline": 5}),
                               ("POST", "/activity", {"source": "x"}), ("GET", "/x", None)]:
        seen.append(json.dumps(api.request(method, path, body)[1]))
    seen.append(json.dumps(api.request("GET", "/status", token="wrong-" + TOKEN)[1]))
    text = "\n".join(seen) + lines.text()
    assert TOKEN not in text and API_KEY not in text


def test_a_handler_that_fails_is_a_500_and_the_server_goes_on(api: Api, the_agent: Any,
                                                              lines: Lines) -> None:
    def broken() -> Any:
        raise RuntimeError("bug")

    the_agent.status = broken
    status, body, _ = api.request("GET", "/status")
    assert status == 500 and error_code(body) == "internal"
    assert any("RuntimeError: bug" in line for line in lines)
    assert api.request("GET", "/health")[0] == 200


methods = st.sampled_from(["GET", "POST", "PUT", "DELETE", "HEAD", "OPTIONS", "PATCH", "X"])
paths = st.one_of(st.sampled_from(["/health", "/status", "/extend", "/activity", "/shutdown",
                                   "/", "//", "/status?x=1", "/%00", "/" + "a" * 3000]),
                  st.text(alphabet=st.characters(min_codepoint=33, max_codepoint=126),
                          max_size=40).map(lambda s: "/" + s))
json_values = st.recursive(
    st.one_of(st.none(), st.booleans(), st.integers(), st.floats(allow_nan=False,
                                                                 allow_infinity=False),
              st.text(max_size=20)),
    lambda inner: st.one_of(st.lists(inner, max_size=4),
                            st.dictionaries(st.text(max_size=10), inner, max_size=4)),
    max_leaves=10)
bodies = st.one_of(st.binary(max_size=200),
                   json_values.map(lambda v: json.dumps(v).encode()),
                   st.fixed_dictionaries({}, optional={"hours": json_values,
                                                       "expected_deadline": json_values,
                                                       "source": json_values,
                                                       "reason": json_values})
                   .map(lambda v: json.dumps(v).encode()))


@settings(max_examples=150, deadline=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(method=methods, path=paths, body=bodies, with_token=st.booleans(),
       with_length=st.booleans())
def test_fuzz_leaves_the_server_alive_and_enforcing(api: Api, the_agent: Any, method: str,
                                                   path: str, body: bytes, with_token: bool,
                                                   with_length: bool) -> None:
    head = f"{method} {path} HTTP/1.1\r\nHost: x\r\n"
    if with_token:
        head += f"Authorization: Bearer {TOKEN}\r\n"
    if with_length:
        head += f"Content-Length: {len(body)}\r\n"
    with socket.create_connection(("127.0.0.1", api.port), timeout=10) as sock:
        try:
            sock.sendall(head.encode() + b"\r\n" + body)
            reply = _read_reply(sock)
        except ConnectionError:
            reply = b""
    if reply:
        status = int(reply.split(b" ", 2)[1])
        assert 200 <= status < 600
        if method != "HEAD":
            payload = reply.split(b"\r\n\r\n", 1)[1]
            parsed = json.loads(payload)
            assert status < 400 or set(parsed) == {"error"}
    assert the_agent.state.lease_deadline <= the_agent.hard_deadline


def test_after_the_fuzz_it_still_enforces(api: Api, the_agent: Any, clock: ManualClock) -> None:
    for raw in [b"\x00\x01garbage\r\n\r\n", b"GET / HTTP/9.9\r\n\r\n", b"\r\n" * 1000,
                b"GET /status HTTP/1.1\r\n" + b"X: y\r\n" * 200 + b"\r\n"]:
        with socket.create_connection(("127.0.0.1", api.port), timeout=10) as sock:
            sock.sendall(raw)
            _read_reply(sock)
    assert api.request("GET", "/health")[0] == 200
    clock.set(the_agent.state.lease_deadline)
    assert the_agent.step().reason == "lease_expired"


# -- helpers ----------------------------------------------------------------------------


def _read_reply(sock: socket.socket) -> bytes:
    chunks = []
    try:
        while True:
            chunk = sock.recv(65536)
            if not chunk:
                break
            chunks.append(chunk)
    except (ConnectionError, socket.timeout):
        pass
    return b"".join(chunks)


def _refused(api: Api) -> bool:
    with socket.create_connection(("127.0.0.1", api.port), timeout=10) as sock:
        try:
            sock.sendall(f"GET /health HTTP/1.0\r\nAuthorization: Bearer {TOKEN}\r\n\r\n"
                         .encode())
        except ConnectionError:
            return True
        return _read_reply(sock) == b""


def _healthy(api: Api) -> bool:
    try:
        return api.request("GET", "/health")[0] == 200
    except (OSError, Exception):
        return False


def _wait(condition: Any, what: str, limit: float = 30.0) -> None:
    end = time.monotonic() + limit
    while not condition():
        if time.monotonic() > end:
            raise AssertionError(f"gave up waiting for {what}")
        time.sleep(0.05)


def test_a_client_that_trickles_bytes_is_cut_off(api: Api) -> None:
    """Each byte arrives within the socket timeout, but the whole exchange is bounded."""
    with socket.create_connection(("127.0.0.1", api.port), timeout=10) as sock:
        sock.sendall(b"GET /health HTTP/1.1\r\nX-Slow: ")
        closed = False
        for _ in range(200):  # 200 x 0.1 s would outlast the cutoff of 3 x 1 s
            try:
                sock.sendall(b"a")  # one header line that never ends
            except ConnectionError:
                closed = True
                break
            time.sleep(0.1)
        assert closed
    assert api.request("GET", "/health")[0] == 200
