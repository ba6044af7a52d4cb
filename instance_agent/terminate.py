"""How the agent stops its own instance: pre-stop commands, then the provider's terminate.

Standard library only (it runs on the instance's own ``python3``). :class:`Terminator`
finds the instance by its ``soong:launch-id`` tag (``GET /instances``), asks
``POST /instance-operations/terminate {"instance_ids": [...]}`` for it (bearer auth, as
the Lambda Cloud spec says), and keeps going until the provider says ``terminating`` or
``terminated`` (``preempted`` too: it no longer bills): an OS shutdown does not stop
billing on Lambda Cloud, so nothing but the provider's word ends the attempts.

- A list without the instance is no proof it is gone (a lost or partial answer looks the
  same): it is listed again. A terminate answer that does not list it, or a 404 from
  terminate, is checked by a re-list in the same attempt.
- 429 (a JSON envelope or Cloudflare's plain-text ``error code: 1015``: a body is never
  assumed to be JSON) waits at least its ``Retry-After`` (seconds or an HTTP date).
- 5xx, connection resets, timeouts, malformed answers and other 4xx wait a capped
  exponential backoff with full jitter (about 1 s at first, ``backoff_max_seconds`` at
  most).
- 401/403: the key was refused (revoked, or the account inactive); logged loudly and
  retried every ``auth_retry_seconds``, since a key fixed on the dashboard may work again.

One log line per attempt. The key travels only in the ``Authorization`` header (never
across a redirect: redirects are not followed) and never reaches the log; every line is
also scrubbed of it, in case an answer echoes it.
"""

from __future__ import annotations

import json
import math
import os
import random
import signal
import subprocess
import time
from typing import Any, Callable, Mapping, Sequence

LAUNCH_ID_TAG = "soong:launch-id"
ENDED = frozenset({"terminating", "terminated", "preempted"})
"""Statuses of an instance the provider no longer bills (or soon stops billing)."""

DEFAULT_REQUEST_TIMEOUT = 10.0
DEFAULT_BACKOFF_MAX = 60.0
DEFAULT_AUTH_RETRY = 300.0
INITIAL_BACKOFF = 1.0
"""Ceiling of the first jittered wait, in seconds; it doubles per failure up to the cap."""
RETRY_AFTER_MAX = 600.0
"""A longer ``Retry-After`` is cut to this: an instance that waits bills."""
DEFAULT_PRE_STOP_TIMEOUT = 60.0


def _version() -> str:
    try:
        from soong_core import __version__
    except ImportError:  # a bundle always carries it
        return "unknown"
    return str(__version__)


class _Answer:
    """One HTTP exchange, reduced to what the retry logic needs."""

    def __init__(self, status: int | None, *, data: Any = None, note: str = "",
                 retry_after: float | None = None) -> None:
        self.status = status          # None: no HTTP answer (network, timeout)
        self.data = data              # the ``data`` payload of a 2xx envelope
        self.note = note              # what went wrong, for the log; "" when nothing
        self.retry_after = retry_after

    @property
    def ok(self) -> bool:
        return self.status is not None and 200 <= self.status < 300 and not self.note

    @property
    def refused(self) -> bool:
        return self.status in (401, 403)


def retry_after_seconds(value: str | None, now: float) -> float | None:
    """``Retry-After`` in seconds from ``now`` (wall time): a number or an HTTP date;
    ``None`` when absent or unreadable; cut to :data:`RETRY_AFTER_MAX`."""
    if not value:
        return None
    value = value.strip()
    try:
        seconds = float(value)
    except ValueError:
        from email.utils import parsedate_to_datetime

        try:
            when = parsedate_to_datetime(value)
        except (TypeError, ValueError, IndexError):
            return None
        if when is None:
            return None
        if when.tzinfo is None:  # an HTTP date is GMT
            from datetime import timezone

            when = when.replace(tzinfo=timezone.utc)
        seconds = when.timestamp() - now
    if not math.isfinite(seconds):
        return None
    return min(max(seconds, 0.0), RETRY_AFTER_MAX)


def _number(value: Any, default: float) -> float:
    """``value`` when it is a finite positive number, else ``default``."""
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return default
    number = float(value)
    return number if math.isfinite(number) and number > 0 else default


def _sleep(seconds: float) -> bool:
    time.sleep(max(0.0, seconds))
    return False


def _opener(url: str) -> Any:
    import urllib.request

    class NoRedirect(urllib.request.HTTPRedirectHandler):
        """A redirect is an answer (retried), never followed: the key stays put."""

        def redirect_request(self, *args: Any, **kwargs: Any) -> None:
            return None

    from soong_core.urlopen import opener

    return opener(url, NoRedirect())


class Terminator:
    """Pre-stop commands and the provider's terminate, with retries that never give up.

    :param provider: ``api_url``, ``api_key``, ``launch_id``, ``request_timeout_seconds``
        (10), ``backoff_max_seconds`` (60), ``auth_retry_seconds`` (300).
    :param log: gets one line per attempt and per pre-stop command.
    :param wait: ``wait(seconds)`` waits that many wall seconds and returns True when the
        caller asks to give up (the daemon exits); default ``time.sleep``, never giving up.
    :param opener: anything with ``open(request, timeout=...)`` as
        :class:`urllib.request.OpenerDirector` has (tests pass a fake).
    :param rng: a :class:`random.Random` for the jitter.
    """

    def __init__(self, provider: Mapping[str, Any], *, log: Callable[[str], None],
                 wait: Callable[[float], bool] | None = None,
                 opener: Any = None, rng: random.Random | None = None) -> None:
        self._api_url = str(provider.get("api_url") or "").rstrip("/")
        key, launch_id = provider.get("api_key"), provider.get("launch_id")
        self._key = key if isinstance(key, str) else ""
        self._launch_id = launch_id if isinstance(launch_id, str) else ""
        self._timeout = _number(provider.get("request_timeout_seconds"),
                                DEFAULT_REQUEST_TIMEOUT)
        self._backoff_max = _number(provider.get("backoff_max_seconds"), DEFAULT_BACKOFF_MAX)
        self._auth_retry = _number(provider.get("auth_retry_seconds"), DEFAULT_AUTH_RETRY)
        self._log_to = log
        self._wait = wait or _sleep
        self._opener = opener
        self._rng = rng or random.Random()
        self._user_agent = f"soong-agent/{_version()}"
        self._ids: list[str] = []
        """The live ids the last list showed for the launch id: terminated directly."""

    @property
    def instance_ids(self) -> list[str]:
        """The live instance ids the latest list showed for this launch (may be empty)."""
        return list(self._ids)

    def _log(self, line: str) -> None:
        if len(self._key) >= 4:
            line = line.replace(self._key, "[redacted]")
        try:
            self._log_to(line)
        except Exception:  # a broken log must not stop the termination
            pass

    # -- pre-stop commands ----------------------------------------------------------------

    def run_pre_stop(self, commands: Sequence[Mapping[str, Any]]) -> None:
        """Run each ``{"command": [argv...] | "shell string", "timeout_seconds": N}`` in
        order; one log line each (exit code, or killed at its timeout). Never raises."""
        try:
            entries = list(commands or ())
        except Exception:
            entries = []
        for number, entry in enumerate(entries, 1):
            try:
                self._run_one(number, len(entries), entry)
            except Exception as exc:  # a pre-stop command never blocks the stop
                self._log(f"pre-stop command {number}/{len(entries)}: failed: "
                          f"{_one_line(exc)}")

    def _run_one(self, number: int, total: int, entry: Mapping[str, Any]) -> None:
        command = entry.get("command") if isinstance(entry, Mapping) else None
        timeout = _number(entry.get("timeout_seconds") if isinstance(entry, Mapping) else None,
                          DEFAULT_PRE_STOP_TIMEOUT)
        if isinstance(command, str) and command.strip():
            argv, shown = ["/bin/sh", "-c", command], command
        elif isinstance(command, list) and command and all(isinstance(a, str) for a in command):
            argv, shown = list(command), " ".join(command)
        else:
            self._log(f"pre-stop command {number}/{total}: skipped: \"command\" must be a "
                      f"non-empty string or list of strings")
            return
        where = f"pre-stop command {number}/{total} ({_shorten(shown, 80)})"
        started = time.monotonic()
        try:
            process = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                                       stderr=subprocess.STDOUT, start_new_session=True)
        except OSError as exc:
            self._log(f"{where}: could not start: {exc.strerror or _one_line(exc)}")
            return
        try:
            output, _ = process.communicate(timeout=timeout)
        except subprocess.TimeoutExpired:
            try:  # the whole group: a shell's children would keep the pipe open
                os.killpg(process.pid, signal.SIGKILL)
            except OSError:
                process.kill()
            process.communicate()
            self._log(f"{where}: killed after its timeout of {timeout:g} s")
            return
        elapsed = time.monotonic() - started
        tail = ""
        if process.returncode != 0 and output.strip():
            last = output.decode("utf-8", "replace").strip().splitlines()[-1]
            tail = ": " + _shorten(last.strip(), 200)
        self._log(f"{where}: exit {process.returncode} after {elapsed:.1f} s{tail}")

    # -- termination ----------------------------------------------------------------------

    def terminate(self, reason: str) -> bool:
        """Terminate the instance; True once the provider reports it terminating or
        terminated, False only when ``wait`` asked to give up. Never raises."""
        attempt = 0
        failures = 0
        while True:
            attempt += 1
            try:
                done, delay, note = self._attempt(failures)
            except Exception as exc:  # a bug here must not end the attempts
                done, delay, note = False, self._backoff(failures), f"error: {_one_line(exc)}"
            if done:
                self._log(f"terminate ({reason}) attempt {attempt}: {note}")
                return True
            failures += 1
            self._log(f"terminate ({reason}) attempt {attempt}: {note}; "
                      f"retrying in {delay:.1f} s")
            try:
                give_up = self._wait(delay)
            except Exception:  # a broken wait still waits, a little
                time.sleep(min(max(delay, 0.0), 1.0))
                give_up = False
            if give_up:
                self._log(f"terminate ({reason}): gave up after {attempt} attempts "
                          f"(the agent is exiting)")
                return False

    def _backoff(self, failures: int) -> float:
        """Full jitter: uniform over [0, min(cap, initial * 2**failures)]."""
        ceiling = min(self._backoff_max, INITIAL_BACKOFF * (2.0 ** min(failures, 60)))
        return self._rng.uniform(0.0, ceiling)

    def _retry_delay(self, answer: _Answer, failures: int) -> float:
        if answer.refused:
            return self._auth_retry
        delay = self._backoff(failures)
        if answer.retry_after is not None:
            delay = max(delay, answer.retry_after)
        return delay

    def _failed(self, step: str, answer: _Answer) -> str:
        if answer.refused:
            return (f"the agent's API key was refused: {step} -> {answer.note}; it keeps "
                    f"retrying every {self._auth_retry:g} s; the watchdog will stop this "
                    f"instance if it can")
        return f"{step} -> {answer.note}"

    def locate(self) -> bool:
        """Find and remember this launch's instance ids ahead of time, so that
        :meth:`terminate` needs one request at the deadline. Lists (retrying as
        ``terminate`` does) until the list shows the instance: True then (or when it has
        ended already); False only when ``wait`` asked to give up. Optional
        (``terminate`` lists by itself); never raises."""
        failures = 0
        while True:
            try:
                listed = self._list()
            except Exception as exc:  # a bug here must not end the agent's duty
                listed = _Answer(None, note=f"error: {_one_line(exc)}")
            if isinstance(listed, list) and listed:
                self._log(f"this instance: {_describe(listed)} "
                          f"({LAUNCH_ID_TAG}={self._launch_id})")
                return True
            if isinstance(listed, _Answer):
                delay = self._retry_delay(listed, failures)
                note = self._failed("list", listed)
            else:
                delay = self._backoff(failures)
                note = f"no instance tagged {LAUNCH_ID_TAG}={self._launch_id} in the list"
            failures += 1
            self._log(f"locating the instance: {note}; retrying in {delay:.1f} s")
            try:
                if self._wait(delay):
                    return False
            except Exception:
                return False

    def _attempt(self, failures: int) -> tuple[bool, float, str]:
        """One pass: list (unless an earlier pass found the ids), terminate what is live,
        re-list when the answer did not say. Returns (done, the wait before the next
        pass, what happened)."""
        if not self._launch_id:
            return False, self._auth_retry, "no launch_id in the provider config"
        ids = self._ids
        if not ids:
            listed = self._list()
            if isinstance(listed, _Answer):
                return False, self._retry_delay(listed, failures), self._failed("list", listed)
            if not listed:
                return (False, self._backoff(failures),
                        f"no instance tagged {LAUNCH_ID_TAG}={self._launch_id} in the list")
            ids = self._ids
            if not ids:
                return True, 0.0, f"{_describe(listed)} (nothing to do)"
        answer = self._request("POST", "/instance-operations/terminate", {"instance_ids": ids})
        if answer.ok and isinstance(answer.data, Mapping):
            returned = answer.data.get("terminated_instances")
            if isinstance(returned, list):
                statuses = {str(i.get("id")): i.get("status") for i in returned
                            if isinstance(i, Mapping)}
                if all(statuses.get(i) in ENDED for i in ids):
                    ended = [{"id": i, "status": statuses[i]} for i in ids]
                    return True, 0.0, f"terminate accepted: {_describe(ended)}"
            said = "terminate answered without it"
        elif answer.ok:
            malformed = _Answer(answer.status, note=f"{answer.status} malformed answer")
            return (False, self._retry_delay(malformed, failures),
                    self._failed("terminate", malformed))
        elif answer.status == 404:
            said = f"terminate -> {answer.note}"
        else:  # the ids stay known: the next pass goes straight to terminate
            return False, self._retry_delay(answer, failures), self._failed("terminate", answer)
        self._ids = []  # what the provider said does not settle it: a fresh list decides
        relisted = self._list()
        if isinstance(relisted, _Answer):
            return (False, self._retry_delay(relisted, failures),
                    f"{said}; " + self._failed("re-list", relisted))
        mine = [i for i in relisted if str(i.get("id")) in ids]
        if mine and all(i.get("status") in ENDED for i in mine):
            return True, 0.0, f"{said}; re-list: {_describe(mine)}"
        shown = _describe(mine) if mine else "not listed"
        return False, self._backoff(failures), f"{said}; re-list: {shown}"

    def _list(self) -> list[Mapping[str, Any]] | _Answer:
        """The listed instances tagged with our launch id, or the failed answer."""
        answer = self._request("GET", "/instances")
        if not answer.ok:
            return answer
        if not isinstance(answer.data, list):
            return _Answer(answer.status,
                           note=f"{answer.status} malformed answer (data is not a list)")
        mine = [i for i in answer.data if isinstance(i, Mapping)
                and _tags(i.get("tags")).get(LAUNCH_ID_TAG) == self._launch_id]
        self._ids = [str(i.get("id")) for i in mine if i.get("status") not in ENDED]
        return mine

    def _request(self, method: str, path: str, body: Any = None) -> _Answer:
        """One HTTP request; every failure comes back as an :class:`_Answer`, never raised."""
        import urllib.error
        import urllib.request

        data = None if body is None else json.dumps(body).encode()
        request = urllib.request.Request(self._api_url + path, data=data, method=method)
        request.add_header("Accept", "application/json")
        request.add_header("User-Agent", self._user_agent)
        if data is not None:
            request.add_header("Content-Type", "application/json")
        request.add_unredirected_header("Authorization", f"Bearer {self._key}")
        if self._opener is None:
            self._opener = _opener(self._api_url)
        try:
            with self._opener.open(request, timeout=self._timeout) as response:
                status = int(response.status)
                raw = response.read()
        except urllib.error.HTTPError as exc:
            headers = exc.headers
            try:
                raw = exc.read() or b""
            except Exception:
                raw = b""
            content_type = (headers.get("Content-Type") or "") if headers is not None else ""
            retry = retry_after_seconds(headers.get("Retry-After") if headers is not None
                                        else None, time.time())
            return _Answer(exc.code, note=_error_note(exc.code, raw, content_type),
                           retry_after=retry)
        except Exception as exc:  # resets, refusals, timeouts, TLS, broken HTTP
            return _Answer(None, note=f"no answer: {network_note(exc)}")
        if not 200 <= status < 300:  # a redirect, not followed
            return _Answer(status, note=f"{status} (unexpected)")
        try:
            decoded = json.loads(raw.decode("utf-8"))
        except (UnicodeDecodeError, ValueError):
            return _Answer(status, note=f"{status} malformed answer (not JSON)")
        if not isinstance(decoded, Mapping) or "data" not in decoded:
            return _Answer(status, note=f"{status} malformed answer (no data)")
        return _Answer(status, data=decoded["data"])


def _error_note(status: int, body: bytes, content_type: str) -> str:
    """``503 code: message`` from the API's envelope, else the body's first line (a
    Cloudflare page, ``error code: 1015``): the body is never assumed to be JSON."""
    text = body[:4096].decode("utf-8", "replace")
    if "json" in content_type or text.lstrip().startswith("{"):
        try:
            error = json.loads(text).get("error")
        except (ValueError, AttributeError):
            error = None
        if isinstance(error, Mapping):
            parts = [p for p in (error.get("code"), error.get("message"))
                     if isinstance(p, str) and p]
            if parts:
                return f"{status} " + _shorten(_one_line(": ".join(parts)), 200)
    first = text.strip().splitlines()[0] if text.strip() else "(empty body)"
    return f"{status} {_shorten(first.strip(), 120)}"


def _tags(value: Any) -> dict[str, str]:
    """The spec's ``[{"key", "value"}, ...]`` (or a plain mapping) -> ``{key: value}``.

    The twin of ``soong_plugins.lambda_labs.convert.tags``, kept apart on purpose: the
    bundle carries no provider plugin (importing that module would bring the Lambda
    plugin's package and ``soong_core.cli`` with it)."""
    if isinstance(value, Mapping):
        return {k: v for k, v in value.items() if isinstance(k, str) and isinstance(v, str)}
    found: dict[str, str] = {}
    if isinstance(value, list):
        for entry in value:
            if isinstance(entry, Mapping) and isinstance(entry.get("key"), str) \
                    and isinstance(entry.get("value"), str):
                found[entry["key"]] = entry["value"]
    return found


def _describe(instances: Sequence[Mapping[str, Any]]) -> str:
    return ", ".join(f"{i.get('id')} {i.get('status')}" for i in instances)


def network_note(exc: BaseException) -> str:
    """A request's failure in one line: the socket's error a URLError wraps, by name."""
    reason = getattr(exc, "reason", None)  # URLError wraps the socket's error
    cause = reason if isinstance(reason, BaseException) else exc
    text = _one_line(cause)
    name = type(cause).__name__
    return name if text == name else _shorten(f"{name}: {text}", 200)


def _one_line(value: object) -> str:
    return " ".join(str(value).split()) or type(value).__name__


def _shorten(text: str, limit: int) -> str:
    return text if len(text) <= limit else text[:limit - 3] + "..."
