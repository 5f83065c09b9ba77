"""The database goes away: the worker opens its circuit, keeps its messages, and recovers."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path

import pytest
from sqlalchemy.ext.asyncio import AsyncEngine
from support.mariadb import MariaDBServer
from support.moto import QueuePair
from support.pipeline import assert_invariant, cli_env_for, count, produce_cli

from headrace.datagen import generate_csv
from headrace.db import create_engine, migrate
from headrace.settings import Settings
from worker.app import Worker

pytestmark = pytest.mark.slow

SMALL_MESSAGES = {"HEADRACE_PRODUCER__MAX_MESSAGE_BYTES": "32768"}


@pytest.fixture
async def own_db(tmp_path: Path) -> MariaDBServer:
    """A private mariadbd this test may stop and start."""
    server = MariaDBServer(tmp_path / "own-mariadb")
    server.start()
    # A fresh datadir's system tablespace is only durable after a clean shutdown; a SIGKILL
    # before that leaves a datadir InnoDB refuses to open. Restart once so kills recover.
    server.restart()
    yield server  # type: ignore[misc]
    server.stop()


async def _settings_for(server: MariaDBServer, queue: QueuePair, moto_endpoint: str) -> Settings:
    url = server.create_database("outage")
    settings = Settings(
        database_url=url,
        queue_url=queue.queue_url,
        sqs_endpoint_url=moto_endpoint,
        db={"connect_timeout_s": 2, "statement_timeout_s": 10},  # type: ignore[arg-type]
        worker={
            "wait_time_s": 1,
            "flush_age_s": 0.2,
            "visibility_timeout_s": 20,  # type: ignore[arg-type]
            "heartbeat_interval_s": 2,
            "idle_exit_s": 4,
        },
    )
    engine = create_engine(settings)
    try:
        await migrate(engine)
    finally:
        await engine.dispose()
    return settings


async def _verify(settings: Settings, path: Path) -> None:
    engine = create_engine(settings)
    try:
        await assert_invariant(settings, engine, path)
    finally:
        await engine.dispose()


async def test_db_down_at_start_then_back(
    tmp_path: Path, own_db: MariaDBServer, queue: QueuePair, moto_endpoint: str
) -> None:
    settings = await _settings_for(own_db, queue, moto_endpoint)
    data = generate_csv(tmp_path / "a.csv", 8_000, seed=21)
    produce_cli(cli_env_for(settings, **SMALL_MESSAGES), data.path, timeout_s=120)
    own_db.stop()
    worker = Worker(settings)
    run = asyncio.create_task(worker.run())
    deadline = time.monotonic() + 30
    while worker.stats.circuit_opened == 0:
        assert time.monotonic() < deadline, "circuit never opened"
        assert not run.done(), run
        await asyncio.sleep(0.1)
    await asyncio.sleep(0.5)
    receives_while_open = worker.stats.receives
    await asyncio.sleep(3)  # circuit open: no receiving, so no receive counts burnt
    assert worker.stats.receives == receives_while_open
    own_db.start()
    stats = await asyncio.wait_for(run, timeout=120)
    assert stats.batch_failures == 0
    await _verify(settings, data.path)


async def test_db_goes_down_mid_run_then_back(
    tmp_path: Path, own_db: MariaDBServer, queue: QueuePair, moto_endpoint: str
) -> None:
    settings = await _settings_for(own_db, queue, moto_endpoint)
    data = generate_csv(tmp_path / "b.csv", 20_000, seed=22)
    produce_cli(cli_env_for(settings, **SMALL_MESSAGES), data.path, timeout_s=120)
    small = {"flush_rows": 1000, "max_inflight_messages": 10, "sinks": 1}
    worker = Worker(
        settings.model_copy(update={"worker": settings.worker.model_copy(update=small)})
    )
    run = asyncio.create_task(worker.run())
    deadline = time.monotonic() + 30
    while worker.stats.batches == 0:
        assert time.monotonic() < deadline, "no batch applied"
        await asyncio.sleep(0.05)
    own_db.kill()  # SIGKILL mid-run: transactions in flight are lost, not half-applied
    deadline = time.monotonic() + 120  # the sink's retries run out first
    while worker.stats.circuit_opened == 0:
        assert time.monotonic() < deadline, "circuit never opened"
        await asyncio.sleep(0.1)
    own_db.start()
    stats = await asyncio.wait_for(run, timeout=180)
    assert stats.circuit_opened >= 1
    engine: AsyncEngine = create_engine(settings)
    try:
        assert await count(engine) == 20_000 - data.bad_rows
    finally:
        await engine.dispose()
    await _verify(settings, data.path)
