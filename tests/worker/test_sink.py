"""The sink against a real MariaDB: exactly once, bisection, strict mode."""

from __future__ import annotations

import asyncio

import pytest
import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncEngine
from support.pipeline import BOTH_INSERT_PATHS, count, rejected

from cli.datagen import observations
from headrace.db import create_engine
from headrace.envelope import Envelope
from headrace.errors import ConfigError
from headrace.schema import Reject, reflect_table, row_text
from headrace.settings import InsertPath, Settings
from headrace.tables import ingest_ledger, rejected_rows
from worker.sink import Sink

COLS = ("observed_at", "bot_id", "sku", "price", "quantity", "in_stock", "title", "note")
RUN = "0123456789abcdef0123456789abcdef"

pytestmark = [BOTH_INSERT_PATHS]


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


async def _sink(engine: AsyncEngine, insert_path: InsertPath) -> tuple[Sink, object]:
    async with engine.connect() as conn:
        schema = await reflect_table(conn, "observations")
    sink = Sink(engine, max_statement_bytes=4096, statement_timeout_s=30, insert_path=insert_path)
    return sink, schema


async def test_batch_applies_once_and_redelivery_is_a_no_op(
    engine: AsyncEngine, insert_path: InsertPath
) -> None:
    sink, schema = await _sink(engine, insert_path)
    envs = [
        _env(0, [_row(i) for i in range(100)]),
        _env(1, [_row(i) for i in range(100, 250)], 102),
    ]
    first = await sink.write(schema, envs)  # type: ignore[arg-type]
    assert first.rows_inserted == 250
    assert first.applied == {(RUN, 0), (RUN, 1)}
    # 4 KiB statements: the batch was split; a load streams the batch as one statement.
    assert first.statements == 1 if insert_path == "load" else first.statements > 1
    again = await sink.write(schema, envs)  # type: ignore[arg-type]
    assert again.rows_inserted == 0
    assert again.duplicates == {(RUN, 0), (RUN, 1)}
    assert await count(engine) == 250
    assert await count(engine, ingest_ledger) == 2


async def test_two_workers_with_the_same_message_insert_it_once(
    engine: AsyncEngine, insert_path: InsertPath
) -> None:
    sink_a, schema = await _sink(engine, insert_path)
    sink_b, _ = await _sink(engine, insert_path)
    env = _env(0, [_row(i) for i in range(2000)])
    a, b = await asyncio.gather(sink_a.write(schema, [env]), sink_b.write(schema, [env]))  # type: ignore[arg-type]
    assert sorted([a.rows_inserted, b.rows_inserted]) == [0, 2000]
    assert (RUN, 0) in (a.duplicates | b.duplicates)
    assert await count(engine) == 2000


async def test_bad_rows_are_bisected_out_and_the_rest_inserted(
    engine: AsyncEngine, insert_path: InsertPath
) -> None:
    sink, schema = await _sink(engine, insert_path)
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


async def test_values_are_not_coerced(engine: AsyncEngine, insert_path: InsertPath) -> None:
    sink, schema = await _sink(engine, insert_path)
    rows = [_row(0), ["2026-02-30 10:00:00", "1", "SKU-X", "9.99", "1", "1", "t", None], _row(2)]
    rows[2][3] = "123456789.99"  # DECIMAL(10,2) holds 8 digits before the point
    result = await sink.write(schema, [_env(0, rows)])  # type: ignore[arg-type]
    assert result.rows_inserted == 1
    async with engine.connect() as conn:
        skus = (await conn.execute(sa.select(observations.c.sku))).scalars().all()
    assert skus == ["SKU-000000"]


async def test_messages_with_columns_in_any_order_share_one_batch(
    engine: AsyncEngine, insert_path: InsertPath
) -> None:
    """Each message's values are arranged in the statement's order (issue 9)."""
    sink, schema = await _sink(engine, insert_path)
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


async def _status(conn: object) -> dict[str, int]:
    """This session's statement counters (MariaDB and MySQL both keep them)."""
    rows = await conn.exec_driver_sql(  # type: ignore[attr-defined]
        "SHOW SESSION STATUS WHERE Variable_name IN ('Com_stmt_execute', 'Com_insert', 'Com_load')"
    )
    return {str(name): int(value) for name, value in rows}


async def test_the_server_sees_the_protocol_the_path_names(
    settings: Settings, insert_path: InsertPath
) -> None:
    """Counted by the server, so a silent fallback (bulk → text, or text → a statement per
    row) fails. Two writes that differ only in how many statements their rows take: every
    extra statement is one more INSERT either way, and one more binary execute
    (COM_STMT_BULK_EXECUTE) on the bulk path but none on the text path (COM_QUERY). The load
    path sends each batch as one LOAD DATA and no INSERT but the ledger's."""
    engine = create_engine(settings, pool_size=1)  # one connection: its session counters
    try:
        sink, schema = await _sink(engine, insert_path)
        await sink.write(schema, [_env(0, [_row(i) for i in range(10)])])  # type: ignore[arg-type]
        deltas = []
        for seq, n in ((1, 600), (2, 1800)):
            async with engine.connect() as conn:
                before = await _status(conn)
            rows = [_row(i) for i in range(seq * 10_000, seq * 10_000 + n)]
            for row in rows:
                row[7] = "a note"  # a column of NULLs only would go as text (next test)
            result = await sink.write(schema, [_env(seq, rows)])  # type: ignore[arg-type]
            async with engine.connect() as conn:
                after = await _status(conn)
            assert result.rows_inserted == n
            assert result.protocol == insert_path
            deltas.append(
                (
                    result.statements,
                    *(after[k] - before[k] for k in ("Com_insert", "Com_stmt_execute", "Com_load")),
                )
            )
    finally:
        await engine.dispose()
    if insert_path == "load":  # per write: the ledger's INSERT and one LOAD DATA
        assert [(s, inserts, loads) for s, inserts, _, loads in deltas] == [(1, 1, 1)] * 2
        assert deltas[0][2] == deltas[1][2]  # no binary execute for the rows
        return
    assert all(loads == 0 for *_, loads in deltas)
    (s1, inserts1, executes1, _), (s2, inserts2, executes2, _) = deltas
    assert s2 > s1 >= 2  # 4 KiB statements
    assert inserts2 - inserts1 == s2 - s1
    assert executes2 - executes1 == (s2 - s1 if insert_path == "bulk" else 0)


async def test_values_needing_escapes_arrive_intact(
    engine: AsyncEngine, insert_path: InsertPath
) -> None:
    """Quotes, backslashes, NUL, newlines, non-ASCII and SQL in values are data, not SQL."""
    sink, schema = await _sink(engine, insert_path)
    titles = [
        "it's",
        'say "hi"',
        "back\\slash\\",
        "nul\x00byte",
        "line\nbreak\r\x1a",
        "'); DROP TABLE observations; --",
        "żółw 🐢",
        "",
    ]
    rows = [_row(i) for i in range(len(titles))]
    for row, title in zip(rows, titles, strict=True):
        row[6] = title
    rows[0][7] = "\\'"
    result = await sink.write(schema, [_env(0, rows)])  # type: ignore[arg-type]
    assert result.rows_inserted == len(titles)
    c = observations.c
    async with engine.connect() as conn:
        got = (await conn.execute(sa.select(c.title, c.note).order_by(c.sku))).all()
    assert [tuple(r) for r in got] == [(t, "\\'" if i == 0 else None) for i, t in enumerate(titles)]


async def test_a_column_of_nulls_only_goes_as_text_on_the_bulk_path(
    settings: Settings, insert_path: InsertPath
) -> None:
    """asyncmy cannot bind a column that is NULL in every row of a bulk statement and would
    fall back to its per-value text path: the sink sends such rows as INSERT text itself."""
    engine = create_engine(settings, pool_size=1)
    try:
        sink, schema = await _sink(engine, insert_path)
        await sink.write(schema, [_env(0, [_row(i) for i in range(10)])])  # type: ignore[arg-type]
        async with engine.connect() as conn:
            before = await _status(conn)
        result = await sink.write(schema, [_env(1, [_row(i) for i in range(10, 610)], 12)])  # type: ignore[arg-type]
        async with engine.connect() as conn:
            after = await _status(conn)
    finally:
        await engine.dispose()
    assert result.rows_inserted == 600
    if insert_path == "load":  # LOAD DATA takes NULLs as \\N: one load, the ledger's INSERT
        assert (result.statements, after["Com_load"] - before["Com_load"]) == (1, 1)
        assert after["Com_insert"] - before["Com_insert"] == 1
    else:
        assert result.statements >= 2
        assert after["Com_insert"] - before["Com_insert"] == result.statements + 1  # + ledger
    assert await count(engine) == 610


async def test_auto_takes_text_without_the_bulk_protocol_and_bulk_refuses_to_fall_back(
    settings: Settings,
) -> None:
    """With the statement cache off asyncmy cannot bulk-execute: ``auto`` says it sends
    text, and an explicit ``bulk`` is refused with a ConfigError instead of a silent
    fallback (nothing is written)."""
    no_cache = settings.model_copy(
        update={"db": settings.db.model_copy(update={"stmt_cache_size": 0})}
    )
    engine = create_engine(no_cache)
    try:
        auto, schema = await _sink(engine, "auto")
        result = await auto.write(schema, [_env(0, [_row(i) for i in range(5)])])  # type: ignore[arg-type]
        assert result.protocol == "text"
        assert result.rows_inserted == 5
        bulk, _ = await _sink(engine, "bulk")
        with pytest.raises(ConfigError, match="COM_STMT_BULK_EXECUTE"):
            await bulk.write(schema, [_env(1, [_row(i) for i in range(5, 10)], 7)])  # type: ignore[arg-type]
        assert await count(engine) == 5
        assert await count(engine, ingest_ledger) == 1
    finally:
        await engine.dispose()
