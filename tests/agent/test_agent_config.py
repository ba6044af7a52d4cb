"""The agent's config: the example validates, every problem is one line, the override
merges, paths go under $SOONG_ROOT, and docs/agent.md names every key."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from agent_units import document

from instance_agent.config import ConfigError, example_config, load, validate


def problems(data: Any) -> list[str]:
    with pytest.raises(ConfigError) as refused:
        validate(data, environ={})
    return refused.value.problems


def test_the_example_validates_and_fills_every_default() -> None:
    config = validate(example_config(), environ={})
    assert config["api"]["bind"] == "127.0.0.1" and config["warnings"] == []
    assert config["provider"]["launch_id"] == config["instance"]["launch_id"]
    minimal = {"schema_version": 1,
               "instance": {"launch_id": "x", "launched_at": 1, "lease_deadline": 2,
                            "hard_deadline": 3},
               "api": {"token": "t" * 16}, "provider": {"api_key": "k"}}
    filled = validate(minimal, environ={})
    assert filled["instance"]["idle_timeout_seconds"] == 1800
    assert filled["provider"]["api_url"] == "https://cloud.lambda.ai/api/v1"
    assert filled["paths"]["state"] == "/var/lib/soong/agent-state.json"


def test_every_problem_is_one_line_and_all_are_reported() -> None:
    data = document()
    data["instance"]["lease_deadline"] = True
    data["instance"]["idle_grace_seconds"] = -1
    data["api"]["port"] = 70000
    data["api"]["colour"] = "blue"
    data["provider"]["api_key"] = ""
    data["extra"] = {}
    data["pre_stop"] = [{"command": []}, "sync"]
    data["plugins"] = "soong_curfew"
    found = problems(data)
    assert all("\n" not in p for p in found)
    expected = ["instance.lease_deadline: must be a number", "instance.idle_grace_seconds",
                "api.port: must be at most 65535", "api.colour: unknown key",
                "provider.api_key: must not be empty", "extra: unknown key",
                "pre_stop[0].command", "pre_stop[1]", "plugins: must be a list"]
    for start in expected:
        assert any(p.startswith(start) for p in found), (start, found)


@pytest.mark.parametrize(("section", "key", "value"), [
    ("instance", "launched_at", float("nan")), ("instance", "hard_deadline", float("inf")),
    ("instance", "idle_timeout_seconds", 0), ("instance", "price_cents_per_hour", 1.5),
    ("api", "token", "short"), ("api", "token", "has spaces in the token here"),
    ("api", "port", "8765"), ("api", "max_connections", 0),
    ("provider", "api_url", "ftp://x"), ("provider", "launch_id", 5),
    ("paths", "state", "relative/state.json"), ("log", "max_bytes", 10),
    ("clock", "mode", "fast"), ("clock", "factor", 60),
])
def test_wrong_values(section: str, key: str, value: Any) -> None:
    data = document()
    data[section][key] = value
    found = problems(data)
    assert len(found) == 1 and found[0].startswith(f"{section}.{key}"), found


def test_comments_are_ignored_anywhere() -> None:
    data = document()
    data["api"]["_comment"] = "x"
    data["pre_stop"][0]["_comment"] = "y"
    validate(data, environ={})
    assert "_comment" in json.dumps(example_config())


def test_an_accelerated_clock_needs_its_anchors() -> None:
    data = document(clock={"mode": "accelerated", "factor": 60})
    assert {p.split(":")[0] for p in problems(data)} == {"clock.sim_anchor", "clock.wall_anchor"}
    data["clock"].update(sim_anchor=1.8e9, wall_anchor=1.7e9)
    assert validate(data, environ={})["clock"]["factor"] == 60


def test_a_bind_beyond_loopback_is_a_warning() -> None:
    assert validate(document(api={"bind": "::1"}), environ={})["warnings"] == []
    warned = validate(document(api={"bind": "0.0.0.0"}), environ={})["warnings"]
    assert len(warned) == 1 and "0.0.0.0" in warned[0]


def test_paths_go_under_soong_root(tmp_path: Path) -> None:
    config = validate(document(paths={"wall": "/usr/bin/wall"}),
                      environ={"SOONG_ROOT": str(tmp_path)})
    assert config["paths"]["state"] == f"{tmp_path}/var/lib/soong/agent-state.json"
    assert config["paths"]["wall"] == f"{tmp_path}/usr/bin/wall"
    assert config["paths"]["systemctl"] is None


def test_the_override_is_merged_over_the_config(tmp_path: Path) -> None:
    path = tmp_path / "agent.json"
    path.write_text(json.dumps(document()))
    clock = {"mode": "accelerated", "factor": 100.0, "sim_anchor": 1.8e9, "wall_anchor": 1.7e9}
    (tmp_path / "agent.override.json").write_text(json.dumps({"clock": clock,
                                                              "api": {"port": 0}}))
    config = load(str(path), environ={})
    assert config["clock"] == clock
    assert config["api"]["port"] == 0 and config["api"]["token"] == document()["api"]["token"]
    other = tmp_path / "other.json"
    other.write_text(json.dumps({"api": {"port": 1234}}))
    assert load(str(path), str(other), environ={})["api"]["port"] == 1234


@pytest.mark.parametrize(("content", "expected"), [
    (None, "cannot read it"), (b"{", "not valid JSON"), (b"[]", "must hold a JSON object"),
    (b'{"schema_version": NaN}', "not valid JSON"), (b"\xff", "not valid JSON"),
])
def test_unreadable_files_are_one_line(tmp_path: Path, content: bytes | None,
                                       expected: str) -> None:
    path = tmp_path / "agent.json"
    if content is not None:
        path.write_bytes(content)
    with pytest.raises(ConfigError) as refused:
        load(str(path), environ={})
    assert len(refused.value.problems) == 1 and expected in refused.value.problems[0]


def test_activity_sources_fill_their_defaults_and_go_under_soong_root(tmp_path: Path) -> None:
    config = validate(document(), environ={"SOONG_ROOT": str(tmp_path)})
    sources = config["activity"]["sources"]
    assert list(sources) == ["api", "sessions", "gpu", "prometheus"]
    assert all(section["enabled"] is True for section in sources.values())
    assert sources["sessions"]["utmp"] == f"{tmp_path}/run/utmp"
    assert sources["gpu"]["nvidia_smi"] == f"{tmp_path}/usr/bin/nvidia-smi"
    assert sources["gpu"]["utilization_percent"] == 10
    assert config["activity"]["sample_seconds"] == 30
    third = validate(document(activity={"sources": {"jupyter": {"url": "http://x", "n": 1}}}),
                     environ={})
    assert third["activity"]["sources"]["jupyter"] == {"url": "http://x", "n": 1,
                                                       "enabled": True}


def test_prometheus_endpoints_as_urls_or_objects() -> None:
    data = document(activity={"sources": {"prometheus": {"endpoints": [
        "http://127.0.0.1:8000/metrics",
        {"url": "http://127.0.0.1:30000/metrics",
         "metrics": ['sglang:num_running_reqs{model_name="m"}']}]}}})
    endpoints = validate(data, environ={})["activity"]["sources"]["prometheus"]["endpoints"]
    assert endpoints == [
        {"url": "http://127.0.0.1:8000/metrics", "metrics": None},
        {"url": "http://127.0.0.1:30000/metrics",
         "metrics": ['sglang:num_running_reqs{model_name="m"}']}]


@pytest.mark.parametrize(("sources", "expected"), [
    ({"gpu": {"enabled": "yes"}}, 'activity.sources.gpu.enabled: must be true or false, got "yes"'),
    ({"gpu": {"utilization_percent": 120}},
     "activity.sources.gpu.utilization_percent: must be at most 100, got 120"),
    ({"gpu": {"nvidia_smi": "nvidia-smi"}},
     'activity.sources.gpu.nvidia_smi: must be an absolute path, got "nvidia-smi"'),
    ({"sessions": {"wtmp": "/var/log/wtmp"}}, "activity.sources.sessions.wtmp: unknown key"),
    ({"prometheus": {"endpoints": ["ftp://x"]}},
     'activity.sources.prometheus.endpoints[0].url: must be an http(s) URL, got "ftp://x"'),
    ({"prometheus": {"endpoints": [{"url": "http://x", "metrics": []}]}},
     "activity.sources.prometheus.endpoints[0].metrics: must be null or a non-empty list of "
     "series selectors, got []"),
    ({"prometheus": {"failures_unhealthy": 0}},
     "activity.sources.prometheus.failures_unhealthy: must be at least 1, got 0"),
    ({"jupyter": []}, "activity.sources.jupyter: must be an object, got []"),
])
def test_wrong_activity_settings(sources: dict[str, Any], expected: str) -> None:
    assert problems(document(activity={"sources": sources})) == [expected]


def test_a_wrong_series_selector_is_one_line() -> None:
    data = document(activity={"sources": {"prometheus": {"endpoints": [
        {"url": "http://x", "metrics": ['vllm:num_requests_running{model_name="m"']}]}}})
    found = problems(data)
    assert len(found) == 1 and found[0].startswith(
        "activity.sources.prometheus.endpoints[0].metrics: ")
    assert "\n" not in found[0]


def test_the_watchdog_section() -> None:
    assert problems(document(watchdog={"url": "ws://x", "token": "t" * 20})) == [
        'watchdog.url: must be an http(s) URL, got "ws://x"']
    config = validate(document(watchdog={"url": "http://127.0.0.1:7000", "token": "t" * 20}),
                      environ={})
    assert config["watchdog"]["heartbeat_seconds"] == 60
