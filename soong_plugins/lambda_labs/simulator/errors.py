"""The API's errors, exactly as the spec's ``ApiError*`` schemas define them.

Each constructor below is named after the schema it produces; its status code and
``code`` are the ones the spec pairs it with, and ``suggestion`` is present wherever
that schema requires it. Clients must act on ``code`` (the spec says ``message`` and
``suggestion`` may change), so messages here are free to be helpful.
"""

from __future__ import annotations

import math
from typing import Any


class ApiError(Exception):
    """An error response: HTTP status, the spec's error code, message, suggestion."""

    def __init__(self, status: int, code: str, message: str, suggestion: str | None = None,
                 headers: dict[str, str] | None = None, text: str | None = None) -> None:
        super().__init__(message)
        self.status = status
        self.code = code
        self.message = message
        self.suggestion = suggestion
        self.headers = dict(headers or {})
        self.text = text
        """A plain-text body to send instead of the envelope (an edge's answer)."""

    def body(self) -> dict[str, Any]:
        error: dict[str, Any] = {"code": self.code, "message": self.message}
        if self.suggestion is not None:
            error["suggestion"] = self.suggestion
        return {"error": error}

    def payload(self) -> Any:
        """What the reply carries: :attr:`text` (sent as ``text/plain``) when set, else
        the JSON envelope."""
        return self.text if self.text is not None else self.body()

    def __repr__(self) -> str:
        return f"ApiError({self.status}, {self.code!r}, {self.message!r})"


def unauthorized() -> ApiError:
    """ApiErrorUnauthorized (401)."""
    return ApiError(401, "global/invalid-api-key", "API key was invalid, expired, or deleted.",
                    "Check your API key or create a new one, then try again. The simulator's "
                    "key is printed by `soong sim up`.",
                    headers={"WWW-Authenticate": 'Bearer realm="soong simulator"'})


def account_inactive() -> ApiError:
    """ApiErrorAccountInactive (403)."""
    return ApiError(403, "global/account-inactive", "Your account is inactive.",
                    "Make sure you have verified your email address and have a valid payment "
                    "method. Contact Support if problems continue.")


def invalid_parameters(message: str, suggestion: str | None = None) -> ApiError:
    """ApiErrorInvalidParameters (400)."""
    return ApiError(400, "global/invalid-parameters", message, suggestion)


def instance_not_found(instance_id: str) -> ApiError:
    """ApiErrorInstanceNotFound (404)."""
    return ApiError(404, "global/object-does-not-exist",
                    f"Specified instance does not exist: {instance_id}.",
                    "List your instances to see their IDs.")


def launch_resource_not_found(what: str, suggestion: str) -> ApiError:
    """ApiErrorLaunchResourceNotFound (404; suggestion required)."""
    return ApiError(404, "global/object-does-not-exist", what, suggestion)


def insufficient_capacity(type_name: str, region: str) -> ApiError:
    """ApiErrorInsufficientCapacity (400)."""
    return ApiError(400, "instance-operations/launch/insufficient-capacity",
                    f"Not enough capacity to fulfill launch request: no {type_name} "
                    f"available in {region}.",
                    "Choose another region or instance type; GET /instance-types lists the "
                    "regions with capacity.")


def file_system_in_wrong_region(name: str, fs_region: str, region: str) -> ApiError:
    """ApiErrorFileSystemInWrongRegion (400)."""
    return ApiError(400, "instance-operations/launch/file-system-in-wrong-region",
                    f"Filesystem {name!r} is in {fs_region}, not in {region}.",
                    "Launch in the filesystem's region, or attach no filesystem.")


def quota_exceeded(what: str) -> ApiError:
    """ApiErrorQuotaExceeded (400; suggestion required)."""
    return ApiError(400, "global/quota-exceeded", f"Quota exceeded: {what}.",
                    "Contact Support to increase your quota.")


def duplicate(message: str) -> ApiError:
    """ApiErrorDuplicate (400)."""
    return ApiError(400, "global/duplicate", message, "Choose another name.")


def filesystem_not_found(filesystem_id: str) -> ApiError:
    """ApiErrorFilesystemNotFound (404)."""
    return ApiError(404, "global/object-does-not-exist",
                    f"Filesystem was not found: {filesystem_id}.")


def filesystem_in_use(name: str) -> ApiError:
    """ApiErrorFilesystemInUse (400)."""
    return ApiError(400, "filesystems/filesystem-in-use",
                    f"Filesystem {name!r} is mounted on a running instance.",
                    "Terminate the instances using it, then delete it.")


def firewall_ruleset_not_found() -> ApiError:
    """ApiErrorFirewallRulesetNotFound (404; suggestion required)."""
    return ApiError(404, "global/object-does-not-exist",
                    "Firewall ruleset does not exist or you do not have permission to access it.",
                    "Check your firewall ruleset ID and try again.")


def firewall_ruleset_in_use() -> ApiError:
    """ApiErrorFirewallRulesetInUse (400; suggestion required)."""
    return ApiError(400, "firewall-rulesets/firewall-ruleset-in-use",
                    "Firewall ruleset is in use by one or more instances.",
                    "Terminate all instances that are using the ruleset before deleting it.")


def internal(status: int = 500) -> ApiError:
    """ApiErrorInternal for 500; the spec's provider error for 502/503/504."""
    if status == 500:
        return ApiError(500, "global/internal-error", "An internal server error occurred.",
                        "Try again later. Contact Support if the problem persists.")
    return ApiError(status, "provider/internal-unavailable", "Provider unavailable",
                    "Try again shortly")


RATE_LIMIT_CODE = "global/rate-limit-exceeded"
"""The spec documents the limits but no 429 schema: this code is the simulator's choice
for the JSON body; clients should act on the status and ``Retry-After``."""


def rate_limited(retry_after: float, what: str, body: str = "text") -> ApiError:
    """429 with ``Retry-After``. ``body="text"``: Cloudflare's plain text
    :data:`~soong_plugins.lambda_labs.spec.EDGE_RATE_LIMIT_BODY`, as Lambda's edge
    answers; ``"json"``: the error envelope of the spec's introduction."""
    from soong_plugins.lambda_labs.spec import EDGE_RATE_LIMIT_BODY

    seconds = max(1, math.ceil(retry_after))
    return ApiError(429, RATE_LIMIT_CODE, f"Too many requests: {what}.",
                    f"Retry after {seconds} s.", headers={"Retry-After": str(seconds)},
                    text=EDGE_RATE_LIMIT_BODY if body == "text" else None)


def no_such_path(method: str, path: str) -> ApiError:
    return ApiError(404, "global/object-does-not-exist", f"No such endpoint: {method} {path}.",
                    "See the Lambda Cloud API reference for the paths it serves.")


def method_not_allowed(method: str, path: str, allowed: list[str]) -> ApiError:
    return ApiError(405, "global/method-not-allowed",
                    f"{method} is not allowed on {path}.", f"Use {', '.join(allowed)}.",
                    headers={"Allow": ", ".join(allowed)})
