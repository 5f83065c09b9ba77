"""Soak: millions of rows while the worker is SIGKILLed every 30 s and the database restarts.

Not in ``make test``; ``make soak`` runs it (``SOAK_ROWS``, default 5,000,000;
``SOAK_KILL_EVERY_S``, default 30). It prints a figures line and the verification.
"""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
import time
from collections.abc import AsyncIterator
from pathlib import Path

import orjson
import pytest
from sqlalchemy import func, select
from support.pipeline import (
    cli_env_for,
    prepare_database,
    report_path,
    start_worker,
    stop_process,
    worker_report,
)

from cli.datagen import generate_csv
from cli.verify import verify_source
from headrace.db import create_engine
from headrace.settings import Settings
from headrace.tables import ingest_ledger
from testbed.mariadb import MariaDBServer
from testbed.moto import QueuePair, create_queue_pair

pytestmark = pytest.mark.soak

ROWS = int(os.environ.get("SOAK_ROWS", "5000000"))
KILL_EVERY_S = float(os.environ.get("SOAK_KILL_EVERY_S", "30"))


@pytest.fixture
async def soak_db(tmp_path: Path) -> AsyncIterator[MariaDBServer]:
    server = MariaDBServer(tmp_path / "soak-mariadb")
    server.start()
    server.restart()  # a fresh datadir is only crash-safe after one clean shutdown
    yield server
    server.stop()


def _start_producer(env: dict[str, str], source: Path, log: Path) -> subprocess.Popen[bytes]:
    """The producer in the background: its JSON report on stdout, its log in ``log``."""
    with log.open("wb") as err:
        return subprocess.Popen(
            [sys.executable, "-m", "cli", "produce", str(source), "--table", "observations"],
            env=env,
            stdout=subprocess.PIPE,
            stderr=err,
        )


async def _ledger_rows(settings: Settings) -> int:
    engine = create_engine(settings)
    try:
        async with engine.connect() as conn:
            return int(
                (await conn.execute(select(func.count()).select_from(ingest_ledger))).scalar_one()
            )
    except Exception:  # the database is being restarted
        return -1
    finally:
        await engine.dispose()


async def test_soak_worker_killed_every_30_s_and_database_restarted_twice(  # noqa: PLR0915 - one script
    tmp_path: Path, soak_db: MariaDBServer, moto_endpoint: str
) -> None:
    url = soak_db.create_database("soak")
    queue: QueuePair = await create_queue_pair(
        moto_endpoint, "soak", visibility_timeout_s=20, max_receive_count=50
    )
    settings = Settings(
        database_url=url,
        queue_url=queue.queue_url,
        sqs_endpoint_url=moto_endpoint,
        worker={"tables": ["observations"]},  # type: ignore[arg-type]
    )
    await prepare_database(url)

    began = time.monotonic()
    data = generate_csv(tmp_path / "soak.csv", ROWS, seed=2026)
    generated_s = time.monotonic() - began
    env = cli_env_for(
        settings,
        HEADRACE_WORKER__VISIBILITY_TIMEOUT_S="20",
        HEADRACE_WORKER__HEARTBEAT_INTERVAL_S="5",
        HEADRACE_DB__CONNECT_TIMEOUT_S="3",
        HEADRACE_DB__STATEMENT_TIMEOUT_S="30",
    )
    started = time.monotonic()
    producer = _start_producer(env, data.path, tmp_path / "producer.log")
    logs: list[Path] = []

    def new_worker() -> subprocess.Popen[bytes]:
        logs.append(tmp_path / f"worker-{len(logs)}.log")
        return start_worker(env, logs[-1])

    worker = new_worker()
    kills = 0
    db_restarts: list[str] = []
    report: dict[str, object] | None = None
    next_kill = time.monotonic() + KILL_EVERY_S
    try:
        while True:
            await asyncio.sleep(0.5)
            if report is None and producer.poll() is not None:
                out, _ = producer.communicate()
                assert producer.returncode == 0, (tmp_path / "producer.log").read_text()[-3000:]
                report = orjson.loads(out)
            if report is not None and await _ledger_rows(settings) == report["total_messages"]:
                break
            now = time.monotonic()
            if len(db_restarts) == 0 and now - started > 1.5 * KILL_EVERY_S:
                soak_db.restart()  # clean shutdown and start
                db_restarts.append(f"clean at {now - started:.0f} s")
            elif len(db_restarts) == 1 and now - started > 3.5 * KILL_EVERY_S:
                soak_db.kill()  # SIGKILL, then crash recovery
                soak_db.start()
                db_restarts.append(f"SIGKILL at {now - started:.0f} s")
            if now >= next_kill:
                worker.kill()
                worker.wait()
                kills += 1
                worker = new_worker()
                next_kill = now + KILL_EVERY_S
            assert now - started < 3600, "soak did not finish within an hour"
    finally:
        stop_process(worker)
        if report is None:  # not reaped above: stop it, reap it, close its stdout pipe
            producer.kill()
            producer.communicate()
    elapsed = time.monotonic() - started
    assert report is not None

    engine = create_engine(settings)
    try:
        verified = await verify_source(settings, engine, str(data.path), "observations")
    finally:
        await engine.dispose()
    # Redeliveries the ledger absorbed, as the workers that ended normally report them (a
    # SIGKILLed worker prints no report; the soak prints this figure, it asserts the invariant).
    duplicates = sum(
        worker_report(log)["messages_duplicate"] for log in logs if report_path(log).stat().st_size
    )
    print(
        f"\nsoak: {ROWS:,} rows ({data.path.stat().st_size / 1e6:,.0f} MB, generated in "
        f"{generated_s:.0f} s), {report['total_messages']} messages; worker SIGKILLed {kills}x "
        f"(every {KILL_EVERY_S:g} s), database restarted {len(db_restarts)}x "
        f"({'; '.join(db_restarts)}); {duplicates} redelivered messages absorbed by the ledger; "
        f"{elapsed:.0f} s from producer start to last commit ({ROWS / elapsed:,.0f} rows/s)"
    )
    print(verified.line())
    assert kills >= 2
    assert len(db_restarts) == 2
    assert verified.ok, verified
