"""The agent's configuration: JSON, versioned, checked whole before anything starts.

``${SOONG_ROOT}/etc/soong/agent.json`` (0600) holds what the launch decided; the
simulator writes what it owns (clock anchors, listen port) to ``agent.override.json``
beside it, deep-merged over the main file. ``"_comment"`` keys are allowed anywhere
and ignored; any other unknown key is a problem. :func:`load` returns the checked
config with every default filled in, or raises :class:`ConfigError` listing every
problem, one line each. Every path is prefixed with ``$SOONG_ROOT`` (empty on a real
instance), so a sandboxed agent never touches the host's files.
"""

from __future__ import annotations

import json
import math
import os
from typing import Any, Callable, Mapping

SCHEMA_VERSION = 1
COMMENT = "_comment"
LOOPBACK = frozenset({"127.0.0.1", "::1", "localhost"})
DEFAULT_API_URL = "https://cloud.lambda.ai/api/v1"
DEFAULT_CONFIG_PATH = "/etc/soong/agent.json"
OVERRIDE_NAME = "agent.override.json"
MIN_TOKEN_LENGTH = 16

Check = Callable[[Any], "str | None"]
"""A value check: ``None`` when the value is fine, else what is wrong with it."""


class ConfigError(Exception):
    """The config cannot be used; ``problems`` are one line each."""

    def __init__(self, problems: list[str]) -> None:
        super().__init__("; ".join(problems))
        self.problems = problems


# -- value checks ---------------------------------------------------------------------


def _describe(value: Any) -> str:
    text = json.dumps(value) if not isinstance(value, float) or math.isfinite(value) \
        else repr(value)
    return text if len(text) <= 40 else text[:37] + "..."


def _is_number(value: Any) -> bool:
    return (isinstance(value, (int, float)) and not isinstance(value, bool)
            and math.isfinite(value))


def number(low: float | None = None, *, above: float | None = None,
           integer: bool = False, nullable: bool = False) -> Check:
    def check(value: Any) -> str | None:
        if value is None and nullable:
            return None
        kind = "an integer" if integer else "a number"
        if nullable:
            kind += " or null"
        if not _is_number(value) or (integer and not isinstance(value, int)):
            return f"must be {kind}, got {_describe(value)}"
        if low is not None and value < low:
            return f"must be at least {low:g}, got {_describe(value)}"
        if above is not None and not value > above:
            return f"must be more than {above:g}, got {_describe(value)}"
        return None
    return check


def text(*, nullable: bool = False, empty: bool = False) -> Check:
    def check(value: Any) -> str | None:
        if value is None and nullable:
            return None
        if not isinstance(value, str):
            return f"must be a string{' or null' if nullable else ''}, got {_describe(value)}"
        if not empty and not value.strip():
            return "must not be empty"
        if "\x00" in value:
            return "must not contain a NUL character"
        return None
    return check


def _object(value: Any) -> str | None:
    return None if isinstance(value, dict) else f"must be an object, got {_describe(value)}"


def _module_list(value: Any) -> str | None:
    if not isinstance(value, list) or not all(isinstance(v, str) and v.strip() for v in value):
        return f"must be a list of module names, got {_describe(value)}"
    return None


def flag(value: Any) -> str | None:
    return None if isinstance(value, bool) else f"must be true or false, got {_describe(value)}"


REQUIRED = object()
"""The default of a key that must be given."""

# section -> key -> (check, default)
SCHEMA: dict[str, dict[str, tuple[Check, Any]]] = {
    "instance": {
        "launch_id": (text(), REQUIRED),
        "launched_at": (number(0), REQUIRED),
        "lease_deadline": (number(0), REQUIRED),
        "hard_deadline": (number(0), REQUIRED),
        "idle_timeout_seconds": (number(above=0, nullable=True), 1800),
        "idle_grace_seconds": (number(0), 600),
        "warn_before_seconds": (number(0), 600),
        "price_cents_per_hour": (number(0, integer=True, nullable=True), None),
        "settings": (_object, {}),
    },
    "api": {
        "bind": (text(), "127.0.0.1"),
        "port": (number(0, integer=True), 8765),
        "token": (text(), REQUIRED),
        "request_timeout_seconds": (number(above=0), 10),
        "max_connections": (number(1, integer=True), 32),
    },
    "provider": {
        "api_url": (text(), DEFAULT_API_URL),
        "api_key": (text(), REQUIRED),
        "launch_id": (text(nullable=True), None),
        "request_timeout_seconds": (number(above=0), 10),
        "backoff_max_seconds": (number(above=0), 60),
        "auth_retry_seconds": (number(above=0), 300),
    },
    "clock": {
        "mode": (text(), "real"),
        "factor": (number(above=0, nullable=True), None),
        "sim_anchor": (number(nullable=True), None),
        "wall_anchor": (number(nullable=True), None),
    },
    "paths": {
        "state": (text(), "/var/lib/soong/agent-state.json"),
        "log": (text(nullable=True), "/var/log/soong/agent.log"),
        "wall": (text(nullable=True), "/usr/bin/wall"),
        "systemctl": (text(nullable=True), "/usr/bin/systemctl"),
    },
    "log": {
        "max_bytes": (number(4096, integer=True), 1048576),
    },
    "state": {
        "activity_write_seconds": (number(0), 60),
    },
    "watchdog": {
        "url": (text(nullable=True), None),
        "token": (text(nullable=True), None),
        "heartbeat_seconds": (number(above=0), 60),
        "timeout_seconds": (number(above=0), 5),
    },
}
TOP_LEVEL = {"schema_version", "pre_stop", "plugins", "activity", *SCHEMA}
PRE_STOP_KEYS = {"command", "timeout_seconds"}
PATH_KEYS = ("state", "log", "wall", "systemctl")

ACTIVITY_KEYS: dict[str, tuple[Check, Any]] = {
    "sample_seconds": (number(above=0), 30),
    "final_look_seconds": (number(above=0), 20),
}
SOURCE_SCHEMA: dict[str, dict[str, tuple[Check, Any]]] = {
    "api": {},
    "sessions": {"utmp": (text(), "/run/utmp")},
    "gpu": {
        "nvidia_smi": (text(), "/usr/bin/nvidia-smi"),
        "utilization_percent": (number(0), 10),
        "timeout_seconds": (number(above=0), 10),
    },
    "prometheus": {
        "endpoints": (lambda value: None, []),  # checked by _endpoints
        "timeout_seconds": (number(above=0), 5),
        "failures_unhealthy": (number(1, integer=True), 3),
    },
}
"""The built-in sources' settings (``activity.sources.<name>``), each also ``enabled``
(default true). Another name is a third party's source: its section must be an object,
``enabled`` a boolean; the rest is the plugin's own to check."""
SOURCE_PATHS = {"sessions": ("utmp",), "gpu": ("nvidia_smi",)}


# -- loading --------------------------------------------------------------------------


def strip_comments(value: Any) -> Any:
    """``value`` without its ``"_comment"`` keys, at every depth."""
    if isinstance(value, dict):
        return {k: strip_comments(v) for k, v in value.items() if k != COMMENT}
    if isinstance(value, list):
        return [strip_comments(v) for v in value]
    return value


def deep_merge(base: Mapping[str, Any], over: Mapping[str, Any]) -> dict[str, Any]:
    """``over`` merged into ``base``: objects merge key by key, anything else replaces."""
    merged = dict(base)
    for key, value in over.items():
        if isinstance(value, dict) and isinstance(merged.get(key), dict):
            merged[key] = deep_merge(merged[key], value)
        else:
            merged[key] = value
    return merged


def _reject_constant(name: str) -> Any:
    raise ValueError(f"{name} is not a JSON number")


def read_json(path: str, what: str) -> dict[str, Any]:
    """The JSON object in ``path``; ConfigError (one line) when it is not one."""
    try:
        with open(path, "rb") as handle:
            raw = handle.read(4 * 1024 * 1024 + 1)
    except OSError as exc:
        raise ConfigError([f"{what} {path}: cannot read it: {exc.strerror or exc}"]) from None
    if len(raw) > 4 * 1024 * 1024:
        raise ConfigError([f"{what} {path}: larger than 4 MiB"])
    try:
        data = json.loads(raw.decode("utf-8"), parse_constant=_reject_constant)
    except (UnicodeDecodeError, ValueError) as exc:
        detail = " ".join(str(exc).split())
        raise ConfigError([f"{what} {path}: not valid JSON: {detail}"]) from None
    if not isinstance(data, dict):
        raise ConfigError([f"{what} {path}: must hold a JSON object"])
    return data


def default_override_path(config_path: str) -> str:
    return os.path.join(os.path.dirname(os.path.abspath(config_path)), OVERRIDE_NAME)


def load(path: str, override: str | None = None, *,
         environ: Mapping[str, str] | None = None) -> dict[str, Any]:
    """The checked config in ``path`` with ``override`` (default: ``agent.override.json``
    beside it, when it exists) merged over it. Raises :class:`ConfigError`."""
    data = read_json(path, "config")
    if override is None:
        candidate = default_override_path(path)
        override = candidate if os.path.exists(candidate) else None
    if override is not None:
        data = deep_merge(strip_comments(data), strip_comments(read_json(override, "override")))
    return validate(data, environ=environ)


def validate(data: Any, *, environ: Mapping[str, str] | None = None) -> dict[str, Any]:
    """``data`` checked, defaults filled in, paths under ``$SOONG_ROOT``; or ConfigError."""
    env = os.environ if environ is None else environ
    problems: list[str] = []
    if not isinstance(data, dict):
        raise ConfigError(["config: must be a JSON object"])
    data = strip_comments(data)
    version = data.get("schema_version")
    if version != SCHEMA_VERSION:
        problems.append(f"schema_version: must be {SCHEMA_VERSION}, got "
                        f"{_describe(version) if 'schema_version' in data else 'nothing'}")
    for key in sorted(set(data) - TOP_LEVEL):
        problems.append(f"{key}: unknown key")
    config: dict[str, Any] = {"schema_version": SCHEMA_VERSION}
    for section, keys in SCHEMA.items():
        given = data.get(section, {})
        if _object(given):
            problems.append(f"{section}: {_object(given)}")
            given = {}
        values: dict[str, Any] = {}
        for key in sorted(set(given) - set(keys)):
            problems.append(f"{section}.{key}: unknown key")
        for key, (check, default) in keys.items():
            if key not in given:
                if default is REQUIRED:
                    problems.append(f"{section}.{key}: required")
                values[key] = None if default is REQUIRED else _copy(default)
                continue
            wrong = check(given[key])
            if wrong:
                problems.append(f"{section}.{key}: {wrong}")
            values[key] = given[key]
        config[section] = values
    config["pre_stop"] = _pre_stop(data.get("pre_stop", []), problems)
    plugins = data.get("plugins", [])
    if _module_list(plugins):
        problems.append(f"plugins: {_module_list(plugins)}")
        plugins = []
    config["plugins"] = list(plugins)
    config["activity"] = _activity(data.get("activity", {}), problems)
    problems += _cross_checks(config)
    if problems:
        raise ConfigError(problems)
    if config["provider"]["launch_id"] is None:
        config["provider"]["launch_id"] = config["instance"]["launch_id"]
    root = env.get("SOONG_ROOT", "")
    for key in PATH_KEYS:
        if config["paths"][key] is not None:
            config["paths"][key] = root + config["paths"][key] if root else config["paths"][key]
    for name, path_keys in SOURCE_PATHS.items():
        section = config["activity"]["sources"][name]
        for key in path_keys:
            section[key] = root + section[key]
    config["warnings"] = _warnings(config)
    return config


def _copy(value: Any) -> Any:
    return json.loads(json.dumps(value))


def _pre_stop(value: Any, problems: list[str]) -> list[dict[str, Any]]:
    if not isinstance(value, list):
        problems.append(f"pre_stop: must be a list of commands, got {_describe(value)}")
        return []
    commands = []
    for number_, entry in enumerate(value):
        where = f"pre_stop[{number_}]"
        if not isinstance(entry, dict):
            problems.append(f"{where}: must be an object with a command, got {_describe(entry)}")
            continue
        for key in sorted(set(entry) - PRE_STOP_KEYS):
            problems.append(f"{where}.{key}: unknown key")
        command = entry.get("command")
        if isinstance(command, str):
            if not command.strip():
                problems.append(f"{where}.command: must not be empty")
        elif not (isinstance(command, list) and command
                  and all(isinstance(a, str) and a for a in command)):
            problems.append(f"{where}.command: must be a shell string or a non-empty list of "
                            f"arguments, got {_describe(command)}")
        timeout = entry.get("timeout_seconds", 60)
        wrong = number(above=0)(timeout)
        if wrong:
            problems.append(f"{where}.timeout_seconds: {wrong}")
        commands.append({"command": command, "timeout_seconds": timeout})
    return commands


def _activity(value: Any, problems: list[str]) -> dict[str, Any]:
    """``activity``, checked: ``sample_seconds``, ``final_look_seconds`` and ``sources``
    (every built-in source filled in with its defaults, third parties' kept as given)."""
    if _object(value):
        problems.append(f"activity: {_object(value)}")
        value = {}
    activity: dict[str, Any] = {}
    for key in sorted(set(value) - set(ACTIVITY_KEYS) - {"sources"}):
        problems.append(f"activity.{key}: unknown key")
    for key, (check, default) in ACTIVITY_KEYS.items():
        given = value.get(key, default)
        wrong = check(given)
        if wrong:
            problems.append(f"activity.{key}: {wrong}")
        activity[key] = given
    sources_given = value.get("sources", {})
    if _object(sources_given):
        problems.append(f"activity.sources: {_object(sources_given)}")
        sources_given = {}
    sources: dict[str, dict[str, Any]] = {}
    for name in [*SOURCE_SCHEMA, *sorted(set(sources_given) - set(SOURCE_SCHEMA))]:
        where = f"activity.sources.{name}"
        given = sources_given.get(name, {})
        if _object(given):
            problems.append(f"{where}: {_object(given)}")
            given = {}
        section = dict(given) if name not in SOURCE_SCHEMA else {}
        enabled = given.get("enabled", True)
        if flag(enabled):
            problems.append(f"{where}.enabled: {flag(enabled)}")
        section["enabled"] = enabled
        keys = SOURCE_SCHEMA.get(name)
        if keys is not None:
            for key in sorted(set(given) - set(keys) - {"enabled"}):
                problems.append(f"{where}.{key}: unknown key")
            for key, (check, default) in keys.items():
                item = given.get(key, _copy(default))
                wrong = check(item)
                if wrong:
                    problems.append(f"{where}.{key}: {wrong}")
                section[key] = item
        sources[name] = section
    gpu = sources["gpu"]
    if _is_number(gpu["utilization_percent"]) and gpu["utilization_percent"] > 100:
        problems.append("activity.sources.gpu.utilization_percent: must be at most 100, "
                        f"got {_describe(gpu['utilization_percent'])}")
    for name, path_keys in SOURCE_PATHS.items():
        for key in path_keys:
            path = sources[name][key]
            if isinstance(path, str) and not path.startswith("/"):
                problems.append(f"activity.sources.{name}.{key}: must be an absolute path, "
                                f"got {_describe(path)}")
    prometheus = sources["prometheus"]
    prometheus["endpoints"] = _endpoints(prometheus["endpoints"], problems)
    activity["sources"] = sources
    return activity


def _endpoints(value: Any, problems: list[str]) -> list[dict[str, Any]]:
    """``activity.sources.prometheus.endpoints``: URLs or ``{"url", "metrics"}`` objects,
    as objects; ``metrics`` null means the serving engines' usual series."""
    where = "activity.sources.prometheus.endpoints"
    if not isinstance(value, list):
        problems.append(f"{where}: must be a list of URLs or objects, got {_describe(value)}")
        return []
    endpoints = []
    for index, entry in enumerate(value):
        here = f"{where}[{index}]"
        if isinstance(entry, str):
            entry = {"url": entry}
        if not isinstance(entry, dict):
            problems.append(f"{here}: must be a URL or an object with a url, "
                            f"got {_describe(entry)}")
            continue
        for key in sorted(set(entry) - {"url", "metrics"}):
            problems.append(f"{here}.{key}: unknown key")
        url = entry.get("url")
        if not isinstance(url, str) or not url.startswith(("http://", "https://")) \
                or any(ord(c) <= 32 or ord(c) == 127 for c in url):
            problems.append(f"{here}.url: must be an http(s) URL, got {_describe(url)}")
        metrics = entry.get("metrics")
        if metrics is not None:
            if not isinstance(metrics, list) or not metrics \
                    or not all(isinstance(m, str) for m in metrics):
                problems.append(f"{here}.metrics: must be null or a non-empty list of "
                                f"series selectors, got {_describe(metrics)}")
                metrics = None
            else:
                for selector in metrics:
                    wrong = _selector_problem(selector)
                    if wrong:
                        problems.append(f"{here}.metrics: {_describe(selector)}: {wrong}")
        endpoints.append({"url": url, "metrics": metrics})
    return endpoints


def _selector_problem(selector: str) -> str | None:
    from soong_plugins.activity.prometheus import parse_selector

    try:
        parse_selector(selector)
    except ValueError as exc:
        return " ".join(str(exc).split()) or "not a series selector"
    return None


def _cross_checks(config: Mapping[str, Any]) -> list[str]:
    problems = []
    instance = config["instance"]
    times = [instance[k] for k in ("launched_at", "lease_deadline", "hard_deadline")]
    if all(_is_number(t) for t in times):
        launched, lease, hard = times
        if lease < launched:
            problems.append("instance.lease_deadline: is before instance.launched_at")
        if hard < launched:
            problems.append("instance.hard_deadline: is before instance.launched_at")
    token = config["api"]["token"]
    if isinstance(token, str) and (len(token) < MIN_TOKEN_LENGTH
                                   or not all(33 <= ord(c) < 127 for c in token)):
        problems.append(f"api.token: must be at least {MIN_TOKEN_LENGTH} printable ASCII "
                        "characters without spaces")
    key = config["provider"]["api_key"]
    if isinstance(key, str) and not all(32 < ord(c) < 127 for c in key):
        problems.append("provider.api_key: must be printable ASCII without spaces")
    for name in PATH_KEYS:
        path = config["paths"][name]
        if isinstance(path, str) and not path.startswith("/"):
            problems.append(f"paths.{name}: must be an absolute path, got {_describe(path)}")
    port = config["api"]["port"]
    if _is_number(port) and port > 65535:
        problems.append(f"api.port: must be at most 65535, got {port}")
    clock = config["clock"]
    mode = clock["mode"]
    if mode == "accelerated":
        for key in ("factor", "sim_anchor", "wall_anchor"):
            if clock[key] is None:
                problems.append(f"clock.{key}: required when clock.mode is accelerated")
    elif mode == "real":
        for key in ("factor", "sim_anchor", "wall_anchor"):
            if clock[key] is not None:
                problems.append(f"clock.{key}: only for clock.mode accelerated")
    elif isinstance(mode, str):
        problems.append(f"clock.mode: must be real or accelerated, got {_describe(mode)}")
    url = config["provider"]["api_url"]
    if isinstance(url, str) and not url.startswith(("https://", "http://")):
        problems.append(f"provider.api_url: must be an http(s) URL, got {_describe(url)}")
    watchdog = config["watchdog"]
    if isinstance(watchdog["url"], str):
        if not watchdog["url"].startswith(("https://", "http://")):
            problems.append("watchdog.url: must be an http(s) URL, got "
                            f"{_describe(watchdog['url'])}")
        if watchdog["token"] is None:
            problems.append("watchdog.token: required when watchdog.url is set")
    token = watchdog["token"]
    if isinstance(token, str) and not all(32 < ord(c) < 127 for c in token):
        problems.append("watchdog.token: must be printable ASCII without spaces")
    return problems


def _warnings(config: Mapping[str, Any]) -> list[str]:
    warnings = []
    instance = config["instance"]
    if instance["lease_deadline"] > instance["hard_deadline"]:
        warnings.append("instance.lease_deadline is after instance.hard_deadline: the "
                        "hard deadline stops the instance first")
    bind = config["api"]["bind"]
    if bind not in LOOPBACK:
        warnings.append(f"api.bind is {bind}: the agent API is reachable beyond this machine "
                        "(only its token protects it); 127.0.0.1 is the default")
    return warnings


def clock_config(config: Mapping[str, Any]) -> dict[str, Any]:
    """The config's clock object as :func:`soong_core.clock.clock_from_config` reads it."""
    clock = config["clock"]
    if clock["mode"] == "real":
        return {"mode": "real"}
    return {"mode": "accelerated", "factor": clock["factor"],
            "sim_anchor": clock["sim_anchor"], "wall_anchor": clock["wall_anchor"]}


def secrets_of(config: Mapping[str, Any]) -> list[str]:
    """The strings no log line or answer may contain."""
    found = [config.get("api", {}).get("token"), config.get("provider", {}).get("api_key"),
             (config.get("watchdog") or {}).get("token")]
    return [s for s in found if isinstance(s, str) and s]


# -- the example ----------------------------------------------------------------------


def example_config(now: float = 1_800_000_000.0) -> dict[str, Any]:
    """A complete, commented config that validates (what ``--example-config`` prints)."""
    from soong_core.models import HOUR as hour

    return {
        COMMENT: "soong lease agent config (0600); `soong start` is to write it at launch "
                 "(not yet). Times are seconds since the epoch; `_comment` keys are ignored.",
        "schema_version": SCHEMA_VERSION,
        "instance": {
            COMMENT: "the limits fixed at launch; the lease moves only through /extend",
            "launch_id": "example-launch-id",
            "launched_at": now,
            "lease_deadline": now + 4 * hour,
            "hard_deadline": now + 8 * hour,
            "idle_timeout_seconds": 1800,
            "idle_grace_seconds": 600,
            "warn_before_seconds": 600,
            "price_cents_per_hour": 129,
            "settings": {COMMENT: "per-instance settings third-party policies read"},
        },
        "api": {
            COMMENT: "the agent's HTTP API; any bind other than 127.0.0.1/::1 is logged "
                     "as a warning",
            "bind": "127.0.0.1",
            "port": 8765,
            "token": "replace-with-the-instance-token",
            "request_timeout_seconds": 10,
            "max_connections": 32,
        },
        "provider": {
            COMMENT: "how the agent terminates its own instance",
            "api_url": DEFAULT_API_URL,
            "api_key": "replace-with-the-agent-api-key",
            "launch_id": "example-launch-id",
            "request_timeout_seconds": 10,
            "backoff_max_seconds": 60,
            "auth_retry_seconds": 300,
        },
        "pre_stop": [
            {COMMENT: "run in order before terminating; argv list or shell string",
             "command": ["sync"], "timeout_seconds": 30},
        ],
        "clock": {COMMENT: "real, or accelerated (the simulator writes its anchors)",
                  "mode": "real"},
        "paths": {
            COMMENT: "each prefixed with $SOONG_ROOT; wall and systemctl may be null",
            "state": "/var/lib/soong/agent-state.json",
            "log": "/var/log/soong/agent.log",
            "wall": "/usr/bin/wall",
            "systemctl": "/usr/bin/systemctl",
        },
        "log": {"max_bytes": 1048576},
        "state": {COMMENT: "activity is saved at most this often (seconds of clock time)",
                  "activity_write_seconds": 60},
        "activity": {
            COMMENT: "what counts as use (idle_timeout_seconds above); each source "
                     "looks every sample_seconds (wall) and once more, for at most "
                     "final_look_seconds, before an idle stop",
            "sample_seconds": 30,
            "final_look_seconds": 20,
            "sources": {
                "api": {COMMENT: "POST /activity", "enabled": True},
                "sessions": {COMMENT: "interactive logins in utmp (a port forward is none)",
                             "enabled": True, "utmp": "/run/utmp"},
                "gpu": {COMMENT: "nvidia-smi; absent or failing: unavailable, never active",
                        "enabled": True, "nvidia_smi": "/usr/bin/nvidia-smi",
                        "utilization_percent": 10, "timeout_seconds": 10},
                "prometheus": {
                    COMMENT: "serving engines' /metrics; metrics null: the usual vLLM, "
                             "TGI and SGLang request and token series",
                    "enabled": True,
                    "endpoints": [{"url": "http://127.0.0.1:8000/metrics", "metrics": None}],
                    "timeout_seconds": 5, "failures_unhealthy": 3},
            },
        },
        "watchdog": {COMMENT: "heartbeats to POST {url}/heartbeat; url null: none",
                     "url": None, "token": None, "heartbeat_seconds": 60,
                     "timeout_seconds": 5},
        "plugins": [],
    }


ACCELERATED_EXAMPLE = {"mode": "accelerated", "factor": 60.0,
                       "sim_anchor": 1_800_000_000.0, "wall_anchor": 1_790_000_000.0}
"""An accelerated clock object, as the simulator writes one (for the docs and tests)."""
