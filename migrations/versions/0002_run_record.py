"""The producer's run record (rows sent, columns, options, replayed rows) and the ledger's age.

``headrace runs`` reports each run from ``ingest_runs``; ``headrace rejected export`` needs the
run's columns for the header line; ``headrace ledger prune`` deletes by ``applied_at``.

Revision ID: 0002
Revises: 0001
Create Date: 2026-11-27
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0002"
down_revision: str | None = "0001"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    with op.batch_alter_table("ingest_runs") as batch:
        batch.add_column(
            sa.Column("rows_sent", sa.BigInteger, nullable=False, server_default=sa.text("0"))
        )
        batch.add_column(
            sa.Column("rows_replayed", sa.BigInteger, nullable=False, server_default=sa.text("0"))
        )
        batch.add_column(sa.Column("columns", sa.Text, nullable=True))
        batch.add_column(sa.Column("options", sa.Text, nullable=True))
    op.create_index("ix_ingest_ledger_applied_at", "ingest_ledger", ["applied_at"])
    op.create_index("ix_ingest_runs_started_at", "ingest_runs", ["started_at"])


def downgrade() -> None:
    op.drop_index("ix_ingest_runs_started_at", table_name="ingest_runs")
    op.drop_index("ix_ingest_ledger_applied_at", table_name="ingest_ledger")
    with op.batch_alter_table("ingest_runs") as batch:
        batch.drop_column("options")
        batch.drop_column("columns")
        batch.drop_column("rows_replayed")
        batch.drop_column("rows_sent")
