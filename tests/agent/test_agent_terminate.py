"""The agent's termination client (instance_agent.terminate): every branch against a
scripted fake opener, then the real simulator with its faults on for a while."""

from __future__ import annotations

import email.utils
import io
import json
import random
import socket
import sys
import time
import urllib.error
from email.message import Message
from typing import Any, Callable

import pytest

from instance_agent.terminate import Terminator, retry_after_seconds
from soong_plugins.lambda_labs.simulator.testing import SimHarness, sim, sim_clock, sim_factory

__all__ = ["sim", "sim_clock", "sim_factory"]

KEY = "secret_agent-key-0123456789abcdef"
LAUNCH = "launch-abc"
URL = "https://cloud.example/api/v1"


def instance(instance_id: str = "i-1", status: str = "active", launch: str | None = LAUNCH,
             tags: Any = None) -> dict[str, Any]:
    if tags is None:
        tags = [] if launch is None else [{"key": "soong:launch-id", "value": launch}]
    return {"id": instance_id, "status": status, "tags": tags}


class Response(io.BytesIO):
    def __init__(self, status: int, body: bytes) -> None:
        super().__init__(body)
        self.status = status


def ok(data: Any) -> Callable[[Any], Any]:
    return lambda request: Response(200, json.dumps({"data": data}).encode())


def raw(status: int, body: bytes) -> Callable[[Any], Any]:
    return lambda request: Response(status, body)


def error(status: int, body: bytes | str | dict[str, Any] = b"",
          headers: dict[str, str] | None = None) -> Callable[[Any], Any]:
    if isinstance(body, dict):
        body = json.dumps(body)
    payload = body.encode() if isinstance(body, str) else body

    def answer(request: Any) -> Any:
        message = Message()
        for name, value in (headers or {}).items():
            message[name] = value
        raise urllib.error.HTTPError(request.full_url, status, "x", message, io.BytesIO(payload))
    return answer


def envelope(code: str, message: str) -> dict[str, Any]:
    return {"error": {"code": code, "message": message}}


def fails(exc: BaseException) -> Callable[[Any], Any]:
    def answer(request: Any) -> Any:
        raise exc
    return answer


def listing(*instances: dict[str, Any]) -> Callable[[Any], Any]:
    return ok(list(instances))


def terminated(*ids: str, status: str = "terminating") -> Callable[[Any], Any]:
    return ok({"terminated_instances": [instance(i, status) for i in ids]})


class Unscripted(BaseException):
    """A request past the script: a BaseException, so no retry loop swallows it."""


class FakeOpener:
    """Answers each request with the next scripted step; records what it was sent."""

    def __init__(self, *steps: Callable[[Any], Any]) -> None:
        self.steps = list(steps)
        self.requests: list[dict[str, Any]] = []

    def open(self, request: Any, timeout: float | None = None) -> Any:
        assert timeout is not None
        self.requests.append({
            "method": request.get_method(), "url": request.full_url,
            "headers": dict(request.header_items()),
            "body": None if request.data is None else json.loads(request.data)})
        if not self.steps:
            raise Unscripted(f"unexpected request {request.get_method()} {request.full_url}")
        return self.steps.pop(0)(request)

    def calls(self) -> list[str]:
        return [f"{r['method']} {r['url'].removeprefix(URL)}" for r in self.requests]


class TopRng(random.Random):
    """``uniform`` answers its upper bound, so the backoff ceilings show."""

    def uniform(self, low: float, high: float) -> float:
        return high


class Run:
    """A Terminator on a fake opener, with its log and the waits it asked for."""

    def __init__(self, *steps: Callable[[Any], Any], give_up_after: int | None = None,
                 **provider: Any) -> None:
        self.opener = FakeOpener(*steps)
        self.lines: list[str] = []
        self.waits: list[float] = []
        self.give_up_after = give_up_after
        config = {"api_url": URL, "api_key": KEY, "launch_id": LAUNCH}
        config.update(provider)
        self.terminator = Terminator(config, log=self.lines.append, wait=self.wait,
                                     opener=self.opener, rng=TopRng())

    def wait(self, seconds: float) -> bool:
        self.waits.append(seconds)
        return self.give_up_after is not None and len(self.waits) >= self.give_up_after

    def terminate(self) -> bool:
        result = self.terminator.terminate("lease_expired")
        assert not self.opener.steps, "scripted answers left unused"
        log = "\n".join(self.lines)
        assert KEY not in log and "Bearer" not in log and "Authorization" not in log
        return result


def test_finds_its_instance_by_tag_and_terminates_it() -> None:
    run = Run(listing(instance("other", launch="someone-else"), instance("i-1"),
                      instance("untagged", launch=None), instance("odd", tags="garbage")),
              terminated("i-1"))
    assert run.terminate() is True
    assert run.opener.calls() == ["GET /instances", "POST /instance-operations/terminate"]
    assert run.opener.requests[1]["body"] == {"instance_ids": ["i-1"]}
    assert run.waits == []
    headers = run.opener.requests[0]["headers"]
    assert headers["Authorization"] == f"Bearer {KEY}"
    assert headers["User-agent"].startswith("soong-agent/")
    assert len(run.lines) == 1 and "terminate accepted: i-1 terminating" in run.lines[0]
    assert "lease_expired" in run.lines[0]


def test_tags_as_a_mapping_are_understood() -> None:
    run = Run(listing(instance("i-1", tags={"soong:launch-id": LAUNCH})), terminated("i-1"))
    assert run.terminate() is True


@pytest.mark.parametrize("status", ["terminating", "terminated"])
def test_an_instance_already_ending_needs_no_terminate(status: str) -> None:
    run = Run(listing(instance("i-1", status)))
    assert run.terminate() is True
    assert run.opener.calls() == ["GET /instances"]


def test_a_list_without_it_is_no_proof_and_is_retried() -> None:
    run = Run(listing(), listing(instance("x", launch="other")), listing(instance("i-1")),
              terminated("i-1"))
    assert run.terminate() is True
    assert run.waits == [1.0, 2.0]
    assert "no instance tagged soong:launch-id=launch-abc" in run.lines[0]


def test_backoff_doubles_up_to_the_cap() -> None:
    run = Run(*[error(503, envelope("provider/internal-unavailable", "down"))] * 8,
              listing(instance("i-1")), terminated("i-1"), backoff_max_seconds=10)
    assert run.terminate() is True
    assert run.waits == [1.0, 2.0, 4.0, 8.0, 10.0, 10.0, 10.0, 10.0]
    assert "list -> 503 provider/internal-unavailable: down; retrying in 1.0 s" in run.lines[0]
    assert len(run.lines) == 9  # one line per attempt


def test_jitter_is_full_and_never_over_the_ceiling() -> None:
    lines: list[str] = []
    waits: list[float] = []

    def wait(seconds: float) -> bool:
        waits.append(seconds)
        return len(waits) >= 40

    opener = FakeOpener(*[error(500)] * 40)
    Terminator({"api_url": URL, "api_key": KEY, "launch_id": LAUNCH, "backoff_max_seconds": 5},
               log=lines.append, wait=wait, opener=opener, rng=random.Random(7)
               ).terminate("manual")
    assert all(0 <= w <= min(5, 2 ** n) for n, w in enumerate(waits))
    assert len(set(waits)) == len(waits)  # drawn, not fixed


@pytest.mark.parametrize("body,content_type,shown", [
    (b"error code: 1015", "text/plain", "429 error code: 1015"),
    (json.dumps(envelope("global/rate-limit-exceeded", "slow down")).encode(),
     "application/json", "429 global/rate-limit-exceeded: slow down"),
    (b"<html>Too Many</html>", "application/json", "429 <html>Too Many</html>"),
    (b"", "text/plain", "429 (empty body)"),
])
def test_429_any_body_with_retry_after_honoured(body: bytes, content_type: str,
                                                shown: str) -> None:
    run = Run(error(429, body, {"Content-Type": content_type, "Retry-After": "7"}),
              listing(instance("i-1")),
              error(429, body, {"Content-Type": content_type}),
              terminated("i-1"))  # the ids are known: straight to terminate
    assert run.terminate() is True
    assert run.waits == [7.0, 2.0]  # Retry-After over the 1 s backoff; without it, backoff
    assert shown in run.lines[0]


def test_retry_after_as_an_http_date() -> None:
    date = email.utils.formatdate(time.time() + 30, usegmt=True)
    run = Run(error(429, b"error code: 1015", {"Retry-After": date}), listing(instance("i-1")),
              terminated("i-1"))
    assert run.terminate() is True
    assert 25 < run.waits[0] <= 30


def test_retry_after_parsing() -> None:
    assert retry_after_seconds("3", 0) == 3.0
    assert retry_after_seconds("1.5", 0) == 1.5
    assert retry_after_seconds("-4", 0) == 0.0
    assert retry_after_seconds("99999", 0) == 600.0  # cut: the instance bills meanwhile
    assert retry_after_seconds("soon", 0) is None
    assert retry_after_seconds("nan", 0) is None
    assert retry_after_seconds(None, 0) is None
    assert retry_after_seconds("Wed, 21 Oct 2015 07:28:00 GMT", 1445412470.0) == 10.0


@pytest.mark.parametrize("step,shown", [
    (error(502, b"<html>bad gateway</html>", {"Content-Type": "text/html"}), "502 <html>"),
    (fails(ConnectionResetError(104, "Connection reset by peer")), "no answer:"),
    (fails(urllib.error.URLError(ConnectionRefusedError(111, "refused"))), "refused"),
    (fails(socket.timeout("timed out")), "timed out"),
    (fails(TimeoutError()), "no answer: TimeoutError"),
    (fails(__import__("http.client").client.RemoteDisconnected("closed")), "closed"),
    (raw(200, b"<html>not json</html>"), "200 malformed answer (not JSON)"),
    (raw(200, b'{"nodata": 1}'), "200 malformed answer (no data)"),
    (raw(200, b'"just a string"'), "200 malformed answer (no data)"),
    (ok({"not": "a list"}), "data is not a list"),
    (error(400, envelope("global/invalid-parameters", "odd")), "400 global/invalid-parameters"),
    (fails(ValueError("a bug in the transport")), "a bug in the transport"),
])
def test_nothing_stops_the_retries(step: Callable[[Any], Any], shown: str) -> None:
    run = Run(step, listing(instance("i-1")), terminated("i-1"))
    assert run.terminate() is True
    assert len(run.waits) == 1
    assert shown in run.lines[0]


@pytest.mark.parametrize("step,relists", [
    (error(503), False), (fails(ConnectionResetError()), False), (raw(200, b"{"), False),
    (ok(["not", "a", "mapping"]), False), (ok({"terminated_instances": "nope"}), True),
])
def test_a_failed_terminate_call_is_retried_from_the_list(step: Callable[[Any], Any],
                                                          relists: bool) -> None:
    # a failed call keeps the ids (straight to terminate next); an answer that does not
    # say is settled by a re-list
    run = Run(listing(instance("i-1")), step, *([listing(instance("i-1"))] if relists else []),
              terminated("i-1"))
    assert run.terminate() is True
    assert run.waits == [1.0]
    assert run.opener.calls()[-2:] == [
        "GET /instances" if relists else "POST /instance-operations/terminate",
        "POST /instance-operations/terminate"]


def test_terminate_404_relists_and_a_relist_can_confirm() -> None:
    run = Run(listing(instance("i-1")),
              error(404, envelope("global/object-does-not-exist", "no such instance")),
              listing(instance("i-1", "terminated")))
    assert run.terminate() is True
    assert run.opener.calls() == ["GET /instances", "POST /instance-operations/terminate",
                                  "GET /instances"]
    assert run.waits == []
    assert "re-list: i-1 terminated" in run.lines[0]


def test_terminate_answer_without_it_is_checked_by_a_relist() -> None:
    run = Run(listing(instance("i-1")), ok({"terminated_instances": []}),
              listing(instance("i-1", "terminating")))
    assert run.terminate() is True
    assert "terminate answered without it; re-list: i-1 terminating" in run.lines[0]


def test_an_answer_still_active_and_a_relist_still_active_retries() -> None:
    run = Run(listing(instance("i-1")), terminated("i-1", status="active"),
              listing(instance("i-1")), terminated("i-1"))
    assert run.terminate() is True
    assert run.waits == [1.0]
    assert "re-list: i-1 active; retrying" in run.lines[0]


def test_a_relist_that_fails_or_loses_it_is_retried() -> None:
    run = Run(listing(instance("i-1")), error(404), error(503),
              listing(instance("i-1")), error(404), listing(),
              listing(instance("i-1")), terminated("i-1"))
    assert run.terminate() is True
    assert run.waits == [1.0, 2.0]
    assert "re-list -> 503" in run.lines[0]
    assert "re-list: not listed" in run.lines[1]


def test_several_instances_with_the_launch_id_all_end() -> None:
    run = Run(listing(instance("a"), instance("b", "terminated"), instance("c")),
              terminated("a", "c"))
    assert run.terminate() is True
    assert run.opener.requests[1]["body"] == {"instance_ids": ["a", "c"]}


@pytest.mark.parametrize("status,code", [(401, "global/invalid-api-key"),
                                         (403, "global/account-inactive")])
def test_a_refused_key_is_loud_and_retried_slowly(status: int, code: str) -> None:
    run = Run(error(status, envelope(code, f"key {KEY} is not valid")),
              listing(instance("i-1")), error(status, envelope(code, "no")),
              terminated("i-1"), auth_retry_seconds=120)
    assert run.terminate() is True
    assert run.waits == [120.0, 120.0]
    assert "the agent's API key was refused: list -> " in run.lines[0]
    assert "keeps retrying every 120 s; the watchdog will stop this instance" in run.lines[0]
    assert "[redacted]" in run.lines[0]  # the server echoed the key: it never reaches the log
    assert "refused: terminate -> " in run.lines[1]


def test_locate_remembers_the_ids_so_the_deadline_needs_one_request() -> None:
    run = Run(error(503), listing(), listing(instance("i-1")), terminated("i-1"))
    assert run.terminator.locate() is True
    assert run.waits == [1.0, 2.0]
    assert run.terminate() is True
    assert run.opener.calls()[-1:] == ["POST /instance-operations/terminate"]
    assert len(run.opener.requests) == 4
    assert "locating the instance: list -> 503" in run.lines[0]
    assert "this instance: i-1 active" in run.lines[2]


def test_locate_gives_up_only_when_wait_says_so() -> None:
    run = Run(error(401), give_up_after=1)
    assert run.terminator.locate() is False
    assert run.waits == [300.0]
    assert "the agent's API key was refused" in run.lines[0]


def test_give_up_only_when_wait_says_so() -> None:
    run = Run(error(503), error(503), error(503), give_up_after=3)
    assert run.terminate() is False
    assert len(run.waits) == 3
    assert "gave up after 3 attempts" in run.lines[-1]


def test_defaults_and_missing_launch_id() -> None:
    run = Run(give_up_after=1, launch_id="")
    assert run.terminate() is False
    assert run.waits == [300.0] and run.opener.requests == []
    assert "no launch_id" in run.lines[0]


def test_a_broken_log_or_wait_does_not_raise() -> None:
    def log(line: str) -> None:
        raise OSError("disk full")

    calls: list[float] = []

    def wait(seconds: float) -> bool:
        calls.append(seconds)
        if len(calls) == 1:
            raise RuntimeError("wait broke")
        return False

    opener = FakeOpener(error(503), listing(instance("i-1")), terminated("i-1"))
    terminator = Terminator({"api_url": URL, "api_key": KEY, "launch_id": LAUNCH}, log=log,
                            wait=wait, opener=opener, rng=TopRng())
    assert terminator.terminate("manual") is True


# -- pre-stop commands ----------------------------------------------------------------------

def pre_stop(*commands: dict[str, Any]) -> list[str]:
    lines: list[str] = []
    Terminator({"api_url": URL, "api_key": KEY, "launch_id": LAUNCH},
               log=lines.append).run_pre_stop(list(commands))
    return lines


def test_pre_stop_commands_run_in_order_one_line_each(tmp_path: Any) -> None:
    marker = tmp_path / "ran"
    lines = pre_stop(
        {"command": [sys.executable, "-c", f"open({str(marker)!r}, 'w').write('1')"],
         "timeout_seconds": 30},
        {"command": "echo first; echo 'it broke' >&2; exit 3", "timeout_seconds": 30},
        {"command": "true"})
    assert marker.read_text() == "1"
    assert len(lines) == 3
    assert lines[0].startswith("pre-stop command 1/3 (") and ": exit 0 after" in lines[0]
    assert ": exit 3 after" in lines[1] and lines[1].endswith(": it broke")
    assert "exit 0" in lines[2]


def test_pre_stop_timeout_kills_the_whole_group() -> None:
    # the shell's background child keeps the pipe open: only a group kill ends it
    lines = pre_stop({"command": "sleep 60 & sleep 60", "timeout_seconds": 0.3})
    assert lines == ["pre-stop command 1/1 (sleep 60 & sleep 60): killed after its timeout "
                     "of 0.3 s"]


def test_pre_stop_bad_entries_are_one_line_each() -> None:
    lines = pre_stop({"command": ["/nonexistent/program"]}, {"command": ""}, {"command": 5},
                     {"command": ["ok", 3]}, "not a mapping")  # type: ignore[arg-type]
    assert len(lines) == 5
    assert "could not start" in lines[0]
    assert all("skipped" in line for line in lines[1:])


# -- against the real simulator -------------------------------------------------------------

def _launch(sim: SimHarness, launch_id: str) -> str:
    return sim.launch(tags=[{"key": "soong:launch-id", "value": launch_id}])


def _sim_terminator(sim: SimHarness, launch_id: str, *, key: str | None = None,
                    wait: Callable[[float], bool]) -> tuple[Terminator, list[str]]:
    lines: list[str] = []
    terminator = Terminator({"api_url": sim.api_url, "api_key": key or sim.api_key,
                             "launch_id": launch_id, "request_timeout_seconds": 5,
                             "backoff_max_seconds": 2},
                            log=lines.append, wait=wait)
    return terminator, lines


def test_simulator_terminates_the_tagged_instance_only(sim: SimHarness) -> None:
    other = _launch(sim, "someone-else")
    mine = _launch(sim, "mine")
    terminator, lines = _sim_terminator(sim, "mine", wait=lambda s: pytest.fail("waited"))
    assert terminator.terminate("lease_expired") is True
    assert sim.instance(mine)["status"] in ("terminating", "terminated")
    assert sim.instance(other)["status"] not in ("terminating", "terminated")
    assert len(lines) == 1 and sim.api_key not in lines[0]
    # a second run finds it ending and sends no terminate
    again, _ = _sim_terminator(sim, "mine", wait=lambda s: pytest.fail("waited"))
    assert again.terminate("lease_expired") is True


def _fault_until(sim: SimHarness, attempts: int, cleared: dict[str, Any]
                 ) -> tuple[Callable[[float], bool], list[float]]:
    """A terminator's wait that switches the simulator's fault off (the knobs
    ``cleared``) after ``attempts`` failed attempts, and the waits it was asked for."""
    waits: list[float] = []

    def wait(seconds: float) -> bool:
        waits.append(seconds)
        if len(waits) == attempts:
            sim.control("PATCH", "/knobs", cleared)
        return False

    return wait, waits


def test_simulator_503s_for_a_while_then_terminated(sim: SimHarness) -> None:
    mine = _launch(sim, "mine")
    sim.control("PATCH", "/knobs", {"error_rate": 1.0, "error_status": 503,
                                         "fault_seed": 1})
    wait, waits = _fault_until(sim, 3, {"error_rate": 0.0})  # three failed attempts
    terminator, lines = _sim_terminator(sim, "mine", wait=wait)
    assert terminator.terminate("hard_timeout") is True
    assert len(waits) == 3
    assert sim.instance(mine)["status"] in ("terminating", "terminated")
    assert all("503" in line for line in lines[:3])


def test_simulator_resets_for_a_while_then_terminated(sim: SimHarness) -> None:
    mine = _launch(sim, "mine")
    sim.control("PATCH", "/knobs", {"reset_rate": 1.0, "fault_seed": 2})
    wait, _ = _fault_until(sim, 2, {"reset_rate": 0.0})
    terminator, lines = _sim_terminator(sim, "mine", wait=wait)
    assert terminator.terminate("idle_timeout") is True
    assert sim.instance(mine)["status"] in ("terminating", "terminated")
    assert "no answer" in lines[0]


@pytest.mark.parametrize("body", ["text", "json"])
def test_simulator_429s_honoured_then_terminated(sim: SimHarness, body: str) -> None:
    mine = _launch(sim, "mine")
    sim.control("PATCH", "/knobs", {"rate_limit": True, "rate_limit_mode": "strict",
                                    "rate_limit_body": body})
    sim.api("GET", "/instances")  # uses the second's one request: the agent meets a 429
    waits: list[float] = []

    def wait(seconds: float) -> bool:  # the limiter runs on wall time: really wait
        waits.append(seconds)
        time.sleep(min(seconds, 3.0))
        return len(waits) > 20

    terminator, lines = _sim_terminator(sim, "mine", wait=wait)
    assert terminator.terminate("lease_expired") is True
    sim.control("PATCH", "/knobs", {"rate_limit": False})
    assert sim.instance(mine)["status"] in ("terminating", "terminated")
    refused = [line for line in lines if " 429 " in line]
    assert refused, lines
    if body == "text":
        assert "429 error code: 1015" in refused[0]
    else:
        assert "global/rate-limit-exceeded" in refused[0]
    assert waits[0] >= 1.0  # Retry-After (whole seconds) honoured


def test_simulator_revoked_key_is_loud_and_retried(sim: SimHarness) -> None:
    mine = _launch(sim, "mine")
    minted = sim.control("POST", "/keys", {"name": "agent"})
    sim.control("DELETE", f"/keys/{minted['prefix']}")
    terminator, lines = _sim_terminator(sim, "mine", key=minted["key"],
                                        wait=lambda seconds: True)
    assert terminator.terminate("lease_expired") is False
    assert sim.instance(mine)["status"] not in ("terminating", "terminated")
    assert "the agent's API key was refused: list -> 401" in lines[0]
    assert minted["key"] not in "\n".join(lines)
