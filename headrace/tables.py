"""The tables headrace owns: the ledger, the rejected rows and the producer's runs.

``metadata`` is alembic's ``target_metadata``. Target tables are not declared here: they are
the user's, reflected from the database (see :mod:`headrace.schema`). The demo's example
table lives with the demo (:mod:`cli.datagen`).
"""

from __future__ import annotations

from sqlalchemy import (
    BigInteger,
    Column,
    DateTime,
    Integer,
    MetaData,
    String,
    Table,
    Text,
    UniqueConstraint,
    func,
    text,
)
from sqlalchemy.dialects import mysql

__all__ = [
    "BIGINT_PK",
    "INTERNAL_TABLES",
    "NAMING_CONVENTION",
    "ingest_ledger",
    "ingest_runs",
    "metadata",
    "rejected_rows",
]

NAMING_CONVENTION = {
    "ix": "ix_%(table_name)s_%(column_0_N_name)s",
    "uq": "uq_%(table_name)s_%(column_0_N_name)s",
    "ck": "ck_%(table_name)s_%(constraint_name)s",
    "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}
metadata = MetaData(naming_convention=NAMING_CONVENTION)

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
    Column("applied_at", DateTime, nullable=False, server_default=func.now(), index=True),
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

# The producer's checkpoint and run record: how far a run has been sent, so a restart skips
# ahead, and what it read, sent and rejected.
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
    Column("started_at", DateTime, nullable=False, server_default=func.now(), index=True),
    Column("updated_at", DateTime, nullable=False, server_default=func.now()),
    Column("finished_at", DateTime, nullable=True),
    # The run record `headrace runs` shows (migration 0002): rows in messages confirmed sent,
    # rows `headrace rejected replay` inserted later, the source's columns (a JSON list, the
    # header `headrace rejected export` writes) and the producer's options (a JSON object).
    Column("rows_sent", BigInteger, nullable=False, server_default=text("0")),
    Column("rows_replayed", BigInteger, nullable=False, server_default=text("0")),
    Column("columns", Text, nullable=True),
    Column("options", Text, nullable=True),
)

INTERNAL_TABLES = frozenset({"ingest_ledger", "rejected_rows", "ingest_runs", "alembic_version"})
