"""Row values never reach the logs: a DBAPI error's text in ``db_retry`` and in what
``batch_failed`` logs (the exception's repr) carries the statement, not its parameters."""

from __future__ import annotations

import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncEngine
from structlog.testing import capture_logs
from support.pipeline import BOTH_INSERT_PATHS

from headrace.envelope import Envelope
from headrace.errors import DatabaseUnavailable
from headrace.retry import Backoff
from headrace.schema import Reject, reflect_table
from headrace.settings import InsertPath
from worker.sink import Sink

RUN = "0123456789abcdef0123456789abcdef"
SECRET_VALUE = "card-4111111111111111"


async def _narrow_table(engine: AsyncEngine) -> None:
    """A one-column table: short statements, so parameters would sit inside truncated text."""
    async with engine.begin() as conn:
        await conn.exec_driver_sql("CREATE TABLE narrow (k VARCHAR(64) PRIMARY KEY)")


async def _refuse_rejects(engine: AsyncEngine, errno: int) -> None:
    """``rejected_rows`` refuses every row with MySQL error ``errno`` (a trigger): the insert
    whose parameters are a row's raw text fails."""
    sqlstate = "40001" if errno == 1213 else "45000"
    async with engine.begin() as conn:
        await conn.exec_driver_sql(
            "CREATE TRIGGER refuse_rejects BEFORE INSERT ON rejected_rows FOR EACH ROW "
            f"SIGNAL SQLSTATE '{sqlstate}' SET MYSQL_ERRNO = {errno}, MESSAGE_TEXT = 'refused'"
        )


async def _write(
    engine: AsyncEngine, insert_path: InsertPath = "auto", value: str = "ok"
) -> BaseException:
    async with engine.connect() as conn:
        schema = await reflect_table(conn, "narrow")
    sink = Sink(
        engine,
        max_statement_bytes=4096,
        statement_timeout_s=30,
        backoff=Backoff(base_s=0.01, cap_s=0.01, attempts=3),
        insert_path=insert_path,
    )
    reject = Reject(3, SECRET_VALUE, "bad")
    env = Envelope.from_rows(RUN, 0, "narrow", ("k",), "t", [[value]], [2], [reject])
    try:
        await sink.write(schema, [env])
    except Exception as exc:
        return exc
    raise AssertionError("the trigger should have refused the row")


async def test_db_retry_lines_carry_no_row_values(engine: AsyncEngine) -> None:
    await _narrow_table(engine)
    await _refuse_rejects(engine, 1213)  # a deadlock: retried, then given up
    with capture_logs() as logs:
        exc = await _write(engine)
    retries = [e for e in logs if e["event"] == "db_retry"]
    assert len(retries) == 2
    assert all(SECRET_VALUE not in str(e) for e in retries), retries
    assert isinstance(exc, DatabaseUnavailable)
    assert SECRET_VALUE not in repr(exc)


async def test_a_failed_batch_error_carries_no_row_values(engine: AsyncEngine) -> None:
    await _narrow_table(engine)
    await _refuse_rejects(engine, 1644)  # not a row error, not transient
    exc = await _write(engine)
    assert isinstance(exc, sa.exc.DBAPIError)
    assert "refused" in repr(exc)  # what the worker's batch_failed line logs
    assert SECRET_VALUE not in repr(exc)
    assert SECRET_VALUE not in str(exc)  # what db_retry and SchemaError messages carry


@BOTH_INSERT_PATHS
async def test_a_refused_insert_of_rows_carries_no_row_values(
    engine: AsyncEngine, insert_path: InsertPath
) -> None:
    """The text path's statement holds the values: its errors name the statement only."""
    await _narrow_table(engine)
    async with engine.begin() as conn:
        await conn.exec_driver_sql(
            "CREATE TRIGGER refuse_rows BEFORE INSERT ON narrow FOR EACH ROW "
            "SIGNAL SQLSTATE '40001' SET MYSQL_ERRNO = 1213, MESSAGE_TEXT = 'refused'"
        )
    with capture_logs() as logs:
        exc = await _write(engine, insert_path, SECRET_VALUE)
    retries = [e for e in logs if e["event"] == "db_retry"]
    assert len(retries) == 2
    assert all(SECRET_VALUE not in str(e) for e in retries), retries
    assert isinstance(exc, DatabaseUnavailable)
    assert SECRET_VALUE not in repr(exc)
    assert SECRET_VALUE not in repr(exc.__cause__)
