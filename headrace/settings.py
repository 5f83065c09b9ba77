"""One settings object for both containers, read from ``HEADRACE_*`` variables.

Groups nest with a double underscore: ``HEADRACE_WORKER__POLLERS=4`` sets
``settings.worker.pollers``. Top-level shortcuts exist for the values every
deployment sets (``HEADRACE_DATABASE_URL``, ``HEADRACE_QUEUE_URL``,
``HEADRACE_SQS_ENDPOINT_URL``). Units are part of the names.
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Annotated, Literal

from pydantic import (
    BaseModel,
    Field,
    SecretStr,
    ValidationError,
    field_validator,
    model_validator,
)
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict

from headrace.csvformat import CsvFormat, OnDuplicate
from headrace.errors import ConfigError

__all__ = [
    "AwsSettings",
    "DatabaseSettings",
    "InsertPath",
    "MetricsSettings",
    "ProducerSettings",
    "Settings",
    "WorkerSettings",
    "load_settings",
    "mask_url",
    "signing_key",
]

TlsMode = Literal["disabled", "required", "verify-ca", "verify-identity"]
InsertPath = Literal["auto", "bulk", "text", "load"]


class DatabaseSettings(BaseModel):
    pool_size: int = Field(4, ge=1, le=64, description="Pooled DB connections per process.")
    pool_timeout_s: float = Field(30.0, gt=0, description="Wait for a pooled connection.")
    connect_timeout_s: float = Field(10.0, gt=0, description="TCP connect + handshake.")
    statement_timeout_s: float = Field(
        120.0, gt=0, description="Upper bound on one DB round trip (bulk insert, commit)."
    )
    lock_wait_timeout_s: int = Field(
        20,
        ge=1,
        le=3600,
        description="innodb_lock_wait_timeout per session (1205 is retried); below the above.",
    )
    stmt_cache_size: int = Field(
        32, ge=0, description="asyncmy prepared-statement cache; >0 enables MariaDB bulk execute."
    )
    insert_path: InsertPath = Field(
        "auto",
        description="How the worker sends rows: bulk (MariaDB COM_STMT_BULK_EXECUTE), text "
        "(multi-row INSERT text, the MySQL/Aurora protocol), load (LOAD DATA LOCAL INFILE "
        "from memory, INSERT text for rows it warns about; the server needs local_infile=1) "
        "or auto (bulk where offered, else text).",
    )
    # The connection in parts (instead of HEADRACE_DATABASE_URL), so ECS can inject the
    # password alone from Secrets Manager. Setting both ways is refused (see Settings).
    host: str | None = Field(None, description="MySQL host (instead of the URL).")
    port: int = Field(3306, ge=1, le=65535, description="MySQL port (with host).")
    user: str | None = Field(None, description="MySQL user (with host).")
    password: SecretStr | None = Field(
        None, description="MySQL password (with host; e.g. an ECS secret). Never printed."
    )
    name: str | None = Field(None, description="Database (schema) name (with host).")
    iam_auth: bool = Field(
        False, description="RDS IAM authentication: a fresh token per new connection."
    )
    tls_mode: TlsMode | None = Field(
        None,
        description="disabled, required, verify-ca or verify-identity (default: required, "
        "disabled for a loopback host).",
    )
    tls_ca: Path | None = Field(
        None, description="CA bundle (PEM) for verify-ca/verify-identity, e.g. RDS global-bundle."
    )

    @property
    def parts_given(self) -> list[str]:
        """The connection parts that are set (host, user, password, name)."""
        return [k for k in ("host", "user", "password", "name") if getattr(self, k) is not None]


class AwsSettings(BaseModel):
    region: str = Field("us-east-1", description="AWS region (AWS_REGION is used when unset).")
    max_attempts: int = Field(8, ge=1, le=20, description="botocore standard-mode attempts.")
    connect_timeout_s: float = Field(10.0, gt=0, description="AWS API connect timeout.")
    read_timeout_s: float = Field(40.0, gt=0, description="Must exceed the 20 s long poll.")
    max_pool_connections: int = Field(32, ge=1, description="HTTP connections to AWS per client.")


DEFAULT_CHUNK_ROWS = 4096
"""Rows per producer chunk by default; the packer cuts messages within chunks, so a run's
messages depend on it (runs with another value get other run ids)."""


class ProducerSettings(BaseModel):
    concurrency: int = Field(
        8,
        ge=1,
        le=128,
        description="SendMessageBatch calls in flight; at most one call's worth of messages waits.",
    )
    compression: Literal["zstd", "none"] = Field("zstd", description="Message body encoding.")
    zstd_level: int = Field(3, ge=1, le=19, description="zstd level when compressing.")
    max_message_bytes: int | None = Field(
        None,
        ge=4096,
        le=1_048_576,
        description="Cap below the queue's MaximumMessageSize (default: the queue's own value).",
    )
    chunk_rows: int = Field(
        DEFAULT_CHUNK_ROWS,
        ge=1,
        description="Rows read and validated per step (another value is another run id).",
    )
    max_field_bytes: int = Field(16 * 1024 * 1024, ge=1024, description="Longest CSV field.")
    max_gzip_ratio: float = Field(200.0, gt=1, description="Refuse gzip inflating beyond this.")
    max_decompressed_bytes: int = Field(
        64 * 1024**3, ge=1024, description="Refuse a gzip source inflating beyond this."
    )
    checkpoint_every_messages: int = Field(
        20, ge=1, description="Save the resume point after this many sent messages."
    )
    max_rejects_per_file: int | None = Field(
        None, ge=0, description="Refuse the file once more rows than this were rejected."
    )
    on_duplicate: OnDuplicate = Field(
        "error",
        description="A row whose unique key exists: error (rejected with the database's "
        "message), skip (kept as is, counted) or update (its carried columns).",
    )
    csv: CsvFormat = Field(
        default_factory=lambda: CsvFormat.model_validate({}),
        description="How the file is written (`headrace produce --help`).",
    )
    claim_check_bucket: str | None = Field(
        None,
        description="S3 bucket for rows bigger than a message: sent as an Extended Client "
        "pointer to their own object instead of rejected (default: off, rejected).",
    )
    claim_check_prefix: str = Field(
        "headrace-claims/", description="Key prefix of claim-check objects (then run/seq)."
    )


class WorkerSettings(BaseModel):
    pollers: int = Field(2, ge=1, le=64, description="Concurrent long-poll loops.")
    sinks: int = Field(2, ge=1, le=64, description="Concurrent flushes (DB connections in use).")
    wait_time_s: int = Field(20, ge=0, le=20, description="SQS long-poll wait.")
    visibility_timeout_s: int = Field(
        60, ge=1, le=43_200, description="Visibility set on receive and by each heartbeat."
    )
    heartbeat_interval_s: float = Field(
        15.0, gt=0, description="How often in-flight messages are checked for extension."
    )
    flush_rows: int = Field(20_000, ge=1, description="Flush a batch at this many rows.")
    flush_bytes: int = Field(
        8 * 1024 * 1024, ge=1024, description="Flush a batch at this many decoded bytes."
    )
    flush_age_s: float = Field(1.0, gt=0, description="Flush a batch this old.")
    max_inflight_messages: int = Field(200, ge=10, description="Backpressure bound.")
    max_inflight_rows: int = Field(100_000, ge=1, description="Backpressure bound.")
    max_inflight_bytes: int = Field(
        256 * 1024 * 1024, ge=1024 * 1024, description="Backpressure bound on decoded bytes held."
    )
    max_statement_bytes: int = Field(
        4 * 1024 * 1024, ge=4096, description="Split bulk inserts above this many payload bytes."
    )
    shutdown_deadline_s: float = Field(
        25.0, gt=0, le=115, description="SIGTERM to exit; below ECS stopTimeout (30 s default)."
    )
    tables: Annotated[list[str], NoDecode] = Field(
        default_factory=list,
        description="Tables this worker may write, comma-separated; * for any non-internal "
        "table. Required: a message for another table is poison.",
    )
    on_duplicate: Annotated[list[OnDuplicate], NoDecode] = Field(
        default_factory=lambda: list[OnDuplicate](("error", "skip")),
        description="Duplicate modes a message may ask for, comma-separated; a message asking "
        "for another is poison. `update` overwrites rows: allow it only where every sender "
        "is trusted (or messages are signed).",
    )
    max_park_s: float = Field(
        900.0,
        gt=0,
        le=36_000,
        description="Longest a message waits for its table (listed but missing) or a column "
        "it names; then it is poison.",
    )
    idle_exit_s: float | None = Field(
        None, gt=0, description="Exit after this long idle with the queue empty (demo, batch jobs)."
    )
    ecs_agent_uri: str | None = Field(
        None,
        description="ECS agent endpoint for task scale-in protection (ECS_AGENT_URI is used "
        "when unset; empty: off).",
    )
    protection_expires_min: int = Field(
        15, ge=1, le=2880, description="Scale-in protection lifetime; renewed at half of it."
    )
    protection_idle_s: float = Field(
        5.0, ge=0, description="Turn scale-in protection off after this long with nothing held."
    )
    accept_json: bool = Field(
        True,
        description="Accept plain JSON row messages from other producers (no headrace-v "
        "attribute); off: they are poison.",
    )
    default_table: str | None = Field(
        None,
        description="Table of a plain JSON message that names none (body or headrace-table "
        "attribute); still checked against worker.tables.",
    )
    max_payload_bytes: int = Field(
        64 * 1024 * 1024,
        ge=1024,
        le=2 * 1024**3,
        description="Largest S3 payload an Extended Client pointer may name; a bigger one is "
        "poison.",
    )
    delete_payloads: bool = Field(
        False,
        description="Delete an Extended Client payload's S3 object once its message committed "
        "and was deleted (default: keep it).",
    )

    @field_validator("tables", "on_duplicate", mode="before")
    @classmethod
    def _comma_separated(cls, value: object) -> object:
        """``a,b`` or a JSON list ``["a", "b"]``."""
        if isinstance(value, str):
            if value.lstrip().startswith("["):
                return json.loads(value)
            return [t.strip() for t in value.split(",") if t.strip()]
        return value

    @property
    def any_table(self) -> bool:
        """``*``: any table that is not headrace's own (missing ones are poison, not waited
        for, since a typo and a migration look the same)."""
        return "*" in self.tables

    @model_validator(mode="after")
    def _heartbeat_before_expiry(self) -> WorkerSettings:
        if self.heartbeat_interval_s >= self.visibility_timeout_s:
            raise ValueError(
                "worker.heartbeat_interval_s must be below worker.visibility_timeout_s "
                f"({self.heartbeat_interval_s} >= {self.visibility_timeout_s})"
            )
        return self


class MetricsSettings(BaseModel):
    port: int | None = Field(
        None,
        ge=1,
        le=65535,
        description="Serve /metrics, /healthz and /readyz on this port (deploy assets: 9400; "
        "unset: off).",
    )
    queue_poll_s: float = Field(
        15.0, gt=0, description="How often each worker reads the main queue's and DLQ's depth."
    )
    pushgateway_url: str | None = Field(
        None, description="Producer: push metrics to this Pushgateway (job and table grouping)."
    )
    push_interval_s: float = Field(
        15.0, gt=0, description="Producer: push this often while running (and once at exit)."
    )


class Settings(BaseSettings):
    model_config = SettingsConfigDict(
        env_prefix="HEADRACE_",
        env_nested_delimiter="__",
        extra="ignore",
        validate_default=True,
    )

    database_url: SecretStr | None = Field(
        None,
        description="SQLAlchemy URL, e.g. mysql+asyncmy://user:pw@host:3306/db (or the "
        "HEADRACE_DB__HOST/… parts; not both). Never printed.",
    )
    queue_url: str | None = Field(None, description="SQS queue URL (or set queue_name).")
    queue_name: str | None = Field(None, description="Queue name, resolved with GetQueueUrl.")
    sqs_endpoint_url: str | None = Field(None, description="Non-AWS SQS endpoint (moto, proxy).")
    signing_key: SecretStr | None = Field(
        None,
        description="HMAC-SHA256 key: the producer signs every message and the worker refuses "
        "unsigned or badly signed ones (poison). Unset: the queue policy must be the gate.",
    )
    s3_endpoint_url: str | None = Field(
        None, description="Non-AWS S3 endpoint for s3:// sources (moto, MinIO); path-style."
    )
    log_level: Literal["DEBUG", "INFO", "WARNING", "ERROR"] = Field(
        "INFO", description="Log level."
    )
    log_format: Literal["json", "console"] = Field(
        "json", description="JSON lines, or console for humans."
    )
    db: DatabaseSettings = Field(default_factory=lambda: DatabaseSettings.model_validate({}))
    aws: AwsSettings = Field(default_factory=lambda: AwsSettings.model_validate({}))
    producer: ProducerSettings = Field(default_factory=lambda: ProducerSettings.model_validate({}))
    worker: WorkerSettings = Field(default_factory=lambda: WorkerSettings.model_validate({}))
    metrics: MetricsSettings = Field(default_factory=lambda: MetricsSettings.model_validate({}))

    @field_validator("database_url")
    @classmethod
    def _known_driver(cls, url: SecretStr | None) -> SecretStr | None:
        if url is None:
            return None
        import sqlalchemy as sa

        text = url.get_secret_value()
        scheme = text.split("://", 1)[0]
        if scheme not in {"mysql+asyncmy", "sqlite+aiosqlite"}:
            raise ValueError(
                f"must use mysql+asyncmy:// or sqlite+aiosqlite://, not {mask_url(scheme)}://"
            )
        try:
            sa.make_url(text)
        except (sa.exc.ArgumentError, ValueError):  # e.g. a port that is not a number
            raise ValueError(f"not a valid URL: {mask_url(text)}") from None
        return url

    @model_validator(mode="after")
    def _one_way_to_the_database(self) -> Settings:
        if self.database_url is not None and self.db.parts_given:
            given = ", ".join(f"HEADRACE_DB__{k.upper()}" for k in self.db.parts_given)
            raise ValueError(
                f"set either HEADRACE_DATABASE_URL or the HEADRACE_DB__* parts, not both "
                f"(also set: {given})"
            )
        return self


_PASSWORD_IN_URL = re.compile(r"(://[^:/@]*:)(.*)@")


def mask_url(url: str) -> str:
    """``url`` with its password (anything between ``user:`` and the last ``@``) masked."""
    return _PASSWORD_IN_URL.sub(r"\1***@", url)


def signing_key(settings: Settings) -> bytes | None:
    """The HMAC key messages are signed and checked with, if one is set."""
    key = settings.signing_key
    return key.get_secret_value().encode() if key is not None else None


def load_settings(**overrides: object) -> Settings:
    """Build settings from the environment (plus overrides), with a readable error."""
    import os

    # AWS's own variable wins when ours is unset, as users expect.
    if "HEADRACE_AWS__REGION" not in os.environ and "aws" not in overrides:
        region = os.environ.get("AWS_REGION") or os.environ.get("AWS_DEFAULT_REGION")
        if region:
            overrides = {**overrides, "aws": {"region": region}}
    # ECS injects ECS_AGENT_URI into every container: scale-in protection follows it.
    agent = os.environ.get("ECS_AGENT_URI")
    if agent and "HEADRACE_WORKER__ECS_AGENT_URI" not in os.environ and "worker" not in overrides:
        overrides = {**overrides, "worker": {"ecs_agent_uri": agent}}
    try:
        return Settings(**overrides)  # type: ignore[arg-type]
    except ValidationError as exc:
        lines = [
            f"  HEADRACE_{'__'.join(str(p) for p in err['loc']).upper()}: {err['msg']}"
            if err["loc"]
            else f"  {err['msg']}"
            for err in exc.errors()
        ]
        raise ConfigError("invalid settings:\n" + "\n".join(lines)) from None
