"""Tables headrace owns, plus the example dataset used by the demo, tests and benchmark.

``metadata`` is alembic's ``target_metadata``. Target tables of real deployments are not
declared here: they are reflected from the database (see :mod:`headrace.schema`).
"""

from __future__ import annotations

from sqlalchemy import (
    BigInteger,
    Boolean,
    Column,
    DateTime,
    Index,
    Integer,
    MetaData,
    Numeric,
    SmallInteger,
    String,
    Table,
    Text,
    UniqueConstraint,
    func,
)
from sqlalchemy.dialects import mysql

__all__ = [
    "INTERNAL_TABLES",
    "ingest_ledger",
    "ingest_runs",
    "metadata",
    "observations",
    "rejected_rows",
]

metadata = MetaData(
    naming_convention={
        "ix": "ix_%(table_name)s_%(column_0_N_name)s",
        "uq": "uq_%(table_name)s_%(column_0_N_name)s",
        "ck": "ck_%(table_name)s_%(constraint_name)s",
        "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
        "pk": "pk_%(table_name)s",
    }
)

RUN_ID = String(32)
LONG_TEXT = Text().with_variant(mysql.MEDIUMTEXT(), "mysql", "mariadb")
BIGINT_PK = BigInteger().with_variant(Integer(), "sqlite")

# One row per applied message, written in the same transaction as the message's rows:
# a redelivered or re-sent message finds its key here and inserts nothing.
ingest_ledger = Table(
    "ingest_ledger",
    metadata,
    Column("run_id", RUN_ID, primary_key=True),
    Column("seq", Integer, primary_key=True, autoincrement=False),
    Column("table_name", String(64), nullable=False),
    Column("rows_inserted", Integer, nullable=False),
    Column("rows_rejected", Integer, nullable=False),
    Column("applied_at", DateTime, nullable=False, server_default=func.now()),
)

# Rows that could not be inserted, with the reason; the other half of the invariant.
rejected_rows = Table(
    "rejected_rows",
    metadata,
    Column("id", BIGINT_PK, primary_key=True, autoincrement=True),
    Column("run_id", RUN_ID, nullable=False),
    Column("source", String(1024), nullable=False),
    Column("line", BigInteger, nullable=False),
    Column("table_name", String(64), nullable=False),
    Column("stage", String(16), nullable=False),
    Column("reason", String(1024), nullable=False),
    Column("raw", LONG_TEXT, nullable=False),
    Column("created_at", DateTime, nullable=False, server_default=func.now()),
    UniqueConstraint("run_id", "line"),
)

# The producer's checkpoint: how far a run has been sent, so a restart skips ahead.
ingest_runs = Table(
    "ingest_runs",
    metadata,
    Column("run_id", RUN_ID, primary_key=True),
    Column("source", String(1024), nullable=False),
    Column("source_version", String(128), nullable=False),
    Column("source_bytes", BigInteger, nullable=False),
    Column("table_name", String(64), nullable=False),
    Column("status", String(16), nullable=False),
    Column("messages_sent", Integer, nullable=False),
    Column("total_messages", Integer, nullable=True),
    Column("rows_read", BigInteger, nullable=False),
    Column("rows_rejected", BigInteger, nullable=False),
    Column("started_at", DateTime, nullable=False, server_default=func.now()),
    Column("updated_at", DateTime, nullable=False, server_default=func.now()),
    Column("finished_at", DateTime, nullable=True),
)

# The example dataset: a price-watching bot's daily observations (~100 bytes a row).
observations = Table(
    "observations",
    metadata,
    Column("id", BIGINT_PK, primary_key=True, autoincrement=True),
    Column("observed_at", DateTime, nullable=False),
    Column("bot_id", Integer, nullable=False),
    Column("sku", String(24), nullable=False),
    Column("price", Numeric(10, 2), nullable=False),
    Column("quantity", SmallInteger, nullable=False),
    Column("in_stock", Boolean(create_constraint=False), nullable=False),
    Column("title", String(120), nullable=False),
    Column("note", Text, nullable=True),
    UniqueConstraint("bot_id", "sku", "observed_at"),
    Index(None, "observed_at"),
)

INTERNAL_TABLES = frozenset({"ingest_ledger", "rejected_rows", "ingest_runs", "alembic_version"})
