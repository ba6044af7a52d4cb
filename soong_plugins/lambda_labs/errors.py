"""Lambda Cloud's error codes as typed errors, each with one line saying what to do.

The spec asks clients to act on ``error.code`` and never on ``message`` or
``suggestion`` (they may change), so the type and the hint come from the code; the
API's own message is quoted where it names the culprit (which field, which object).
Every text from the wire goes through :func:`~.redact.redact` first.

Standard library and the core's errors only: the provider imports this before it knows
whether it will ever make a request.
"""

from __future__ import annotations

from typing import Any, Iterable, Sequence
from urllib.parse import urlsplit

from soong_core.errors import ConfigError, SoongError
from soong_plugins.lambda_labs import MISSING_KEY_MESSAGE
from soong_plugins.lambda_labs.redact import redact

SERVICE = "Lambda Cloud"
LOOPBACK_HOSTS = frozenset({"127.0.0.1", "localhost", "::1", "[::1]"})


class LambdaError(SoongError):
    """Anything the Lambda Cloud provider reports: embedding programs catch this (or
    :class:`SoongError`) and read ``code`` and ``status`` when they need more."""

    def __init__(self, message: str, *, hints: Iterable[str] = (), detail: str | None = None,
                 code: str | None = None, status: int | None = None,
                 exit_code: int | None = None) -> None:
        super().__init__(redact(message), hints=[redact(h) for h in hints],
                         detail=redact(detail) if detail else None, exit_code=exit_code)
        self.code = code
        self.status = status


class MissingApiKeyError(ConfigError):
    """No key in the config or ``$LAMBDA_API_KEY``: exit code 2, like any config problem."""

    def __init__(self) -> None:
        super().__init__(MISSING_KEY_MESSAGE)


# -- answers from the API -----------------------------------------------------------------


class ApiError(LambdaError):
    """An error answer of the API (``{"error": {"code", "message", "suggestion"}}``)."""


class InvalidApiKeyError(ApiError):
    pass


class AccountInactiveError(ApiError):
    pass


class NotFoundError(ApiError):
    """``global/object-does-not-exist``: an instance, key, filesystem, type or image."""


class InvalidParametersError(ApiError):
    pass


class InsufficientCapacityError(ApiError):
    """No capacity for the type in the region(s) tried; ``regions`` names them."""

    regions: tuple[str, ...] = ()


class QuotaExceededError(ApiError):
    pass


class FilesystemWrongRegionError(ApiError):
    pass


class FilesystemInUseError(ApiError):
    pass


class DuplicateError(ApiError):
    pass


class ProviderUnavailableError(ApiError):
    """``provider/*``, ``global/internal-error`` and 5xx answers that outlived the retries."""


class RateLimitedError(ApiError):
    """429s that outlived the retries: something else spends this key's allowance."""


# -- no answer --------------------------------------------------------------------------------


class ConnectionFailedError(LambdaError):
    """No answer at all. ``maybe_sent`` is False only when the request surely never
    reached the server (no connection was made): the launch path reconciles before
    retrying otherwise."""

    maybe_sent: bool = True


class SimulatorNotRunningError(ConnectionFailedError):
    maybe_sent = False


class ApiTimeoutError(ConnectionFailedError):
    """One attempt got no answer within its read timeout (retries may follow)."""


class ApiDeadlineError(ConnectionFailedError):
    """The API went ``--api-timeout`` seconds without answering (requests, retries and
    waits together): the command gives up. Not an :class:`ApiTimeoutError`, so nothing
    falls back to a cached answer and carries on waiting: the command ends here."""

    seconds: float = 0.0


class UnexpectedReplyError(LambdaError):
    """A reply that is not the API's JSON (a proxy's HTML page, a truncated body)."""


def is_loopback(url: str) -> bool:
    return (urlsplit(url).hostname or "").lower() in LOOPBACK_HOSTS


def host_of(url: str) -> str:
    parts = urlsplit(url)
    return parts.netloc.rpartition("@")[2] or url


def connection_error(url: str, reason: str, *, refused: bool, timeout: bool = False,
                     seconds: float | None = None) -> ConnectionFailedError:
    """The one line for a request that got no answer from ``url``'s host."""
    if refused and is_loopback(url):
        return SimulatorNotRunningError(
            "simulator not running: run `soong sim up`",
            hints=[f"nothing answers at {host_of(url)} (lambda.api_url); `soong sim status` "
                   "says where the simulator is"])
    host = host_of(url)
    if timeout:
        error: ConnectionFailedError = ApiTimeoutError(
            f"{SERVICE} at {host} did not answer within {seconds:g}s" if seconds else
            f"{SERVICE} at {host} did not answer in time",
            hints=["try again in a minute; if it persists, check https://status.lambda.ai"],
            detail=reason)
        return error
    return ConnectionFailedError(
        f"cannot reach {SERVICE} at {host}: {reason}",
        hints=["check your network connection (and lambda.api_url, if you changed it), "
               "then try again"])


def deadline_error(url: str, seconds: float, *, cause: str | None = None,
                   queued: float | None = None) -> ApiDeadlineError:
    """The one line for an API that did not answer within the command's ``--api-timeout``
    of ``seconds``; ``queued``: it was this account's rate limit, whose next free slot is
    that far ahead, that would have outlasted it."""
    if queued is not None:
        error = ApiDeadlineError(
            f"gave up on {SERVICE} after {seconds:g} s (--api-timeout): the account's rate "
            f"limit has no free slot for {queued:.0f} s",
            hints=["other soong commands may be using this account: let them finish, or "
                   "allow more with --api-timeout SECONDS"])
    else:
        hint = ("is the simulator stuck? `soong sim status` says whether it runs"
                if is_loopback(url) else
                "try again in a minute; if it persists, check https://status.lambda.ai")
        error = ApiDeadlineError(
            f"the {SERVICE} API at {host_of(url)} did not answer within {seconds:g} s "
            "(--api-timeout)",
            hints=[hint, "or give it longer: --api-timeout SECONDS"], detail=cause)
    error.seconds = seconds
    return error


def api_error(status: int, body: Any, *, action: str = "", regions: Sequence[str] = ()
              ) -> LambdaError:
    """The typed error for an error answer. ``action`` says what was being done
    ("launch gpu_1x_a10 in us-east-1"); ``regions`` are those a launch tried."""
    code, message, suggestion = _envelope(body)
    quoted = f"{message.rstrip('.')}" if message else ""
    doing = f" ({action})" if action else ""
    kwargs: dict[str, Any] = {"code": code, "status": status,
                              "detail": f"HTTP {status} {code or '(no code)'}: {message}"
                                        + (f" [{suggestion}]" if suggestion else "")}
    if code == "global/invalid-api-key" or (status == 401 and not code):
        return InvalidApiKeyError(
            f"{SERVICE} refused the API key{doing}",
            hints=["run `soong configure` to set a working key (or set LAMBDA_API_KEY); "
                   "keys are made at https://cloud.lambda.ai/api-keys"], **kwargs)
    if code == "global/account-inactive" or (status == 403 and not code):
        return AccountInactiveError(
            f"your {SERVICE} account is inactive{doing}",
            hints=["verify your email address and add a payment method at "
                   "https://cloud.lambda.ai, then try again"], **kwargs)
    if code == "instance-operations/launch/insufficient-capacity":
        where = ", ".join(regions) or "the region asked for"
        error = InsufficientCapacityError(
            f"capacity gone in {where}{doing}",
            hints=["try --region with another region, or --wait-for-capacity"], **kwargs)
        error.regions = tuple(regions)
        return error
    if code == "global/quota-exceeded":
        return QuotaExceededError(
            f"{SERVICE} quota exceeded{doing}" + (f": {quoted}" if quoted else ""),
            hints=["stop an instance you no longer need (`soong status` lists them), or ask "
                   "Lambda support to raise your quota"], **kwargs)
    if code == "instance-operations/launch/file-system-in-wrong-region":
        return FilesystemWrongRegionError(
            f"the filesystem is in another region{doing}" + (f": {quoted}" if quoted else ""),
            hints=["launch in the filesystem's region (--region), or without it"], **kwargs)
    if code == "global/object-does-not-exist" or (status == 404 and not code):
        return NotFoundError(
            f"{SERVICE} does not know it{doing}" + (f": {quoted}" if quoted else ""),
            hints=[suggestion or "check the name or id: `soong status` lists instances"],
            **kwargs)
    if code == "filesystems/filesystem-in-use":
        return FilesystemInUseError(
            f"the filesystem is in use{doing}",
            hints=["terminate the instances that mount it (`soong stop`), then try again"],
            **kwargs)
    if code == "global/duplicate":
        return DuplicateError(f"it already exists{doing}" + (f": {quoted}" if quoted else ""),
                              hints=["choose another name, or use the existing one"], **kwargs)
    if code == "global/invalid-parameters" or (status == 400 and not code):
        return InvalidParametersError(
            f"{SERVICE} refused the request{doing}" + (f": {quoted}" if quoted else ""),
            hints=[suggestion] if suggestion else [], **kwargs)
    if status == 429 or code == "global/rate-limit-exceeded":
        return RateLimitedError(
            f"{SERVICE} kept answering 'too many requests'{doing}",
            hints=["another program may be using the same API key; wait a minute and "
                   "try again"], **kwargs)
    if (code or "").startswith("provider/") or code == "global/internal-error" or status >= 500:
        return ProviderUnavailableError(
            f"{SERVICE} is unavailable (HTTP {status}): {code or quoted or 'no details'}{doing}",
            hints=["try again in a few minutes; https://status.lambda.ai shows outages"],
            **kwargs)
    return ApiError(f"{SERVICE} answered HTTP {status}{doing}" + (f": {quoted}" if quoted else ""),
                    hints=[suggestion] if suggestion else [], **kwargs)


def _envelope(body: Any) -> tuple[str | None, str, str]:
    """``(code, message, suggestion)`` from an error body; tolerant of any shape."""
    error = body.get("error") if isinstance(body, dict) else None
    if not isinstance(error, dict):
        return None, "", ""
    code = error.get("code")
    message = error.get("message")
    suggestion = error.get("suggestion")
    return (code if isinstance(code, str) else None,
            " ".join(message.split()) if isinstance(message, str) else "",
            " ".join(suggestion.split()) if isinstance(suggestion, str) else "")
