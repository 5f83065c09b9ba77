"""LOAD DATA LOCAL from memory: escaping, and a server's request for a file is never served
from the disk (MariaDB)."""

from __future__ import annotations

from typing import Any

import pytest
import sqlalchemy as sa
from asyncmy.errors import OperationalError
from sqlalchemy.ext.asyncio import AsyncConnection

from headrace.db import create_engine
from headrace.loadlocal import NULL, escape_tsv, feeding
from headrace.settings import Settings


def test_clean_columns_come_back_as_they_are() -> None:
    col = ["1", "abc", "2026-11-22 10:00:00"]
    assert escape_tsv(col) is col


def test_tabs_newlines_backslashes_and_nul_are_escaped_and_none_is_null() -> None:
    assert escape_tsv(["a\tb", "c\nd\re", "\\N", "nul\x00", None]) == [
        "a\\tb",
        "c\\nd\\re",
        "\\\\N",  # a value spelled like the NULL mark stays text
        "nul\\0",
        NULL,
    ]


async def _query(conn: AsyncConnection, sql: str, data: bytes | None) -> None:
    """``sql`` as COM_QUERY on the driver connection (as the sink sends it; asyncmy's
    prepared-statement path does not answer LOAD DATA LOCAL), fed ``data``."""
    raw = await conn.get_raw_connection()
    driver: Any = raw.driver_connection
    async with driver.cursor() as cursor:
        if data is None:
            await cursor.execute(sql)
        else:
            with feeding(driver, data):
                await cursor.execute(sql)


async def test_values_load_exactly_and_nothing_is_read_from_disk(settings: Settings) -> None:
    load = settings.model_copy(
        update={"db": settings.db.model_copy(update={"insert_path": "load"})}
    )
    engine = create_engine(load, pool_size=1)
    values = ["tab\there", "line\nbreak", "back\\slash", "\\N", "", None, "żółw 🐢"]
    try:
        async with engine.begin() as conn:
            await conn.exec_driver_sql("CREATE TABLE t (k INT PRIMARY KEY, v TEXT NULL)")
            text = escape_tsv(values)
            data = "".join(f"{k}\t{v}\n" for k, v in enumerate(text)).encode()
            await _query(
                conn,
                "LOAD DATA LOCAL INFILE 'ignored' INTO TABLE t CHARACTER SET utf8mb4 "
                "FIELDS TERMINATED BY '\\t' ESCAPED BY '\\\\' LINES TERMINATED BY '\\n'",
                data,
            )
            got = (await conn.execute(sa.text("SELECT v FROM t ORDER BY k"))).scalars().all()
            assert got == values
        async with engine.connect() as conn:
            # Nothing registered: the server's request for a (real) file is refused.
            with pytest.raises(OperationalError, match="nobody gave"):
                await _query(conn, "LOAD DATA LOCAL INFILE '/etc/hostname' INTO TABLE t", None)
            rows = (await conn.execute(sa.text("SELECT COUNT(*) FROM t"))).scalar_one()
            assert rows == len(values)
    finally:
        await engine.dispose()
