"""The database misbehaves; the worker keeps its messages, retries or waits, and recovers.

Scenarios 12-20 and 23 of the reliability guide. Each runs a real worker (in process, so its
stats and log events can be read) against a real mariadbd, after a real producer process
filled the queue, and ends with the invariant check.
"""

from __future__ import annotations

import asyncio
import csv
import time
from collections.abc import AsyncIterator, Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine
from structlog.testing import capture_logs
from support.pipeline import (
    BOTH_INSERT_PATHS,
    assert_invariant,
    cli_env_for,
    count,
    prepare_database,
    produce_cli,
    queued,
)
from support.tcpproxy import TcpProxy

from cli.datagen import GeneratedFile, generate_csv
from headrace import failpoints
from headrace.db import create_engine
from headrace.settings import InsertPath, Settings
from headrace.tables import ingest_ledger, rejected_rows
from testbed.mariadb import MariaDBServer
from testbed.moto import QueuePair
from worker.app import Worker, WorkerStats

# Every scenario on both ways the sink sends rows (bulk protocol, and the INSERT text Aurora gets).
# Only the tests whose outcome goes through the sink's insert run on both insert paths.
pytestmark = pytest.mark.slow

SMALL_MESSAGES = {"HEADRACE_PRODUCER__MAX_MESSAGE_BYTES": "32768"}
FAST_WORKER = {
    "wait_time_s": 1,
    "flush_age_s": 0.2,
    "visibility_timeout_s": 20,
    "heartbeat_interval_s": 2,
    "idle_exit_s": 3,
    "flush_rows": 1000,
    "sinks": 1,
    "tables": ["observations"],
}


# --- set-up ----------------------------------------------------------------------------------


@pytest.fixture
async def own_db(tmp_path: Path) -> AsyncIterator[MariaDBServer]:
    """A private mariadbd this test may stop, freeze and start."""
    server = MariaDBServer(tmp_path / "own-mariadb")
    server.start()
    # A fresh datadir's system tablespace is only durable after a clean shutdown; a SIGKILL
    # before that leaves a datadir InnoDB refuses to open. Restart once so kills recover.
    server.restart()
    yield server
    server.stop()


def _settings(
    url: str,
    queue: QueuePair,
    moto_endpoint: str,
    db: dict[str, Any] | None = None,
    *,
    insert_path: InsertPath,
    **worker: Any,
) -> Settings:
    return Settings(
        database_url=url,
        queue_url=queue.queue_url,
        sqs_endpoint_url=moto_endpoint,
        db={
            "connect_timeout_s": 2,
            "statement_timeout_s": 10,
            "insert_path": insert_path,
            **(db or {}),
        },  # type: ignore[arg-type]
        worker={**FAST_WORKER, **worker},  # type: ignore[arg-type]
    )


def _fast(settings: Settings, **db: Any) -> Settings:
    """The shared-server ``settings`` fixture with the fast worker (and ``db`` overrides)."""
    return settings.model_copy(
        update={
            "worker": settings.worker.model_copy(update=FAST_WORKER),
            "db": settings.db.model_copy(update=db),
        }
    )


def _fill_queue(settings: Settings, path: Path, rows: int, seed: int) -> GeneratedFile:
    data = generate_csv(path, rows, seed=seed)
    produce_cli(cli_env_for(settings, **SMALL_MESSAGES), data.path, timeout_s=120)
    return data


async def _verify(settings: Settings, source: Path) -> None:
    engine = create_engine(settings)
    try:
        await assert_invariant(settings, engine, source)
    finally:
        await engine.dispose()


async def _until(
    what: str, check: Callable[[], bool], run: asyncio.Task[Any], timeout_s: float = 60.0
) -> None:
    """Poll ``check`` until true; fail if the worker ends first or the deadline passes."""
    deadline = time.monotonic() + timeout_s
    while not check():
        if run.done():
            raise AssertionError(f"worker ended before {what}: {run.result()}")
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        await asyncio.sleep(0.05)


@pytest.fixture
def events() -> Iterator[list[dict[str, Any]]]:
    """The structlog events logged during the test (the worker's, in this process)."""
    with capture_logs() as captured:
        yield captured


def _errnos(events: list[dict[str, Any]], event: str = "db_retry") -> set[int | None]:
    return {e.get("errno") for e in events if e["event"] == event}


def _failures(events: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return [e for e in events if e["event"] in ("batch_failed", "task_failed")]


_started: list[tuple[Worker, asyncio.Task[WorkerStats]]] = []


def _start(settings: Settings) -> tuple[Worker, asyncio.Task[WorkerStats]]:
    worker = Worker(settings)
    run = asyncio.create_task(worker.run())
    _started.append((worker, run))
    return worker, run


@pytest.fixture(autouse=True)
async def _stop_workers() -> AsyncIterator[None]:
    """A failed test must not leave its worker running into the next one."""
    yield
    while _started:
        worker, run = _started.pop()
        if not run.done():
            worker.stop()
            try:
                await asyncio.wait_for(run, timeout=40)
            except BaseException:
                run.cancel()


# --- 12, 13: down at start, killed mid-run -----------------------------------------------


async def test_scenario_12_db_down_at_start(
    insert_path: InsertPath,
    tmp_path: Path,
    own_db: MariaDBServer,
    queue: QueuePair,
    moto_endpoint: str,
) -> None:
    url = own_db.create_database("outage")
    await prepare_database(url)
    settings = _settings(url, queue, moto_endpoint, insert_path=insert_path)
    data = _fill_queue(settings, tmp_path / "a.csv", 8_000, seed=21)
    own_db.stop()
    worker, run = _start(settings)
    await _until("the circuit opens", lambda: worker.stats.circuit_opened > 0, run)
    await asyncio.sleep(0.5)
    receives_while_open = worker.stats.receives
    await asyncio.sleep(3)  # circuit open: no receiving, so no receive counts burnt
    assert worker.stats.receives == receives_while_open
    own_db.start()
    stats = await asyncio.wait_for(run, timeout=120)
    assert stats.batch_failures == 0, _failures(events)
    await _verify(settings, data.path)


@BOTH_INSERT_PATHS
async def test_scenario_13_db_killed_mid_run(
    insert_path: InsertPath,
    tmp_path: Path,
    own_db: MariaDBServer,
    queue: QueuePair,
    moto_endpoint: str,
) -> None:
    url = own_db.create_database("outage")
    await prepare_database(url)
    settings = _settings(
        url, queue, moto_endpoint, insert_path=insert_path, max_inflight_messages=10
    )
    data = _fill_queue(settings, tmp_path / "b.csv", 20_000, seed=22)
    worker, run = _start(settings)
    await _until("a first batch", lambda: worker.stats.batches > 0, run)
    own_db.kill()  # SIGKILL mid-run: transactions in flight are lost, not half-applied
    await _until("the circuit opens", lambda: worker.stats.circuit_opened > 0, run, 120)
    own_db.start()
    stats = await asyncio.wait_for(run, timeout=180)
    assert stats.circuit_opened >= 1
    await _verify(settings, data.path)


# --- 14, 15: frozen server, connections cut --------------------------------------------------


async def test_scenario_14_db_frozen_gives_timeouts_not_hangs(
    insert_path: InsertPath,
    tmp_path: Path,
    own_db: MariaDBServer,
    queue: QueuePair,
    moto_endpoint: str,
    events: list[dict[str, Any]],
) -> None:
    url = own_db.create_database("frozen")
    await prepare_database(url)
    settings = _settings(
        url, queue, moto_endpoint, insert_path=insert_path, db={"statement_timeout_s": 3}
    )
    data = _fill_queue(settings, tmp_path / "f.csv", 10_000, seed=23)
    # The first flush waits 1 s inside its open transaction: the database is frozen then,
    # so its COMMIT must time out, however the messages happen to be batched.
    failpoints.reset("worker.before_commit:sleep=1@1")
    try:
        worker, run = _start(settings)
        await _until("a transaction open", lambda: failpoints.hits("worker.before_commit") > 0, run)
        own_db.pause()  # SIGSTOP: connections stay open, nothing answers
        try:
            await _until("a timed-out statement", lambda: worker.stats.db_retries > 0, run, 30)
            frozen_at = worker.stats.batches
            await asyncio.sleep(4)
            assert worker.stats.batches == frozen_at  # nothing committed while frozen...
            assert not run.done()  # ...and the worker is waiting, not dead
        finally:
            own_db.resume()
    finally:
        failpoints.reset("")
    stats = await asyncio.wait_for(run, timeout=180)
    assert stats.batch_failures == 0, _failures(events)
    assert None in _errnos(events)  # a timeout, not a server error
    await _verify(settings, data.path)


@BOTH_INSERT_PATHS
async def test_scenario_15_connection_cut_mid_transaction(
    insert_path: InsertPath,
    tmp_path: Path,
    mariadb: MariaDBServer,
    db_url: str,
    queue: QueuePair,
    moto_endpoint: str,
    events: list[dict[str, Any]],
) -> None:
    with TcpProxy(mariadb.host, mariadb.port) as proxy:
        url = db_url.replace(f":{mariadb.port}/", f":{proxy.port}/")
        settings = _settings(url, queue, moto_endpoint, insert_path=insert_path)
        data = _fill_queue(settings, tmp_path / "c.csv", 10_000, seed=24)
        failpoints.reset("worker.before_commit:sleep=0.4")  # every transaction stays open a while
        try:
            worker, run = _start(settings)
            await _until("a first batch", lambda: worker.stats.batches > 0, run)
            cuts = 0
            deadline = time.monotonic() + 30
            while worker.stats.db_retries == 0:  # until a cut lands inside a transaction
                assert time.monotonic() < deadline, f"no cut hit a transaction ({cuts} cuts)"
                await asyncio.sleep(0.3)
                cuts += proxy.cut()
            await asyncio.wait_for(run, timeout=180)
        finally:
            failpoints.reset("")
        assert cuts >= 1
        assert _errnos(events) & {2013, 2006, 2055}, _errnos(events)
        await _verify(settings, data.path)


# --- 16: failover ----------------------------------------------------------------------------


async def _app_user(server: MariaDBServer, database: str) -> str:
    """An unprivileged user (read_only applies to it), with all rights on ``database``."""
    server.execute(
        "CREATE USER IF NOT EXISTS app@'127.0.0.1' IDENTIFIED BY 'pw'; "
        f"GRANT ALL ON `{database}`.* TO app@'127.0.0.1'"
    )
    return database


@BOTH_INSERT_PATHS
async def test_scenario_16_failover_old_writer_read_only(
    insert_path: InsertPath,
    tmp_path: Path,
    queue: QueuePair,
    moto_endpoint: str,
    events: list[dict[str, Any]],
) -> None:
    """The endpoint briefly leads to a read-only server (error 1290), then to the writer."""
    writer = MariaDBServer(tmp_path / "writer", grant_tables=True)
    reader = MariaDBServer(tmp_path / "reader", grant_tables=True)
    writer.start()
    reader.start()
    try:
        for server in (writer, reader):
            server.create_database("app")
            await prepare_database(server.url("app"))
            await _app_user(server, "app")
        reader.execute("SET GLOBAL read_only = 1")
        with TcpProxy(writer.host, writer.port) as proxy:
            url = f"mysql+asyncmy://app:pw@127.0.0.1:{proxy.port}/app"
            settings = _settings(url, queue, moto_endpoint, insert_path=insert_path)
            data = _fill_queue(settings, tmp_path / "fo.csv", 10_000, seed=25)
            worker, run = _start(settings)
            await _until("a first batch", lambda: worker.stats.batches > 0, run)
            proxy.retarget(reader.host, reader.port)  # failover: the name leads to a reader
            await _until("a refused write", lambda: 1290 in _errnos(events), run, 30)
            proxy.retarget(writer.host, writer.port)  # the new writer takes over
            stats = await asyncio.wait_for(run, timeout=180)
            assert stats.db_retries > 0
            await _verify(settings, data.path)
    finally:
        writer.stop()
        reader.stop()


# --- 17, 18: lock contention -----------------------------------------------------------------


@pytest.fixture
async def blocker(settings: Settings) -> AsyncIterator[AsyncConnection]:
    """A second session that takes locks the worker needs (READ UNCOMMITTED: it can see the
    worker's uncommitted ledger rows)."""
    engine = create_engine(settings)
    async with engine.connect() as conn:
        await conn.execution_options(isolation_level="READ UNCOMMITTED")
        yield conn
    await engine.dispose()


async def _lock_first_row(conn: AsyncConnection, data: GeneratedFile, ballast: int) -> None:
    """In an open transaction: make it heavy, then insert the file's first row (its key)."""
    await conn.begin()
    await conn.exec_driver_sql("CREATE TABLE IF NOT EXISTS ballast (n INT)")
    if ballast:
        await conn.exec_driver_sql(f"INSERT INTO ballast SELECT seq FROM seq_1_to_{ballast}")
    with data.path.open(newline="") as f:
        values = next(csv.DictReader(f))
    await conn.execute(
        sa.text(
            "INSERT INTO observations (observed_at, bot_id, sku, price, quantity, in_stock, "
            "title) VALUES (:observed_at, :bot_id, :sku, 1, 1, 1, 'lock')"
        ),
        values,
    )


async def _worker_waits_for_a_lock(engine: AsyncEngine, run: asyncio.Task[Any]) -> None:
    """Poll (from a session of its own) until an INSERT (or a load) into the table has run
    for over half a second: writing a thousand rows takes milliseconds, so it waits for our
    lock."""
    waiting = sa.text(
        "SELECT COUNT(*) FROM information_schema.processlist WHERE id <> CONNECTION_ID() "
        "AND (info LIKE 'INSERT INTO observations%' "
        "OR info LIKE 'LOAD DATA LOCAL INFILE % INTO TABLE observations %') AND time_ms > 500"
    )
    deadline = time.monotonic() + 60
    while True:
        async with engine.connect() as conn:
            if (await conn.execute(waiting)).scalar_one():
                return
        if run.done():
            raise AssertionError(f"worker ended without waiting for the lock: {run.result()}")
        assert time.monotonic() < deadline, "the worker never waited for the lock"
        await asyncio.sleep(0.05)


@BOTH_INSERT_PATHS
async def test_scenario_17_deadlock_is_retried(
    tmp_path: Path,
    settings: Settings,
    engine: AsyncEngine,
    blocker: AsyncConnection,
    events: list[dict[str, Any]],
) -> None:
    settings = _fast(settings)
    data = _fill_queue(settings, tmp_path / "d.csv", 5_000, seed=26)
    await _lock_first_row(blocker, data, ballast=20_000)  # heavier: InnoDB rolls back the worker
    _, run = _start(settings)
    await _worker_waits_for_a_lock(engine, run)
    # The worker holds its ledger rows and waits for our row; we now wait for its ledger row.
    held = (await blocker.execute(sa.select(ingest_ledger.c.run_id, ingest_ledger.c.seq))).first()
    assert held is not None
    await blocker.execute(
        ingest_ledger.insert().values(
            run_id=held[0], seq=held[1], table_name="observations", rows_inserted=0, rows_rejected=0
        )
    )
    await blocker.rollback()
    stats = await asyncio.wait_for(run, timeout=120)
    assert 1213 in _errnos(events), _errnos(events)
    assert stats.batch_failures == 0, _failures(events)
    await _verify(settings, data.path)


@BOTH_INSERT_PATHS
async def test_scenario_18_lock_wait_timeout_is_retried(
    tmp_path: Path,
    settings: Settings,
    blocker: AsyncConnection,
    events: list[dict[str, Any]],
) -> None:
    settings = _fast(settings, lock_wait_timeout_s=1)
    data = _fill_queue(settings, tmp_path / "l.csv", 5_000, seed=27)
    await _lock_first_row(blocker, data, ballast=0)
    _, run = _start(settings)
    # Held past the worker's 1 s lock wait timeout, more than once.
    await _until("lock wait timeouts", lambda: _errnos(events) == {1205}, run, 30)
    await blocker.rollback()
    stats = await asyncio.wait_for(run, timeout=120)
    assert stats.batch_failures == 0, _failures(events)
    await _verify(settings, data.path)


# --- 19, 20: server limits -------------------------------------------------------------------


async def test_scenario_19_too_many_connections(
    insert_path: InsertPath,
    tmp_path: Path,
    queue: QueuePair,
    moto_endpoint: str,
    events: list[dict[str, Any]],
) -> None:
    # Privileged sessions may pass max_connections (and, without grant tables, all are).
    # MariaDB's smallest max_connections is 10.
    server = MariaDBServer(tmp_path / "few", ["--max-connections=10"], grant_tables=True)
    server.start()
    try:
        server.create_database("few")
        await prepare_database(server.url("few"))
        await _app_user(server, "few")
        url = f"mysql+asyncmy://app:pw@127.0.0.1:{server.port}/few"
        settings = _settings(url, queue, moto_endpoint, insert_path=insert_path)
        data = _fill_queue(settings, tmp_path / "m.csv", 5_000, seed=28)
        hog = create_engine(Settings(database_url=url), pool_size=20)
        held: list[AsyncConnection] = []
        try:
            for _ in range(20):  # take every connection the server will give
                try:
                    held.append(await hog.connect())
                except sa.exc.OperationalError as exc:
                    refused = str(exc)
                    break
            else:
                raise AssertionError("max_connections=10 gave out 20 connections")
            assert "1040" in refused, refused
            worker, run = _start(settings)
            await _until("the circuit opens", lambda: worker.stats.circuit_opened > 0, run)
            opened = [e for e in events if e["event"] == "circuit_open"]
            assert "1040" in str(opened[0]["error"]), opened
        finally:
            for conn in held:
                await conn.close()
            await hog.dispose()
        stats = await asyncio.wait_for(run, timeout=120)
        assert stats.batch_failures == 0, _failures(events)
        await _verify(settings, data.path)
    finally:
        server.stop()


@BOTH_INSERT_PATHS
async def test_scenario_20_statement_over_max_allowed_packet_is_split(
    insert_path: InsertPath,
    tmp_path: Path,
    queue: QueuePair,
    moto_endpoint: str,
    events: list[dict[str, Any]],
) -> None:
    server = MariaDBServer(tmp_path / "small-packets", ["--max-allowed-packet=64K"])
    server.start()
    try:
        url = server.create_database("pkt")
        await prepare_database(url)
        settings = _settings(url, queue, moto_endpoint, insert_path=insert_path, flush_rows=20_000)
        data = generate_csv(tmp_path / "p.csv", 20_000, seed=29)
        produce_cli(cli_env_for(settings), data.path, timeout_s=120)  # 1 MiB messages
        stats = await asyncio.wait_for(Worker(settings).run(), timeout=120)
        flushed = [e for e in events if e["event"] == "batch_flushed"]
        # ~2 MB of rows against a 64 KiB packet: many statements, none refused (a load
        # streams each batch as one statement, in packets the server accepts).
        if insert_path == "load":
            assert [e["statements"] for e in flushed] == [1] * len(flushed)
        else:
            assert sum(e["statements"] for e in flushed) >= 20
        assert stats.db_retries == 0
        assert stats.rows_inserted == 20_000 - data.bad_rows
        await _verify(settings, data.path)
    finally:
        server.stop()


# --- 23: schema drift ------------------------------------------------------------------------


@pytest.mark.parametrize("when", ["before_start", "mid_run"])
async def test_scenario_23_schema_drift_keeps_the_messages(
    when: str,
    tmp_path: Path,
    settings: Settings,
    engine: AsyncEngine,
    queue: QueuePair,
    events: list[dict[str, Any]],
) -> None:
    """A column the messages carry is renamed away: nothing is applied, rejected, deleted or
    sent to the DLQ, receiving stops; once the column is back the run completes."""
    settings = _fast(settings)
    data = _fill_queue(settings, tmp_path / "s.csv", 10_000, seed=30)
    total = await queued(settings, queue.queue_url)

    async def alter(sql: str) -> None:
        async with engine.begin() as conn:
            await conn.exec_driver_sql(sql)

    if when == "before_start":
        await alter("ALTER TABLE observations RENAME COLUMN note TO remark")
    worker, run = _start(settings)
    if when == "mid_run":  # the worker's cached table is stale: the INSERT fails (1054)
        await _until("a first batch", lambda: worker.stats.batches > 0, run)
        await alter("ALTER TABLE observations RENAME COLUMN note TO remark")
    await _until("a drift report", lambda: any(e["event"] == "schema_drift" for e in events), run)
    assert worker.stats.schema_drifts == 1
    await asyncio.sleep(settings.worker.wait_time_s + 0.5)  # a long poll under way ends
    applied = await count(engine, ingest_ledger)
    rejected = await count(engine, rejected_rows)
    receives = worker.stats.receives
    await asyncio.sleep(2)
    assert worker.stats.receives == receives  # not receiving: no receive counts burnt
    assert await count(engine, ingest_ledger) == applied  # nothing more applied or deleted
    assert await count(engine, rejected_rows) == rejected  # nor rejected
    assert await queued(settings, queue.dlq_url) == 0  # nor sent to the DLQ
    assert await queued(settings, queue.queue_url) == total - applied  # all kept
    await alter("ALTER TABLE observations RENAME COLUMN remark TO note")
    stats = await asyncio.wait_for(run, timeout=120)
    assert stats.messages_poison == 0
    await assert_invariant(settings, engine, data.path)


# --- a path the server does not offer --------------------------------------------------------


async def test_insert_path_bulk_without_the_protocol_stops_the_worker_and_keeps_the_messages(
    tmp_path: Path, settings: Settings, engine: AsyncEngine
) -> None:
    """HEADRACE_DB__INSERT_PATH=bulk where the server (or the statement cache) cannot bulk:
    the worker stops with the error instead of writing another way or dead-lettering
    innocent messages; every message is still there for a worker configured right."""
    bad = _fast(settings, stmt_cache_size=0, insert_path="bulk")
    data = generate_csv(tmp_path / "cfg.csv", 500, seed=41)
    produce_cli(cli_env_for(bad), data.path, timeout_s=120)
    stats = await asyncio.wait_for(Worker(bad).run(), timeout=60)
    assert stats.task_failures == 1
    assert stats.messages_poison == 0
    assert stats.messages_applied == 0
    assert await count(engine) == 0
    # Released, not dead-lettered: a worker with the default path applies all of them.
    good = await asyncio.wait_for(Worker(_fast(settings, insert_path="auto")).run(), timeout=120)
    assert good.messages_poison == 0
    await _verify(settings, data.path)
