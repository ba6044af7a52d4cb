"""The Lambda Cloud API, one method per operation, with the two behaviours the
transport cannot provide on its own:

* **Idempotent launch.** A launch POST is never repeated blindly (DESIGN, "Rules of
  thumb"): after a timeout, a dropped connection or a 5xx, the client lists the
  instances and adopts the one carrying the request's ``soong:launch-id`` tag; only if
  there is none does it try again. A lost reply therefore never bills twice.
* **Batched terminate that survives a stale id.** The API answers 404 for the whole
  call when one id is unknown (and terminates nothing); the client re-lists and retries
  with the ids still running.

Methods return the ``data`` payloads as parsed JSON; :mod:`.convert` turns them into
soong's models. Every error answer becomes a typed error of :mod:`.errors`.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Sequence

from soong_core.models import TAG_LAUNCH_ID
from soong_plugins.lambda_labs import errors
from soong_plugins.lambda_labs.redact import get_logger
from soong_plugins.lambda_labs.transport import (
    LAUNCH_PATH,
    RETRY_STATUSES,
    Reply,
    Transport,
    backoff,
    retry_after,
)

log = get_logger()

LAUNCH_ATTEMPTS = 5
"""Launch POSTs per region before giving up (each reconciled first; each paced by the
launch limit of one per 12 seconds)."""
TERMINATE_ATTEMPTS = 3
ENDED = ("terminated", "preempted")


@dataclass(frozen=True)
class Launched:
    instance_id: str
    adopted: bool = False
    """True when a lost reply was recovered by finding the instance by its launch id."""
    attempts: int = 1


class LambdaClient:
    """Typed calls over a :class:`~.transport.Transport`."""

    def __init__(self, transport: Transport) -> None:
        self.transport = transport

    def __repr__(self) -> str:
        return f"LambdaClient({self.transport.api_url!r})"

    @property
    def api_url(self) -> str:
        return self.transport.api_url

    # -- plumbing ---------------------------------------------------------------------------

    def _call(self, method: str, path: str, body: Any = None, *, action: str = "",
              missing_ok: bool = False) -> Any:
        """The ``data`` of a successful answer; ``None`` for a 404 when ``missing_ok``."""
        reply = self.transport.request(method, path, body)
        if reply.ok:
            return self._data(reply, action)
        if missing_ok and reply.status == 404:
            return None
        raise self._error(reply, action)

    @staticmethod
    def _data(reply: Reply, action: str) -> Any:
        if not isinstance(reply.body, dict) or "data" not in reply.body:
            raise errors.UnexpectedReplyError(
                f"unexpected answer from {errors.SERVICE} ({action or 'HTTP ' + str(reply.status)}"
                f"): {'not JSON' if reply.body is None else 'no data in it'}",
                hints=["try again shortly; if it persists, check lambda.api_url"],
                detail=reply.text or None)
        return reply.body["data"]

    @staticmethod
    def _error(reply: Reply, action: str, regions: Sequence[str] = ()) -> errors.LambdaError:
        if reply.body is None and reply.status >= 400:
            detail = f"HTTP {reply.status}, not JSON: {reply.text}"
            if reply.status >= 500 or reply.status == 429:
                return errors.api_error(reply.status, None, action=action)
            return errors.UnexpectedReplyError(
                f"unexpected answer from {errors.SERVICE} ({action}): HTTP {reply.status}, "
                "not JSON", hints=["check lambda.api_url: it should end in /api/v1"],
                detail=detail)
        return errors.api_error(reply.status, reply.body, action=action, regions=regions)

    # -- catalogue ----------------------------------------------------------------------------

    def instance_types(self) -> Any:
        return self._call("GET", "/instance-types", action="listing instance types")

    def images(self) -> Any:
        return self._call("GET", "/images", action="listing images")

    # -- instances ----------------------------------------------------------------------------

    def instances(self) -> list[Any]:
        data = self._call("GET", "/instances", action="listing instances")
        return data if isinstance(data, list) else []

    def instance(self, instance_id: str) -> Any | None:
        """One instance, or ``None`` when the API does not know it (404)."""
        return self._call("GET", f"/instances/{_segment(instance_id)}",
                          action=f"getting instance {instance_id}", missing_ok=True)

    def find_launched(self, launch_id: str) -> dict[str, Any] | None:
        """The instance whose ``soong:launch-id`` tag is ``launch_id``, if one exists."""
        for entry in self.instances():
            if not isinstance(entry, dict):
                continue
            tags = entry.get("tags")
            for tag in tags if isinstance(tags, list) else []:
                if isinstance(tag, dict) and tag.get("key") == TAG_LAUNCH_ID \
                        and tag.get("value") == launch_id:
                    found: dict[str, Any] = entry
                    return found
        return None

    def launch(self, body: dict[str, Any], launch_id: str, *, action: str,
               region: str) -> Launched:
        """Launch one instance from ``body`` (which carries the ``soong:launch-id`` tag
        ``launch_id``), at most once whatever the network does."""
        attempt = 0
        uncertain = False  # an earlier attempt may have launched without our knowing
        while True:
            attempt += 1
            try:
                reply = self.transport.request("POST", LAUNCH_PATH, body, launch=True)
            except errors.ApiDeadlineError as exc:
                # The API has used up --api-timeout: no listing to reconcile, no retry.
                # If it launched after all, the next command adopts it by its launch id.
                exc.nothing_launched = not uncertain and not exc.maybe_sent
                raise
            except errors.ConnectionFailedError as exc:
                if not exc.maybe_sent:
                    if isinstance(exc, errors.SimulatorNotRunningError) or attempt >= LAUNCH_ATTEMPTS \
                            or not self._backoff(attempt):
                        exc.nothing_launched = not uncertain
                        raise
                    log.info("launch not sent (%s): trying again", exc.message)
                    continue
                uncertain = True
                log.info("launch reply lost (%s): looking for launch %s before any retry",
                         exc.message, launch_id)
                found = self.find_launched(launch_id)
                if found is not None:
                    return self._adopted(found, launch_id, attempt)
                if attempt >= LAUNCH_ATTEMPTS or not self._backoff(attempt):
                    raise
                continue
            if reply.ok:
                data = self._data(reply, action)
                ids = data.get("instance_ids") if isinstance(data, dict) else None
                if not (isinstance(ids, list) and ids and isinstance(ids[0], str)):
                    found = self.find_launched(launch_id)
                    if found is not None:
                        return self._adopted(found, launch_id, attempt)
                    raise errors.UnexpectedReplyError(
                        f"{errors.SERVICE} accepted the launch but named no instance ({action})",
                        hints=["run `soong status` to see whether it is running"])
                return Launched(ids[0], attempts=attempt)
            if reply.status >= 500:
                uncertain = True  # a gateway error may come after the launch happened
            if reply.status not in RETRY_STATUSES or attempt >= LAUNCH_ATTEMPTS:
                raise self._launch_error(reply, action, region, uncertain)
            if reply.status != 429:
                # Look before retrying (an outage answers the listing 5xx too: that is
                # the error to report, the launch's fate being unknown).
                try:
                    found = self.find_launched(launch_id)
                except errors.ProviderUnavailableError:
                    raise self._launch_error(reply, action, region, uncertain) from None
                if found is not None:
                    return self._adopted(found, launch_id, attempt)
            if not self._backoff(attempt, reply):
                raise self._launch_error(reply, action, region, uncertain)
            log.info("launch answered HTTP %d: trying again", reply.status)

    def _launch_error(self, reply: Reply, action: str, region: str,
                      uncertain: bool) -> errors.LambdaError:
        """The error for a launch's last answer. The API refused it (4xx, 429 included):
        nothing was created, unless an earlier attempt of this call went unanswered; a
        5xx (an outage) leaves the launch's fate unknown."""
        error = self._error(reply, action, regions=(region,))
        error.nothing_launched = reply.status < 500 and not uncertain
        return error

    def _adopted(self, found: dict[str, Any], launch_id: str, attempt: int) -> Launched:
        log.info("found launch %s as instance %s: adopted, not launched again", launch_id,
                 found.get("id"))
        return Launched(str(found["id"]), adopted=True, attempts=attempt)

    def _backoff(self, attempt: int, reply: Reply | None = None) -> bool:
        """Wait before the next launch attempt: ``Retry-After`` if the server said, else
        exponential with jitter (the launch limiter still paces the attempt itself).
        ``False``, without waiting, when the wait would pass the ``--api-timeout``
        deadline: the caller gives up with the error it has."""
        delay = retry_after(reply.headers) if reply is not None else None
        if delay is None:
            delay = backoff(attempt)
        return self.transport.pause(delay)

    def terminate(self, instance_ids: Sequence[str]) -> list[Any]:
        """Terminate all of ``instance_ids`` in one call; on a 404 (one id unknown or
        already ended: nothing was terminated) re-list and retry with those still live.
        Returns the ``terminated_instances``."""
        remaining = list(dict.fromkeys(instance_ids))
        for attempt in range(1, TERMINATE_ATTEMPTS + 1):
            if not remaining:
                return []
            reply = self.transport.request("POST", "/instance-operations/terminate",
                                           {"instance_ids": remaining})
            if reply.ok:
                data = self._data(reply, "terminating instances")
                done = data.get("terminated_instances") if isinstance(data, dict) else None
                return done if isinstance(done, list) else []
            if reply.status != 404 or attempt == TERMINATE_ATTEMPTS:
                raise self._error(reply, f"terminating {_count(remaining)}")
            live = {e.get("id") for e in self.instances()
                    if isinstance(e, dict) and e.get("status") not in ENDED}
            gone = [i for i in remaining if i not in live]
            log.info("terminate: %s already gone; retrying with the rest", ", ".join(gone))
            remaining = [i for i in remaining if i in live]
        return []

    def restart(self, instance_ids: Sequence[str]) -> list[Any]:
        data = self._call("POST", "/instance-operations/restart",
                          {"instance_ids": list(dict.fromkeys(instance_ids))},
                          action=f"restarting {_count(instance_ids)}")
        done = data.get("restarted_instances") if isinstance(data, dict) else None
        return done if isinstance(done, list) else []

    # -- SSH keys -----------------------------------------------------------------------------

    def ssh_keys(self) -> Any:
        return self._call("GET", "/ssh-keys", action="listing SSH keys")

    def add_ssh_key(self, name: str, public_key: str | None) -> Any:
        body = {"name": name} if public_key is None else {"name": name, "public_key": public_key}
        return self._call("POST", "/ssh-keys", body, action=f"adding SSH key {name}")

    def delete_ssh_key(self, key_id: str) -> None:
        self._call("DELETE", f"/ssh-keys/{_segment(key_id)}", action=f"deleting SSH key {key_id}")

    # -- filesystems --------------------------------------------------------------------------

    def filesystems(self) -> Any:
        return self._call("GET", "/file-systems", action="listing filesystems")

    def create_filesystem(self, name: str, region: str) -> Any:
        return self._call("POST", "/filesystems", {"name": name, "region": region},
                          action=f"creating filesystem {name} in {region}")

    def delete_filesystem(self, filesystem_id: str) -> None:
        self._call("DELETE", f"/filesystems/{_segment(filesystem_id)}",
                   action=f"deleting filesystem {filesystem_id}")


def _segment(value: str) -> str:
    """An id as one path segment: ids are hex, but a typo must not reach another path."""
    from urllib.parse import quote

    return quote(value, safe="")


def _count(ids: Sequence[str]) -> str:
    return f"{len(ids)} instances" if len(ids) != 1 else f"instance {ids[0]}"
