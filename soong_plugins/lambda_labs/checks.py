"""Launch requests checked against the spec's ``InstanceLaunchRequest`` before sending.

A request the API would refuse with ``global/invalid-parameters`` is refused here
instead, as a usage error naming the field: the user learns what to change without a
round trip (and a launch token, one per 12 seconds) spent on it.

Standard library and the core only.
"""

from __future__ import annotations

import re

from soong_core.errors import UsageError
from soong_core.models import LaunchRequest, validate_tag

HOSTNAME = re.compile(r"^[a-z0-9][0-9a-z-]{0,62}$")
NAME_MAX = 64
USER_DATA_MAX = 1_000_000
"""The spec's "cannot exceed 1MB", read as 10^6 bytes of UTF-8 (the stricter reading)."""


def check_launch(request: LaunchRequest, tags: dict[str, str]) -> None:
    """Raise :class:`UsageError` for the first field the spec does not allow."""
    if len(request.ssh_key_names) != 1:
        raise UsageError(f"Lambda Cloud launches with exactly one SSH key, not "
                         f"{len(request.ssh_key_names)}",
                         hints=["set one with `soong configure` (defaults.ssh_key_name)"])
    if request.hostname is not None and not HOSTNAME.match(request.hostname):
        raise UsageError(f"hostname {request.hostname!r} is not allowed: lower-case letters, "
                         "digits and '-', at most 63, not starting with '-'")
    if request.name is not None and len(request.name) > NAME_MAX:
        raise UsageError(f"name is {len(request.name)} characters: at most {NAME_MAX}")
    for key, value in tags.items():
        try:
            validate_tag(key, value)  # the core's rule is the spec's RequestedTagEntry
        except ValueError as exc:
            raise UsageError(str(exc)) from None
    user_data = request.user_data
    if user_data is not None and len(user_data.encode("utf-8")) > USER_DATA_MAX:
        raise UsageError(f"user_data is {len(user_data.encode('utf-8'))} bytes: Lambda Cloud "
                         f"takes at most {USER_DATA_MAX} (1 MB)",
                         hints=["the lease agent's script takes about 200 KB; a "
                                "--user-data file or a plugin's launch contribution adds "
                                "the rest (`soong plugins` lists them)"])
