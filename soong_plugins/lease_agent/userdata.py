"""The lease agent's part of a launch: its config and the bash script that installs it.

:func:`agent_config` is the agent's ``agent.json`` (``instance_agent.config``'s schema)
for one launch: its deadlines from soong's launch tags, its idle settings from
``defaults``, its own token, the provider key it terminates with. :func:`install_script`
is the cloud-init part (DESIGN Interfaces, "agent unit"): it writes the zipapp (from an
embedded base64 heredoc, 0644), the config (0600, from a quoted heredoc: no secret on a
command line or in an environment) and the systemd unit, every path under
``${SOONG_ROOT:-}`` (empty on a real instance, a sandbox root in the simulator), then
enables and (re)starts the unit: the same script run again over SSH (``soong agent
install``) replaces a dead or missing agent.

Standard library only, besides the bundle (built once per process, see :func:`zipapp`).
"""

from __future__ import annotations

import base64
import json
import threading
from typing import Any, Mapping, Sequence

from soong_core.models import (
    TAG_HARD_DEADLINE, TAG_LAUNCH_ID, TAG_LAUNCHED_AT, TAG_LEASE_DEADLINE, parse_timestamp,
)

CONFIG_PATH = "/etc/soong/agent.json"
ZIPAPP_PATH = "/opt/soong/agent.pyz"
UNIT_PATH = "/etc/systemd/system/soong-agent.service"
UNIT_NAME = "soong-agent.service"
PYTHON = "/usr/bin/python3"
DEFAULT_API_URL = "https://cloud.lambda.ai/api/v1"
WRAP = 76
"""Characters per line of the embedded base64."""

_lock = threading.Lock()
_zipapps: dict[tuple[str, ...], bytes] = {}


class AgentSetupError(Exception):
    """The agent cannot be set up for this launch (no key, a launch tag missing)."""


def zipapp(modules: Sequence[str]) -> bytes:
    """The agent's zipapp carrying ``modules``: built once per process and list."""
    from soong_plugins.lease_agent.bundle import zipapp_bytes

    key = tuple(modules)
    with _lock:
        if key not in _zipapps:
            _zipapps[key] = zipapp_bytes(key)[0]
        return _zipapps[key]


def _section(config: Mapping[str, Any], name: str) -> Mapping[str, Any]:
    value = config.get(name) if hasattr(config, "get") else None
    return value if isinstance(value, Mapping) else {}


def _tag_time(tags: Mapping[str, str], key: str) -> float:
    text = tags.get(key)
    if not text:
        raise AgentSetupError(f"the launch carries no {key} tag")
    try:
        return parse_timestamp(text)
    except ValueError:
        raise AgentSetupError(f"the launch's {key} tag is not a time: {text!r}") from None


def agent_key(config: Mapping[str, Any]) -> str:
    """``agent.api_key`` when set, else the main key (``lambda.api_key``)."""
    key = _section(config, "agent").get("api_key") or _section(config, "lambda").get("api_key")
    if not key:
        raise AgentSetupError("no API key for the lease agent: set lambda.api_key (or a "
                              "separate agent.api_key)")
    return str(key)


def _known(section: Mapping[str, Any], keys: Any) -> dict[str, Any]:
    return {key: section[key] for key in keys if section.get(key) is not None}


def agent_config(tags: Mapping[str, str], config: Mapping[str, Any], token: str, *,
                 lease_deadline: float | None = None) -> dict[str, Any]:
    """The agent's config for the launch whose soong tags are ``tags`` (a launch
    request's by the time it is final, or a running instance's); ``lease_deadline``
    replaces the tag's (an instance's lease was extended since)."""
    from instance_agent import config as agent_schema

    launch_id = tags.get(TAG_LAUNCH_ID)
    if not launch_id:
        raise AgentSetupError(f"the launch carries no {TAG_LAUNCH_ID} tag")
    defaults = _section(config, "defaults")
    idle = defaults.get("idle_timeout_minutes")
    data: dict[str, Any] = {
        "schema_version": agent_schema.SCHEMA_VERSION,
        "instance": {
            "launch_id": launch_id,
            "launched_at": _tag_time(tags, TAG_LAUNCHED_AT),
            "lease_deadline": _tag_time(tags, TAG_LEASE_DEADLINE)
            if lease_deadline is None else float(lease_deadline),
            "hard_deadline": _tag_time(tags, TAG_HARD_DEADLINE),
            "idle_timeout_seconds": float(idle) * 60 if idle is not None else None,
            "idle_grace_seconds": float(defaults.get("idle_grace_minutes", 10)) * 60,
            "warn_before_seconds": float(defaults.get("warn_before_minutes", 10)) * 60,
        },
        "api": {"port": int(_section(config, "agent").get("port") or 8765), "token": token},
        "provider": {
            "api_url": str(_section(config, "lambda").get("api_url") or DEFAULT_API_URL),
            "api_key": agent_key(config),
            "launch_id": launch_id,
        },
    }
    activity = _section(config, "activity")
    if activity:
        chosen = _known(activity, agent_schema.ACTIVITY_KEYS)
        if isinstance(activity.get("sources"), Mapping):
            chosen["sources"] = json.loads(json.dumps(activity["sources"]))
        if chosen:
            data["activity"] = chosen
    watchdog = _known(_section(config, "watchdog"), agent_schema.SCHEMA["watchdog"])
    if watchdog:
        data["watchdog"] = watchdog
    try:
        agent_schema.validate(json.loads(json.dumps(data)), environ={})
    except agent_schema.ConfigError as exc:
        raise AgentSetupError(f"the lease agent's config would not load: "
                              f"{exc.problems[0]}") from None
    return data


def _heredoc(marker: str, body: str) -> str:
    if any(line == marker for line in body.split("\n")):
        raise AgentSetupError(f"the agent's files hold the line {marker}")  # never, in fact
    return body + ("" if body.endswith("\n") else "\n") + marker


def install_script(pyz: bytes, agent_json: Mapping[str, Any]) -> str:
    """The bash cloud-init part that installs ``pyz`` with ``agent_json`` and starts it."""
    encoded = base64.b64encode(pyz).decode("ascii")
    wrapped = "\n".join(encoded[i:i + WRAP] for i in range(0, len(encoded), WRAP))
    config_text = json.dumps(agent_json, indent=1, sort_keys=True)
    return "\n".join([
        "#!/bin/bash",
        "# soong's lease agent: stops this instance at its lease, idle timeout or hard limit",
        "set -euo pipefail",
        "umask 077",
        'ROOT="${SOONG_ROOT:-}"',
        'mkdir -p "$ROOT/opt/soong" "$ROOT/etc/soong" "$ROOT/etc/systemd/system"',
        f'base64 -d > "$ROOT{ZIPAPP_PATH}.tmp" <<\'SOONG_AGENT_PYZ\'',
        _heredoc("SOONG_AGENT_PYZ", wrapped),
        f'chmod 0644 "$ROOT{ZIPAPP_PATH}.tmp"',
        f'mv -f "$ROOT{ZIPAPP_PATH}.tmp" "$ROOT{ZIPAPP_PATH}"',
        f'cat > "$ROOT{CONFIG_PATH}.tmp" <<\'SOONG_AGENT_CONFIG\'',
        _heredoc("SOONG_AGENT_CONFIG", config_text),
        f'chmod 0600 "$ROOT{CONFIG_PATH}.tmp"',
        f'mv -f "$ROOT{CONFIG_PATH}.tmp" "$ROOT{CONFIG_PATH}"',
        f'cat > "$ROOT{UNIT_PATH}.tmp" <<SOONG_AGENT_UNIT',
        "[Unit]",
        "Description=soong lease agent",
        "After=network-online.target",
        "Wants=network-online.target",
        "[Service]",
        "Environment=SOONG_ROOT=${ROOT}",
        f"ExecStart={PYTHON} -I ${{ROOT}}{ZIPAPP_PATH} --config ${{ROOT}}{CONFIG_PATH}",
        "Restart=always",
        "RestartSec=2",
        "[Install]",
        "WantedBy=multi-user.target",
        "SOONG_AGENT_UNIT",
        f'chmod 0644 "$ROOT{UNIT_PATH}.tmp"',
        f'mv -f "$ROOT{UNIT_PATH}.tmp" "$ROOT{UNIT_PATH}"',
        "systemctl daemon-reload",
        f"systemctl enable {UNIT_NAME}",
        f"systemctl restart {UNIT_NAME}",  # run again (`soong agent install`): the new config
        "",
    ])
