"""`headrace demo`: the whole job on embedded defaults, with progress and a verified summary.

Unless ``HEADRACE_SQS_ENDPOINT_URL``/``HEADRACE_QUEUE_URL`` point elsewhere, SQS is an
in-process moto server on a free localhost port; unless ``HEADRACE_DATABASE_URL`` is set, the
database is a fresh SQLite file. Producer and worker run concurrently in one event loop.
"""

from __future__ import annotations

import asyncio
import importlib
import os
import socket
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path

import sqlalchemy as sa
from pydantic import SecretStr
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table
from sqlalchemy.ext.asyncio import AsyncEngine

from cli.datagen import create_example_table, generate_csv, observations
from cli.verify import VerifyReport, verify_source
from headrace.db import create_engine, database_configured, database_url, migrate
from headrace.errors import ConfigError
from headrace.metrics import WorkerStats
from headrace.settings import Settings
from headrace.sqs import sqs_client
from headrace.tables import ingest_ledger, ingest_runs, rejected_rows
from producer.app import ProduceReport, produce
from worker.app import Worker

__all__ = ["DemoResult", "run_demo"]


@dataclass
class DemoResult:
    rows_read: int
    messages_sent: int
    rows_inserted: int
    duplicates_skipped: int
    rows_rejected: int
    wall_s: float
    verify: VerifyReport

    @property
    def rows_per_s(self) -> float:
        return self.rows_read / self.wall_s if self.wall_s else 0.0


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


DEMO_EXTRA_HINT = "pip install 'headrace[demo]'"


def require_demo_extra(settings: Settings) -> None:
    """Refuse clearly when the embedded services are needed but the demo extra is missing."""
    needed = []
    if not (settings.sqs_endpoint_url or settings.queue_url):
        needed.append("moto.server")  # the embedded SQS
    if not database_configured(settings):
        needed.append("aiosqlite")  # the embedded database
    for module in needed:
        try:
            importlib.import_module(module)
        except ImportError:
            raise ConfigError(
                f"headrace demo runs on embedded services that need the demo extra "
                f"({module.split('.')[0]} is not installed): {DEMO_EXTRA_HINT}, or point "
                "HEADRACE_SQS_ENDPOINT_URL and HEADRACE_DATABASE_URL at real services"
            ) from None


@asynccontextmanager
async def _embedded_sqs(settings: Settings) -> AsyncIterator[Settings]:
    """A moto server in this process, unless the settings already point at an SQS."""
    if settings.sqs_endpoint_url or settings.queue_url:
        yield settings
        return
    import logging

    from moto.server import ThreadedMotoServer

    logging.getLogger("werkzeug").setLevel(logging.WARNING)  # one line per request otherwise
    port = _free_port()
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=port, verbose=False)
    server.start()
    os.environ.setdefault("AWS_ACCESS_KEY_ID", "demo")
    os.environ.setdefault("AWS_SECRET_ACCESS_KEY", "demo")
    try:
        yield settings.model_copy(update={"sqs_endpoint_url": f"http://127.0.0.1:{port}"})
    finally:
        server.stop()


async def _create_queues(settings: Settings) -> str:
    import orjson

    async with sqs_client(settings) as client:
        dlq = await client.create_queue(QueueName="headrace-demo-dlq")
        attrs = await client.get_queue_attributes(
            QueueUrl=dlq["QueueUrl"], AttributeNames=["QueueArn"]
        )
        redrive = orjson.dumps(
            {"deadLetterTargetArn": attrs["Attributes"]["QueueArn"], "maxReceiveCount": "5"}
        )
        main = await client.create_queue(
            QueueName="headrace-demo",
            Attributes={"VisibilityTimeout": "60", "RedrivePolicy": redrive.decode()},
        )
        return main["QueueUrl"]


async def _prepare_database(settings: Settings, data_dir: Path, reset: bool) -> Settings:
    if not database_configured(settings):  # the demo's own embedded database
        db_file = data_dir / "headrace-demo.sqlite3"
        for suffix in ("", "-wal", "-shm"):
            Path(f"{db_file}{suffix}").unlink(missing_ok=True)
        url = SecretStr(f"sqlite+aiosqlite:///{db_file}")
        settings = settings.model_copy(update={"database_url": url})
    engine = create_engine(settings)
    try:
        await migrate(engine)
        await create_example_table(engine)
        async with engine.begin() as conn:
            existing = (
                await conn.execute(sa.select(sa.func.count()).select_from(observations))
            ).scalar_one()
            if existing and not reset:
                raise ConfigError(
                    f"table observations already holds {existing} rows; the demo verifies "
                    "against an "
                    "empty table: rerun with --reset to empty it (and headrace's own tables)"
                )
            if reset:
                for table in (observations, ingest_ledger, rejected_rows, ingest_runs):
                    await conn.execute(table.delete())
    finally:
        await engine.dispose()
    return settings


async def run_demo(
    settings: Settings, *, rows: int, data_dir: Path, reset: bool, console: Console
) -> DemoResult:
    require_demo_extra(settings)
    data_dir.mkdir(parents=True, exist_ok=True)
    csv_path = data_dir / f"observations-{rows}.csv"
    if not csv_path.exists():
        with console.status(f"generating {rows:,} rows into {csv_path} ..."):
            generate_csv(csv_path, rows)
    settings = await _prepare_database(settings, data_dir, reset)
    worker: dict[str, object] = {"tables": ["observations"]}  # the demo writes only this
    if database_url(settings).get_backend_name() == "sqlite":  # SQLite serialises writes anyway
        worker["sinks"] = 1
    settings = settings.model_copy(update={"worker": settings.worker.model_copy(update=worker)})
    async with _embedded_sqs(settings) as settings:
        started = time.perf_counter()
        report, stats = await _run_pipeline(settings, csv_path, rows, console)
        wall = time.perf_counter() - started
    engine = create_engine(settings)
    try:
        with console.status("verifying target against source ..."):
            verified = await verify_source(settings, engine, str(csv_path), "observations")
    finally:
        await engine.dispose()
    result = DemoResult(
        rows_read=report.rows_read,
        messages_sent=report.messages_sent,
        rows_inserted=stats.rows_inserted,
        duplicates_skipped=stats.messages_duplicate,
        rows_rejected=stats.rows_rejected,
        wall_s=wall,
        verify=verified,
    )
    _print_summary(console, result, settings)
    return result


async def _run_pipeline(
    settings: Settings, csv_path: Path, rows: int, console: Console
) -> tuple[ProduceReport, WorkerStats]:
    """Producer and worker in this event loop, with progress bars, until every message of
    the run is applied."""
    queue_url = settings.queue_url or await _create_queues(settings)
    report = ProduceReport(source=str(csv_path), table="observations")
    worker = Worker(settings, queue_url=queue_url)
    columns = (
        TextColumn("{task.description:>9}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
    )
    with Progress(*columns, console=console, transient=False) as progress:
        produce_task = progress.add_task("produced", total=rows)
        insert_task = progress.add_task("inserted", total=rows)
        worker_run = asyncio.create_task(worker.run())
        producer_run = asyncio.create_task(
            produce(settings, str(csv_path), "observations", queue_url=queue_url, report=report)
        )
        engine = create_engine(settings, pool_size=1)
        try:
            while not await _all_applied(engine, report, producer_run):
                await asyncio.sleep(0.2)
                progress.update(produce_task, completed=report.rows_read)
                stats = worker.stats
                progress.update(insert_task, completed=stats.rows_inserted + stats.rows_rejected)
                if worker_run.done():
                    worker_run.result()
                    raise RuntimeError("worker stopped early")
                if stats.batch_failures:
                    raise RuntimeError(
                        "a batch failed to commit (see the log above); stopping the demo"
                    )
        finally:
            worker.stop()
            stats = await worker_run
            await engine.dispose()
        progress.update(insert_task, completed=stats.rows_inserted + stats.rows_rejected)
    return report, stats


async def _all_applied(
    engine: AsyncEngine, report: ProduceReport, producer_run: asyncio.Task[ProduceReport]
) -> bool:
    """Whether the producer finished and the ledger holds every message of its run."""
    if not producer_run.done():
        return False
    producer_run.result()
    async with engine.connect() as conn:
        applied = (
            await conn.execute(
                sa.select(sa.func.count())
                .select_from(ingest_ledger)
                .where(ingest_ledger.c.run_id == report.run_id)
            )
        ).scalar_one()
    return bool(applied >= report.total_messages)


def _print_summary(console: Console, r: DemoResult, settings: Settings) -> None:
    table = Table(title="headrace demo", show_header=False)
    db = database_url(settings).drivername
    table.add_row("database", db)
    table.add_row("rows read", f"{r.rows_read:,}")
    table.add_row("messages sent", f"{r.messages_sent:,}")
    table.add_row("rows inserted", f"{r.rows_inserted:,}")
    table.add_row("duplicates skipped (messages)", f"{r.duplicates_skipped:,}")
    table.add_row("rows rejected", f"{r.rows_rejected:,}")
    table.add_row("wall time", f"{r.wall_s:.1f} s")
    table.add_row("throughput", f"{r.rows_per_s:,.0f} rows/s")
    console.print(table)
    console.print(r.verify.line(), style="bold green" if r.verify.ok else "bold red")
