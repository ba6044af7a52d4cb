"""examples/soong-jupyter-activity: a third party's activity source, against a real server.

The source is run against a tiny Jupyter-like HTTP server this test starts on
127.0.0.1 (``/api/kernels``, token checked), through every state it reports.
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Iterator

import pytest

from soong_core.models import ActivitySample, ActivityState
from soong_core.testing import (Answer, LocalServer, Request, SoongEnv, free_port,
                                install_offline)

EXAMPLE = Path(__file__).resolve().parent.parent / "examples" / "soong-jupyter-activity"
TOKEN = "s3cr3t-jupyter-token-4a1f"
WALL = datetime(2026, 12, 3, 12, 0, 0, tzinfo=timezone.utc).timestamp()
"""The host's wall clock as the tests inject it."""


@pytest.fixture(autouse=True)
def _example_importable(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.syspath_prepend(str(EXAMPLE))


def iso(stamp: float) -> str:
    """A moment as Jupyter writes it (``isoformat`` of UTC, with a ``Z``)."""
    return datetime.fromtimestamp(stamp, tz=timezone.utc).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def kernel(state: str = "idle", age_s: float = 3600.0, connections: int = 1) -> dict[str, Any]:
    return {"id": f"k-{state}-{age_s}", "name": "python3", "last_activity": iso(WALL - age_s),
            "execution_state": state, "connections": connections}


class FakeJupyter:
    """What the server answers next; every request it saw, with its headers."""

    def __init__(self) -> None:
        self.kernels: list[dict[str, Any]] = []
        self.status = 200
        self.body: bytes | None = None
        """Sent as is instead of the kernels, when set."""
        self.location: str | None = None
        self.token: str | None = TOKEN
        self.server = LocalServer(self.answer)
        self.url = self.server.url

    def answer(self, request: Request) -> Answer:
        status, body = self.status, self.body
        if request.path != "/api/kernels":
            status, body = 404, b'{"message": "Not Found"}'
        elif self.token is not None and \
                request.headers.get("Authorization") != f"token {self.token}":
            status, body = 403, b'{"message": "Forbidden"}'
        if body is None:
            body = json.dumps(self.kernels).encode()
        moved = {"Location": self.location} if self.location and status in (301, 302, 307) \
            else None
        return Answer(body, status=status, content_type="application/json", headers=moved)

    @property
    def requests(self) -> list[tuple[str, dict[str, str]]]:
        return [(r.path, r.headers) for r in self.server.requests]

    def stop(self) -> None:
        self.server.close()


@pytest.fixture
def jupyter() -> Iterator[FakeJupyter]:
    fake = FakeJupyter()
    try:
        yield fake
    finally:
        fake.stop()


@pytest.fixture
def token_file(tmp_path: Path) -> Path:
    path = tmp_path / "jupyter-token"
    path.write_text(TOKEN + "\n")
    return path


def closed_port() -> int:
    """A port on 127.0.0.1 nobody listens on (opened by this test, then closed)."""
    return free_port()


def source(url: str, token_file: Path | None = None, **settings: Any) -> Any:
    from soong_jupyter_activity.source import JupyterSource

    return JupyterSource({"url": url, "token_file": None if token_file is None else str(token_file),
                          **settings}, wall=lambda: WALL, environ={})


def look(src: Any) -> ActivitySample:
    """One look, checked the way the agent needs every look to be."""
    sample = src.sample(1000.0)
    assert isinstance(sample, ActivitySample)
    assert "\n" not in sample.detail and TOKEN not in sample.detail
    assert TOKEN not in json.dumps(dict(sample.health), allow_nan=False)
    assert sample.last_activity is None
    return sample


# -- states, against the real server ---------------------------------------------------


def test_a_running_cell_is_active_and_the_token_is_sent(jupyter: FakeJupyter,
                                                        token_file: Path) -> None:
    jupyter.kernels = [kernel("idle", age_s=7200), kernel("busy", age_s=7200)]
    sample = look(source(jupyter.url + "/", token_file))
    assert sample.state is ActivityState.ACTIVE and sample.detail == "1 of 2 kernels busy"
    assert sample.health == {"kernels": 2, "busy": 1, "url": jupyter.url}
    [(path, headers)] = jupyter.requests
    assert path == "/api/kernels" and headers["Authorization"] == f"token {TOKEN}"


def test_a_forgotten_notebook_is_idle_a_recent_one_active(jupyter: FakeJupyter,
                                                         token_file: Path) -> None:
    jupyter.kernels = [kernel("idle", age_s=121), kernel("idle", age_s=900)]
    forgotten = look(source(jupyter.url, token_file))
    assert forgotten.state is ActivityState.IDLE
    assert forgotten.detail == "2 kernels, none busy, last active 121 s ago by the wall clock"
    assert forgotten.health == {"kernels": 2, "busy": 0, "url": jupyter.url}
    # the newest kernel decides, and the window's edge counts as recent
    jupyter.kernels = [kernel("idle", age_s=900), kernel("idle", age_s=120)]
    recent = look(source(jupyter.url, token_file))
    assert recent.state is ActivityState.ACTIVE and "last active 120 s ago" in recent.detail
    assert look(source(jupyter.url, token_file, recent_seconds=60)).state is ActivityState.IDLE
    # busy_only: a recent but finished cell is no activity, a running one is
    assert look(source(jupyter.url, token_file, busy_only=True)).state is ActivityState.IDLE
    jupyter.kernels.append(kernel("busy", age_s=5000))
    assert look(source(jupyter.url, token_file, busy_only=True)).state is ActivityState.ACTIVE


def test_no_kernels_and_kernels_without_last_activity_are_idle(jupyter: FakeJupyter) -> None:
    jupyter.token = None
    sample = look(source(jupyter.url))
    assert sample.state is ActivityState.IDLE and sample.detail == "no kernels"
    assert sample.health == {"kernels": 0, "busy": 0, "url": jupyter.url}
    assert "Authorization" not in jupyter.requests[0][1]
    jupyter.kernels = [{"id": "k", "execution_state": "starting"},
                       {"id": "j", "execution_state": "idle", "last_activity": "yesterday"}]
    sample = look(source(jupyter.url))
    assert sample.state is ActivityState.IDLE and sample.detail.endswith("no last_activity")


def test_a_server_that_never_answered_is_unavailable(tmp_path: Path) -> None:
    url = f"http://127.0.0.1:{closed_port()}"
    src = source(url)
    for _ in range(5):  # never unhealthy: it never worked
        sample = look(src)
        assert sample.state is ActivityState.UNAVAILABLE
        assert sample.detail.startswith(f"no answer from {url}: ")
        assert sample.health == {"kernels": None, "busy": None, "url": url}


def test_a_wrong_or_missing_token_is_unavailable_never_shown(jupyter: FakeJupyter,
                                                            tmp_path: Path) -> None:
    jupyter.kernels = [kernel("busy")]
    wrong = tmp_path / "wrong"
    wrong.write_text("not-the-token")
    sample = look(source(jupyter.url, wrong))
    assert sample.state is ActivityState.UNAVAILABLE
    assert "HTTP 403" in sample.detail and "token_file" in sample.detail
    assert "not-the-token" not in sample.detail
    missing = look(source(jupyter.url, tmp_path / "absent"))
    assert missing.state is ActivityState.UNAVAILABLE and "cannot read token_file" in missing.detail
    wrong.write_text("two words")
    assert "one word" in look(source(jupyter.url, wrong)).detail
    wrong.write_text("  \n")
    assert "is empty" in look(source(jupyter.url, wrong)).detail
    # none of these reached the server with a header that could carry junk
    assert all(h.get("Authorization") == "token not-the-token" for _, h in jupyter.requests)


def test_three_failures_after_an_answer_are_unhealthy_and_an_answer_heals(
        jupyter: FakeJupyter, token_file: Path) -> None:
    jupyter.kernels = [kernel("busy")]
    src = source(jupyter.url, token_file)
    assert look(src).state is ActivityState.ACTIVE
    jupyter.status, jupyter.body = 500, b'{"message": "boom"}'
    first = look(src)
    assert first.state is ActivityState.UNAVAILABLE and "HTTP 500" in first.detail
    assert "(1 of 3 before unhealthy)" in first.detail
    jupyter.status, jupyter.body = 200, b"<html>login</html>"
    second = look(src)
    assert second.state is ActivityState.UNAVAILABLE and "not JSON" in second.detail
    jupyter.body = b'{"kernels": []}'
    third = look(src)
    assert third.state is ActivityState.UNHEALTHY and "not a list of kernels" in third.detail
    assert third.detail.startswith(f"{jupyter.url} failed 3 times in a row: ")
    jupyter.body = None
    assert look(src).state is ActivityState.ACTIVE
    jupyter.body = b"[]"  # and the count starts again
    jupyter.status = 503
    assert look(src).state is ActivityState.UNAVAILABLE


def test_a_server_that_died_becomes_unhealthy(token_file: Path) -> None:
    fake = FakeJupyter()
    try:
        src = source(fake.url, token_file)
        assert look(src).state is ActivityState.IDLE
    finally:
        fake.stop()
    states = [look(src).state for _ in range(4)]
    assert states == [ActivityState.UNAVAILABLE, ActivityState.UNAVAILABLE,
                      ActivityState.UNHEALTHY, ActivityState.UNHEALTHY]


def test_redirects_are_not_followed(jupyter: FakeJupyter, token_file: Path) -> None:
    jupyter.status, jupyter.location = 302, "/login?next=%2Fapi%2Fkernels"
    sample = look(source(jupyter.url, token_file))
    assert sample.state is ActivityState.UNAVAILABLE and "HTTP 302" in sample.detail
    assert [path for path, _ in jupyter.requests] == ["/api/kernels"]


def test_a_huge_answer_is_cut(jupyter: FakeJupyter, token_file: Path) -> None:
    from soong_jupyter_activity.source import MAX_BODY

    jupyter.body = b"[" + b" " * MAX_BODY + b"]"
    sample = look(source(jupyter.url, token_file))
    assert sample.state is ActivityState.UNAVAILABLE and "larger than" in sample.detail


def test_a_server_that_never_replies_times_out() -> None:
    with socket.socket() as listener:  # accepts connections (the kernel does), never answers
        listener.bind(("127.0.0.1", 0))
        listener.listen(4)
        url = f"http://127.0.0.1:{listener.getsockname()[1]}"
        sample = look(source(url, timeout_seconds=0.2))
    assert sample.state is ActivityState.UNAVAILABLE and "timed out" in sample.detail


def test_proxies_from_the_environment_are_ignored(jupyter: FakeJupyter, token_file: Path,
                                                  monkeypatch: pytest.MonkeyPatch) -> None:
    dead = f"http://127.0.0.1:{closed_port()}"
    for name in ("http_proxy", "HTTP_PROXY", "https_proxy", "all_proxy"):
        monkeypatch.setenv(name, dead)
    monkeypatch.delenv("no_proxy", raising=False)
    monkeypatch.delenv("NO_PROXY", raising=False)
    jupyter.kernels = [kernel("busy")]
    assert look(source(jupyter.url, token_file)).state is ActivityState.ACTIVE


def test_token_file_lies_under_soong_root(jupyter: FakeJupyter, tmp_path: Path) -> None:
    from soong_jupyter_activity.source import JupyterSource

    (tmp_path / "etc").mkdir()
    (tmp_path / "etc" / "jupyter-token").write_text(TOKEN)
    src = JupyterSource({"url": jupyter.url, "token_file": "/etc/jupyter-token"},
                        wall=lambda: WALL, environ={"SOONG_ROOT": str(tmp_path)})
    assert src.token_file == f"{tmp_path}/etc/jupyter-token"
    assert look(src).state is ActivityState.IDLE


# -- settings -----------------------------------------------------------------------------


def test_defaults_and_the_agents_own_keys() -> None:
    from soong_jupyter_activity.source import JupyterSource

    src = JupyterSource({"enabled": True, "_comment": "the agent's keys"})
    assert (src.url, src.kernels_url) == ("http://127.0.0.1:8888",
                                          "http://127.0.0.1:8888/api/kernels")
    assert (src.token_file, src.busy_only, src.timeout_s, src.recent_s) == (None, False, 5.0, 120.0)
    assert JupyterSource({"url": "https://nb.local:9999/jupyter/"}).kernels_url == \
        "https://nb.local:9999/jupyter/api/kernels"


@pytest.mark.parametrize(("settings", "message"), [
    ({"url": "ftp://127.0.0.1"}, "activity.sources.jupyter.url: must be an http:// or https://"),
    ({"url": 8888}, "activity.sources.jupyter.url: must be an http:// or https:// URL, got 8888"),
    ({"url": "http://127.0.0.1:99999"}, "activity.sources.jupyter.url: must be"),
    ({"url": "http://u:pw@127.0.0.1"}, "activity.sources.jupyter.url: must not hold credentials"),
    ({"url": "http://127.0.0.1/?token=x"}, "activity.sources.jupyter.url: must not hold a query"),
    ({"token_file": "relative/token"}, "activity.sources.jupyter.token_file: must be null or an"),
    ({"busy_only": "yes"}, "activity.sources.jupyter.busy_only: must be true or false"),
    ({"timeout_seconds": 0}, "activity.sources.jupyter.timeout_seconds: must be a number above 0"),
    ({"timeout_seconds": True}, "activity.sources.jupyter.timeout_seconds: must be"),
    ({"timeout_seconds": 600}, "activity.sources.jupyter.timeout_seconds: must be"),
    ({"recent_seconds": -1}, "activity.sources.jupyter.recent_seconds: must be a number of at"),
    ({"recent_seconds": float("inf")}, "activity.sources.jupyter.recent_seconds: must be"),
    ({"urls": "http://x"}, "activity.sources.jupyter.urls: unknown key"),
])
def test_bad_settings_are_one_line_errors(settings: dict[str, Any], message: str) -> None:
    from soong_jupyter_activity.source import JupyterSource

    with pytest.raises(ValueError) as raised:
        JupyterSource(settings)
    assert str(raised.value).startswith(message) and "\n" not in str(raised.value)


def test_every_bad_key_is_named_at_once() -> None:
    from soong_jupyter_activity.source import JupyterSource

    with pytest.raises(ValueError, match=r"busy_only: .*; .*recent_seconds: "):
        JupyterSource({"busy_only": 1, "recent_seconds": "2m"})


@pytest.mark.parametrize(("text", "expected"), [
    ("2026-12-03T11:59:00.822405Z", WALL - 60 + 0.822405),
    ("2026-12-03T11:59:00Z", WALL - 60),
    ("2026-12-03T11:59:00.8Z", WALL - 60 + 0.8),
    ("2026-12-03T11:59:00.123456789+00:00", WALL - 60 + 0.123456789),
    ("2026-12-03T13:59:00+02:00", WALL - 60),
    ("2026-12-03T06:29:00-0530", WALL - 60),
    ("2026-12-03 11:59:00", WALL - 60),
    ("2026-13-03T11:59:00Z", None),
    ("2026-12-03T11:59:00+25:00", None),
    ("yesterday", None),
    (None, None),
    (1764763140, None),
])
def test_parse_time(text: object, expected: float | None) -> None:
    from soong_jupyter_activity.source import parse_time

    got = parse_time(text)
    assert got == pytest.approx(expected) if expected is not None else got is None


# -- the plugin --------------------------------------------------------------------------


def test_the_plugin_registers_the_source_and_names_itself_for_the_bundle() -> None:
    import soong_jupyter_activity
    from soong_core.plugins import make_plugins
    from soong_jupyter_activity.source import JupyterSource

    plugins = make_plugins(entry_points=False)
    plugins.register(soong_jupyter_activity, "jupyter_activity")
    created = plugins.activity_sources().create("jupyter", {"busy_only": True})
    assert isinstance(created, JupyterSource) and created.busy_only is True
    assert created.name == "jupyter"
    assert "soong_jupyter_activity" in plugins.agent_bundle_modules()


def test_soong_plugins_lists_the_installed_example(tmp_path: Path, soong_env: SoongEnv) -> None:
    target = install_offline(EXAMPLE, tmp_path)
    environ = {**os.environ, **soong_env.environ(), "PYTHONPATH": str(target)}
    done = subprocess.run([sys.executable, "-m", "soong_core", "plugins", "--json"],
                          capture_output=True, text=True, env=environ, timeout=60)
    assert done.returncode == 0 and done.stderr == ""
    [row] = [row for row in json.loads(done.stdout) if row["name"] == "jupyter_activity"]
    assert row["distribution"] == "soong-jupyter-activity" and row["status"] == "loaded"
    assert row["hooks"] == ["soong_agent_bundle_modules", "soong_register_activity_sources"]
