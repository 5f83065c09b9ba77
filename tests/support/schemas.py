"""Reflected example tables for the tests of typing and checksums.

``things`` has a column of every kind headrace types; ``obs`` is the demo's ``observations``.
The conftests of the test packages that use them import the fixtures.
"""

from __future__ import annotations

import pytest
import sqlalchemy as sa
from sqlalchemy.dialects import mysql

from cli.datagen import observations
from headrace.schema import TableSchema

__all__ = ["obs", "things", "things_table"]


def things_table() -> sa.Table:
    """A table with a column of every kind headrace types (and a generated one)."""
    return sa.Table(
        "things",
        sa.MetaData(),
        sa.Column("id", mysql.BIGINT(unsigned=True), primary_key=True, autoincrement=True),
        sa.Column("flag", mysql.TINYINT(1), nullable=False),
        sa.Column("tiny", mysql.TINYINT()),
        sa.Column("utiny", mysql.TINYINT(unsigned=True)),
        sa.Column("small", mysql.SMALLINT()),
        sa.Column("usmall", mysql.SMALLINT(unsigned=True)),
        sa.Column("medium", mysql.MEDIUMINT()),
        sa.Column("umedium", mysql.MEDIUMINT(unsigned=True)),
        sa.Column("count", mysql.INTEGER(unsigned=True), nullable=False),
        sa.Column("signed", mysql.INTEGER()),
        sa.Column("big", mysql.BIGINT()),
        sa.Column("ubig", mysql.BIGINT(unsigned=True)),
        sa.Column("price", mysql.DECIMAL(5, 2)),
        sa.Column("whole", mysql.DECIMAL(5, 0)),
        sa.Column("frac", mysql.DECIMAL(2, 2)),
        sa.Column("wide", mysql.DECIMAL(65, 30)),
        sa.Column("ratio", mysql.DOUBLE()),
        sa.Column("at", mysql.DATETIME(), nullable=False),
        sa.Column("ts", mysql.TIMESTAMP()),
        sa.Column("day", mysql.DATE()),
        sa.Column("code", mysql.VARCHAR(5), nullable=False),
        sa.Column("label", mysql.VARCHAR(5)),
        sa.Column("body", mysql.TEXT()),
        sa.Column("color", mysql.ENUM("red", "green", "blue")),
        sa.Column("doubled", mysql.INTEGER(), sa.Computed("`count` * 2")),
        sa.Column(
            "created",
            mysql.DATETIME(),
            nullable=False,
            server_default=sa.text("CURRENT_TIMESTAMP"),
        ),
    )


@pytest.fixture(scope="module")
def things() -> TableSchema:
    return TableSchema.from_table(things_table(), [("code",)])


@pytest.fixture(scope="module")
def obs() -> TableSchema:
    return TableSchema.from_table(observations)
