"""The run's shared state: one MariaDB, one moto server process, the CSV, and :class:`Context`.

:func:`open_context` starts both servers (the database migrated), generates the CSV every
stage reads, and stops everything again; the stages get a :class:`Context` with the helpers
they share (truncate, count, queues, child processes, CPU snapshots, moto's counts).
"""

from __future__ import annotations

import json
import os
import sys
import time
import urllib.request
from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager, suppress
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import sqlalchemy as sa
from rich.console import Console
from sqlalchemy.ext.asyncio import AsyncEngine

from bench import ROOT
from bench.datasets import Dataset, create_trips_table, observations_dataset, trips_dataset
from bench.measure import self_cpu_s
from bench.options import Options
from bench.procs import Child, Usage
from bench.progress import log
from cli.datagen import create_example_table
from headrace.db import create_engine, database_url, migrate
from headrace.settings import Settings, load_settings
from headrace.sqs import sqs_client
from headrace.tables import ingest_ledger, ingest_runs, rejected_rows
from testbed.mariadb import MariaDBServer
from testbed.moto import AWS_VARS_TO_UNSET, create_queue_pair, fake_aws_env
from testbed.procs import proc_cpu_s, system_busy_s

__all__ = ["DATABASE", "MARIADB_ARGS", "TABLE", "Context", "child_env", "open_context"]

TABLE = "observations"
TABLES = (TABLE, "trips")
DATABASE = "bench"
BAD_RATIO = 0.001
# A production-like buffer pool (the tests' 256 MiB would make the ceiling disk-bound too).
MARIADB_ARGS = (
    "--innodb-buffer-pool-size=1G",
    "--innodb-log-file-size=512M",
    "--local-infile=ON",
)


@dataclass
class Context:
    opts: Options
    console: Console
    work: Path
    mariadb: MariaDBServer
    moto: Child
    endpoint: str
    settings: Settings
    engine: AsyncEngine
    env: dict[str, str]
    datasets: list[Dataset]
    results: dict[str, Any] = field(default_factory=dict)

    @property
    def csv_path(self) -> Path:
        """The observations CSV (the seed-style and bigger-file stages use it)."""
        return self.datasets[0].csv_path

    @property
    def bad_rows(self) -> int:
        return self.datasets[0].bad_rows

    # --- helpers shared by the stages --------------------------------------------------------

    def moto_counts(self) -> dict[str, dict[str, int]]:
        with urllib.request.urlopen(f"{self.endpoint}/__bench__/counts", timeout=10) as resp:
            counts: dict[str, dict[str, int]] = json.loads(resp.read())
        return counts

    def cpu_now(self, *children: Child) -> dict[str, float]:
        """CPU seconds so far of every process involved, and of the whole machine."""
        out = {
            "machine": system_busy_s(),
            "mariadbd": proc_cpu_s(self.mariadb.pid),
            "moto": proc_cpu_s(self.moto.pid),
            "bench": self_cpu_s(),
        }
        for child in children:
            out[child.name] = child.cpu_s()
        return out

    async def truncate(self) -> None:
        async with self.engine.begin() as conn:
            tables = [ds.table for ds in self.datasets]
            for table in (*tables, ingest_ledger, rejected_rows, ingest_runs):
                await conn.execute(sa.text(f"TRUNCATE TABLE {table.name}"))

    async def count(self, table: sa.Table) -> int:
        async with self.engine.connect() as conn:
            result = await conn.execute(sa.select(sa.func.count()).select_from(table))
            return int(result.scalar_one())

    async def new_queue(self, prefix: str) -> str:
        pair = await create_queue_pair(
            self.endpoint, prefix, visibility_timeout_s=60, max_receive_count=5
        )
        return pair.queue_url

    async def delete_queue(self, url: str) -> None:
        async with sqs_client(self.settings) as client:
            await client.delete_queue(QueueUrl=url)

    async def produce_alone(
        self, name: str, path: Path, extra: Sequence[str], timeout_s: float
    ) -> tuple[dict[str, Any], Usage]:
        """`headrace produce PATH --table observations EXTRA…` alone on a queue of its own:
        its JSON report and its process usage (it must exit 0)."""
        await self.truncate()
        url = await self.new_queue(f"bench-{name}")
        env = {**self.env, "HEADRACE_QUEUE_URL": url}
        args = ["-m", "cli", "produce", str(path), "--table", TABLE, *extra]
        producer = self.child(f"producer-{name}", args, env)
        try:
            usage = await producer.wait(timeout_s)
        finally:
            if producer.running:
                producer.kill()
        if usage.exit_code != 0:
            raise RuntimeError(f"producer ({name}) exited {usage.exit_code}:\n{producer.tail()}")
        report: dict[str, Any] = json.loads(producer.stdout_path.read_text())
        await self.delete_queue(url)
        return report, usage

    def child(self, name: str, args: Sequence[str], env: dict[str, str]) -> Child:
        return Child(
            name,
            [sys.executable, *args],
            env=env,
            stdout=self.work / f"{name}.out",
            stderr=self.work / f"{name}.log",
            cwd=ROOT,
        )


def child_env(base: dict[str, str], settings: Settings) -> dict[str, str]:
    """Environment for the producer, worker and seed-style processes: fake AWS, ``settings``'
    database and SQS endpoint, JSON logs; each stage adds its own ``HEADRACE_QUEUE_URL``."""
    env = {k: v for k, v in base.items() if k not in AWS_VARS_TO_UNSET}
    env.update(fake_aws_env())
    env.update(
        HEADRACE_DATABASE_URL=database_url(settings).render_as_string(hide_password=False),
        HEADRACE_SQS_ENDPOINT_URL=settings.sqs_endpoint_url or "",
        HEADRACE_LOG_FORMAT="json",
        HEADRACE_LOG_LEVEL="INFO",
        HEADRACE_WORKER__TABLES=",".join(TABLES),
        PYTHONUNBUFFERED="1",
    )
    env.pop("HEADRACE_QUEUE_URL", None)
    env.pop("HEADRACE_QUEUE_NAME", None)
    env["PYTHONPATH"] = os.pathsep.join(p for p in (str(ROOT), env.get("PYTHONPATH", "")) if p)
    return env


async def _start_moto(work: Path, env: dict[str, str]) -> tuple[Child, str]:
    """:mod:`bench.motoserver` in its own process; returns it and its endpoint URL."""
    moto = Child(
        "moto",
        [sys.executable, "-m", "bench.motoserver", "--port", "0"],
        env=env,
        stdout=work / "moto.out",
        stderr=work / "moto.log",
        cwd=ROOT,
    )
    try:
        text = await moto.wait_for_output("PORT ", 60, stdout=True)
    except BaseException:
        moto.kill()
        raise
    port = int(text.split()[1])
    return moto, f"http://127.0.0.1:{port}"


@asynccontextmanager
async def open_context(opts: Options, console: Console, work: Path) -> AsyncIterator[Context]:
    """Both servers up, the database migrated, the CSV generated; everything stopped after."""
    mariadb = MariaDBServer(work / "mariadb", extra_args=MARIADB_ARGS)
    moto: Child | None = None
    engine: AsyncEngine | None = None
    try:
        mariadb.start()
        url = mariadb.create_database(DATABASE)
        base_settings = load_settings(database_url=url)
        env = child_env(dict(os.environ), base_settings)
        for key in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_DEFAULT_REGION"):
            os.environ[key] = env[key]  # this process's own clients (queue set-up, clean-up)
        os.environ["AWS_CONFIG_FILE"] = os.devnull
        os.environ["AWS_SHARED_CREDENTIALS_FILE"] = os.devnull
        moto, endpoint = await _start_moto(work, env)
        settings = base_settings.model_copy(
            update={"sqs_endpoint_url": endpoint, "queue_url": None}
        )
        env = child_env(env, settings)
        engine = create_engine(settings, pool_size=4)
        await migrate(engine)
        await create_example_table(engine)
        await create_trips_table(engine)
        log(
            console,
            f"mariadbd {mariadb.port} (pid {mariadb.pid}), moto {endpoint} (pid {moto.pid}), "
            f"work dir {work}",
        )
        datasets = []
        for name, make in (("observations", observations_dataset), ("trips", trips_dataset)):
            if name not in opts.tables:
                continue
            started = time.perf_counter()
            ds = make(work / f"{name}-{opts.rows}.csv", opts.rows, BAD_RATIO)
            datasets.append(ds)
            log(
                console,
                f"generated {opts.rows:,} {name} rows ({ds.bad_rows:,} bad, "
                f"{ds.csv_path.stat().st_size / 1e6:.0f} MB) in "
                f"{time.perf_counter() - started:.1f} s",
            )
        yield Context(
            opts=opts,
            console=console,
            work=work,
            mariadb=mariadb,
            moto=moto,
            endpoint=endpoint,
            settings=settings,
            engine=engine,
            env=env,
            datasets=datasets,
        )
    finally:
        if engine is not None:
            await engine.dispose()
        if moto is not None:
            moto.terminate()
            with suppress(TimeoutError):
                await moto.wait(10)
        mariadb.stop()
