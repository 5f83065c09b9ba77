"""`make bench`: one run, one throwaway MariaDB, one moto server process, every path measured.

Paths (rows/s always counts *source* rows, bad ones included, over wall time):

1. ceiling: ``LOAD DATA LOCAL INFILE`` of the same CSV, 1 connection and 2 in parallel;
2. sink only: :meth:`worker.sink.Sink.write` on pre-decoded batches, 1/2/4 concurrent sinks;
3. end to end: ``python -m producer`` + 1 or 2 ``python -m worker`` processes through moto,
   from the producer's start to the last commit, then :func:`headrace.verify.verify_source`;
4. seed-style: the old pipeline's shape (:mod:`bench.seed`) on a smaller file;
5. CPU seconds and peak RSS of every producer and worker process (``wait4``), and the
   producer's peak RSS on a file ``--rss-multiplier`` times larger;
6. SQS requests and billed 64 KiB units per 1M rows, counted by the moto server process
   (:mod:`bench.motoserver`) and cross-checked against the in-process counters of
   :mod:`headrace.sqs` where the benchmark owns the process (the seed-style programs).

Results: a table on the terminal, ``bench/results/bench-<rows>.json`` and ``.png``.
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import json
import logging
import os
import platform
import resource
import shutil
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager, suppress
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import orjson
import sqlalchemy as sa
from rich.console import Console
from sqlalchemy.ext.asyncio import AsyncEngine

from bench.procs import Child, Usage, sample_forever
from headrace.datagen import generate_csv
from headrace.db import STRICT_SQL_MODE, create_engine, migrate
from headrace.envelope import Envelope, Packer, decode
from headrace.schema import reflect_table
from headrace.settings import Settings, load_settings
from headrace.tables import ingest_ledger, ingest_runs, observations, rejected_rows
from headrace.verify import verify_source
from testbed.mariadb import MariaDBServer
from testbed.moto import AWS_VARS_TO_UNSET, create_queue_pair, fake_aws_env
from testbed.procs import proc_cpu_s, system_busy_s

ROOT = Path(__file__).resolve().parent.parent

__all__ = ["Options", "main", "parse_args", "run_bench"]

TABLE = "observations"
DATABASE = "bench"
BAD_RATIO = 0.001
# The seed-style sender stays this many messages ahead of its consumer (see bench/seed.py).
SEED_WINDOW = 200
DEFAULT_RESULTS = ROOT / "bench" / "results"
# A production-like buffer pool (the tests' 256 MiB would make the ceiling disk-bound too).
MARIADB_ARGS = (
    "--innodb-buffer-pool-size=1G",
    "--innodb-log-file-size=512M",
    "--local-infile=ON",
)
LOAD_SQL = """
LOAD DATA LOCAL INFILE %s IGNORE INTO TABLE observations
CHARACTER SET utf8mb4
FIELDS TERMINATED BY ',' OPTIONALLY ENCLOSED BY '"' ESCAPED BY ''
LINES TERMINATED BY '\\n'
IGNORE 1 LINES
(observed_at, bot_id, sku, price, quantity, @in_stock, title, @note)
SET in_stock = IF(@in_stock = 'true', 1, 0), note = NULLIF(@note, '')
"""


def _log(console: Console, text: str) -> None:
    console.print(f"[dim]{time.strftime('%H:%M:%S')}[/dim] {text}", highlight=False)


@dataclass
class Options:
    rows: int
    seed_rows: int
    rss_multiplier: int
    skip_rss: bool
    results_dir: Path
    work_dir: Path | None
    keep: bool
    sink_concurrency: list[int]
    e2e_workers: list[int]
    envelope_rows: int | None
    seed_handlers: int
    seed_pool: int
    stage_timeout_s: float
    py_spy_dir: Path | None = None
    ceiling_runs: int = 2


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
    csv_path: Path
    bad_rows: int
    results: dict[str, Any] = field(default_factory=dict)

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
            "bench": _self_cpu_s(),
        }
        for child in children:
            out[child.name] = child.cpu_s()
        return out

    async def truncate(self) -> None:
        async with self.engine.begin() as conn:
            for table in (observations, ingest_ledger, rejected_rows, ingest_runs):
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
        from headrace.sqs import sqs_client

        async with sqs_client(self.settings) as client:
            await client.delete_queue(QueueUrl=url)

    def child(self, name: str, args: Sequence[str], env: dict[str, str]) -> Child:
        return Child(
            name,
            [sys.executable, *args],
            env=env,
            stdout=self.work / f"{name}.out",
            stderr=self.work / f"{name}.log",
            cwd=ROOT,
        )


def _self_cpu_s() -> float:
    ru = resource.getrusage(resource.RUSAGE_SELF)
    return ru.ru_utime + ru.ru_stime


def _children_cpu_s() -> float:
    ru = resource.getrusage(resource.RUSAGE_CHILDREN)
    return ru.ru_utime + ru.ru_stime


def _delta(after: dict[str, float], before: dict[str, float]) -> dict[str, float]:
    """Per-process CPU seconds in a window; ``others``: the rest of the machine (processes
    that are not part of the benchmark, e.g. another job on a shared box)."""
    out = {k: round(after[k] - before.get(k, 0.0), 3) for k in after}
    machine = out.pop("machine", 0.0)
    out["others"] = round(max(0.0, machine - sum(out.values())), 3)
    return out


def _diff_counts(
    after: dict[str, dict[str, int]], before: dict[str, dict[str, int]]
) -> dict[str, dict[str, int]]:
    out: dict[str, dict[str, int]] = {}
    for op, values in after.items():
        prev = before.get(op, {})
        diff = {k: v - prev.get(k, 0) for k, v in values.items()}
        if diff.get("requests", 0):
            out[op] = diff
    return out


def _child_env(base: dict[str, str], settings: Settings) -> dict[str, str]:
    env = {k: v for k, v in base.items() if k not in AWS_VARS_TO_UNSET}
    env.update(fake_aws_env())
    env.update(
        HEADRACE_DATABASE_URL=settings.database_url,
        HEADRACE_SQS_ENDPOINT_URL=settings.sqs_endpoint_url or "",
        HEADRACE_LOG_FORMAT="json",
        HEADRACE_LOG_LEVEL="INFO",
        PYTHONUNBUFFERED="1",
    )
    env.pop("HEADRACE_QUEUE_URL", None)
    env.pop("HEADRACE_QUEUE_NAME", None)
    env["PYTHONPATH"] = os.pathsep.join(p for p in (str(ROOT), env.get("PYTHONPATH", "")) if p)
    return env


# --- 1. the ceiling: LOAD DATA LOCAL INFILE ---------------------------------------------------


def _split_csv(path: Path, parts: int, out_dir: Path) -> list[Path]:
    with path.open("rb") as fh:
        header = fh.readline()
        lines = fh.readlines()
    size = -(-len(lines) // parts)
    out: list[Path] = []
    for i in range(parts):
        part = out_dir / f"{path.stem}.part{i}.csv"
        with part.open("wb") as fh:
            fh.write(header)
            fh.writelines(lines[i * size : (i + 1) * size])
        out.append(part)
    return out


async def _load_data(ctx: Context, files: list[Path]) -> dict[str, Any]:
    """One ``mariadb --local-infile`` client per file, all at once (asyncmy 0.2.18 cannot:
    its LOAD DATA LOCAL handler rejects the file name the server sends back as bytes)."""
    client = shutil.which("mariadb") or shutil.which("mysql")
    if client is None:
        raise RuntimeError("the mariadb command-line client is not installed")
    base = [
        client,
        "--no-defaults",
        "--protocol=TCP",
        f"--host={ctx.mariadb.host}",
        f"--port={ctx.mariadb.port}",
        "--user=root",
        "--local-infile=1",
        "--batch",
        "--skip-column-names",
        DATABASE,
        "--execute",
    ]

    def sql(path: Path) -> str:
        quoted = str(path).replace("\\", "\\\\").replace("'", "\\'")
        return (
            f"SET SESSION sql_mode = '{STRICT_SQL_MODE}', time_zone = '+00:00';\n"
            + LOAD_SQL.replace("%s", f"'{quoted}'")
            + ";\nSELECT @@warning_count, ROW_COUNT();"
        )

    async def one(path: Path) -> tuple[int, int]:
        proc = await asyncio.create_subprocess_exec(
            *base, sql(path), stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE
        )
        out, err = await proc.communicate()
        if proc.returncode != 0:
            raise RuntimeError(f"LOAD DATA failed ({proc.returncode}): {err.decode()[-2000:]}")
        warnings, loaded = out.decode().split()[-2:]
        return int(loaded), int(warnings)

    before = ctx.cpu_now()
    before["mariadb_client"] = _children_cpu_s()
    started = time.perf_counter()
    done = await asyncio.gather(*(one(f) for f in files))
    seconds = time.perf_counter() - started
    after = ctx.cpu_now()
    after["mariadb_client"] = _children_cpu_s()  # the clients, reaped in the window
    cpu = _delta(after, before)
    loaded = sum(d[0] for d in done)
    in_table = await ctx.count(observations)
    if in_table != loaded:
        raise RuntimeError(f"LOAD DATA reported {loaded} rows, the table holds {in_table}")
    return {
        "connections": len(files),
        "seconds": round(seconds, 3),
        "rows": ctx.opts.rows,
        "rows_per_s": ctx.opts.rows / seconds,
        "rows_loaded": loaded,
        "warnings": sum(d[1] for d in done),
        "cpu_s": cpu,
    }


async def stage_load_data(ctx: Context) -> None:
    """The ceiling, each variant run ``--ceiling-runs`` times keeping the fastest: a ceiling
    slowed by a passing disturbance would flatter every ratio measured against it."""
    out: dict[str, Any] = {}
    halves = _split_csv(ctx.csv_path, 2, ctx.work)  # not timed
    for key, files in (("1", [ctx.csv_path]), ("2", halves)):
        runs = []
        for _ in range(ctx.opts.ceiling_runs):
            await ctx.truncate()
            runs.append(await _load_data(ctx, files))
        best = max(runs, key=lambda r: float(r["rows_per_s"]))
        out[key] = {**best, "runs": len(runs), "all_rows_per_s": [r["rows_per_s"] for r in runs]}
        shown = ", ".join(f"{r['rows_per_s']:,.0f}" for r in runs)
        _log(
            ctx.console,
            f"LOAD DATA, {key} connection(s): best of {len(runs)}: {_fmt_rate(best)} ({shown})",
        )
    for half in halves:
        half.unlink()
    await ctx.truncate()
    ctx.results["load_data"] = out


# --- 2. sink only -----------------------------------------------------------------------------


async def _decoded_batches(ctx: Context) -> tuple[list[list[Envelope]], int]:
    """The CSV as the worker would receive it: read and validated as the producer does, packed
    by :class:`headrace.envelope.Packer` (uncompressed, sized for ``envelope_rows`` rows a
    message) and decoded by :func:`headrace.envelope.decode`; grouped into batches the way
    the worker's buffer does (a batch is cut once it holds ``flush_rows`` rows)."""
    from producer.reader import CsvReader
    from producer.source import open_source

    p = ctx.settings.producer
    async with ctx.engine.connect() as conn:
        schema = await reflect_table(conn, TABLE)
    source = open_source(str(ctx.csv_path))
    reader = CsvReader(
        source.open(max_ratio=p.max_gzip_ratio, max_bytes=p.max_decompressed_bytes),
        source=source.uri,
        chunk_rows=p.chunk_rows,
        max_field_bytes=p.max_field_bytes,
    )
    flush_rows = ctx.settings.worker.flush_rows
    per_envelope = ctx.opts.envelope_rows or max(1, flush_rows // 5)
    envelopes: list[Envelope] = []
    packer: Packer | None = None
    valid_rows = 0
    try:
        specs = schema.resolve_header(reader.header, source=source.uri)
        for chunk in reader.chunks():
            valid = schema.validate(specs, chunk.rows, chunk.lines)
            rows = valid.rows
            rejects = sorted(chunk.rejects + valid.rejects, key=lambda r: r.line)
            valid_rows += len(valid.lines)
            if packer is None:  # size the budget from the first chunk's encoded rows
                sample = [list(r) for r in rows[:1000]]
                per_row = len(orjson.dumps(sample)) / max(1, len(sample)) + 8
                packer = Packer(
                    run_id="b" * 32,
                    table=TABLE,
                    columns=[s.name for s in specs],
                    source=source.uri,
                    budget=int(per_envelope * per_row) + 4096,
                    compression="none",
                )
            for msg in packer.add(rows, valid.lines, rejects):
                envelopes.append(decode(msg.body, msg.attributes()))
        if packer is not None:
            envelopes.extend(decode(m.body, m.attributes()) for m in packer.finish())
    finally:
        reader.close()
    batches: list[list[Envelope]] = []
    current: list[Envelope] = []
    current_rows = 0
    for env in envelopes:
        current.append(env)
        current_rows += len(env.lines)
        if current_rows >= flush_rows:
            batches.append(current)
            current, current_rows = [], 0
    if current:
        batches.append(current)
    return batches, valid_rows


async def _sink_run(
    ctx: Context, batches: list[list[Envelope]], concurrency: int, expected_rows: int
) -> dict[str, Any]:
    from worker.sink import Sink

    await ctx.truncate()
    s = ctx.settings
    engine = create_engine(s, pool_size=concurrency)
    try:
        async with engine.connect() as conn:
            schema = await reflect_table(conn, TABLE)
        # Warm the pool: a running worker has its connections open.
        warm = [await engine.connect() for _ in range(concurrency)]
        for conn in warm:
            await conn.execute(sa.text("SELECT 1"))
            await conn.close()
        sink = Sink(
            engine,
            max_statement_bytes=s.worker.max_statement_bytes,
            statement_timeout_s=s.db.statement_timeout_s,
        )
        queue: asyncio.Queue[list[Envelope]] = asyncio.Queue()
        for batch in batches:
            queue.put_nowait(batch)
        totals = {"inserted": 0, "rejected": 0, "statements": 0, "batches": 0}

        async def loop() -> None:
            while not queue.empty():
                batch = queue.get_nowait()
                result = await sink.write(schema, batch)
                totals["inserted"] += result.rows_inserted
                totals["rejected"] += result.rows_rejected
                totals["statements"] += result.statements
                totals["batches"] += 1

        before = ctx.cpu_now()
        started = time.perf_counter()
        await asyncio.gather(*(loop() for _ in range(concurrency)))
        seconds = time.perf_counter() - started
        cpu = _delta(ctx.cpu_now(), before)
    finally:
        await engine.dispose()
    if totals["inserted"] != expected_rows:
        raise RuntimeError(f"sink inserted {totals['inserted']} rows, expected {expected_rows}")
    return {
        "sinks": concurrency,
        "seconds": round(seconds, 3),
        "rows": ctx.opts.rows,
        "rows_per_s": ctx.opts.rows / seconds,
        **totals,
        "cpu_s": cpu,
    }


async def stage_sink(ctx: Context) -> None:
    started = time.perf_counter()
    batches, valid_rows = await _decoded_batches(ctx)
    gc.collect()
    gc.freeze()  # a million decoded rows: keep them out of the timed runs' collections
    n_envelopes = sum(len(b) for b in batches)
    envelope_rows = valid_rows / max(1, n_envelopes)
    batch_rows = valid_rows / max(1, len(batches))
    _log(
        ctx.console,
        f"sink input: {valid_rows:,} valid rows in {n_envelopes} envelopes of "
        f"~{envelope_rows:,.0f} rows, {len(batches)} batches of ~{batch_rows:,.0f} rows "
        f"(packed and decoded in {time.perf_counter() - started:.1f} s, not timed)",
    )
    out: dict[str, Any] = {
        "envelope_rows": round(envelope_rows),
        "batch_rows": round(batch_rows),
        "batches": len(batches),
    }
    for n in ctx.opts.sink_concurrency:
        out[str(n)] = await _sink_run(ctx, batches, n, valid_rows)
        _log(ctx.console, f"sink only, {n} concurrent: {_fmt_rate(out[str(n)])}")
    del batches
    gc.unfreeze()
    gc.collect()
    await ctx.truncate()
    ctx.results["sink"] = out


# --- 3. end to end ----------------------------------------------------------------------------


async def _wait_for_line(child: Child, needle: str, timeout_s: float) -> None:
    deadline = time.monotonic() + timeout_s
    while True:
        try:
            if needle in child.stderr_path.read_text(errors="replace"):
                return
        except OSError:
            pass
        if not child.running:
            raise RuntimeError(f"{child.name} exited before {needle!r}:\n{child.tail()}")
        if time.monotonic() > deadline:
            raise TimeoutError(f"{child.name}: no {needle!r} after {timeout_s} s")
        await asyncio.sleep(0.05)


class _LedgerWatch:
    """Samples ``COUNT(*)`` of ingest_ledger every 0.1 s; remembers when each count was seen."""

    def __init__(self, engine: AsyncEngine) -> None:
        self._engine = engine
        self.count = 0
        self.first_seen: dict[int, float] = {}
        self._task: asyncio.Task[None] | None = None

    async def _run(self) -> None:
        async with self._engine.connect() as conn:
            while True:
                result = await conn.execute(sa.select(sa.func.count()).select_from(ingest_ledger))
                await conn.commit()  # a fresh READ COMMITTED snapshot per sample
                n = int(result.scalar_one())
                now = time.monotonic()
                if n not in self.first_seen:
                    self.first_seen[n] = now
                self.count = n
                await asyncio.sleep(0.1)

    def start(self) -> None:
        self._task = asyncio.create_task(self._run())

    async def wait_for(self, n: int, timeout_s: float, watch: Sequence[Child]) -> float:
        deadline = time.monotonic() + timeout_s
        while self.count < n:
            if self._task is not None and self._task.done():
                self._task.result()
            for child in watch:
                if not child.running:
                    raise RuntimeError(f"{child.name} exited early:\n{child.tail()}")
            if time.monotonic() > deadline:
                raise TimeoutError(f"only {self.count}/{n} messages applied after {timeout_s} s")
            await asyncio.sleep(0.05)
        return min(t for c, t in self.first_seen.items() if c >= n)

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)


def _batch_stats(logs: Sequence[Path]) -> dict[str, Any]:
    flushes: list[dict[str, Any]] = []
    for path in logs:
        for line in path.read_text(errors="replace").splitlines():
            if '"batch_flushed"' in line:
                try:
                    flushes.append(json.loads(line))
                except json.JSONDecodeError:
                    continue
    if not flushes:
        return {"batches": 0}
    seconds = sorted(float(f.get("seconds", 0.0)) for f in flushes)
    return {
        "batches": len(flushes),
        "messages_per_batch": sum(int(f.get("messages", 0)) for f in flushes) / len(flushes),
        "rows_per_batch": sum(int(f.get("rows_inserted", 0)) for f in flushes) / len(flushes),
        "statements_per_batch": sum(int(f.get("statements", 0)) for f in flushes) / len(flushes),
        "batch_seconds_p50": seconds[len(seconds) // 2],
        "batch_seconds_max": seconds[-1],
        "batch_seconds_sum": round(sum(seconds), 3),
    }


class _Profiler:
    """``py-spy record`` attached to running children (``--py-spy DIR``)."""

    def __init__(self, out_dir: Path | None) -> None:
        self.out_dir = out_dir
        self._procs: list[subprocess.Popen[bytes]] = []
        exe = Path(sys.executable).parent / "py-spy"
        self._exe = str(exe) if exe.exists() else (shutil.which("py-spy") or "")
        if out_dir is not None:
            if not self._exe:
                raise RuntimeError("--py-spy: py-spy is not installed")
            out_dir.mkdir(parents=True, exist_ok=True)

    def attach(self, child: Child) -> None:
        if self.out_dir is None:
            return
        for fmt, suffix in (("raw", "txt"), ("flamegraph", "svg")):
            out = self.out_dir / f"{child.name}.{suffix}"
            args = [self._exe, "record", "--pid", str(child.pid), "--rate", "100", "--nonblocking"]
            args += ["--format", fmt, "--output", str(out)]
            self._procs.append(
                subprocess.Popen(args, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
            )

    async def finish(self) -> None:
        for proc in self._procs:
            try:
                await asyncio.to_thread(proc.wait, 30)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()


async def stage_e2e(ctx: Context, workers: int) -> dict[str, Any]:
    await ctx.truncate()
    url = await ctx.new_queue(f"bench-e2e{workers}")
    env = {**ctx.env, "HEADRACE_QUEUE_URL": url}
    timeout = ctx.opts.stage_timeout_s
    procs = [ctx.child(f"worker{workers}-{i}", ["-m", "worker"], env) for i in range(workers)]
    producer: Child | None = None
    watch = _LedgerWatch(ctx.engine)
    profiler = _Profiler(ctx.opts.py_spy_dir if workers == ctx.opts.e2e_workers[0] else None)
    try:
        for proc in procs:
            await _wait_for_line(proc, "worker_start", 60)
            profiler.attach(proc)
        watch.start()
        counts_before = ctx.moto_counts()
        cpu_before = ctx.cpu_now(*procs)
        started = time.monotonic()
        producer = ctx.child(
            f"producer-e2e{workers}", ["-m", "producer", str(ctx.csv_path), "--table", TABLE], env
        )
        cpu_before[producer.name] = 0.0
        profiler.attach(producer)
        produced = await producer.wait(timeout)
        if produced.exit_code != 0:
            raise RuntimeError(f"producer exited {produced.exit_code}:\n{producer.tail()}")
        report = json.loads(producer.stdout_path.read_text())
        finished = await watch.wait_for(int(report["total_messages"]), timeout, procs)
        seconds = finished - started
        cpu_window = _delta(ctx.cpu_now(producer, *procs), cpu_before)
        for proc in procs:
            proc.terminate()
        usages = [await proc.wait(60) for proc in procs]
        counts = _diff_counts(ctx.moto_counts(), counts_before)
    finally:
        await watch.stop()
        for proc in [*procs, *([producer] if producer else [])]:
            if proc.running:
                proc.kill()
        await profiler.finish()
    bad_exits = [u for u in usages if u.exit_code != 0]
    if bad_exits:
        raise RuntimeError(f"worker exit codes {[u.exit_code for u in usages]}")
    verify = await verify_source(ctx.settings, ctx.engine, str(ctx.csv_path), TABLE)
    await ctx.delete_queue(url)
    return {
        "workers": workers,
        "seconds": round(seconds, 3),
        "rows": ctx.opts.rows,
        "rows_per_s": ctx.opts.rows / seconds,
        "producer_s": round(produced.wall_s, 3),
        "messages": int(report["total_messages"]),
        "producer_report": report,
        "producer": produced.as_dict(),
        "workers_usage": [u.as_dict() for u in usages],
        "cpu_s_in_window": cpu_window,
        "sqs": counts,
        "batches": _batch_stats([p.stderr_path for p in procs]),
        "verify_ok": verify.ok,
        "verify": verify.line(),
    }


async def stage_e2e_all(ctx: Context) -> None:
    out: dict[str, Any] = {}
    for n in ctx.opts.e2e_workers:
        out[str(n)] = res = await stage_e2e(ctx, n)
        _log(ctx.console, f"end to end, {n} worker(s): {_fmt_rate(res)}; {res['verify']}")
        if not res["verify_ok"]:
            raise RuntimeError(f"verification failed: {res['verify']}")
    await ctx.truncate()
    ctx.results["e2e"] = out


# --- 4. seed-style baseline -------------------------------------------------------------------


async def _wait_watching(child: Child, partner: Child, timeout_s: float) -> Usage:
    """Wait for ``child``; fail at once if ``partner`` (which it depends on) dies first."""
    deadline = time.monotonic() + timeout_s
    while child.running:
        if not partner.running and partner.usage is not None and partner.usage.exit_code != 0:
            child.kill()
            raise RuntimeError(f"{partner.name} failed:\n{partner.tail()}")
        if time.monotonic() > deadline:
            child.kill()
            raise TimeoutError(f"{child.name} still running after {timeout_s:.0f} s")
        await asyncio.sleep(0.05)
    return await child.wait(1)


def _last_json(path: Path) -> dict[str, Any]:
    lines = [ln for ln in path.read_text().splitlines() if ln.startswith("{")]
    if not lines:
        raise RuntimeError(f"no JSON line in {path}")
    doc: dict[str, Any] = json.loads(lines[-1])
    return doc


async def stage_seed(ctx: Context) -> None:
    n = ctx.opts.seed_rows
    await ctx.truncate()
    seed_csv = ctx.work / f"seed-{n}.csv"
    # No bad rows: the old pipeline had no reject path (a bad row would loop to its DLQ).
    generate_csv(seed_csv, n, seed=11, bad_ratio=0.0)
    url = await ctx.new_queue("bench-seed")
    env = {**ctx.env, "HEADRACE_QUEUE_URL": url}
    timeout = ctx.opts.stage_timeout_s
    progress = ctx.work / "seed-progress.bin"  # the consumer's finished-message count
    progress.write_bytes(bytes(8))
    pacing = ["--progress-file", str(progress)]
    consumer = ctx.child(
        "seed-consumer",
        [
            "-m",
            "bench.seed",
            "consume",
            "--rows",
            str(n),
            "--handlers",
            str(ctx.opts.seed_handlers),
            "--pool",
            str(ctx.opts.seed_pool),
            *pacing,
        ],
        env,
    )
    sender: Child | None = None
    try:
        deadline = time.monotonic() + 60
        while "READY" not in consumer.stdout_path.read_text(errors="replace"):
            if not consumer.running or time.monotonic() > deadline:
                raise RuntimeError(f"seed consumer did not start:\n{consumer.tail()}")
            await asyncio.sleep(0.05)
        counts_before = ctx.moto_counts()
        sender = ctx.child(
            "seed-sender",
            ["-m", "bench.seed", "send", str(seed_csv), *pacing, "--window", str(SEED_WINDOW)],
            env,
        )
        cpu_before = ctx.cpu_now(consumer)
        cpu_before[sender.name] = 0.0
        sent = await _wait_watching(sender, consumer, timeout)
        if sent.exit_code != 0:
            raise RuntimeError(f"seed sender exited {sent.exit_code}:\n{sender.tail()}")
        consumed = await consumer.wait(timeout)
        if consumed.exit_code != 0:
            raise RuntimeError(f"seed consumer exited {consumed.exit_code}:\n{consumer.tail()}")
        cpu = _delta(ctx.cpu_now(sender, consumer), cpu_before)
        counts = _diff_counts(ctx.moto_counts(), counts_before)
    finally:
        for proc in (consumer, *([sender] if sender else [])):
            if proc.running:
                proc.kill()
    s_doc = _last_json(sender.stdout_path)
    c_doc = _last_json(consumer.stdout_path)
    seconds = float(c_doc["last_commit"]) - float(s_doc["first_send"])
    in_table = await ctx.count(observations)
    # The in-process hooks of headrace.sqs, summed over both programs, against moto's view.
    hooks: dict[str, dict[str, float]] = {}
    for doc in (s_doc, c_doc):
        for op, v in doc["sqs"].items():
            entry = hooks.setdefault(op, {"requests": 0.0, "billed_units": 0.0})
            entry["requests"] += v["requests"]
            entry["billed_units"] += v["billed_units"]
    verify = await verify_source(ctx.settings, ctx.engine, str(seed_csv), TABLE)
    await ctx.delete_queue(url)
    await ctx.truncate()
    requests = sum(v["requests"] for v in counts.values())
    ctx.results["seed"] = {
        "rows": n,
        "seconds": round(seconds, 3),
        "rows_per_s": n / seconds,
        "rows_in_table": in_table,
        "messages": int(s_doc["messages"]),
        "handlers": ctx.opts.seed_handlers,
        "pool": ctx.opts.seed_pool,
        "sender_window": SEED_WINDOW,
        "sender_paused_s": s_doc.get("paused_s"),
        "sqs_requests": requests,
        "failed_inserts": c_doc.get("failed_inserts", {}),
        # moto's CPU per request: above a few ms, moto rather than the design sets the pace.
        "moto_ms_per_request": round(1000 * cpu["moto"] / max(1, requests), 2),
        # The consumer's own CPU bounds it at one core: rows per consumer CPU-second is the
        # most it could do with a free SQS and database (the conservative comparison).
        "consumer_cpu_bound_rows_per_s": n / max(1e-9, consumed.cpu_s),
        "sender": sent.as_dict(),
        "consumer": consumed.as_dict(),
        "cpu_s_in_window": cpu,
        "sqs": counts,
        "sqs_hooks": hooks,
        "verify_ok": verify.ok,
        "verify": verify.line(),
    }
    seed = ctx.results["seed"]
    _log(
        ctx.console,
        f"seed-style: {_fmt_rate(seed)}; moto {seed['moto_ms_per_request']} CPU-ms a request; "
        f"consumer CPU-bound ceiling {seed['consumer_cpu_bound_rows_per_s']:,.0f} rows/s; "
        f"{verify.line()}",
    )
    if in_table != n:
        raise RuntimeError(f"seed-style left {in_table} rows in the table, expected {n}")


# --- 5. producer memory on a bigger file ------------------------------------------------------


async def stage_producer_big(ctx: Context) -> None:
    k = ctx.opts.rss_multiplier
    big = ctx.work / f"observations-{k}x.csv"
    # The same rows k times (not timed): the producer's work per row is the same, and a
    # producer-only run never meets the table's unique key. Much faster than generating.
    with ctx.csv_path.open("rb") as src:
        header = src.readline()
        body = src.read()
    with big.open("wb") as out:
        out.write(header)
        for _ in range(k):
            out.write(body)
    del body
    await ctx.truncate()
    url = await ctx.new_queue("bench-big")
    env = {**ctx.env, "HEADRACE_QUEUE_URL": url}
    producer = ctx.child(f"producer-{k}x", ["-m", "producer", str(big), "--table", TABLE], env)
    try:
        usage = await producer.wait(ctx.opts.stage_timeout_s * k)
    finally:
        if producer.running:
            producer.kill()
    if usage.exit_code != 0:
        raise RuntimeError(f"producer ({k}x) exited {usage.exit_code}:\n{producer.tail()}")
    report = json.loads(producer.stdout_path.read_text())
    await ctx.delete_queue(url)
    big.unlink()
    await ctx.truncate()
    rows = ctx.opts.rows * k
    ctx.results["producer_big"] = {
        "multiplier": k,
        "rows": rows,
        "seconds": round(usage.wall_s, 3),
        "rows_per_s": rows / usage.wall_s,
        "messages": int(report["total_messages"]),
        "producer": usage.as_dict(),
    }
    _log(
        ctx.console,
        f"producer only, {rows:,} rows: {usage.wall_s:.1f} s, peak RSS "
        f"{usage.max_rss_mb:.0f} MB, {usage.cpu_s:.1f} CPU-s",
    )


def _fmt_rate(res: dict[str, Any]) -> str:
    return f"{res['seconds']:.1f} s, {res['rows_per_s']:,.0f} rows/s"


# --- the run ----------------------------------------------------------------------------------


async def _start_moto(work: Path, env: dict[str, str]) -> tuple[Child, str]:
    moto = Child(
        "moto",
        [sys.executable, "-m", "bench.motoserver", "--port", "0"],
        env=env,
        stdout=work / "moto.out",
        stderr=work / "moto.log",
        cwd=ROOT,
    )
    deadline = time.monotonic() + 60
    while True:
        text = moto.stdout_path.read_text(errors="replace")
        if text.startswith("PORT "):
            port = int(text.split()[1])
            return moto, f"http://127.0.0.1:{port}"
        if not moto.running or time.monotonic() > deadline:
            moto.kill()
            raise RuntimeError(f"moto server did not start:\n{moto.tail()}")
        await asyncio.sleep(0.05)


@asynccontextmanager
async def _context(opts: Options, console: Console, work: Path) -> AsyncIterator[Context]:
    mariadb = MariaDBServer(work / "mariadb", extra_args=MARIADB_ARGS)
    moto: Child | None = None
    engine: AsyncEngine | None = None
    try:
        mariadb.start()
        url = mariadb.create_database(DATABASE)
        base_settings = load_settings()
        env = _child_env(dict(os.environ), base_settings)
        for key in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_DEFAULT_REGION"):
            os.environ[key] = env[key]  # this process's own clients (queue set-up, clean-up)
        os.environ["AWS_CONFIG_FILE"] = os.devnull
        os.environ["AWS_SHARED_CREDENTIALS_FILE"] = os.devnull
        moto, endpoint = await _start_moto(work, env)
        settings = base_settings.model_copy(
            update={"database_url": url, "sqs_endpoint_url": endpoint, "queue_url": None}
        )
        env = _child_env(env, settings)
        engine = create_engine(settings, pool_size=4)
        await migrate(engine)
        _log(
            console,
            f"mariadbd {mariadb.port} (pid {mariadb.pid}), moto {endpoint} (pid {moto.pid}), "
            f"work dir {work}",
        )
        started = time.perf_counter()
        csv_path = work / f"observations-{opts.rows}.csv"
        generated = generate_csv(csv_path, opts.rows, bad_ratio=BAD_RATIO)
        _log(
            console,
            f"generated {opts.rows:,} rows ({generated.bad_rows:,} bad, "
            f"{csv_path.stat().st_size / 1e6:.0f} MB) in {time.perf_counter() - started:.1f} s",
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
            csv_path=csv_path,
            bad_rows=generated.bad_rows,
        )
    finally:
        if engine is not None:
            await engine.dispose()
        if moto is not None:
            moto.terminate()
            with suppress(TimeoutError):
                await moto.wait(10)
        mariadb.stop()


async def run_bench(opts: Options, console: Console) -> dict[str, Any]:
    from bench.report import finish

    began = time.perf_counter()
    work = opts.work_dir or Path(tempfile.mkdtemp(prefix="headrace-bench-"))
    work.mkdir(parents=True, exist_ok=True)
    sampler = asyncio.create_task(sample_forever(), name="rss-sampler")
    try:
        async with _context(opts, console, work) as ctx:
            ctx.results["meta"] = {
                "rows": opts.rows,
                "seed_rows": opts.seed_rows,
                "bad_rows": ctx.bad_rows,
                "started_at": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
                "cpus": os.cpu_count(),
                "python": platform.python_version(),
                "mariadb": ctx.mariadb.execute("SELECT VERSION()").strip(),
                "mariadb_args": list(MARIADB_ARGS),
                "git": _git_state(),
                "py_spy": str(opts.py_spy_dir) if opts.py_spy_dir else None,
                "settings": {
                    "worker": ctx.settings.worker.model_dump(),
                    "producer": ctx.settings.producer.model_dump(),
                    "db_pool_size": ctx.settings.db.pool_size,
                },
            }
            await stage_load_data(ctx)
            await stage_sink(ctx)
            await stage_e2e_all(ctx)
            await stage_seed(ctx)
            if not opts.skip_rss:
                await stage_producer_big(ctx)
            ctx.results["meta"]["wall_s"] = round(time.perf_counter() - began, 1)
            results = ctx.results
    finally:
        sampler.cancel()
        await asyncio.gather(sampler, return_exceptions=True)
        if not opts.keep and opts.work_dir is None:
            shutil.rmtree(work, ignore_errors=True)
    finish(results, opts.results_dir, console)
    return results


def _git_state() -> dict[str, Any]:
    """The commit measured and the files changed on top of it (results must say what ran)."""

    def git(*args: str) -> str:
        try:
            done = subprocess.run(
                ["git", *args], cwd=ROOT, capture_output=True, text=True, timeout=10, check=False
            )
        except (OSError, subprocess.TimeoutExpired):
            return ""
        return done.stdout if done.returncode == 0 else ""

    changed = [line[3:] for line in git("status", "--porcelain").splitlines() if line.strip()]
    return {"commit": git("rev-parse", "HEAD").strip(), "changed_files": changed}


def _ints(text: str) -> list[int]:
    return [int(x) for x in text.split(",") if x.strip()]


def parse_args(argv: Sequence[str] | None = None) -> Options:
    parser = argparse.ArgumentParser(
        prog="python -m bench", description="headrace benchmark (see bench/harness.py)"
    )
    parser.add_argument(
        "--rows", type=int, default=int(os.environ.get("BENCH_ROWS", 1_000_000)), help="CSV rows"
    )
    parser.add_argument(
        "--seed-rows",
        type=int,
        default=int(os.environ.get("BENCH_SEED_ROWS", 50_000)),
        help="rows for the seed-style baseline",
    )
    parser.add_argument("--rss-multiplier", type=int, default=5, help="bigger producer-only file")
    parser.add_argument("--skip-rss", action="store_true", help="skip the bigger producer run")
    parser.add_argument("--results-dir", type=Path, default=DEFAULT_RESULTS)
    parser.add_argument("--work-dir", type=Path, help="keep data, logs and datadir here")
    parser.add_argument("--keep", action="store_true", help="keep the temporary work dir")
    parser.add_argument("--sink-concurrency", type=_ints, default=[1, 2, 4])
    parser.add_argument("--e2e-workers", type=_ints, default=[1, 2])
    parser.add_argument(
        "--envelope-rows", type=int, help="rows per envelope for the sink stage (flush_rows/5)"
    )
    parser.add_argument("--seed-handlers", type=int, default=100)
    parser.add_argument("--seed-pool", type=int, default=50)
    parser.add_argument("--stage-timeout", type=float, default=900.0, help="seconds per step")
    parser.add_argument(
        "--ceiling-runs", type=int, default=2, help="LOAD DATA runs per variant (the best counts)"
    )
    parser.add_argument(
        "--py-spy",
        type=Path,
        metavar="DIR",
        help="profile the 1-worker end-to-end run's producer and worker with py-spy (raw "
        "collapsed stacks and SVG flame graphs in DIR; perturbs that run's figures)",
    )
    a = parser.parse_args(argv)
    if a.rows < 100 or a.seed_rows < 10:
        parser.error("--rows must be >= 100 and --seed-rows >= 10")
    return Options(
        rows=a.rows,
        seed_rows=a.seed_rows,
        rss_multiplier=a.rss_multiplier,
        skip_rss=a.skip_rss,
        results_dir=a.results_dir,
        work_dir=a.work_dir,
        keep=a.keep,
        sink_concurrency=a.sink_concurrency,
        e2e_workers=a.e2e_workers,
        envelope_rows=a.envelope_rows,
        seed_handlers=a.seed_handlers,
        seed_pool=a.seed_pool,
        stage_timeout_s=a.stage_timeout,
        py_spy_dir=a.py_spy,
        ceiling_runs=max(1, a.ceiling_runs),
    )


def main(argv: Sequence[str] | None = None) -> int:
    from headrace.runtime import run

    opts = parse_args(argv)
    # asyncmy logs server notes (e.g. "Name 'pk_x' ignored for PRIMARY key") as warnings.
    logging.getLogger("asyncmy").setLevel(logging.ERROR)
    # Piped (make bench | tee), rich would wrap the tables at 80 columns.
    console = Console() if sys.stdout.isatty() else Console(width=160)
    run(run_bench(opts, console))
    return 0
