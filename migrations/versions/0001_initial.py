"""headrace's tables: ledger, rejects, runs.

Revision ID: 0001
Revises:
Create Date: 2026-11-23
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import mysql

revision: str = "0001"
down_revision: str | None = None
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

RUN_ID = sa.String(32)
LONG_TEXT = sa.Text().with_variant(mysql.MEDIUMTEXT(), "mysql", "mariadb")
BIGINT_PK = sa.BigInteger().with_variant(sa.Integer(), "sqlite")
MYSQL_OPTS = {"mysql_engine": "InnoDB", "mysql_charset": "utf8mb4", "mysql_collate": "utf8mb4_bin"}


def upgrade() -> None:
    op.create_table(
        "ingest_ledger",
        sa.Column("run_id", RUN_ID, nullable=False),
        sa.Column("seq", sa.Integer, nullable=False, autoincrement=False),
        sa.Column("table_name", sa.String(64), nullable=False),
        sa.Column("rows_inserted", sa.Integer, nullable=False),
        sa.Column("rows_rejected", sa.Integer, nullable=False),
        sa.Column("applied_at", sa.DateTime, nullable=False, server_default=sa.func.now()),
        sa.PrimaryKeyConstraint("run_id", "seq", name="pk_ingest_ledger"),
        **MYSQL_OPTS,
    )
    op.create_table(
        "rejected_rows",
        sa.Column("id", BIGINT_PK, primary_key=True, autoincrement=True),
        sa.Column("run_id", RUN_ID, nullable=False),
        sa.Column("source", sa.String(1024), nullable=False),
        sa.Column("line", sa.BigInteger, nullable=False),
        sa.Column("table_name", sa.String(64), nullable=False),
        sa.Column("stage", sa.String(16), nullable=False),
        sa.Column("reason", sa.String(1024), nullable=False),
        sa.Column("raw", LONG_TEXT, nullable=False),
        sa.Column("created_at", sa.DateTime, nullable=False, server_default=sa.func.now()),
        sa.UniqueConstraint("run_id", "line", name="uq_rejected_rows_run_id_line"),
        **MYSQL_OPTS,
    )
    op.create_table(
        "ingest_runs",
        sa.Column("run_id", RUN_ID, primary_key=True),
        sa.Column("source", sa.String(1024), nullable=False),
        sa.Column("source_version", sa.String(128), nullable=False),
        sa.Column("source_bytes", sa.BigInteger, nullable=False),
        sa.Column("table_name", sa.String(64), nullable=False),
        sa.Column("status", sa.String(16), nullable=False),
        sa.Column("messages_sent", sa.Integer, nullable=False),
        sa.Column("total_messages", sa.Integer, nullable=True),
        sa.Column("rows_read", sa.BigInteger, nullable=False),
        sa.Column("rows_rejected", sa.BigInteger, nullable=False),
        sa.Column("started_at", sa.DateTime, nullable=False, server_default=sa.func.now()),
        sa.Column("updated_at", sa.DateTime, nullable=False, server_default=sa.func.now()),
        sa.Column("finished_at", sa.DateTime, nullable=True),
        **MYSQL_OPTS,
    )


def downgrade() -> None:
    op.drop_table("ingest_runs")
    op.drop_table("rejected_rows")
    op.drop_table("ingest_ledger")
