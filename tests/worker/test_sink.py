"""The sink against a real MariaDB: exactly once, bisection, strict mode."""

from __future__ import annotations

import asyncio

import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncEngine
from support.pipeline import count, rejected

from cli.datagen import observations
from headrace.envelope import Envelope
from headrace.schema import Reject, reflect_table, row_text
from headrace.tables import ingest_ledger, rejected_rows
from worker.sink import Sink

COLS = ("observed_at", "bot_id", "sku", "price", "quantity", "in_stock", "title", "note")
RUN = "0123456789abcdef0123456789abcdef"


def _row(i: int, *, quantity: str = "5", sku: str | None = None) -> list[str | None]:
    return [
        "2026-11-22 10:00:00",
        "1",
        sku or f"SKU-{i:06d}",
        "9.99",
        quantity,
        "1",
        f"item {i}",
        None,
    ]


def _env(
    seq: int, rows: list[list[str | None]], first_line: int = 2, rejects: list[Reject] | None = None
) -> Envelope:
    lines = list(range(first_line, first_line + len(rows)))
    return Envelope.from_rows(
        RUN,
        seq,
        "observations",
        COLS,
        "test.csv",
        rows,
        lines,
        rejects or [],
    )


async def _sink(engine: AsyncEngine) -> tuple[Sink, object]:
    async with engine.connect() as conn:
        schema = await reflect_table(conn, "observations")
    return Sink(engine, max_statement_bytes=4096, statement_timeout_s=30), schema


async def test_batch_applies_once_and_redelivery_is_a_no_op(engine: AsyncEngine) -> None:
    sink, schema = await _sink(engine)
    envs = [
        _env(0, [_row(i) for i in range(100)]),
        _env(1, [_row(i) for i in range(100, 250)], 102),
    ]
    first = await sink.write(schema, envs)  # type: ignore[arg-type]
    assert first.rows_inserted == 250
    assert first.applied == {(RUN, 0), (RUN, 1)}
    assert first.statements > 1  # 4 KiB statements: the batch was split
    again = await sink.write(schema, envs)  # type: ignore[arg-type]
    assert again.rows_inserted == 0
    assert again.duplicates == {(RUN, 0), (RUN, 1)}
    assert await count(engine) == 250
    assert await count(engine, ingest_ledger) == 2


async def test_two_workers_with_the_same_message_insert_it_once(engine: AsyncEngine) -> None:
    sink_a, schema = await _sink(engine)
    sink_b, _ = await _sink(engine)
    env = _env(0, [_row(i) for i in range(2000)])
    a, b = await asyncio.gather(sink_a.write(schema, [env]), sink_b.write(schema, [env]))  # type: ignore[arg-type]
    assert sorted([a.rows_inserted, b.rows_inserted]) == [0, 2000]
    assert (RUN, 0) in (a.duplicates | b.duplicates)
    assert await count(engine) == 2000


async def test_bad_rows_are_bisected_out_and_the_rest_inserted(engine: AsyncEngine) -> None:
    sink, schema = await _sink(engine)
    rows = [_row(i) for i in range(300)]
    rows[17] = _row(17, quantity="70000")  # out of SMALLINT range: strict mode refuses it
    rows[150] = _row(150, sku="SKU-000003")  # duplicate natural key of row 3
    rows[299] = _row(299, quantity="-40000")
    producer_reject = Reject(999, "a,b", "expected 8 fields, found 2")
    result = await sink.write(schema, [_env(0, rows, rejects=[producer_reject])])  # type: ignore[arg-type]
    assert result.rows_inserted == 297
    assert await count(engine) == 297
    got = await rejected(engine)
    assert [(line, stage) for line, stage, _ in got] == [
        (19, "worker"),
        (152, "worker"),
        (301, "worker"),
        (999, "producer"),
    ]
    assert "Out of range" in got[0][2]
    assert "Duplicate entry" in got[1][2]
    async with engine.connect() as conn:
        ledger = (
            await conn.execute(
                sa.select(ingest_ledger.c.rows_inserted, ingest_ledger.c.rows_rejected)
            )
        ).one()
    assert tuple(ledger) == (297, 4)


async def test_values_are_not_coerced(engine: AsyncEngine) -> None:
    sink, schema = await _sink(engine)
    rows = [_row(0), ["2026-02-30 10:00:00", "1", "SKU-X", "9.99", "1", "1", "t", None], _row(2)]
    rows[2][3] = "123456789.99"  # DECIMAL(10,2) holds 8 digits before the point
    result = await sink.write(schema, [_env(0, rows)])  # type: ignore[arg-type]
    assert result.rows_inserted == 1
    async with engine.connect() as conn:
        skus = (await conn.execute(sa.select(observations.c.sku))).scalars().all()
    assert skus == ["SKU-000000"]


async def test_messages_with_columns_in_any_order_share_one_batch(engine: AsyncEngine) -> None:
    """Each message's values are arranged in the statement's order (issue 9)."""
    sink, schema = await _sink(engine)
    order = [5, 2, 0, 7, 1, 4, 3, 6]  # a header that is not the table's order
    rows = [_row(i, quantity=str(i)) for i in range(20)]
    rows[15] = _row(15, quantity="70000")  # refused by the database: bisected out
    plain = _env(0, rows[:10])
    shuffled = Envelope.from_rows(
        RUN,
        1,
        "observations",
        tuple(COLS[i] for i in order),
        "test.csv",
        [[r[i] for i in order] for r in rows[10:]],
        list(range(12, 22)),
    )
    result = await sink.write(schema, [shuffled, plain])  # type: ignore[arg-type]
    assert result.rows_inserted == 19
    c = observations.c
    async with engine.connect() as conn:
        got = (await conn.execute(sa.select(c.sku, c.quantity, c.title, c.note))).all()
        reject = (await conn.execute(sa.select(rejected_rows.c.line, rejected_rows.c.raw))).one()
    assert sorted(tuple(r) for r in got) == [
        (f"SKU-{i:06d}", i, f"item {i}", None) for i in range(20) if i != 15
    ]
    assert reject.line == 17
    assert reject.raw == row_text([rows[15][i] for i in order])  # the message's own order
