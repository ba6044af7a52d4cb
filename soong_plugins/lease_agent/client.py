"""The laptop's client of an instance's agent API (DESIGN Interfaces, "agent API").

:class:`AgentClient` speaks to one agent at a base URL (what :mod:`.reach` gives: the
simulator's ``agent_url``, or a local port forwarded over SSH) with the instance's
bearer token: :meth:`health`, :meth:`status`, :meth:`extend`, :meth:`activity`,
:meth:`shutdown`. Every failure is an :class:`AgentError` in one line saying which
instance and what to do: no answer, a refused token, the agent's own
``{"error": {"code", "message"}}``, an answer that is not the JSON object it should
be. The token is sent only in the ``Authorization`` header and appears in no message.
"""

from __future__ import annotations

import json
import urllib.request
from typing import Any, Mapping

from soong_core.errors import SoongError

TIMEOUT_S = 10.0
MAX_ANSWER = 1024 * 1024


class AgentError(SoongError):
    """The agent could not be asked, or said no; ``code`` is its error code or None."""

    def __init__(self, message: str, *, code: str | None = None, status: int | None = None,
                 hints: list[str] | None = None,
                 fields: Mapping[str, Any] | None = None) -> None:
        super().__init__(message, hints=hints or [])
        self.code = code
        self.status = status
        self.fields: Mapping[str, Any] = fields or {}
        """The agent's error object as it is (``lease_deadline``, ``max_hours``...)."""


class _NoRedirect(urllib.request.HTTPRedirectHandler):
    """An agent never redirects: following one would send its token elsewhere."""

    def redirect_request(self, *args: Any, **kwargs: Any) -> None:
        return None


class AgentClient:
    def __init__(self, base_url: str, token: str, *, instance_id: str,
                 timeout: float = TIMEOUT_S) -> None:
        self.base_url = base_url.rstrip("/")
        self._token = token
        self.instance_id = instance_id
        self.timeout = timeout

    def __repr__(self) -> str:  # never the token
        return f"AgentClient({self.base_url!r}, instance_id={self.instance_id!r})"

    def health(self) -> dict[str, Any]:
        return self._call("GET", "/health")

    def status(self) -> dict[str, Any]:
        return self._call("GET", "/status")

    def extend(self, hours: float, expected_deadline: float) -> dict[str, Any]:
        return self._call("POST", "/extend", {"hours": hours,
                                              "expected_deadline": expected_deadline})

    def activity(self, source: str | None = None) -> dict[str, Any]:
        return self._call("POST", "/activity", {} if source is None else {"source": source})

    def shutdown(self, reason: str | None = None) -> dict[str, Any]:
        return self._call("POST", "/shutdown", {} if reason is None else {"reason": reason})

    def _call(self, method: str, path: str, body: Mapping[str, Any] | None = None
              ) -> dict[str, Any]:
        import socket
        import urllib.error

        from soong_core.urlopen import opener

        data = None if body is None else json.dumps(body).encode()
        request = urllib.request.Request(
            self.base_url + path, data=data, method=method,
            headers={"Authorization": f"Bearer {self._token}",
                     "Content-Type": "application/json", "Accept": "application/json"})
        who = f"the agent of {self.instance_id}"
        try:
            with opener(self.base_url, _NoRedirect()).open(request,
                                                          timeout=self.timeout) as answer:
                raw = answer.read(MAX_ANSWER + 1)
                status = answer.status
        except urllib.error.HTTPError as refused:
            raw = refused.read(MAX_ANSWER + 1)
            status = refused.code
            refused.close()
        except (urllib.error.URLError, socket.timeout, TimeoutError, OSError) as exc:
            reason = getattr(exc, "reason", exc)
            text = " ".join(str(getattr(reason, "strerror", None) or reason).split())
            raise AgentError(f"{who} does not answer ({text})",
                             hints=["it may still be starting; `soong agent status` "
                                    "asks again"]) from None
        document = _json(raw)
        if 200 <= status < 300:
            if document is None:
                raise AgentError(f"{who} answered {method} {path} with something other "
                                 "than a JSON object", status=status)
            return document
        said_error = (document or {}).get("error")
        code = message = None
        if isinstance(said_error, dict):
            code = said_error.get("code") if isinstance(said_error.get("code"), str) else None
            message = (said_error.get("message")
                       if isinstance(said_error.get("message"), str) else None)
        if status == 401:
            raise AgentError(f"{who} refused the token soong keeps for it", code=code,
                             status=status,
                             hints=["the instance may have been given another agent; "
                                    "stop it with `soong stop` if it is not yours"])
        said = " ".join((message or f"HTTP {status}").split())[:300]
        raise AgentError(f"{who} refused {method} {path}: {said}", code=code, status=status,
                         fields=said_error if isinstance(said_error, dict) else None)


def _json(raw: bytes) -> dict[str, Any] | None:
    if len(raw) > MAX_ANSWER:
        return None
    try:
        document = json.loads(raw.decode("utf-8"))
    except (UnicodeDecodeError, ValueError):
        return None
    return document if isinstance(document, dict) else None
