"""The lease agent's part of a launch: the MIME join, `start --user-data`, the size limit
and the token the laptop keeps."""

from __future__ import annotations

import email
import stat
from email.message import Message
from pathlib import Path
from typing import Any

import pytest
from deploy_kit import API_KEY, CONFIG, Sandbox, launch_request

import soong_plugins.lease_agent as lease_agent
from soong_core.config import write_config_file
from soong_core.errors import PluginError, UsageError
from soong_core.fake import FakeProvider
from soong_core.models import (
    LIMITS, Event, EventKind, Instance, InstanceState, LaunchContribution, LaunchRequest,
    join_user_data,
)
from soong_core.plugin_calls import finish_launch
from soong_core.testing import SoongEnv, live_fake_cloud
from soong_plugins.lease_agent import tokens


def parts_of(user_data: str | None) -> list[Message]:
    assert user_data is not None
    document = email.message_from_string(user_data)
    assert document.get_content_type() == "multipart/mixed"
    assert document["MIME-Version"] == "1.0"
    parts = document.get_payload()
    assert isinstance(parts, list)
    return [part for part in parts if isinstance(part, Message)]


# -- the join -------------------------------------------------------------------------


def test_parts_join_as_mime_agent_first_user_last_each_typed_by_its_first_line() -> None:
    joined = join_user_data([("user", "#cloud-config\npackages: [htop]\n"),
                             ("extra_tool", "#!/bin/sh\necho tool\n"),
                             ("lease_agent", "#!/bin/bash\necho agent\n")])
    parts = parts_of(joined)
    assert [(p.get_content_type(), p.get_filename(), p.get_payload()) for p in parts] == [
        ("text/x-shellscript", "00-soong-agent.sh", "#!/bin/bash\necho agent\n"),
        ("text/x-shellscript", "01-extra-tool.sh", "#!/bin/sh\necho tool\n"),
        ("text/cloud-config", "02-user.cfg", "#cloud-config\npackages: [htop]\n")]
    assert all(p["Content-Disposition"].startswith("attachment;") for p in parts)


def test_a_request_without_parts_has_no_user_data() -> None:
    assert launch_request().user_data is None


def test_a_part_of_no_known_type_is_refused_when_merged_naming_the_plugin() -> None:
    with pytest.raises(PluginError, match="plugin 'odd': a user_data part must start with"):
        finish_launch(launch_request(), [("odd", LaunchContribution(
            user_data_parts=("echo no shebang",)))])


def test_a_boundary_never_occurs_in_a_part() -> None:
    first = join_user_data([("a", "#!/bin/sh\necho 1\n")])
    boundary = parts_boundary(first)
    sneaky = join_user_data([("a", f"#!/bin/sh\necho '--{boundary}'\n")])
    [part] = parts_of(sneaky)
    assert part.get_payload() == f"#!/bin/sh\necho '--{boundary}'\n"


def parts_boundary(user_data: str) -> str:
    boundary = email.message_from_string(user_data).get_boundary()
    assert boundary
    return boundary


# -- the plugin's contribution -----------------------------------------------------------


def test_the_plan_declares_every_limit_and_writes_nothing(soong_env: SoongEnv) -> None:
    planned = lease_agent.soong_prepare_launch(launch_request(), CONFIG)
    assert planned is not None and planned.enforces == LIMITS
    assert planned.user_data_parts == () and planned.finish is not None
    assert not tokens.agents_dir().exists()
    assert lease_agent.soong_prepare_launch(
        launch_request(), {**CONFIG, "defaults": {"provider": "fake"}}) is None


def test_finish_adds_the_script_first_and_keeps_the_token_0600(soong_env: SoongEnv) -> None:
    planned = lease_agent.soong_prepare_launch(launch_request(), CONFIG)
    assert planned is not None
    request = finish_launch(launch_request("launch-1"), [("lease_agent", planned)])
    [part] = parts_of(request.user_data)
    assert part.get_filename() == "00-soong-agent.sh"
    script = part.get_payload()
    assert isinstance(script, str) and script.startswith("#!/bin/bash\n")
    pending = tokens.pending_path("launch-1")
    assert stat.S_IMODE(pending.stat().st_mode) == 0o600
    assert stat.S_IMODE(pending.parent.stat().st_mode) == 0o700
    token = pending.read_text().strip()
    assert len(token) >= 43 and f'"token": "{token}"' in script
    assert f'"api_key": "{API_KEY}"' in script  # the main key, no agent.api_key set
    assert not any(token in v or API_KEY in v for v in request.tags.values())
    again = finish_launch(launch_request("launch-2"), [("lease_agent", planned)])
    assert tokens.pending_path("launch-2").read_text() != pending.read_text()  # fresh
    assert again.user_data != request.user_data


def test_a_separate_agent_key_is_the_one_the_agent_gets(soong_env: SoongEnv) -> None:
    config = {**CONFIG, "agent": {"port": 8799, "api_key": "secret_agent_only"}}
    planned = lease_agent.soong_prepare_launch(launch_request(), config)
    assert planned is not None
    request = finish_launch(launch_request(), [("lease_agent", planned)])
    assert '"api_key": "secret_agent_only"' in (request.user_data or "")
    assert API_KEY not in (request.user_data or "")


def test_no_key_at_all_fails_the_launch(soong_env: SoongEnv) -> None:
    config = {**CONFIG, "lambda": {"api_key": None, "api_url": "http://127.0.0.1:9"}}
    planned = lease_agent.soong_prepare_launch(launch_request(), config)
    assert planned is not None
    with pytest.raises(PluginError, match="lease_agent.*no API key for the lease agent"):
        finish_launch(launch_request(), [("lease_agent", planned)])


def test_a_token_that_cannot_be_written_fails_the_launch(soong_env: SoongEnv) -> None:
    tokens.agents_dir().parent.mkdir(parents=True, exist_ok=True)
    tokens.agents_dir().write_text("a file where the folder belongs")
    planned = lease_agent.soong_prepare_launch(launch_request(), CONFIG)
    assert planned is not None
    with pytest.raises(PluginError, match="lease_agent.*cannot keep the agent's token"):
        finish_launch(launch_request(), [("lease_agent", planned)])


# -- the token's life ---------------------------------------------------------------------


def instance(instance_id: str, state: InstanceState = InstanceState.ACTIVE,
             launch_id: str = "launch-1") -> Instance:
    return Instance(instance_id, state, tags={"soong:launch-id": launch_id})


def test_the_launch_event_names_the_token_and_termination_removes_it() -> None:
    tokens.write_pending("launch-1", "t0ken")
    lease_agent.soong_lifecycle_event(Event(EventKind.LAUNCH, "i-1", 0.0,
                                            detail={"launch_id": "launch-1"}), CONFIG)
    assert tokens.read_token("i-1") == "t0ken"
    assert stat.S_IMODE(tokens.token_path("i-1").stat().st_mode) == 0o600
    assert not tokens.pending_path("launch-1").exists()
    lease_agent.soong_lifecycle_event(Event(EventKind.TERMINATE, "i-1", 1.0), CONFIG)
    assert tokens.read_token("i-1") is None and tokens.kept_instances() == []


def test_listings_adopt_pending_tokens_and_drop_ended_ones_of_their_own_account() -> None:
    tokens.write_pending("launch-1", "one")  # a launch history did not record
    tokens.write_pending("launch-2", "two")
    lease_agent.soong_instances_seen([instance("i-1"), instance("i-2", launch_id="launch-2")],
                                     True, "acct-a", CONFIG)
    assert (tokens.read_token("i-1"), tokens.read_token("i-2")) == ("one", "two")
    tokens.write_pending("launch-3", "three")
    lease_agent.soong_lifecycle_event(Event(EventKind.LAUNCH, "i-3", 0.0,
                                            detail={"launch_id": "launch-3"}), CONFIG)
    lease_agent.soong_instances_seen([instance("i-3", launch_id="launch-3")], True,
                                     "acct-b", CONFIG)  # another profile's listing
    assert tokens.kept_instances() == ["i-1", "i-2", "i-3"]
    lease_agent.soong_instances_seen([instance("i-2", InstanceState.TERMINATED, "launch-2")],
                                     False, "acct-a", CONFIG)
    assert tokens.kept_instances() == ["i-1", "i-3"]
    lease_agent.soong_instances_seen([], True, "acct-a", CONFIG)  # i-1 is gone
    assert tokens.kept_instances() == ["i-3"]
    lease_agent.soong_instances_seen([], False, "acct-b", CONFIG)  # a partial look: no news
    assert tokens.kept_instances() == ["i-3"]


def test_unsafe_ids_never_name_a_file() -> None:
    with pytest.raises(ValueError):
        tokens.token_path("../escape")
    assert tokens.read_token("../escape") is None


# -- soong start --user-data -------------------------------------------------------------


@pytest.fixture
def cloud(soong_env: SoongEnv, register_plugin: Any, monkeypatch: pytest.MonkeyPatch
          ) -> FakeProvider:
    """The fake cloud, with the lease agent deploying to it as it does to Lambda."""
    monkeypatch.setattr(lease_agent, "PROVIDER", "fake")
    monkeypatch.setattr(lease_agent, "bundle_modules", lambda: [])
    provider = live_fake_cloud(register_plugin)
    write_config_file(soong_env.config_file, {
        "defaults": {"provider": "fake", "gpu": "gpu_1x_a10", "region": "us-east-1",
                     "lease_hours": 2},
        "lambda": {"api_key": API_KEY}})
    return provider


def launched(provider: FakeProvider) -> list[LaunchRequest]:
    return [request for call, request in provider.calls if call == "launch"]


USER_SCRIPT = '#!/bin/bash\nset -eu\necho "user was here" > "$SOONG_ROOT/user-was-here"\n'


def test_start_joins_the_users_script_after_the_agents_and_both_run(
        run_cli: Any, cloud: FakeProvider, tmp_path: Path, sandbox: Sandbox) -> None:
    mine = tmp_path / "setup.sh"
    mine.write_text(USER_SCRIPT)
    result = run_cli(f"start -y --no-wait --user-data {mine}")
    assert result.exit_code == 0, result.stderr
    [request] = launched(cloud)
    parts = parts_of(request.user_data)
    assert [p.get_filename() for p in parts] == ["00-soong-agent.sh", "01-user.sh"]
    assert parts[1].get_payload() == USER_SCRIPT
    [instance] = cloud.list_instances()
    token = tokens.read_token(instance.id)
    assert token and f'"token": "{token}"' in str(parts[0].get_payload())
    assert token not in result.stdout + result.stderr and API_KEY not in result.stdout
    for part in sorted(parts, key=lambda p: str(p.get_filename())):  # as cloud-init does
        if part.get_content_type() == "text/x-shellscript":
            done = sandbox.run(str(part.get_payload()), str(part.get_filename()))
            assert done.returncode == 0, done.stderr
    assert (sandbox.root / "user-was-here").read_text() == "user was here\n"
    assert {"opt/soong/agent.pyz", "etc/soong/agent.json"} <= set(sandbox.files())
    stopped = run_cli(f"stop -y {instance.id}")
    assert stopped.exit_code == 0, stopped.stderr
    assert tokens.read_token(instance.id) is None


@pytest.mark.parametrize("content, words", [
    (None, "cannot read --user-data"),
    (b"\x7fELF\x02\x01\x01\x00\x00", "is not text"),
    (b"#!/bin/sh\n\xff\xfe", "is not text"),
    (b"echo no shebang\n", "must start with '#!' (a script) or '#cloud-config'"),
    (b"", "must start with"),
])
def test_start_refuses_a_bad_user_data_file_and_launches_nothing(
        run_cli: Any, cloud: FakeProvider, tmp_path: Path, content: bytes | None,
        words: str) -> None:
    path = tmp_path / "user-data"
    if content is not None:
        path.write_bytes(content)
    result = run_cli(f"start -y --user-data {path}")
    assert result.exit_code == 2
    assert words in result.stderr
    assert "Traceback" not in result.stderr
    assert launched(cloud) == [] and not tokens.agents_dir().exists()


def test_user_data_over_the_apis_limit_is_refused_naming_its_size(agent_script: Any) -> None:
    from soong_plugins.lambda_labs.checks import USER_DATA_MAX, check_launch

    big = "#!/bin/sh\n" + "#" * (USER_DATA_MAX - len(agent_script.text))
    request = LaunchRequest("gpu_1x_a10", ("us-east-1",), ssh_key_names=("k",),
                            user_data_parts=(agent_script.text, big),
                            user_data_names=("lease_agent", "user"))
    size = len((request.user_data or "").encode())
    assert size > USER_DATA_MAX
    with pytest.raises(UsageError) as refused:
        check_launch(request, {})
    assert refused.value.message == (f"user_data is {size} bytes: Lambda Cloud takes at most "
                                     f"{USER_DATA_MAX} (1 MB)")
    small = LaunchRequest("gpu_1x_a10", ("us-east-1",), ssh_key_names=("k",),
                          user_data_parts=(agent_script.text, USER_SCRIPT),
                          user_data_names=("lease_agent", "user"))
    check_launch(small, {})  # the agent and a script fit with room to spare
