"""The API key goes into the Authorization header and nowhere else: not in output, logs,
-vvv debug lines, errors, reprs, tracebacks or files soong writes (but the config)."""

from __future__ import annotations

import logging
import time
import traceback
from pathlib import Path
from typing import Callable

import pytest

from soong_core.clock import ManualClock
from soong_core.config import default_config_path, profile_path, write_config_file
from soong_core.testing import CliResult, SoongEnv, run_soong
from soong_plugins.lambda_labs import errors, redact, transport
from soong_plugins.lambda_labs.provider import LambdaProvider
from soong_plugins.lambda_labs.simulator.testing import DEFAULT_PUBLIC_KEY, SimHarness

WRONG_KEY = "soong-wrong-key-4b1d9e0f7a3c"
"""A key the simulator refuses: it travels in headers too, and must not leak either."""


def leaks(texts: list[str], *secrets: str) -> list[str]:
    return [f"{secret[:12]}... in: {text[:300]!r}" for text in texts for secret in secrets
            if secret in text]


def written_files(env: SoongEnv) -> list[Path]:
    """Every file soong wrote outside the config folder (which holds the key on purpose)."""
    roots = (env.data_home, env.cache_home, env.state_home)
    return [p for root in roots for p in root.rglob("*") if p.is_file()]


def test_a_cli_session_never_shows_the_key(
        cloud_factory: Callable[..., SimHarness], run_cli: Callable[..., CliResult],
        soong_env: SoongEnv) -> None:
    # The CLI reads the real clock here (no sim profile): the simulator's starts there too,
    # or `start` would refuse the skew between them.
    cloud = cloud_factory(boot_seconds=0, terminate_seconds=0, clock=ManualClock(time.time()))
    key = cloud.api_key
    LambdaProvider(cloud.api_url, key).add_ssh_key("soong", DEFAULT_PUBLIC_KEY)
    # The account names the simulator, as `sim up`'s profile does: its agents' URLs are read.
    write_config_file(default_config_path(), {"lambda": {
        "api_url": cloud.api_url, "account_id": cloud.simulator.account_id}})
    write_config_file(profile_path("wrong"), {"lambda": {"api_key": WRONG_KEY}})
    results = [
        run_cli("configure -n --api-key-stdin --no-ssh-key --gpu gpu_1x_a10 --region us-east-1",
                inputs=key + "\n"),
        run_cli("-vvv status"),
        run_cli("-vvv start -y --hours 2"),
        run_cli("-vvv status --json"),
        run_cli("config show"),
        run_cli("-vvv stop --all -y"),
        run_cli("-vvv --profile wrong status"),
        run_cli("-vvv --profile wrong start -y"),
    ]
    codes = [r.exit_code for r in results]
    assert codes == [0, 0, 0, 0, 0, 0, 1, 1], [r.stderr for r in results]
    output = [r.stdout for r in results] + [r.stderr for r in results]
    assert any("GET " in text and "-> 200" in text for text in output)  # -vvv shows HTTP lines
    assert any("Traceback" in text for text in output)  # and, on the errors, tracebacks
    assert leaks(output, key, WRONG_KEY) == []
    assert leaks([p.read_text(errors="replace") for p in written_files(soong_env)],
                 key, WRONG_KEY) == []


@pytest.mark.slow
def test_a_real_process_at_debug_verbosity_never_shows_the_key(
        cloud_factory: Callable[..., SimHarness], soong_env: SoongEnv) -> None:
    cloud = cloud_factory(rate_limit=False)  # its limits run on this test's virtual clock
    write_config_file(default_config_path(), {"lambda": {"api_url": cloud.api_url}})
    shown = run_soong("-vvv", "status", env=soong_env,
                      extra_env={"LAMBDA_API_KEY": cloud.api_key})
    refused = run_soong("-vvv", "status", env=soong_env, extra_env={"LAMBDA_API_KEY": WRONG_KEY})
    assert shown.exit_code == 0, shown.stderr
    assert "-> 200" in shown.stderr
    assert refused.exit_code == 1 and "Traceback" in refused.stderr
    assert "refused the API key" in refused.stderr
    texts = [shown.stdout, shown.stderr, refused.stdout, refused.stderr]
    assert leaks(texts, cloud.api_key, WRONG_KEY) == []


def test_the_debug_log_masks_whatever_slips_into_it(caplog: pytest.LogCaptureFixture) -> None:
    secret = "soong-test-secret-9f8e7d6c"
    redact.register_secret(secret)
    log = redact.get_logger()
    with caplog.at_level(logging.DEBUG, logger="soong.lambda"):
        log.debug("sent %s with Authorization: Bearer %s", secret, "abcdef123456")
    assert secret not in caplog.text and "abcdef123456" not in caplog.text
    assert "Bearer ****" in caplog.text


def test_reprs_and_tracebacks_with_locals_mask_the_key(cloud: SimHarness) -> None:
    key = cloud.api_key
    provider = LambdaProvider(cloud.api_url, key)
    auth = transport.BearerAuth(key)
    assert key not in repr(provider) + repr(provider.client.transport) + repr(auth)
    assert key not in repr({"Authorization": transport.MaskedHeader(f"Bearer {key}")})
    cloud.control("PATCH", "/knobs", {"reset_rate": 1.0})
    with pytest.raises(errors.ConnectionFailedError) as caught:
        provider.list_instances()
    error = caught.value
    below_this_test = error.__traceback__.tb_next if error.__traceback__ else None
    text = "".join(traceback.TracebackException(type(error), error, below_this_test,
                                                capture_locals=True).format())
    assert "Authorization" in text  # the header dicts are in the locals...
    assert key not in text  # ...masked


def test_errors_mask_a_key_the_server_echoes() -> None:
    secret = "soong-echoed-secret-0a1b2c"
    redact.register_secret(secret)
    error = errors.api_error(400, {"error": {"code": "global/invalid-parameters",
                                             "message": f"bad key {secret}",
                                             "suggestion": f"Bearer {secret}"}})
    assert secret not in error.message + " ".join(error.hints) + (error.detail or "")
