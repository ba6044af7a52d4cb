"""What ``soong status`` shows of an instance's agent (``soong_status_details``).

The core asks every instance at once and waits about 2 s in all
(:meth:`soong_core.plugins.Plugins.status_details_many`). An agent is asked only where
it answers without a new SSH connection (:func:`.reach.open_url`: the provider's
``agent_url``, or a running ``soong tunnel``), within :data:`ASK_TIMEOUT_S`; opening
SSH to each instance would make ``status`` take seconds per instance. The answer comes
back as one mapping whose keys are always all present (``docs/json.md``,
``details.lease_agent``):

* ``state``: ``answered``, ``not_asked`` (no open way to it), ``unreachable`` (asked,
  no good answer) or ``no_token`` (this machine keeps no token for it); ``message``
  says why, for all but ``answered``;
* the agent's own view: ``version`` (and ``version_skew`` against the agent this soong
  carries), ``next_stop``, ``time_left_s``, ``idle_s``, ``idle_timeout_s``,
  ``last_activity_source``, ``gpus``, ``warnings``, ``terminating``;
* ``view``: the lease deadline, last activity and idle timeout it enforces, which the
  core judges the policies on (its idle stop included);
* ``notes``: the lines the table prints under itself for the instance.
"""

from __future__ import annotations

from typing import Any, Mapping

from soong_core.models import Instance, InstanceState, format_timestamp
from soong_core.numbers import finite_number

ASK_TIMEOUT_S = 1.5
"""Wall seconds one agent has to answer ``GET /status`` (within the core's 2 s)."""
KEYS = ("state", "message", "version", "bundled_version", "version_skew", "next_stop",
        "time_left_s", "idle_s", "idle_timeout_s", "last_activity_source", "gpus",
        "warnings", "terminating", "view", "notes")
FALLBACK = "the limits shown come from its tags and soong's policies"


def agent_details(instance: Instance, config: Mapping[str, Any]) -> dict[str, Any] | None:
    """The lease agent's part of ``instance``'s status; None for an instance soong did
    not launch or one that no longer bills (nothing there to ask)."""
    if not instance.managed or not instance.state.billing:
        return None
    from soong_core import __version__ as bundled
    from soong_core.errors import SoongError
    from soong_plugins.lease_agent.reach import open_url
    from soong_plugins.lease_agent.tokens import read_token

    found: dict[str, Any] = dict.fromkeys(KEYS)
    found.update(bundled_version=bundled, warnings=[], notes=[], terminating=False)
    if instance.state is InstanceState.BOOTING:
        return _not(found, "not_asked", "not asked: the instance is still booting")
    token = read_token(instance.id)
    if not token:
        return _not(found, "no_token", "soong keeps no agent token for it here, so "
                    f"whether its limits are enforced is unknown (`soong agent install "
                    f"{instance.id}` gives it an agent this machine can ask); {FALLBACK}")
    try:
        url = open_url(instance, config)
    except SoongError as exc:
        return _not(found, "unreachable", f"agent unreachable: {exc.message}; {FALLBACK}")
    if url is None:
        return _not(found, "not_asked", "agent not asked (no tunnel open to it: `soong agent "
                    f"status {instance.id}` asks over SSH); {FALLBACK}")
    from soong_plugins.lease_agent.client import AgentClient

    try:
        answer = AgentClient(url, token, instance_id=instance.id,
                             timeout=ASK_TIMEOUT_S).status()
    except SoongError as exc:
        return _not(found, "unreachable", f"agent unreachable: {_after_who(exc.message)}; "
                    f"{FALLBACK}")
    return _answered(found, instance, answer, bundled)


def _not(found: dict[str, Any], state: str, message: str) -> dict[str, Any]:
    found.update(state=state, message=message, notes=[message])
    return found


def _after_who(message: str) -> str:
    """``"the agent of X does not answer (...)"`` -> ``"it does not answer (...)"``."""
    lead = "the agent of "
    if message.startswith(lead):
        return "it " + message[len(lead):].partition(" ")[2]
    return message


def _mapping(value: Any) -> Mapping[str, Any]:
    return value if isinstance(value, Mapping) else {}


def _list(value: Any) -> list[Any]:
    return value if isinstance(value, list) else []


def _answered(found: dict[str, Any], instance: Instance, answer: Mapping[str, Any],
              bundled: str) -> dict[str, Any]:
    now = finite_number(answer.get("now"))
    idle = _mapping(answer.get("idle"))
    version = answer.get("version") if isinstance(answer.get("version"), str) else None
    lease = finite_number(answer.get("lease_deadline"))
    stop = _mapping(answer.get("next_stop"))
    stop_at = finite_number(stop.get("at"))
    reasons = [r for r in _list(stop.get("reasons")) if isinstance(r, str)]
    warnings = [w if isinstance(w, str) else str(w.get("message", w))
                for w in _list(answer.get("warnings")) if isinstance(w, (str, Mapping))]
    health = _mapping(answer.get("health"))
    gpus = [gpu for gpu in _list(health.get("gpus")) if isinstance(gpu, Mapping)] \
        if isinstance(health.get("gpus"), list) else None
    timeout = finite_number(idle.get("timeout_seconds"))
    idle_s = finite_number(idle.get("seconds"))
    found.update(
        state="answered", version=version,
        version_skew=version is not None and version != bundled,
        next_stop=None if stop_at is None else {
            "at": format_timestamp(stop_at), "reasons": reasons,
            "in_s": int(max(0.0, stop_at - now)) if now is not None else None},
        time_left_s=int(lease - now) if lease is not None and now is not None else None,
        idle_s=int(max(0.0, idle_s)) if idle_s is not None else None,
        idle_timeout_s=int(timeout) if timeout is not None else None,
        last_activity_source=(idle.get("last_activity_source")
                              if isinstance(idle.get("last_activity_source"), str) else None),
        gpus=[dict(gpu) for gpu in gpus] if gpus is not None else None,
        warnings=warnings, terminating=bool(answer.get("terminating")))
    view: dict[str, Any] = {}
    if lease is not None:
        view["lease_deadline"] = lease
    if "timeout_seconds" in idle:
        view["last_activity_at"] = finite_number(idle.get("last_activity_at"))
        view["idle_timeout_s"] = timeout
    found["view"] = view
    # The warning of a stop that is near is the next stop itself, which the row shows.
    near = answer.get("message") if answer.get("action") == "warn" else None
    notes = [f"agent warning: {w}" for w in warnings if w != near]
    if found["version_skew"]:
        notes.append(f"its agent is version {version}, this soong carries {bundled}: "
                     f"`soong agent install {instance.id}` updates it")
    if gpus:
        notes.append("GPU use: " + ", ".join(_gpu_use(gpu) for gpu in gpus))
    if found["terminating"]:
        notes.append("its agent is terminating it now")
    found["notes"] = notes
    return found


def _gpu_use(gpu: Mapping[str, Any]) -> str:
    used = finite_number(gpu.get("utilization_percent"))
    return f"GPU {gpu.get('index', '?')} " + (f"{used:g}%" if used is not None else "unknown")
