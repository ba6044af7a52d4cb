"""A tiny urllib client for the simulator's API and control endpoint.

For the ``soong sim`` commands and tests: no dependency, no retries, no rate limiting of
its own (tests of a real client's limiter use the provider's client instead). Answers
are ``(status, parsed JSON)``; a connection failure raises :class:`SimUnreachable`.
"""

from __future__ import annotations

import json
import urllib.error
import urllib.request
from dataclasses import dataclass, field
from typing import Any


class SimUnreachable(Exception):
    """Nothing answered at the simulator's address (or the answer was not JSON)."""


class UnexpectedReply(Exception):
    """The simulator answered with an error where data was expected."""


@dataclass(frozen=True)
class Reply:
    status: int
    body: Any
    headers: dict[str, str] = field(default_factory=dict)

    @property
    def data(self) -> Any:
        """The ``data`` payload; :class:`UnexpectedReply` (with the body) otherwise."""
        if not (200 <= self.status < 300 and isinstance(self.body, dict) and "data" in self.body):
            raise UnexpectedReply(f"expected data, got {self.status}: {self.body!r}")
        return self.body["data"]

    @property
    def error_code(self) -> str | None:
        if isinstance(self.body, dict) and isinstance(self.body.get("error"), dict):
            code = self.body["error"].get("code")
            return code if isinstance(code, str) else None
        return None


class SimClient:
    def __init__(self, url: str, api_key: str | None, timeout: float = 10.0) -> None:
        self.url = url.rstrip("/")
        self.api_key = api_key
        self.timeout = timeout

    def request(self, method: str, path: str, body: Any = None, *,
                headers: dict[str, str] | None = None, auth: bool = True,
                raw: bytes | None = None) -> Reply:
        """``method`` on ``path`` (relative to the root URL, e.g. ``/api/v1/instances``)."""
        data = raw if raw is not None else (None if body is None else json.dumps(body).encode())
        request = urllib.request.Request(self.url + path, data=data, method=method)
        request.add_header("Accept", "application/json")
        if data is not None:
            request.add_header("Content-Type", "application/json")
        if auth and self.api_key is not None:
            request.add_header("Authorization", f"Bearer {self.api_key}")
        for name, value in (headers or {}).items():
            request.add_header(name, value)
        try:
            with urllib.request.urlopen(request, timeout=self.timeout) as response:
                return _reply(response.status, response.read(), dict(response.headers))
        except urllib.error.HTTPError as error:
            with error:
                return _reply(error.code, error.read(), dict(error.headers))
        except (urllib.error.URLError, OSError) as exc:
            reason = getattr(exc, "reason", exc)
            raise SimUnreachable(f"no answer from {self.url}: {reason}") from None

    def api(self, method: str, path: str, body: Any = None, **kwargs: Any) -> Reply:
        return self.request(method, "/api/v1" + path, body, **kwargs)

    def control(self, method: str, path: str, body: Any = None) -> Any:
        """A control call's ``data``; SimUnreachable or UnexpectedReply otherwise."""
        return self.request(method, "/_sim" + path, body).data


def _reply(status: int, raw: bytes, headers: dict[str, str]) -> Reply:
    """The parsed JSON; a plain-text answer (the edge's 429) as its text."""
    content_type = next((v for k, v in headers.items() if k.lower() == "content-type"), "")
    if content_type.startswith("text/plain"):
        return Reply(status, raw.decode("utf-8", "replace"), headers)
    try:
        body = json.loads(raw.decode("utf-8")) if raw else None
    except (UnicodeDecodeError, json.JSONDecodeError):
        raise SimUnreachable(f"the answer ({status}) is not JSON: {raw[:80]!r}") from None
    return Reply(status, body, headers)
