"""Settings from HEADRACE_* variables: nesting, the AWS region fallback, readable errors."""

from __future__ import annotations

import os

import pytest
import sqlalchemy as sa

from headrace.db import NO_DATABASE, database_url, tls_mode
from headrace.errors import ConfigError
from headrace.settings import Settings, load_settings


@pytest.fixture(autouse=True)
def clean_env(monkeypatch: pytest.MonkeyPatch) -> pytest.MonkeyPatch:
    """No HEADRACE_* or AWS region variable from the shell or the session leaks in."""
    for name in list(os.environ):
        if name.startswith("HEADRACE_") or name in ("AWS_REGION", "AWS_DEFAULT_REGION"):
            monkeypatch.delenv(name)
    return monkeypatch


def test_defaults() -> None:
    s = load_settings()
    assert s.database_url is None  # no silent local database (only the demo brings one)
    assert s.aws.region == "us-east-1"
    assert s.worker.pollers == 2
    assert s.producer.compression == "zstd"
    assert s.queue_url is None


def test_prefix_and_nesting(clean_env: pytest.MonkeyPatch) -> None:
    clean_env.setenv("HEADRACE_WORKER__POLLERS", "7")
    clean_env.setenv("HEADRACE_WORKER__TABLES", '["observations", "prices"]')
    clean_env.setenv("HEADRACE_PRODUCER__COMPRESSION", "none")
    clean_env.setenv("HEADRACE_PRODUCER__MAX_MESSAGE_BYTES", "262144")
    clean_env.setenv("HEADRACE_DB__POOL_SIZE", "9")
    clean_env.setenv("HEADRACE_DATABASE_URL", "mysql+asyncmy://u:p@db:3306/app")
    clean_env.setenv("HEADRACE_QUEUE_URL", "http://localhost:4566/000000000000/q")
    clean_env.setenv("POLLERS", "99")  # no prefix: ignored
    clean_env.setenv("WORKER__POLLERS", "99")
    s = load_settings()
    assert s.worker.pollers == 7
    assert s.worker.sinks == 2  # untouched siblings keep their defaults
    assert s.worker.tables == ["observations", "prices"]
    assert s.producer.compression == "none"
    assert s.producer.max_message_bytes == 262_144
    assert s.db.pool_size == 9
    assert s.database_url is not None
    assert s.database_url.get_secret_value() == "mysql+asyncmy://u:p@db:3306/app"
    assert s.queue_url == "http://localhost:4566/000000000000/q"


def test_overrides_beat_the_environment(clean_env: pytest.MonkeyPatch) -> None:
    clean_env.setenv("HEADRACE_LOG_LEVEL", "DEBUG")
    assert load_settings().log_level == "DEBUG"
    assert load_settings(log_level="ERROR").log_level == "ERROR"


@pytest.mark.parametrize(
    ("env", "region"),
    [
        ({"AWS_REGION": "eu-west-3"}, "eu-west-3"),
        ({"AWS_DEFAULT_REGION": "ap-south-1"}, "ap-south-1"),
        ({"AWS_REGION": "eu-west-3", "AWS_DEFAULT_REGION": "ap-south-1"}, "eu-west-3"),
        ({"AWS_REGION": "eu-west-3", "HEADRACE_AWS__REGION": "sa-east-1"}, "sa-east-1"),
        ({}, "us-east-1"),
    ],
)
def test_aws_region_fallback(
    clean_env: pytest.MonkeyPatch, env: dict[str, str], region: str
) -> None:
    for name, value in env.items():
        clean_env.setenv(name, value)
    assert load_settings().aws.region == region


def test_aws_region_fallback_keeps_other_aws_settings(clean_env: pytest.MonkeyPatch) -> None:
    clean_env.setenv("AWS_REGION", "eu-north-1")
    clean_env.setenv("HEADRACE_AWS__MAX_ATTEMPTS", "3")
    s = load_settings()
    assert (s.aws.region, s.aws.max_attempts) == ("eu-north-1", 3)


def test_explicit_aws_override_wins_over_aws_region(clean_env: pytest.MonkeyPatch) -> None:
    clean_env.setenv("AWS_REGION", "eu-north-1")
    assert load_settings(aws={"region": "us-west-2"}).aws.region == "us-west-2"


@pytest.mark.parametrize(("heartbeat", "visibility"), [("60", "60"), ("90", "60"), ("30.5", "30")])
def test_heartbeat_must_be_below_visibility(
    clean_env: pytest.MonkeyPatch, heartbeat: str, visibility: str
) -> None:
    clean_env.setenv("HEADRACE_WORKER__HEARTBEAT_INTERVAL_S", heartbeat)
    clean_env.setenv("HEADRACE_WORKER__VISIBILITY_TIMEOUT_S", visibility)
    with pytest.raises(ConfigError) as err:
        load_settings()
    message = str(err.value)
    assert message.startswith("invalid settings:\n  HEADRACE_WORKER: ")
    assert (
        "worker.heartbeat_interval_s must be below worker.visibility_timeout_s "
        f"({float(heartbeat)} >= {int(visibility)})"
    ) in message
    assert "Traceback" not in message
    assert "pydantic" not in message


def test_heartbeat_below_visibility_is_fine(clean_env: pytest.MonkeyPatch) -> None:
    clean_env.setenv("HEADRACE_WORKER__HEARTBEAT_INTERVAL_S", "59.9")
    clean_env.setenv("HEADRACE_WORKER__VISIBILITY_TIMEOUT_S", "60")
    s = load_settings()
    assert (s.worker.heartbeat_interval_s, s.worker.visibility_timeout_s) == (59.9, 60)


@pytest.mark.parametrize(
    "url",
    [
        "postgresql://u:p@db/app",
        "mysql+pymysql://u:p@db/app",
        "mysql://u:p@db/app",
        "sqlite:///x.db",
        "not a url",
    ],
)
def test_unsupported_database_url(clean_env: pytest.MonkeyPatch, url: str) -> None:
    clean_env.setenv("HEADRACE_DATABASE_URL", url)
    with pytest.raises(ConfigError, match="must use mysql\\+asyncmy:// or sqlite\\+aiosqlite://"):
        load_settings()


@pytest.mark.parametrize(
    "url", ["mysql+asyncmy://u:p@db:3306/app", "sqlite+aiosqlite:///tmp/x.sqlite3"]
)
def test_supported_database_url(clean_env: pytest.MonkeyPatch, url: str) -> None:
    clean_env.setenv("HEADRACE_DATABASE_URL", url)
    assert database_url(load_settings()) == sa.make_url(url)


@pytest.mark.parametrize(
    ("name", "value", "fragment"),
    [
        ("HEADRACE_WORKER__POLLERS", "0", "greater than or equal to 1"),
        ("HEADRACE_WORKER__POLLERS", "many", "valid integer"),
        ("HEADRACE_PRODUCER__COMPRESSION", "gzip", "'zstd' or 'none'"),
        ("HEADRACE_PRODUCER__MAX_MESSAGE_BYTES", "2000000", "less than or equal to 1048576"),
        ("HEADRACE_LOG_LEVEL", "LOUD", "'DEBUG', 'INFO', 'WARNING' or 'ERROR'"),
    ],
)
def test_field_errors_name_the_variable(
    clean_env: pytest.MonkeyPatch, name: str, value: str, fragment: str
) -> None:
    clean_env.setenv(name, value)
    with pytest.raises(ConfigError) as err:
        load_settings()
    lines = str(err.value).splitlines()
    assert lines[0] == "invalid settings:"
    assert any(line.startswith(f"  {name}: ") and fragment in line for line in lines[1:]), lines


def test_every_error_is_reported_at_once(clean_env: pytest.MonkeyPatch) -> None:
    clean_env.setenv("HEADRACE_WORKER__POLLERS", "0")
    clean_env.setenv("HEADRACE_WORKER__SINKS", "0")
    clean_env.setenv("HEADRACE_DB__POOL_SIZE", "0")
    with pytest.raises(ConfigError) as err:
        load_settings()
    message = str(err.value)
    for name in ("HEADRACE_WORKER__POLLERS", "HEADRACE_WORKER__SINKS", "HEADRACE_DB__POOL_SIZE"):
        assert f"  {name}: " in message


def test_settings_class_reads_the_environment_directly(clean_env: pytest.MonkeyPatch) -> None:
    clean_env.setenv("HEADRACE_WORKER__FLUSH_ROWS", "123")
    assert Settings().worker.flush_rows == 123


def test_metrics_group_off_by_default_and_validated(clean_env: pytest.MonkeyPatch) -> None:
    m = load_settings().metrics
    assert (m.port, m.queue_poll_s, m.pushgateway_url, m.push_interval_s) == (None, 15, None, 15)
    clean_env.setenv("HEADRACE_METRICS__PORT", "9400")
    clean_env.setenv("HEADRACE_METRICS__QUEUE_POLL_S", "2.5")
    clean_env.setenv("HEADRACE_METRICS__PUSHGATEWAY_URL", "http://pushgateway:9091")
    m = load_settings().metrics
    assert (m.port, m.queue_poll_s, m.pushgateway_url) == (9400, 2.5, "http://pushgateway:9091")
    clean_env.setenv("HEADRACE_METRICS__PORT", "70000")
    with pytest.raises(ConfigError, match="HEADRACE_METRICS__PORT"):
        load_settings()
    clean_env.setenv("HEADRACE_METRICS__PORT", "9400")
    clean_env.setenv("HEADRACE_METRICS__PUSH_INTERVAL_S", "0")
    with pytest.raises(ConfigError, match="HEADRACE_METRICS__PUSH_INTERVAL_S"):
        load_settings()


# --- the database connection: secrets, parts, TLS --------------------------------------------


def test_database_url_is_never_printed(clean_env: pytest.MonkeyPatch) -> None:
    clean_env.setenv("HEADRACE_DATABASE_URL", "mysql+asyncmy://loader:s3cret-pw@db:3306/app")
    clean_env.setenv("HEADRACE_DB__PASSWORD", "ignored")  # refused below, but never echoed
    with pytest.raises(ConfigError) as err:
        load_settings()
    assert "s3cret-pw" not in str(err.value)
    assert "ignored" not in str(err.value)
    clean_env.delenv("HEADRACE_DB__PASSWORD")
    s = load_settings()
    assert "s3cret-pw" not in repr(s)
    assert "s3cret-pw" not in str(s)
    assert "s3cret-pw" not in s.model_dump_json()


@pytest.mark.parametrize(
    "url",
    [
        "mysql+asyncmy://loader:s3cret-pw@db:port/app",
        "mysql+asyncmy://loader:s3cret@pw@db:notaport/app",
        "mysqlx://loader:s3cret-pw@db/app",
    ],
)
def test_malformed_url_error_masks_the_password(clean_env: pytest.MonkeyPatch, url: str) -> None:
    clean_env.setenv("HEADRACE_DATABASE_URL", url)
    with pytest.raises(ConfigError) as err:
        load_settings()
    assert "HEADRACE_DATABASE_URL" in str(err.value)
    assert "s3cret" not in str(err.value)


def test_connection_from_parts(clean_env: pytest.MonkeyPatch) -> None:
    clean_env.setenv("HEADRACE_DB__HOST", "aurora.cluster-x.eu-west-1.rds.amazonaws.com")
    clean_env.setenv("HEADRACE_DB__USER", "loader")
    clean_env.setenv("HEADRACE_DB__PASSWORD", "p@ss:w/rd")  # needs no URL escaping
    clean_env.setenv("HEADRACE_DB__NAME", "shop")
    s = load_settings()
    url = database_url(s)
    assert (url.drivername, url.host, url.port, url.username, url.password, url.database) == (
        "mysql+asyncmy",
        "aurora.cluster-x.eu-west-1.rds.amazonaws.com",
        3306,
        "loader",
        "p@ss:w/rd",
        "shop",
    )
    assert "p@ss" not in repr(s)
    assert tls_mode(s, url) == "required"  # not loopback: TLS by default


def test_url_and_parts_together_are_refused(clean_env: pytest.MonkeyPatch) -> None:
    clean_env.setenv("HEADRACE_DATABASE_URL", "mysql+asyncmy://u:p@db:3306/app")
    clean_env.setenv("HEADRACE_DB__HOST", "other")
    with pytest.raises(ConfigError, match="HEADRACE_DATABASE_URL or the HEADRACE_DB__"):
        load_settings()


def test_incomplete_parts_name_what_is_missing(clean_env: pytest.MonkeyPatch) -> None:
    clean_env.setenv("HEADRACE_DB__HOST", "db")
    with pytest.raises(ConfigError) as err:
        database_url(load_settings())
    assert str(err.value) == (
        "incomplete database settings: also set HEADRACE_DB__USER, HEADRACE_DB__NAME, "
        "HEADRACE_DB__PASSWORD"
    )
    clean_env.setenv("HEADRACE_DB__USER", "loader")
    clean_env.setenv("HEADRACE_DB__NAME", "shop")
    clean_env.setenv("HEADRACE_DB__IAM_AUTH", "true")  # a token instead of a password
    assert database_url(load_settings()).password is None


def test_no_database_is_an_error_naming_the_variable() -> None:
    with pytest.raises(ConfigError) as err:
        database_url(load_settings())
    assert str(err.value) == NO_DATABASE
    assert "HEADRACE_DATABASE_URL" in NO_DATABASE
    assert "\n" not in NO_DATABASE


@pytest.mark.parametrize(
    ("host", "mode"),
    [
        ("127.0.0.1", "disabled"),
        ("localhost", "disabled"),
        ("::1", "disabled"),
        ("10.0.0.5", "required"),
        ("db.example.com", "required"),
    ],
)
def test_tls_required_by_default_off_loopback(
    clean_env: pytest.MonkeyPatch, host: str, mode: str
) -> None:
    url = sa.URL.create("mysql+asyncmy", username="u", host=host, database="d")
    assert tls_mode(load_settings(), url) == mode
    clean_env.setenv("HEADRACE_DB__TLS_MODE", "verify-identity")
    assert tls_mode(load_settings(), url) == "verify-identity"


def test_csv_format_and_on_duplicate_settings(clean_env: pytest.MonkeyPatch) -> None:
    """Issue 12: every reading option is a setting under HEADRACE_PRODUCER__CSV__."""
    clean_env.setenv("HEADRACE_PRODUCER__CSV__DELIMITER", "tab")
    clean_env.setenv("HEADRACE_PRODUCER__CSV__NULLS", '["NA", ""]')
    clean_env.setenv("HEADRACE_PRODUCER__CSV__RENAME", '{"Kunde": "customer"}')
    clean_env.setenv("HEADRACE_PRODUCER__CSV__ENCODING", "cp1252")
    clean_env.setenv("HEADRACE_PRODUCER__CSV__DECIMAL_COMMA", "true")
    clean_env.setenv("HEADRACE_PRODUCER__ON_DUPLICATE", "update")
    p = load_settings().producer
    assert (p.csv.delimiter, p.csv.nulls, p.csv.rename) == ("\t", ["NA", ""], {"Kunde": "customer"})
    assert (p.csv.encoding, p.csv.decimal_comma, p.on_duplicate) == ("cp1252", True, "update")
    assert load_settings().producer.csv.quote == '"'  # the rest keep their defaults


def test_the_worker_honours_update_only_when_told(clean_env: pytest.MonkeyPatch) -> None:
    assert load_settings().worker.on_duplicate == ["error", "skip"]
    clean_env.setenv("HEADRACE_WORKER__ON_DUPLICATE", "error, skip,update")
    assert load_settings().worker.on_duplicate == ["error", "skip", "update"]
    clean_env.setenv("HEADRACE_WORKER__ON_DUPLICATE", "error,upsert")
    with pytest.raises(ConfigError, match="HEADRACE_WORKER__ON_DUPLICATE"):
        load_settings()


@pytest.mark.parametrize(
    ("name", "value", "why"),
    [
        ("HEADRACE_PRODUCER__ON_DUPLICATE", "ignore", "HEADRACE_PRODUCER__ON_DUPLICATE"),
        ("HEADRACE_PRODUCER__CSV__ENCODING", "utf-32", "HEADRACE_PRODUCER__CSV__ENCODING"),
        ("HEADRACE_PRODUCER__CSV__TIMEZONE", "Nowhere/City", "unknown time zone"),
        ("HEADRACE_PRODUCER__CSV__HEADER", "false", "needs its column names"),
        ("HEADRACE_WORKER__ON_DUPLICATE", "update,merge", "HEADRACE_WORKER__ON_DUPLICATE"),
    ],
)
def test_invalid_csv_settings_are_named(
    clean_env: pytest.MonkeyPatch, name: str, value: str, why: str
) -> None:
    clean_env.setenv(name, value)
    with pytest.raises(ConfigError, match=why):
        load_settings()
