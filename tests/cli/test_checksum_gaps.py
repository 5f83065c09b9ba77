"""The checksum's former gaps (issue 12): values that differ must not hash alike, and the same
value must hash alike from the source text and from the database driver."""

from __future__ import annotations

import datetime as dt
import math
from pathlib import Path

import pytest
import sqlalchemy as sa
from sqlalchemy.dialects import mysql
from sqlalchemy.ext.asyncio import AsyncEngine

from cli.checksum import row_checksum
from cli.verify import verify_source
from headrace.schema import TableSchema
from headrace.settings import Settings
from producer.app import produce
from worker.app import Worker


def _schema() -> TableSchema:
    table = sa.Table(
        "gaps",
        sa.MetaData(),
        sa.Column("a", mysql.VARCHAR(20)),
        sa.Column("b", mysql.VARCHAR(20)),
        sa.Column("f", mysql.FLOAT()),
        sa.Column("d", mysql.DOUBLE()),
        sa.Column("t", mysql.TIME(fsp=2)),
        sa.Column("at", mysql.DATETIME(fsp=3)),
    )
    return TableSchema.from_table(table)


GAPS = _schema()


def _sum(names: list[str], rows: list[list[object]]) -> tuple[int, int]:
    return row_checksum(GAPS.specs_for(names), rows)


def test_a_separator_inside_a_value_does_not_collide() -> None:
    assert _sum(["a", "b"], [["x\x1fy", "z"]]) != _sum(["a", "b"], [["x", "y\x1fz"]])
    assert _sum(["a", "b"], [["x\x1f", ""]]) != _sum(["a", "b"], [["x", "\x1f"]])


def test_null_and_the_text_backslash_n_differ() -> None:
    assert _sum(["a"], [[None]]) != _sum(["a"], [["\\N"]])
    assert _sum(["a", "b"], [[None, "-"]]) != _sum(["a", "b"], [["-", None]])


@pytest.mark.parametrize(
    ("text", "stored"),
    [
        ("-1:02:03.5", dt.timedelta(hours=-1, minutes=-2, seconds=-3.5)),
        ("838:59:59", dt.timedelta(hours=838, minutes=59, seconds=59)),
        ("00:05", dt.timedelta(minutes=5)),
        ("12:00:00.10", dt.timedelta(hours=12, microseconds=100_000)),
    ],
)
def test_time_text_and_driver_value_agree(text: str, stored: dt.timedelta) -> None:
    out = GAPS.validate(GAPS.specs_for(["t"]), [[text]], [2])
    assert not out.rejects
    assert _sum(["t"], [list(out.rows[0])]) == _sum(["t"], [[stored]])
    assert _sum(["t"], [[text]]) != _sum(["t"], [[stored + dt.timedelta(microseconds=10_000)]])


@pytest.mark.parametrize(
    ("text", "f_stored", "d_stored"),
    [
        ("0.1", 0.10000000149011612, 0.1),
        ("3.14159265", 3.1415927410125732, 3.14159265),
        ("3.14159265", 3.14159, 3.14159265),  # FLOAT over the text protocol: 6 digits
        ("16777217", 16777216.0, 16777217.0),
        ("16777217", 16777200.0, 16777217.0),
        ("-0", 0.0, 0.0),
        ("1e-7", 1.0000000116860974e-07, 1e-07),
    ],
)
def test_float_canonical_forms(text: str, f_stored: float, d_stored: float) -> None:
    """What MariaDB gave back for these texts (FLOAT is single precision, no negative zero)."""
    assert _sum(["f", "d"], [[text, text]]) == _sum(["f", "d"], [[f_stored, d_stored]])
    assert _sum(["d"], [[text]]) != _sum(["d"], [[math.nextafter(d_stored, math.inf)]])
    assert _sum(["f"], [[text]]) != _sum(["f"], [[f_stored * 1.00001 + 1e-30]])


def test_datetime_fractions_agree() -> None:
    out = GAPS.validate(GAPS.specs_for(["at"]), [["2026-11-23T04:05:06.120Z"]], [2])
    assert _sum(["at"], [list(out.rows[0])]) == _sum(
        ["at"], [[dt.datetime(2026, 11, 23, 4, 5, 6, 120_000)]]
    )


DDL = """
CREATE TABLE gaps (
    id INT AUTO_INCREMENT PRIMARY KEY,
    a VARCHAR(20) NULL, b VARCHAR(20) NULL, f FLOAT NULL, d DOUBLE NULL,
    t TIME(2) NULL, at DATETIME(3) NULL
)
"""


async def test_verify_on_mariadb(tmp_path: Path, settings: Settings, engine: AsyncEngine) -> None:
    """Through the pipeline, the values above verify (and one changed row does not)."""
    async with engine.begin() as conn:
        await conn.exec_driver_sql(DDL)
    source = tmp_path / "gaps.csv"
    source.write_text(
        "a,b,f,d,t,at\n"
        "x\x1fy,z,0.1,3.14159265,-1:02:03.5,2026-11-23T04:05:06.120Z\n"
        "\\N,,16777217,-0,838:59:59,2026-11-23 04:05:06.5\n"
        ",\\N,1e-7,1e-7,00:05,2026-11-23 04:05:06\n"
    )
    worker = settings.worker.model_copy(update={"idle_exit_s": 0.5, "flush_age_s": 0.1})
    settings = settings.model_copy(update={"worker": worker})
    report = await produce(settings, str(source), "gaps")
    assert (report.rows_read, report.rows_rejected) == (3, 0)
    await Worker(settings).run()
    verified = await verify_source(settings, engine, str(source), "gaps")
    assert verified.ok, verified.line()
    async with engine.begin() as conn:
        await conn.exec_driver_sql("UPDATE gaps SET t = '-1:02:03.51' WHERE t < 0")
    assert not (await verify_source(settings, engine, str(source), "gaps")).ok
