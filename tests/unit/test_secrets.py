"""Secrets never print: URLs, pass-through options, logs and CLI errors are masked."""

from __future__ import annotations

import io
import json
import logging
import os
import subprocess
import sys
import urllib.error
import urllib.request
from pathlib import Path

import pytest
import redis
import yaml
from click.testing import CliRunner

from chatlog.cli import cli
from chatlog.histories.export import open_export_file
from chatlog.log_format import configure_logging
from chatlog.projector.metrics import MetricsServer, ProjectorMetrics
from chatlog.secrets import MASK, mask_secrets, masked_settings
from chatlog.settings import Settings

SECRET = "hunter2-xyz"
ROOT = Path(__file__).resolve().parents[2]


@pytest.mark.parametrize(
    ("url", "masked"),
    [
        (f"redis://app:{SECRET}@redis:6379/0", "redis://app:****@redis:6379/0"),
        (f"redis://:{SECRET}@redis:6379/0", "redis://:****@redis:6379/0"),
        (f"redis://redis:6379/0?password={SECRET}&db=1", "redis://redis:6379/0?password=****&db=1"),
        (
            f"rediss://r/0?ssl_keyfile=/k.pem&ssl_password={SECRET}&ssl_keyfile_password={SECRET}",
            "rediss://r/0?ssl_keyfile=/k.pem&ssl_password=****&ssl_keyfile_password=****",
        ),
        (
            f"postgresql+psycopg://app:{SECRET}@db:5432/chat?sslmode=require",
            "postgresql+psycopg://app:****@db:5432/chat?sslmode=require",
        ),
        (f"https://api.example/v1?token={SECRET}#x", "https://api.example/v1?token=****#x"),
        ("redis://app@redis:6379/0", "redis://app@redis:6379/0"),
        ("sqlite:///var/chat.db", "sqlite:///var/chat.db"),
    ],
)
def test_url_passwords_and_secret_query_parameters_are_masked(url: str, masked: str) -> None:
    """User-info passwords and password/ssl_password/token parameters become ****."""
    assert mask_secrets(url) == masked


def test_free_text_quoting_urls_and_assignments_is_masked() -> None:
    """An error message or log line quoting a URL or KEY=VALUE secrets is masked."""
    text = (
        f"cannot reach redis://app:{SECRET}@h:6379/0 with sasl_plain_password={SECRET} "
        f"and CHATLOG_KAFKA_SASL_PASSWORD={SECRET}; client_id=app-1"
    )
    masked = mask_secrets(text)
    assert SECRET not in masked
    assert masked == (
        "cannot reach redis://app:****@h:6379/0 with sasl_plain_password=**** "
        "and CHATLOG_KAFKA_SASL_PASSWORD=****; client_id=app-1"
    )


def test_config_show_shows_only_the_names_of_pass_through_options() -> None:
    """Unknown CHATLOG_KAFKA_* options may be secrets: their values never print."""
    result = CliRunner().invoke(
        cli,
        ["--redis-url", f"redis://redis:6379/0?password={SECRET}", "config", "show", "--json"],
        env={
            "CHATLOG_KAFKA_CLIENT_ID": "app-1",
            "CHATLOG_KAFKA_SASL_OAUTH_TOKEN_PROVIDER": SECRET,
        },
    )
    assert result.exit_code == 0, result.output
    assert SECRET not in result.output
    shown = json.loads(result.output)
    assert shown["kafka_options"] == {"client_id": MASK, "sasl_oauth_token_provider": MASK}
    assert shown["redis_url"] == "redis://redis:6379/0?password=****"
    assert masked_settings(Settings())["redis_url"] == "redis://localhost:6379/0"


@pytest.mark.parametrize("log_format", ["text", "json"])
def test_log_lines_mask_secrets(log_format: str) -> None:
    """Both log formats mask a URL password and a secret assignment in the message."""
    stream = io.StringIO()
    handler = configure_logging(log_format, logging.INFO, stream=stream)
    try:
        logging.getLogger("chatlog.projector").warning(
            "poll failed, retrying: %s", f"redis://app:{SECRET}@h/0 token={SECRET}"
        )
    finally:
        logging.getLogger().removeHandler(handler)
    line = stream.getvalue()
    assert SECRET not in line
    assert "redis://app:****@h/0 token=****" in line


def test_a_cli_error_quoting_a_url_masks_its_password() -> None:
    """A typed error whose message quotes a URL (here, one in the wrong variable) is masked."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("CHATLOG_")}
    done = subprocess.run(
        [sys.executable, "-m", "chatlog.cli", "--read-timeout-s",
         f"redis://app:{SECRET}@h/0", "config", "show"],
        capture_output=True, text=True, env={**env, "COLUMNS": "200"}, check=False,
    )
    assert done.returncode == 1, done.stdout + done.stderr
    assert SECRET not in done.stdout + done.stderr
    assert "redis://app:****@h/0" in done.stdout + done.stderr


def test_the_metrics_server_binds_loopback_by_default() -> None:
    """With no host configured the unauthenticated endpoints are not on the network."""
    assert Settings().metrics_host == "127.0.0.1"
    assert Settings.from_env({"CHATLOG_METRICS_HOST": "0.0.0.0"}).metrics_host == "0.0.0.0"
    with MetricsServer(ProjectorMetrics(), port=0) as server:
        assert server.host == "127.0.0.1"


def test_readyz_names_the_retried_operation_but_not_the_error_text() -> None:
    """The probe body says what is retried; the error text (hosts, URLs) stays in the log."""
    metrics = ProjectorMetrics()
    error = redis.ConnectionError(f"Error connecting to redis://app:{SECRET}@10.1.2.3:6379")
    metrics.retried("apply to Redis", error)
    with (
        MetricsServer(metrics, port=0) as server,
        pytest.raises(urllib.error.HTTPError) as refused,
    ):
        urllib.request.urlopen(f"http://127.0.0.1:{server.port}/readyz", timeout=5)
    assert refused.value.code == 503
    body = json.loads(refused.value.read())
    assert body == {"ok": False, "reason": "retrying apply to Redis (ConnectionError)"}


def test_export_files_are_created_owner_only(tmp_path: Path) -> None:
    """A new export file is 0600 whatever the umask; an existing one is narrowed first."""
    old_umask = os.umask(0)
    try:
        fresh = tmp_path / "fresh.json"
        with open_export_file(fresh) as out:
            out.write("{}")
        existing = tmp_path / "existing.json"
        existing.write_text("old")
        existing.chmod(0o644)
        with open_export_file(existing) as out:
            assert existing.stat().st_mode & 0o777 == 0o600  # before the first write
            out.write("new")
    finally:
        os.umask(old_umask)
    assert fresh.stat().st_mode & 0o777 == 0o600
    assert (fresh.read_text(), existing.read_text()) == ("{}", "new")


def test_compose_publishes_on_loopback_and_protects_redis_with_a_password() -> None:
    """docker-compose.yml: every port on 127.0.0.1, Redis requirepass, the projector uses it."""
    compose = yaml.safe_load((ROOT / "docker-compose.yml").read_text())
    services = compose["services"]
    ports = [port for service in services.values() for port in service.get("ports", [])]
    assert ports and all(str(port).startswith("127.0.0.1:") for port in ports), ports
    command = services["redis"]["command"]
    assert command[command.index("--requirepass") + 1].startswith("${CHATLOG_REDIS_PASSWORD")
    projector = services["projector"]["environment"]
    assert projector["CHATLOG_REDIS_PASSWORD"] == command[command.index("--requirepass") + 1]
    assert services["redis"]["environment"]["REDISCLI_AUTH"] == projector["CHATLOG_REDIS_PASSWORD"]
    assert projector["CHATLOG_METRICS_HOST"] == "0.0.0.0"  # inside the container only
