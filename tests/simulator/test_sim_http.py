"""Authentication, unknown paths and protocol errors: always the API's JSON envelope."""

from __future__ import annotations

import base64
import http.client
import json
import socket
import time
from email.utils import parsedate_to_datetime
from typing import Any

import pytest

from soong_core.clock import AcceleratedClock, clock_from_config
from soong_plugins.lambda_labs.simulator.testing import SimHarness


def header_forms(key: str) -> list[str]:
    b64 = base64.b64encode
    return [f"Bearer {key}", f"Basic {b64(f'{key}:'.encode()).decode()}",
            f"Basic {b64(key.encode()).decode()}", f"Basic {key}", f"bearer {key}"]


def test_every_auth_form_of_the_spec_is_accepted(sim: SimHarness) -> None:
    for header in header_forms(sim.api_key):
        reply = sim.api("GET", "/instances", auth=False, headers={"Authorization": header})
        assert reply.status == 200, header


@pytest.mark.parametrize("header", [None, "", "Bearer", "Bearer wrong-key", "Token {key}",
                                    "Basic !!!", "Bearer {key}x", "Basic {key}x:"])
def test_a_missing_or_wrong_key_is_401_with_the_api_error(sim: SimHarness,
                                                          header: str | None) -> None:
    headers = {} if header is None else {"Authorization": header.format(key=sim.api_key)}
    reply = sim.api("GET", "/instances", auth=False, headers=headers)
    assert (reply.status, reply.error_code) == (401, "global/invalid-api-key")
    assert set(reply.body["error"]) == {"code", "message", "suggestion"}


def test_the_control_endpoint_needs_the_key_too(sim: SimHarness) -> None:
    reply = sim.client.request("GET", "/_sim/status", auth=False)
    assert (reply.status, reply.error_code) == (401, "global/invalid-api-key")


def test_unknown_paths_and_methods_are_json_errors(sim: SimHarness) -> None:
    missing = sim.api("GET", "/no-such-thing", auth=False)
    assert (missing.status, missing.error_code) == (404, "global/object-does-not-exist")
    assert sim.client.request("GET", "/", auth=False).status == 404
    wrong = sim.api("DELETE", "/instances")
    assert wrong.status == 405 and wrong.headers["Allow"] == "GET, HEAD"
    unknown_control = sim.client.request("GET", "/_sim/nope")
    assert unknown_control.status == 404


def raw_exchange(sim: SimHarness, request: bytes) -> tuple[int, dict[str, str], bytes]:
    with socket.create_connection(("127.0.0.1", sim.simulator.port), timeout=5) as sock:
        sock.sendall(request)
        response = http.client.HTTPResponse(sock)
        response.begin()
        return response.status, dict(response.getheaders()), response.read()


def logged(sim: SimHarness) -> list[tuple[str, str, int | None]]:
    return [(e["method"], e["path"], e["status"])
            for e in sim.control("GET", "/requests")["entries"]]


@pytest.mark.parametrize("method", ["TRACE", "OPTIONS", "PROPFIND", "BREW"])
def test_methods_the_server_does_not_serve_answer_405_in_the_envelope(
        sim: SimHarness, method: str) -> None:
    for path, allow in (("/api/v1/instances", "GET, HEAD"),
                        ("/api/v1/no-such-thing", "DELETE, GET, HEAD, PATCH, POST, PUT")):
        status, headers, body = raw_exchange(
            sim, f"{method} {path} HTTP/1.1\r\nHost: x\r\n\r\n".encode())
        assert (status, headers["Content-Type"], headers["Allow"]) == (
            405, "application/json", allow), path
        error = json.loads(body)["error"]
        assert error["code"] == "global/method-not-allowed" and method in error["message"]
        assert (method, path, 405) in logged(sim)


def test_connect_answers_405_in_the_envelope_and_is_logged(sim: SimHarness) -> None:
    status, headers, body = raw_exchange(sim, b"CONNECT example.com:443 HTTP/1.1\r\n"
                                              b"Host: example.com:443\r\n\r\n")
    assert status == 405 and "Allow" in headers
    assert json.loads(body)["error"]["code"] == "global/method-not-allowed"
    assert ("CONNECT", "example.com:443", 405) in logged(sim)


def test_a_body_on_a_method_that_takes_none_closes_the_connection(sim: SimHarness) -> None:
    # left unread, "abc" would be read as the next request on the kept-alive connection
    for method, status in (("GET", 200), ("TRACE", 405)):
        answer, headers, _ = raw_exchange(
            sim, f"{method} /api/v1/instances HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer "
                 f"{sim.api_key}\r\nContent-Length: 3\r\n\r\nabc".encode())
        assert (answer, headers.get("Connection")) == (status, "close"), method


def test_head_answers_like_get_without_a_body(sim: SimHarness) -> None:
    sim.launch()
    connection = http.client.HTTPConnection("127.0.0.1", sim.simulator.port, timeout=5)
    auth = {"Authorization": f"Bearer {sim.api_key}"}
    try:
        connection.request("GET", "/api/v1/instances", headers=auth)
        got = connection.getresponse()
        got_body = got.read()
        connection.request("HEAD", "/api/v1/instances", headers=auth)
        head = connection.getresponse()
        assert (head.status, head.read()) == (200, b"")
        assert head.headers["Content-Length"] == got.headers["Content-Length"] == \
            str(len(got_body))
        assert head.headers["Content-Type"] == "application/json"
        # the connection is still in step: a GET after the HEAD gets its whole answer
        connection.request("GET", "/api/v1/instances", headers=auth)
        again = connection.getresponse()
        assert json.loads(again.read())["data"][0]["id"]
        connection.request("HEAD", "/api/v1/instances")
        unauthorized = connection.getresponse()
        assert (unauthorized.status, unauthorized.read()) == (401, b"")
    finally:
        connection.close()
    post_only = sim.api("HEAD", "/instance-operations/launch")
    assert (post_only.status, post_only.headers["Allow"]) == (405, "POST")
    assert ("HEAD", "/api/v1/instances", 200) in logged(sim)


def test_protocol_errors_and_huge_bodies_get_json_not_html(sim: SimHarness) -> None:
    too_long = b"GET /api/v1/instances HTTP/1.1\r\nX-Big: " + b"a" * 70_000 + b"\r\n\r\n"
    status, headers, body = raw_exchange(sim, too_long)
    assert status == 431 and headers["Content-Type"] == "application/json"
    assert json.loads(body)["error"]["code"] == "global/invalid-parameters"
    huge = (b"POST /api/v1/instance-operations/launch HTTP/1.1\r\nHost: x\r\n"
            b"Authorization: Bearer " + sim.api_key.encode() + b"\r\n"
            b"Content-Length: 999999999\r\n\r\n{")
    status, headers, body = raw_exchange(sim, huge)
    assert status == 400 and headers.get("Connection") == "close"
    assert "more than" in json.loads(body)["error"]["message"]


def test_chunked_bodies_are_read(sim: SimHarness) -> None:
    payload = json.dumps({"name": "chunky", "public_key": sim.api("GET", "/ssh-keys") and
                          "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAICN+lJwsONkwrdsSnQsu1ydUkIuIg5oOC+"
                          "Eslvmtt60T c"}).encode()
    chunks = b"".join(b"%x\r\n%s\r\n" % (len(part), part)
                      for part in (payload[:10], payload[10:])) + b"0\r\n\r\n"
    request = (b"POST /api/v1/ssh-keys HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n"
               b"Authorization: Bearer " + sim.api_key.encode() + b"\r\n\r\n" + chunks)
    status, _, body = raw_exchange(sim, request)
    assert status == 200 and json.loads(body)["data"]["name"] == "chunky"


def test_keep_alive_connections_serve_several_requests(sim: SimHarness) -> None:
    connection = http.client.HTTPConnection("127.0.0.1", sim.simulator.port, timeout=5)
    try:
        for _ in range(3):
            connection.request("GET", "/api/v1/instance-types",
                                headers={"Authorization": f"Bearer {sim.api_key}"})
            response = connection.getresponse()
            assert response.status == 200 and "data" in json.loads(response.read())
    finally:
        connection.close()


# -- the Date header carries cloud time, as a real API's carries its clock ----------------

def header_date(headers: dict[str, str]) -> float:
    return parsedate_to_datetime(headers["Date"]).timestamp()


def test_the_date_header_is_the_simulated_clock_not_the_wall(sim: SimHarness) -> None:
    start = sim.clock.now()  # the fixture's ManualClock, far from this machine's clock
    assert abs(start - time.time()) > 3600
    assert header_date(sim.api("GET", "/instances").headers) == int(start)
    sim.clock.advance(86_400 + 0.7)
    assert header_date(sim.api("GET", "/instances").headers) == int(start) + 86_400
    # every reply: errors, protocol errors and the control endpoint too
    assert header_date(sim.api("GET", "/instances", auth=False).headers) == int(start) + 86_400
    too_long = b"GET /api/v1/instances HTTP/1.1\r\nX-Big: " + b"a" * 70_000 + b"\r\n\r\n"
    status, headers, _ = raw_exchange(sim, too_long)
    assert status == 431 and header_date(headers) == int(start) + 86_400
    assert header_date(sim.client.request("GET", "/_sim/clock").headers) == int(start) + 86_400


def test_the_date_header_follows_the_accelerated_clock(sim_factory: Any) -> None:
    wall = time.time()
    clock = AcceleratedClock(60, sim_anchor=wall - 30 * 86_400, wall_anchor=wall)
    sim = sim_factory(clock=clock)
    assert sim.control("GET", "/clock")["speed"] == 60

    def dated() -> tuple[float, float, float]:
        before = clock.now()
        date = header_date(sim.api("GET", "/instances").headers)
        return before, date, clock.now()

    before, first, after = dated()
    assert before - 1 < first <= after  # whole seconds of cloud time, not of the wall
    assert abs(first - time.time()) > 29 * 86_400
    time.sleep(0.5)
    before, second, after = dated()
    assert before - 1 < second <= after and second - first >= 29  # 60 cloud s per wall s
    # a new speed re-anchors the simulator's clock: the header follows it
    sim.control("PATCH", "/knobs", {"speed": 3600})
    anchors = sim.control("GET", "/clock")["config"]
    moved = clock_from_config(anchors)
    before = moved.now()
    date = header_date(sim.api("GET", "/instances").headers)
    assert anchors["factor"] == 3600 and before - 1 < date <= moved.now()
