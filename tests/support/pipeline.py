"""Running headrace's entry points as real processes, and waiting on the database."""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncEngine

from cli.datagen import create_example_table, observations
from cli.verify import verify_source
from headrace.db import create_engine, database_url, migrate
from headrace.settings import Settings
from headrace.sqs import sqs_client
from headrace.tables import ingest_ledger, rejected_rows

__all__ = [
    "BOTH_INSERT_PATHS",
    "INSERT_PATHS",
    "assert_invariant",
    "cli_env_for",
    "count",
    "drain_queue",
    "headrace",
    "headrace_json",
    "prepare_database",
    "produce_cli",
    "queued",
    "rejected",
    "run_producer",
    "start_worker",
    "stop_process",
    "wait_for_ledger",
    "worker_report",
]


async def prepare_database(url: str) -> None:
    """headrace's tables (``alembic upgrade head``) and the example ``observations`` table."""
    engine = create_engine(Settings(database_url=url))
    try:
        await migrate(engine)
        await create_example_table(engine)
    finally:
        await engine.dispose()


#: Run a test once per way the sink sends rows: MariaDB's bulk protocol, the multi-row
#: INSERT text Aurora MySQL gets by default, and LOAD DATA LOCAL from memory (with INSERT
#: text for what it warns about), when it uses the ``insert_path`` fixture (directly or via
#: ``settings``); tests/conftest.py's ``pytest_generate_tests`` does the parametrising.
BOTH_INSERT_PATHS = pytest.mark.both_insert_paths
INSERT_PATHS = ("bulk", "text", "load")


def cli_env_for(settings: Settings, **extra: str) -> dict[str, str]:
    """Environment for `headrace` subprocesses (`python -m cli ...`) pointed at ``settings``."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("HEADRACE_")}
    env.update(
        HEADRACE_DATABASE_URL=database_url(settings).render_as_string(hide_password=False),
        HEADRACE_QUEUE_URL=settings.queue_url or "",
        HEADRACE_SQS_ENDPOINT_URL=settings.sqs_endpoint_url or "",
        HEADRACE_S3_ENDPOINT_URL=settings.s3_endpoint_url or "",
        HEADRACE_WORKER__WAIT_TIME_S="1",
        HEADRACE_WORKER__FLUSH_AGE_S="0.2",
        HEADRACE_WORKER__TABLES=",".join(settings.worker.tables) or "*",
        HEADRACE_DB__INSERT_PATH=settings.db.insert_path,
        HEADRACE_LOG_LEVEL="INFO",
    )
    env.update(extra)
    return env


async def assert_invariant(settings: Settings, engine: AsyncEngine, source: Path | str) -> None:
    """Every source row is in the target once or in rejected_rows (count + checksum).

    ``source`` is a path or an ``s3://bucket/key`` location (read through ``settings``)."""
    report = await verify_source(settings, engine, str(source), "observations")
    assert report.ok, f"{report.line()} {report}"


def run_producer(
    env: dict[str, str], source: Path | str, *extra: str, timeout_s: float = 300
) -> subprocess.CompletedProcess[str]:
    """`headrace produce SOURCE --table observations`, whatever its exit code."""
    return subprocess.run(
        [sys.executable, "-m", "cli", "produce", str(source), "--table", "observations", *extra],
        env=env,
        capture_output=True,
        text=True,
        timeout=timeout_s,
        check=False,
    )


def headrace(env: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    """`headrace ARGS` as a process, whatever its exit code."""
    return subprocess.run(
        [sys.executable, "-m", "cli", *args],
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )


def headrace_json(env: dict[str, str], *args: str, code: int = 0) -> Any:
    """`headrace ARGS --json`, which must exit ``code``; its parsed output."""
    proc = headrace(env, *args, "--json")
    assert proc.returncode == code, f"exit {proc.returncode}:\n{proc.stdout}\n{proc.stderr[-3000:]}"
    return json.loads(proc.stdout)


def produce_cli(
    env: dict[str, str],
    source: Path | str,
    *extra: str,
    timeout_s: float = 300,
    log_path: Path | None = None,
) -> dict[str, Any]:
    """Run the producer, which must succeed; returns its JSON report.

    ``log_path`` keeps the producer's log (stderr)."""
    proc = run_producer(env, source, *extra, timeout_s=timeout_s)
    if log_path is not None:
        log_path.write_text(proc.stderr)
    assert proc.returncode == 0, f"producer exited {proc.returncode}:\n{proc.stderr[-4000:]}"
    report: dict[str, Any] = json.loads(proc.stdout)
    return report


def start_worker(env: dict[str, str], log_path: Path, *extra: str) -> subprocess.Popen[bytes]:
    """`headrace worker` in the background, its log going to ``log_path`` and the counts it
    prints at exit to :func:`report_path` of it (read them with :func:`worker_report`)."""
    with log_path.open("wb") as log, report_path(log_path).open("wb") as report:
        return subprocess.Popen(  # the child keeps its own descriptors
            [sys.executable, "-m", "cli", "worker", *extra], env=env, stdout=report, stderr=log
        )


def report_path(log_path: Path) -> Path:
    return log_path.with_suffix(".report.json")


def worker_report(log_path: Path) -> dict[str, int]:
    """The counts a worker started with :func:`start_worker` printed when it exited."""
    report: dict[str, int] = json.loads(report_path(log_path).read_text())
    return report


def drain_queue(env: dict[str, str], log_path: Path, *, timeout_s: float = 180) -> None:
    """Run a worker until the queue is empty (in-flight included) for 2 s; it must exit 0."""
    worker = start_worker(env, log_path, "--idle-exit", "2")
    assert worker.wait(timeout=timeout_s) == 0, log_path.read_text()[-3000:]


def stop_process(proc: subprocess.Popen[bytes], timeout_s: float = 40) -> int:
    if proc.poll() is None:
        proc.terminate()
    try:
        return proc.wait(timeout=timeout_s)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()
        raise


async def count(engine: AsyncEngine, table: sa.Table = observations) -> int:
    async with engine.connect() as conn:
        return int((await conn.execute(sa.select(sa.func.count()).select_from(table))).scalar_one())


async def wait_for_ledger(
    engine: AsyncEngine,
    run_id: str,
    messages: int,
    *,
    timeout_s: float = 120,
    proc: subprocess.Popen[bytes] | None = None,
) -> float:
    """Poll (with a deadline) until ``messages`` ledger rows of ``run_id`` exist; returns when."""
    deadline = time.monotonic() + timeout_s
    while True:
        async with engine.connect() as conn:
            n = (
                await conn.execute(
                    sa.select(sa.func.count())
                    .select_from(ingest_ledger)
                    .where(ingest_ledger.c.run_id == run_id)
                )
            ).scalar_one()
        if n >= messages:
            return time.monotonic()
        if proc is not None and proc.poll() is not None:
            raise AssertionError(f"worker exited early with {proc.returncode}")
        if time.monotonic() > deadline:
            raise AssertionError(f"only {n}/{messages} messages applied after {timeout_s} s")
        await asyncio.sleep(0.1)


async def queued(settings: Settings, queue_url: str) -> int:
    """Messages in a queue, visible or in flight."""
    async with sqs_client(settings) as client:
        resp = await client.get_queue_attributes(
            QueueUrl=queue_url,
            AttributeNames=["ApproximateNumberOfMessages", "ApproximateNumberOfMessagesNotVisible"],
        )
    return sum(int(v) for v in resp["Attributes"].values())


async def rejected(engine: AsyncEngine) -> list[tuple[int, str, str]]:
    async with engine.connect() as conn:
        rows = await conn.execute(
            sa.select(rejected_rows.c.line, rejected_rows.c.stage, rejected_rows.c.reason).order_by(
                rejected_rows.c.line
            )
        )
        return [(int(line), str(stage), str(reason)) for line, stage, reason in rows]
