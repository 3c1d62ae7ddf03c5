"""Security settings, CLI flags for every setting, the masked configuration and log formats."""

from __future__ import annotations

import io
import json
import logging
from collections.abc import Callable
from dataclasses import fields

import pytest
import redis
from click.testing import CliRunner

from chatlog.cli import cli
from chatlog.cli.config import effective_configuration, mask_url, settings_from_flags
from chatlog.cli.log_format import configure_logging
from chatlog.errors import ConfigurationError
from chatlog.settings import ENVIRONMENT, SECRET_SETTINGS, Settings

SASL_ENV = {
    "CHATLOG_KAFKA_SECURITY_PROTOCOL": "SASL_SSL",
    "CHATLOG_KAFKA_SASL_MECHANISM": "SCRAM-SHA-512",
    "CHATLOG_KAFKA_SASL_USERNAME": "projector",
    "CHATLOG_KAFKA_SASL_PASSWORD": "s3cret",
    "CHATLOG_KAFKA_SSL_CAFILE": "/etc/ca.pem",
    "CHATLOG_KAFKA_SSL_CHECK_HOSTNAME": "false",
}


def test_sasl_and_tls_settings_become_kafka_python_options() -> None:
    """SCRAM over TLS maps onto kafka-python's sasl_* and ssl_* options."""
    options = Settings.from_env(SASL_ENV).kafka_client_options()
    assert options["security_protocol"] == "SASL_SSL"
    assert options["sasl_mechanism"] == "SCRAM-SHA-512"
    assert options["sasl_plain_username"] == "projector"
    assert options["sasl_plain_password"] == "s3cret"
    assert options["ssl_cafile"] == "/etc/ca.pem"
    assert options["ssl_check_hostname"] is False
    assert "security_protocol" not in Settings.from_env(SASL_ENV).kafka_options


def test_pass_through_kafka_options_win_over_the_typed_settings() -> None:
    """CHATLOG_KAFKA_<OPTION> variables without a setting of their own reach the clients as is."""
    settings = Settings.from_env({**SASL_ENV, "CHATLOG_KAFKA_REQUEST_TIMEOUT_MS": "5000"})
    assert settings.kafka_client_options()["request_timeout_ms"] == 5000


@pytest.mark.parametrize(
    ("env", "fragment"),
    [
        ({"CHATLOG_KAFKA_SECURITY_PROTOCOL": "TLS"}, "kafka_security_protocol"),
        ({**SASL_ENV, "CHATLOG_KAFKA_SASL_MECHANISM": "MD5"}, "kafka_sasl_mechanism"),
        ({**SASL_ENV, "CHATLOG_KAFKA_SASL_USERNAME": ""}, "kafka_sasl_username"),
        ({"CHATLOG_REDIS_SSL_CA_CERTS": "/ca.pem"}, "rediss://"),
        ({"CHATLOG_LOG_FORMAT": "xml"}, "log_format"),
        ({"CHATLOG_READY_MAX_LAG": "-1"}, "ready_max_lag"),
        ({"CHATLOG_METRICS_PORT": "70000"}, "metrics_port"),
    ],
)
def test_inconsistent_security_or_operations_settings_are_refused(
    env: dict[str, str], fragment: str
) -> None:
    """A setting that could only fail at connect time fails at start, naming itself."""
    with pytest.raises(ConfigurationError, match=fragment):
        Settings.from_env(env)


def test_redis_credentials_and_tls_files_reach_every_client_made_from_the_url() -> None:
    """Redis ACL user, password and TLS files are folded into the URL clients are made from."""
    settings = Settings.from_env(
        {
            "REDIS_URL": "rediss://redis.internal:6380/0",
            "CHATLOG_REDIS_USERNAME": "projector",
            "CHATLOG_REDIS_PASSWORD": "p@ss/word",
            "CHATLOG_REDIS_SSL_CA_CERTS": "/etc/ca.pem",
        }
    )
    client = redis.Redis.from_url(settings.redis_url)
    kwargs = client.connection_pool.connection_kwargs
    assert (kwargs["username"], kwargs["password"]) == ("projector", "p@ss/word")
    assert kwargs["ssl_ca_certs"] == "/etc/ca.pem"
    assert settings.with_(topic="other").redis_url == settings.redis_url
    client.close()


def test_credentials_in_the_redis_url_win() -> None:
    """A user and password already in REDIS_URL are kept as given."""
    settings = Settings(redis_url="redis://app:url-pw@r:6379/0", redis_password="other")
    assert settings.redis_url == "redis://app:url-pw@r:6379/0"


def test_every_setting_has_a_flag_that_beats_its_variable() -> None:
    """Each setting has an environment variable and a flag; the flag wins."""
    unreachable = {f.name for f in fields(Settings)} - set(ENVIRONMENT) - {"kafka_options"}
    assert not unreachable, f"settings without a variable: {unreachable}"
    flags = {name: None for name in ENVIRONMENT}
    flags["partitions"] = "24"
    settings = settings_from_flags(flags, environ={"CHATLOG_PARTITIONS": "6"})
    assert settings.partitions == 24
    help_text = CliRunner().invoke(cli, ["--help"], terminal_width=200).output
    run_help = CliRunner().invoke(cli, ["projector", "run", "--help"], terminal_width=200).output
    for name in ENVIRONMENT:
        flag = "--" + name.replace("_", "-")
        short = {"kafka_bootstrap_servers": "--bootstrap-servers"}.get(name, flag)
        assert short in help_text or short in run_help, f"no flag for {name}"


def test_config_show_masks_every_secret() -> None:
    """Passwords of Kafka SASL, the TLS key, Redis and the Redis URL never print."""
    runner = CliRunner()
    result = runner.invoke(
        cli,
        [
            "--redis-url", "redis://app:url-pw@redis:6379/0",
            "--kafka-option", "sasl_oauth_token=oauth-tok",
            "--kafka-ssl-password", "key-pw",
            "config", "show", "--json",
        ],
        env={
            **SASL_ENV,
            "CHATLOG_REDIS_PASSWORD": "redis-pw",
            "CHATLOG_ENCRYPTION_KEY": "kek-current",
            "CHATLOG_ENCRYPTION_OLD_KEYS": "kek-old",
        },
    )
    assert result.exit_code == 0, result.output
    shown = json.loads(result.output)
    for secret in ("s3cret", "key-pw", "redis-pw", "url-pw", "oauth-tok", "kek-current", "kek-old"):
        assert secret not in result.output
    assert shown["redis_url"] == "redis://app:****@redis:6379/0"
    assert shown["kafka_sasl_username"] == "projector"
    assert {name for name in SECRET_SETTINGS if shown[name] == "****"} == SECRET_SETTINGS


def test_a_url_without_password_is_shown_as_is() -> None:
    """Masking leaves URLs without a password alone."""
    assert mask_url("redis://localhost:6379/0") == "redis://localhost:6379/0"
    assert effective_configuration(Settings())["kafka_sasl_password"] is None


def test_json_logs_carry_partition_offset_context() -> None:
    """The JSON format writes one object per line with the record's context fields."""
    stream = io.StringIO()
    handler = configure_logging("json", logging.INFO, stream=stream)
    try:
        logging.getLogger("chatlog.projector").error(
            "dead-lettering record: %s", "undecodable",
            extra={"topic": "t", "partition": 3, "offset": 42, "session_id": "s-1"},
        )
    finally:
        logging.getLogger().removeHandler(handler)
    entry = json.loads(stream.getvalue())
    assert entry["message"] == "dead-lettering record: undecodable"
    assert (entry["partition"], entry["offset"], entry["session_id"]) == (3, 42, "s-1")
    assert entry["level"] == "ERROR"


def test_text_logs_append_context_as_pairs() -> None:
    """The text format appends key=value pairs for the context fields."""
    stream = io.StringIO()
    handler = configure_logging("text", logging.INFO, stream=stream)
    try:
        logging.getLogger("chatlog.projector").info(
            "partitions assigned", extra={"partitions": ["t-0", "t-1"], "rebalance": "assigned"}
        )
    finally:
        logging.getLogger().removeHandler(handler)
    assert stream.getvalue().rstrip().endswith("partitions=t-0,t-1 rebalance=assigned")


def _logged(log_format: str, emit: Callable[[logging.Logger], None]) -> str:
    """What ``emit`` logs through chatlog's ``log_format`` formatter."""
    stream = io.StringIO()
    handler = configure_logging(log_format, logging.INFO, stream=stream)
    try:
        emit(logging.getLogger("chatlog.projector"))
    finally:
        logging.getLogger().removeHandler(handler)
    return stream.getvalue()


def test_text_logs_escape_control_characters_so_a_key_cannot_forge_lines() -> None:
    """A newline, CR, ESC or C1 control in a message argument or context value stays on one line."""
    forged = "k\n2026-01-01 00:00:00,000 ERROR chatlog.projector forged"
    written = _logged(
        "text",
        lambda log: log.warning(
            "dead-lettering record with key %s", forged,
            extra={"session_id": "s\r\x1b[31m", "user_id": "u\x85\u2028v", "partition": 0},
        ),
    )
    assert len(written.splitlines()) == 1
    assert "key k\\n2026-01-01 00:00:00,000 ERROR chatlog.projector forged" in written
    pairs = "partition=0 session_id=s\\r\\x1b[31m user_id=u\\x85\\u2028v"
    assert written.rstrip("\n").endswith(pairs)


def test_text_logs_keep_a_traceback_on_lines_of_its_own_but_escape_its_controls() -> None:
    """The traceback stays multi-line; an ESC in the exception message is written as an escape."""

    def fail(log: logging.Logger) -> None:
        try:
            raise ValueError("bad \x1b[31mvalue")
        except ValueError:
            log.exception("apply failed")

    written = _logged("text", fail)
    assert "\x1b" not in written
    assert written.splitlines()[1] == "Traceback (most recent call last):"
    assert "ValueError: bad \\x1b[31mvalue" in written


def test_json_logs_write_c1_controls_and_line_separators_as_escapes() -> None:
    """JSON lines carry no raw C1 control or U+2028 and still decode to the original values."""
    hostile = "k\x85\u2028\x9b\n"
    extra = {"session_id": hostile}
    written = _logged("json", lambda log: log.warning("key %s", hostile, extra=extra))
    assert len(written.splitlines()) == 1
    entry = json.loads(written)
    assert (entry["message"], entry["session_id"]) == (f"key {hostile}", hostile)


def test_redis_mode_comes_from_its_variable_and_refuses_unknown_modes() -> None:
    """CHATLOG_REDIS_MODE picks auto, standalone or cluster; anything else says what is allowed."""
    assert Settings().redis_mode == "auto"
    assert Settings.from_env({"CHATLOG_REDIS_MODE": "cluster"}).redis_mode == "cluster"
    with pytest.raises(ConfigurationError, match="auto, standalone, cluster"):
        Settings.from_env({"CHATLOG_REDIS_MODE": "sentinel"})
