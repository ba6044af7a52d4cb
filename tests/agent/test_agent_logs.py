"""The agent's log: one line each, to stderr and a capped file, secrets scrubbed."""

from __future__ import annotations

import io
from pathlib import Path

from agent_units import API_KEY, TOKEN

from instance_agent.logs import MASK, AgentLog


def test_lines_go_to_the_stream_and_the_file(tmp_path: Path) -> None:
    stream = io.StringIO()
    log = AgentLog(tmp_path / "log" / "agent.log", stream=stream)
    log("decision: keep:\nstops in 4h")
    written = (tmp_path / "log" / "agent.log").read_text()
    assert written == stream.getvalue()
    assert written.count("\n") == 1 and written.endswith("decision: keep: stops in 4h\n")
    assert (tmp_path / "log" / "agent.log").stat().st_mode & 0o777 == 0o600


def test_secrets_never_reach_a_line(tmp_path: Path) -> None:
    stream = io.StringIO()
    log = AgentLog(tmp_path / "agent.log", stream=stream, secrets=(TOKEN, API_KEY, ""))
    log(f"oops: Authorization: Bearer {TOKEN}; key {API_KEY}")
    for text in (stream.getvalue(), (tmp_path / "agent.log").read_text()):
        assert TOKEN not in text and API_KEY not in text and text.count(MASK) == 2


def test_the_file_is_rotated_once_past_max_bytes(tmp_path: Path) -> None:
    path = tmp_path / "agent.log"
    log = AgentLog(path, max_bytes=4096, stream=io.StringIO())
    for number in range(200):
        log(f"line {number:04d} " + "x" * 40)
    assert path.stat().st_size <= 4096
    rotated = path.with_name("agent.log.1")
    assert rotated.exists() and rotated.stat().st_size <= 4096
    assert "line 0199" in path.read_text()
    assert not path.with_name("agent.log.2").exists()


def test_an_unwritable_file_never_raises_and_is_reported(tmp_path: Path) -> None:
    (tmp_path / "dir").write_text("a file where the log's folder should be")
    stream = io.StringIO()
    log = AgentLog(tmp_path / "dir" / "agent.log", stream=stream)
    log("first")
    log("second")
    assert log.file_problem and "cannot write the log file" in log.file_problem
    assert stream.getvalue().count("cannot write the log file") == 1
    assert "second" in stream.getvalue()
