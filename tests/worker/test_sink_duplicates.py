"""--on-duplicate in the sink (issue 12): error, skip and update on a real MariaDB.

The mode travels in the envelope (``dup``); the sink builds one statement per (columns, mode),
keeps the bulk path (one ``executemany`` per statement-size slice) and the bisection, and the
ledger still makes every message apply once.
"""

from __future__ import annotations

import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncEngine
from support.pipeline import BOTH_INSERT_PATHS, rejected

from headrace.envelope import Envelope
from headrace.schema import TableSchema, reflect_table
from headrace.settings import Settings
from worker.sink import Sink

pytestmark = BOTH_INSERT_PATHS  # the duplicate clause rides on both the bulk and text paths

RUN = "fedcba9876543210fedcba9876543210"
DDL = """
CREATE TABLE prices (
    id INT AUTO_INCREMENT PRIMARY KEY,
    sku VARCHAR(12) NOT NULL,
    price DECIMAL(8, 2) NOT NULL,
    qty SMALLINT NULL,
    note VARCHAR(20) NOT NULL DEFAULT 'none',
    UNIQUE KEY uq_prices_sku (sku)
)
"""
COLS = ("sku", "price", "qty")


def _env(seq: int, rows: list[list[str | None]], mode: str, first_line: int = 2) -> Envelope:
    env = Envelope.from_rows(
        RUN, seq, "prices", COLS, "prices.csv", rows, range(first_line, first_line + len(rows))
    )
    env.on_duplicate = mode
    return env


async def _setup(engine: AsyncEngine, settings: Settings) -> tuple[Sink, TableSchema]:
    async with engine.begin() as conn:
        await conn.exec_driver_sql(DDL)
        schema = await reflect_table(conn, "prices")
    sink = Sink(
        engine,
        max_statement_bytes=4096,
        statement_timeout_s=30,
        insert_path=settings.db.insert_path,
    )
    return sink, schema


async def _table(engine: AsyncEngine) -> list[tuple[object, ...]]:
    async with engine.connect() as conn:
        rows = await conn.exec_driver_sql("SELECT sku, price, qty, note FROM prices ORDER BY sku")
        return [tuple(str(v) if v is not None else None for v in r) for r in rows]


def _first(n: int) -> list[list[str | None]]:
    return [[f"S{i:04d}", f"{i}.50", str(i)] for i in range(n)]


async def test_error_mode_rejects_the_duplicate_with_the_database_message(
    engine: AsyncEngine,
    settings: Settings,
) -> None:
    sink, schema = await _setup(engine, settings)
    await sink.write(schema, [_env(0, _first(3), "error")])
    result = await sink.write(schema, [_env(1, [["S0001", "9.99", "1"]], "error", 10)])
    assert (result.rows_inserted, result.rows_rejected, result.rows_skipped) == (0, 1, 0)
    [(line, stage, reason)] = [(r[0], r[1], r[2]) for r in await rejected(engine)]
    assert (line, stage) == (10, "worker")
    assert "Duplicate entry 'S0001'" in reason
    assert (await _table(engine))[1] == ("S0001", "1.50", "1", "none")


async def test_skip_leaves_existing_rows_and_counts_them(
    engine: AsyncEngine,
    settings: Settings,
) -> None:
    sink, schema = await _setup(engine, settings)
    await sink.write(schema, [_env(0, _first(300), "skip")])
    # 300 new rows, 200 whose key exists (changed values, left alone), one twice in itself.
    second = [[f"S{i:04d}", "1.00", "7"] for i in range(100, 600)] + [["S0599", "2.00", "8"]]
    result = await sink.write(schema, [_env(1, second, "skip", 1000)])
    assert result.statements > 1  # 4 KiB statements: the bulk path, split
    assert (result.rows_inserted, result.rows_skipped, result.rows_rejected) == (300, 201, 0)
    table = await _table(engine)
    assert len(table) == 600
    assert table[150] == ("S0150", "150.50", "150", "none")
    assert table[599] == ("S0599", "1.00", "7", "none")
    assert await rejected(engine) == []


async def test_skip_still_rejects_bad_values(
    engine: AsyncEngine,
    settings: Settings,
) -> None:
    """Unlike INSERT IGNORE, a value that does not fit is refused, not coerced."""
    sink, schema = await _setup(engine, settings)
    await sink.write(schema, [_env(0, _first(2), "skip")])
    rows: list[list[str | None]] = [["S0000", "3.00", "1"], ["S0100", "1.00", "99999"]]
    rows += [["S0101", "1.00", None]]
    result = await sink.write(schema, [_env(1, rows, "skip", 50)])
    assert (result.rows_inserted, result.rows_skipped, result.rows_rejected) == (1, 1, 1)
    [(line, stage, reason)] = [(r[0], r[1], r[2]) for r in await rejected(engine)]
    assert (line, stage) == (51, "worker")
    assert "Out of range value for column 'qty'" in reason


async def test_update_overwrites_the_carried_columns_only(
    engine: AsyncEngine,
    settings: Settings,
) -> None:
    sink, schema = await _setup(engine, settings)
    async with engine.begin() as conn:
        await conn.exec_driver_sql(
            "INSERT INTO prices (sku, price, qty, note) VALUES ('S0001', 1, 1, 'kept')"
        )
    rows: list[list[str | None]] = [["S0001", "5.25", None], ["S0002", "6.00", "2"]]
    result = await sink.write(schema, [_env(0, rows, "update")])
    # The path asked for, no fallback; LOAD DATA has no ON DUPLICATE KEY UPDATE, so the load
    # path writes an upsert as INSERT text.
    path = settings.db.insert_path
    assert result.protocol == ("text" if path == "load" else path)
    assert (result.rows_inserted, result.rows_rejected) == (2, 0)  # inserted or updated
    assert await _table(engine) == [("S0001", "5.25", None, "kept"), ("S0002", "6.00", "2", "none")]
    async with engine.connect() as conn:
        ids = (await conn.exec_driver_sql("SELECT id FROM prices WHERE sku = 'S0001'")).scalar()
    assert ids == 1  # updated in place: the same row


async def test_update_rejects_bad_values_and_the_ledger_applies_once(
    engine: AsyncEngine,
    settings: Settings,
) -> None:
    sink, schema = await _setup(engine, settings)
    await sink.write(schema, [_env(0, _first(50), "update")])
    changed: list[list[str | None]] = [[f"S{i:04d}", "0.01", "1"] for i in range(50)]
    changed[20] = ["S0020", "123456789.00", "1"]  # DECIMAL(8,2) cannot hold it
    envelope = _env(1, changed, "update", 100)
    result = await sink.write(schema, [envelope])
    assert (result.rows_inserted, result.rows_rejected) == (49, 1)
    again = await sink.write(schema, [envelope])  # redelivered: a no-op
    assert again.duplicates == {(RUN, 1)}
    assert again.rows_inserted == 0
    table = await _table(engine)
    assert table[20] == ("S0020", "20.50", "20", "none")
    assert {row[1] for i, row in enumerate(table) if i != 20} == {"0.01"}
    async with engine.connect() as conn:
        total = (await conn.execute(sa.text("SELECT COUNT(*) FROM prices"))).scalar()
    assert total == 50


async def test_skip_counts_every_row_of_a_batch_that_only_skips(
    engine: AsyncEngine,
    settings: Settings,
) -> None:
    """The benchmark's shape: rows loaded plainly, then the same rows again with skip, on a
    connection that never counted before (a prepared read of a session variable that was
    undefined when prepared reported 1 here instead of 3,000)."""
    sink, schema = await _setup(engine, settings)
    rows = _first(3000)
    await sink.write(schema, [_env(0, rows, "error")])
    result = await sink.write(schema, [_env(1, rows, "skip", 10_000)])
    assert (result.rows_inserted, result.rows_skipped, result.rows_rejected) == (0, 3000, 0)
