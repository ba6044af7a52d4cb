"""The request log and the opt-in body capture.

The log is append-only JSON lines, one per request, that tests and benchmarks read to
count and time what a client did::

    {"ts": 1767225600.12, "sim_time": 1767225612.0, "method": "POST",
     "path": "/api/v1/instance-operations/launch", "query": {}, "operation": "launchInstance",
     "status": 200, "duration_ms": 1.9, "fault": null}

``fault`` names what the simulator did instead of answering normally: ``rate_limited``,
``error``, ``reset`` or ``dropped``. No header, body, key or user_data is ever logged.

The capture file (off unless asked for) adds the bodies, for the conformance tests that
check every request a client sends against the spec. It still holds no secret:
``user_data`` is replaced by a placeholder of its length, a generated private key, a
minted API key or a Jupyter token by a placeholder, and no header is recorded.
"""

from __future__ import annotations

import json
import os
import threading
from pathlib import Path
from typing import Any, Iterator, Mapping

from soong_core.files import FILE_MODE
from soong_plugins.lambda_labs.simulator.store import make_private_dir

CAPTURE_ENV = "SOONG_SIM_CAPTURE"
"""Path of a body capture file, for a simulator started by something else (a CLI test)."""


def user_data_placeholder(size: int) -> str:
    return f"<user_data: {size} bytes>"


PRIVATE_KEY_PLACEHOLDER = "<private key: not captured>"
API_KEY_PLACEHOLDER = "<api key: not captured>"
JUPYTER_TOKEN_PLACEHOLDER = "<jupyter token: not captured>"
SECRET_FIELDS = {"private_key": PRIVATE_KEY_PLACEHOLDER,
                 "jupyter_token": JUPYTER_TOKEN_PLACEHOLDER,
                 "jupyter_url": f"https://jupyter.invalid/?token={JUPYTER_TOKEN_PLACEHOLDER}"}
"""Response fields that carry a secret wherever they appear: a generated SSH private key
(``POST /ssh-keys``), an instance's Jupyter token and the URL that carries it."""
MINTED_KEY_FIELD = "key"
"""``POST /_sim/keys`` answers the minted key in ``data.key`` (only there: a tag's
``key`` is no secret)."""


class JsonLines:
    """An append-only JSON-lines file (0600), safe to write from many threads."""

    def __init__(self, path: str | os.PathLike[str]) -> None:
        self.path = Path(path)
        self._lock = threading.Lock()
        make_private_dir(self.path.parent)
        fd = os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, FILE_MODE)
        self._handle = os.fdopen(fd, "a", encoding="utf-8")

    def append(self, entry: Mapping[str, Any]) -> None:
        line = json.dumps(entry, separators=(",", ":"), default=str) + "\n"
        with self._lock:
            if not self._handle.closed:
                self._handle.write(line)
                self._handle.flush()

    def close(self) -> None:
        with self._lock:
            self._handle.close()


def read_lines(path: str | os.PathLike[str], since: int = 0) -> list[dict[str, Any]]:
    """Entries of a JSON-lines file from line ``since`` (0-based); a torn last line
    (a writer mid-append) is skipped."""
    return list(iter_lines(path, since))


def iter_lines(path: str | os.PathLike[str], since: int = 0) -> Iterator[dict[str, Any]]:
    try:
        handle = open(path, encoding="utf-8")
    except FileNotFoundError:
        return
    with handle:
        for index, line in enumerate(handle):
            if index < since or not line.endswith("\n"):
                continue
            try:
                yield json.loads(line)
            except json.JSONDecodeError:
                continue


def redact_request(body: Any) -> Any:
    """A launch body with ``user_data`` replaced by a placeholder of its length."""
    if isinstance(body, dict) and isinstance(body.get("user_data"), str):
        body = dict(body)
        body["user_data"] = user_data_placeholder(len(body["user_data"].encode("utf-8")))
    return body


def redact_response(body: Any) -> Any:
    """A response with its secrets replaced by placeholders: the fields of
    :data:`SECRET_FIELDS` at any depth (instances come as one object, a list, or inside
    a terminate answer) and a minted API key."""
    redacted = _redact(body)
    data = redacted.get("data") if isinstance(redacted, dict) else None
    if isinstance(data, dict) and isinstance(data.get(MINTED_KEY_FIELD), str):
        redacted["data"] = {**data, MINTED_KEY_FIELD: API_KEY_PLACEHOLDER}
    return redacted


def _redact(value: Any) -> Any:
    if isinstance(value, list):
        return [_redact(item) for item in value]
    if not isinstance(value, dict):
        return value
    return {name: SECRET_FIELDS[name] if name in SECRET_FIELDS and isinstance(item, str)
            else _redact(item) for name, item in value.items()}
