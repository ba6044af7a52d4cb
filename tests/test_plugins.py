"""The plugin manager: factory, order, disabling, failures, and every hook's contract."""

from __future__ import annotations

import email
import logging
import sys
import types
from importlib import metadata
from typing import Any

import pytest

from soong_core import hookimpl
from soong_core.errors import PluginError, UsageError
from soong_core.fake import FakeProvider, FakeProviderPlugin
from soong_core.interfaces import ActivitySource, StatusReporter, TunnelBackend
from soong_core.models import (
    ActivitySample,
    ActivityState,
    Event,
    EventKind,
    Instance,
    InstanceState,
    LaunchContribution,
    LaunchRequest,
    Tunnel,
)
from soong_core.plugins import (
    BUILTIN_PLUGINS,
    REGISTRATION_KINDS,
    REQUIRED_PLUGINS,
    Plugins,
    make_plugins,
)
from soong_core.plugin_calls import finish_launch


def prepared(plugins: Plugins, request: LaunchRequest, config: Any) -> LaunchRequest:
    """``request`` as a launch sends it: every contribution merged, ``finish`` included
    (the two steps ``Soong.plan_launch`` and ``Soong.launch`` take)."""
    return finish_launch(request, plugins.launch_contributions(request, config))


def module_plugin(name: str, **hooks: Any) -> types.ModuleType:
    """A throwaway plugin module holding ``hooks`` (functions marked as hookimpls)."""
    module = types.ModuleType(name)
    for hook_name, function in hooks.items():
        setattr(module, hook_name, hookimpl(function))
    return module


def fake_entry_points(monkeypatch: pytest.MonkeyPatch, plugins: dict[str, object]) -> None:
    """Make ``importlib.metadata.entry_points(group="soong")`` list ``plugins``."""
    entries = []
    for name, obj in plugins.items():
        module_name = f"_soong_test_ep_{name}"
        if isinstance(obj, types.ModuleType):
            monkeypatch.setitem(sys.modules, module_name, obj)
            value = module_name
        else:
            value = str(obj)  # a module path that may not exist
        entries.append(metadata.EntryPoint(name=name, value=value, group="soong"))

    def entry_points(**selection: Any) -> list[metadata.EntryPoint]:
        return [ep for ep in entries if selection.get("group") in (None, ep.group)]

    monkeypatch.setattr(metadata, "entry_points", entry_points)


def instance(**fields: Any) -> Instance:
    return Instance(id=fields.pop("id", "i-1"), state=InstanceState.ACTIVE, **fields)


# -- the factory ----------------------------------------------------------------------


def test_each_call_builds_an_independent_manager() -> None:
    first = make_plugins(entry_points=False, disabled=())
    second = make_plugins(entry_points=False, disabled=())
    assert first.pm is not second.pm
    first.register(FakeProviderPlugin(), "fake")
    assert "fake" in first.providers()
    assert "fake" not in second.providers()


def test_builtins_are_registered_first_with_their_distribution() -> None:
    plugins = make_plugins(entry_points=False, disabled=())
    names = [p.name for p in plugins.info()]
    assert names[: len(BUILTIN_PLUGINS)] == sorted(name for name, _ in BUILTIN_PLUGINS)
    assert {p.distribution for p in plugins.info()} == {"soong"}
    assert all(p.builtin and p.status == "loaded" for p in plugins.info())


def test_entry_points_load_after_builtins_and_third_party_wins_a_name(
        monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture) -> None:
    theirs = FakeProvider()
    ours = FakeProvider()

    builtin = module_plugin("builtin_fake", soong_register_providers=lambda register: register(
        "fake", lambda config: ours))
    monkeypatch.setitem(sys.modules, "_soong_test_builtin_fake", builtin)
    third = module_plugin("third", soong_register_providers=lambda register: register(
        "fake", lambda config: theirs))
    fake_entry_points(monkeypatch, {"third": third})

    plugins = make_plugins(disabled=(), builtins=[("builtin_fake", "_soong_test_builtin_fake")])
    assert [p.name for p in plugins.info()] == ["builtin_fake", "third"]
    with caplog.at_level(logging.WARNING, logger="soong"):
        providers = plugins.providers()
    assert providers.get("fake").plugin == "third"
    assert providers.create("fake", {}) is theirs
    assert "plugin 'builtin_fake' registers provider 'fake', already registered by plugin 'third'" \
        in caplog.text


def test_no_entry_points_means_builtins_only(monkeypatch: pytest.MonkeyPatch) -> None:
    fake_entry_points(monkeypatch, {"third": module_plugin("third")})
    assert "third" not in [p.name for p in make_plugins(entry_points=False, disabled=()).info()]
    assert "third" in [p.name for p in make_plugins(disabled=()).info()]


def test_disable_by_environment_covers_builtins_and_third_parties(
        monkeypatch: pytest.MonkeyPatch) -> None:
    fake_entry_points(monkeypatch, {"third": module_plugin("third", soong_register_providers=lambda
                                                           register: register("x", FakeProvider))})
    monkeypatch.setenv("SOONG_DISABLE_PLUGINS", "third, reporters")
    plugins = make_plugins()
    status = {p.name: p.status for p in plugins.info()}
    assert status["third"] == "disabled"
    assert status["reporters"] == "disabled"
    assert status["policies"] == "loaded"
    assert "x" not in plugins.providers()
    assert "table" not in plugins.reporters()
    assert plugins.pm.get_plugin("reporters") is None


@pytest.mark.parametrize("source", ["environment", "argument"])
def test_a_required_plugin_cannot_be_disabled(monkeypatch: pytest.MonkeyPatch, source: str) -> None:
    disabled: list[str] | None = ["reporters", "policies"]
    where = "disabled="
    if source == "environment":
        monkeypatch.setenv("SOONG_DISABLE_PLUGINS", "reporters,policies")
        disabled, where = None, "SOONG_DISABLE_PLUGINS"
    with pytest.raises(UsageError) as raised:
        make_plugins(entry_points=False, disabled=disabled)
    error = raised.value
    assert error.exit_code == 2
    assert error.message == (
        "plugin 'policies' is required and cannot be disabled: it registers the lease, "
        "hard_timeout and budget policies; without it no limit applies and no budget is checked")
    assert error.hints == (f"remove policies from {where}",)


def test_required_plugins_are_marked_and_may_be_left_out_of_builtins() -> None:
    assert set(REQUIRED_PLUGINS) == {"policies"}
    plugins = make_plugins(entry_points=False, disabled=())
    info = {p.name: p for p in plugins.info()}
    assert info["policies"].required is True
    assert info["policies"].required_reason == REQUIRED_PLUGINS["policies"]
    assert "budget" in (info["policies"].required_reason or "")
    assert [p.name for p in plugins.info() if p.required] == ["policies"]
    assert all(p.required_reason is None for p in plugins.info() if not p.required)
    # a manager built without it is the caller's choice: no error here (the core checks
    # at launch); and disabling a name that is not loaded as a built-in is no refusal
    without = make_plugins(entry_points=False, disabled=["policies"],
                           builtins=[b for b in BUILTIN_PLUGINS if b[0] != "policies"])
    assert "policies" not in [p.name for p in without.info()]
    assert len(without.policies()) == 0


def test_a_third_party_named_like_a_required_builtin_is_not_required(plugins: Plugins) -> None:
    plugins.unregister("policies")
    assert plugins.register(module_plugin("policies"), "policies") is True
    [info] = [p for p in plugins.info() if p.name == "policies"]
    assert (info.builtin, info.required, info.required_reason) == (False, False, None)


# -- what each plugin registers ---------------------------------------------------------

def test_registrations_of_the_builtins(plugins: Plugins) -> None:
    registrations = plugins.registrations()
    assert set(registrations) == {name for name, _ in BUILTIN_PLUGINS}
    assert all(list(kinds) == list(REGISTRATION_KINDS) for kinds in registrations.values())
    assert registrations["lambda_labs"]["providers"] == ["lambda"]
    assert registrations["lambda_labs"]["commands"] == ["sim up", "sim status", "sim down"]
    assert registrations["policies"]["policies"] == ["lease", "hard_timeout", "idle", "budget"]
    assert registrations["reporters"]["reporters"] == ["table", "json"]
    assert registrations["fabric_tunnel"] == {
        **{kind: [] for kind in REGISTRATION_KINDS}, "tunnel_backends": ["fabric"],
        "commands": ["ssh", "tunnel start", "tunnel status", "tunnel stop"]}
    assert registrations["lease_agent"] == {
        **{kind: [] for kind in REGISTRATION_KINDS}, "tunnel_backends": ["direct"],
        "commands": ["agent build", "agent status", "agent install"]}


def test_registrations_of_a_third_party_and_of_a_disabled_one(
        monkeypatch: pytest.MonkeyPatch) -> None:
    everything = module_plugin(
        "everything",
        soong_register_providers=lambda register: register("fake", FakeProvider),
        soong_register_policies=lambda register: (register("p1", object), register("p2", object)),
        soong_register_reporters=lambda register: register("lines", LinesReporter),
        soong_register_tunnel_backends=lambda register: register("dummy", DummyTunnel),
        soong_register_activity_sources=lambda register: register("always", Always),
        soong_register_commands=lambda register: register("hello", object),
    )
    off = module_plugin("off", soong_register_providers=lambda register: register("o", FakeProvider))
    fake_entry_points(monkeypatch, {"everything": everything, "off": off})
    registrations = make_plugins(disabled=["off"]).registrations()
    assert registrations["everything"] == {
        "providers": ["fake"], "policies": ["p1", "p2"], "reporters": ["lines"],
        "tunnel_backends": ["dummy"], "activity_sources": ["always"], "commands": ["hello"]}
    assert registrations["off"] == {kind: [] for kind in REGISTRATION_KINDS}


def test_a_name_won_by_a_third_party_counts_for_it(
        plugins: Plugins, register_plugin: Any) -> None:
    register_plugin(module_plugin("mine", soong_register_reporters=lambda register: register(
        "table", LinesReporter)), "mine")
    registrations = plugins.registrations()
    assert registrations["mine"]["reporters"] == ["table"]
    assert registrations["reporters"]["reporters"] == ["json"]


@pytest.mark.parametrize("broken, expected", [
    ("does_not_exist_anywhere", "ModuleNotFoundError: No module named 'does_not_exist_anywhere'"),
])
def test_a_plugin_that_fails_to_import_is_one_warning(
        monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture,
        broken: str, expected: str) -> None:
    fake_entry_points(monkeypatch, {"broken": broken})
    with caplog.at_level(logging.WARNING, logger="soong"):
        plugins = make_plugins(disabled=())
    records = [r for r in caplog.records if r.levelno >= logging.WARNING]
    assert len(records) == 1
    assert "plugin 'broken'" in records[0].getMessage()
    assert expected in records[0].getMessage()
    assert [p.status for p in plugins.info() if p.name == "broken"] == ["failed"]
    assert all(p.status == "loaded" for p in plugins.info() if p.builtin)


def test_misspelt_hook_fails_that_plugin_only(plugins: Plugins) -> None:
    typo = module_plugin("typo", soong_register_provider=lambda register: None)
    assert plugins.register(typo, "typo") is False
    [info] = [p for p in plugins.info() if p.name == "typo"]
    assert info.status == "failed"
    assert "unknown hook soong_register_provider" in (info.error or "")
    assert plugins.pm.get_plugin("typo") is None
    plugins.pm.check_pending()  # nothing left behind


def test_wrong_hook_arguments_fail_that_plugin_only(plugins: Plugins) -> None:
    bad = module_plugin("bad", soong_register_providers=lambda register, colour: None)
    assert plugins.register(bad, "bad") is False
    [info] = [p for p in plugins.info() if p.name == "bad"]
    assert "colour" in (info.error or "")


def test_hook_wrappers_are_refused(plugins: Plugins) -> None:
    module = types.ModuleType("wrapper")

    def soong_register_providers(register: Any) -> Any:
        return (yield)

    module.soong_register_providers = hookimpl(wrapper=True)(soong_register_providers)
    assert plugins.register(module, "wrapper") is False
    [info] = [p for p in plugins.info() if p.name == "wrapper"]
    assert "does not support hook wrappers" in (info.error or "")


def test_duplicate_entry_point_names_keep_the_first(
        monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture) -> None:
    fake_entry_points(monkeypatch, {"policies": module_plugin("shadow")})
    with caplog.at_level(logging.WARNING, logger="soong"):
        plugins = make_plugins(disabled=())
    assert [p.distribution for p in plugins.info() if p.name == "policies"] == ["soong"]
    assert "plugin 'policies'" in caplog.text and "already taken" in caplog.text


def test_a_register_hook_that_raises_is_a_warning(
        register_plugin: Any, plugins: Plugins, caplog: pytest.LogCaptureFixture) -> None:
    def explode(register: Any) -> None:
        register("good-before", lambda config: FakeProvider())
        raise RuntimeError("boom")

    register_plugin(module_plugin("explodes", soong_register_providers=explode), "explodes")
    register_plugin(FakeProviderPlugin(), "fake")
    with caplog.at_level(logging.WARNING, logger="soong"):
        providers = plugins.providers()
    assert "fake" in providers
    assert "plugin 'explodes' failed in soong_register_providers: RuntimeError: boom" in caplog.text


def test_registry_errors_name_the_plugin(register_plugin: Any, plugins: Plugins) -> None:
    register_plugin(module_plugin("wrongtype", soong_register_providers=lambda register: register(
        "notaprovider", lambda config: object())), "wrongtype")
    with pytest.raises(PluginError, match="plugin 'wrongtype': provider 'notaprovider' is a object"):
        plugins.providers().create("notaprovider", {})
    with pytest.raises(UsageError, match=r"unknown provider 'nope' \(known: lambda, notaprovider\)"):
        plugins.providers().get("nope")


def test_register_plugin_fixture_unregisters(plugins: Plugins, register_plugin: Any) -> None:
    from soong_core.testing import registered

    with registered(plugins, FakeProviderPlugin(), "fake"):
        assert "fake" in plugins.providers()
    assert "fake" not in plugins.providers()
    assert "fake" not in [p.name for p in plugins.info()]


# -- one test per hook: what the core does with each answer ---------------------------


def test_soong_register_providers(plugins: Plugins, fake_provider: FakeProvider) -> None:
    assert plugins.providers().create("fake", {}) is fake_provider


def test_soong_register_policies_through_the_example_plugin(plugins: Plugins,
                                                             register_plugin: Any) -> None:
    import soong_curfew  # examples/soong-curfew, put on sys.path by conftest

    register_plugin(soong_curfew, "curfew")
    policy = plugins.policies().create("curfew", {"curfew": {"hour": 7}})
    assert policy.hour == 7


class DummyTunnel(TunnelBackend):
    name = "dummy"

    def open(self, instance: Instance, forwards: Any) -> Tunnel:
        return Tunnel(instance.id, self.name, tuple(forwards))

    def close(self, tunnel: Tunnel) -> None:
        pass

    def list(self) -> list[Tunnel]:
        return []


def test_soong_register_tunnel_backends(plugins: Plugins, register_plugin: Any) -> None:
    register_plugin(module_plugin("t", soong_register_tunnel_backends=lambda register: register(
        "dummy", lambda config: DummyTunnel())), "t")
    backend = plugins.tunnel_backends().create("dummy", {})
    assert backend.open(instance(), ()).instance_id == "i-1"
    with pytest.raises(Exception, match="cannot open a shell"):
        backend.shell(instance())


class LinesReporter(StatusReporter):
    name = "lines"

    def render(self, statuses: Any, out: Any) -> None:
        for status in statuses:
            out.write(status.instance.id + "\n")


def test_soong_register_reporters(plugins: Plugins, register_plugin: Any) -> None:
    import io

    from soong_core.models import InstanceStatus

    register_plugin(module_plugin("r", soong_register_reporters=lambda register: register(
        "lines", lambda config: LinesReporter())), "r")
    out = io.StringIO()
    plugins.reporters().create("lines", {}).render([InstanceStatus(instance())], out)
    assert out.getvalue() == "i-1\n"


def test_soong_lifecycle_event_reaches_every_plugin_even_if_one_fails(
        plugins: Plugins, register_plugin: Any, caplog: pytest.LogCaptureFixture) -> None:
    received: list[tuple[str, Event]] = []

    def failing(event: Event) -> None:
        raise OSError("mail server down")

    register_plugin(module_plugin("a", soong_lifecycle_event=lambda event, config: received.append(
        ("a", event))), "a")
    register_plugin(module_plugin("b", soong_lifecycle_event=failing), "b")
    register_plugin(module_plugin("c", soong_lifecycle_event=lambda event: received.append(
        ("c", event))), "c")
    event = Event(EventKind.TERMINATE, "i-1", 1.0, reason="manual")
    with caplog.at_level(logging.WARNING, logger="soong"):
        plugins.emit(event, {})
    assert sorted(name for name, _ in received) == ["a", "c"]
    assert "plugin 'b' failed in soong_lifecycle_event: OSError: mail server down" in caplog.text


def test_soong_config_schema_sections_merge_and_clash(plugins: Plugins, register_plugin: Any) -> None:
    register_plugin(module_plugin("one", soong_config_schema=lambda: {
        "one": {"x": {"type": "integer"}}}), "one")
    sections = plugins.config_sections()
    assert sections["one"] == ("one", {"x": {"type": "integer"}})
    register_plugin(module_plugin("two", soong_config_schema=lambda: {"one": {}}), "two")
    with pytest.raises(PluginError, match="config section 'one' is claimed by plugins"):
        plugins.config_sections()


def test_soong_prepare_launch_merges_tags_and_user_data_in_order(
        plugins: Plugins, register_plugin: Any) -> None:
    register_plugin(module_plugin("first", soong_prepare_launch=lambda request: LaunchContribution(
        tags={"first:tag": "1"}, user_data_parts=("#!/bin/bash\necho first",))), "first")
    register_plugin(module_plugin("second", soong_prepare_launch=lambda request, config:
                                  LaunchContribution(user_data_parts=("#!/bin/sh\necho second",))), "second")
    register_plugin(module_plugin("none", soong_prepare_launch=lambda request: None), "none")
    request = prepared(plugins, LaunchRequest("gpu_1x_a10", ("us-east-1",),
                                              tags={"soong:launch-id": "abc"}), {})
    assert request.tags == {"soong:launch-id": "abc", "first:tag": "1"}
    # last registered is called first: "second" before "first"
    parts = email.message_from_string(request.user_data or "").get_payload()
    assert [(p.get_filename(), p.get_payload()) for p in parts] == [
        ("00-second.sh", "#!/bin/sh\necho second"), ("01-first.sh", "#!/bin/bash\necho first")]


def test_soong_prepare_launch_failures_abort_the_launch(plugins: Plugins, register_plugin: Any) -> None:
    register_plugin(module_plugin("clash", soong_prepare_launch=lambda request: LaunchContribution(
        tags={"soong:launch-id": "other"})), "clash")
    with pytest.raises(PluginError, match="plugin 'clash' sets tag 'soong:launch-id', which "
                                          "soong writes itself"):
        prepared(plugins, LaunchRequest("t", ("r",), tags={"soong:launch-id": "abc"}), {})
    plugins.unregister("clash")
    register_plugin(module_plugin("twice", soong_prepare_launch=lambda request: LaunchContribution(
        tags={"team:owner": "bob"})), "twice")
    with pytest.raises(PluginError, match="plugin 'twice': plugin 'twice' sets tag 'team:owner'"):
        prepared(plugins, LaunchRequest("t", ("r",), tags={"team:owner": "alice"}), {})
    plugins.unregister("twice")
    register_plugin(module_plugin("badtag", soong_prepare_launch=lambda request: LaunchContribution(
        tags={"Bad Key": "x"})), "badtag")
    with pytest.raises(PluginError, match="must match"):
        prepared(plugins, LaunchRequest("t", ("r",)), {})
    plugins.unregister("badtag")

    def boom(request: LaunchRequest) -> None:
        raise RuntimeError("agent bundle missing")

    register_plugin(module_plugin("boom", soong_prepare_launch=boom), "boom")
    with pytest.raises(PluginError, match="plugin 'boom' failed to prepare the launch: "
                                          "RuntimeError: agent bundle missing"):
        prepared(plugins, LaunchRequest("t", ("r",)), {})


def test_soong_status_details_are_kept_per_plugin(
        plugins: Plugins, register_plugin: Any, caplog: pytest.LogCaptureFixture) -> None:
    def unreachable(instance: Instance) -> None:
        raise TimeoutError("agent did not answer")

    register_plugin(module_plugin("agent", soong_status_details=unreachable), "agent")
    register_plugin(module_plugin("gpu", soong_status_details=lambda instance, config: {
        "util": 93}), "gpu")
    with caplog.at_level(logging.WARNING, logger="soong"):
        details = plugins.status_details(instance(), {})
    assert details == {"gpu": {"util": 93}}
    assert "plugin 'agent' failed in soong_status_details for i-1: TimeoutError" in caplog.text


class Always(ActivitySource):
    name = "always"

    def sample(self, now: float) -> ActivitySample:
        return ActivitySample(ActivityState.ACTIVE, "always")


def test_soong_register_activity_sources(plugins: Plugins, register_plugin: Any) -> None:
    register_plugin(module_plugin("act", soong_register_activity_sources=lambda register: register(
        "always", lambda config: Always())), "act")
    assert plugins.activity_sources().create("always", {}).sample(5.0).is_activity


def test_soong_agent_bundle_modules_union(plugins: Plugins, register_plugin: Any) -> None:
    register_plugin(module_plugin("m1", soong_agent_bundle_modules=lambda: ["pkg_a", "pkg_b"]), "m1")
    register_plugin(module_plugin("m2", soong_agent_bundle_modules=lambda: ("pkg_b", "pkg_c")), "m2")
    modules = plugins.agent_bundle_modules()
    assert {"pkg_a", "pkg_b", "pkg_c"} <= set(modules)
    assert len(modules) == len(set(modules))
    register_plugin(module_plugin("m3", soong_agent_bundle_modules=lambda: "pkg_d"), "m3")
    with pytest.raises(PluginError, match="not the string 'pkg_d'"):
        plugins.agent_bundle_modules()


def test_soong_register_commands_registry(plugins: Plugins, register_plugin: Any) -> None:
    register_plugin(module_plugin("cmds", soong_register_commands=lambda register: register(
        "hello", object)), "cmds")
    assert plugins.commands().get("hello").plugin == "cmds"


def test_registry_create_all_makes_every_entry_in_order_with_the_config(
        plugins: Plugins, register_plugin: Any) -> None:
    import soong_curfew  # examples/soong-curfew, put on sys.path by conftest

    register_plugin(soong_curfew, "curfew")
    made = plugins.policies().create_all({"curfew": {"hour": 7}})
    # the third party registers first (called first), then the built-ins in their order
    assert [name for name, _ in made] == ["curfew", "lease", "hard_timeout", "idle", "budget"]
    assert dict(made)["curfew"].hour == 7  # each factory got the config
    register_plugin(module_plugin("wrongtype", soong_register_policies=lambda register: register(
        "notapolicy", lambda config: object())), "wrongtype")
    with pytest.raises(PluginError, match="plugin 'wrongtype': cost policy 'notapolicy' is a "
                                          "object, not a CostPolicy"):
        plugins.policies().create_all({})
