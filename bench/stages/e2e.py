"""Stage 3, end to end: ``headrace produce`` and 1 or 2 ``headrace worker`` processes
through moto, from the producer's start to the last commit, then verified."""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncEngine

from bench.context import Context
from bench.datasets import Dataset, section_name
from bench.measure import cpu_delta, diff_counts
from bench.procs import Child
from bench.profiler import Profiler
from bench.progress import fmt_rate, log
from cli.verify import verify_source
from headrace.tables import ingest_ledger

__all__ = ["stage_e2e", "stage_e2e_all"]


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


def _batch_stats(reports: Sequence[Path]) -> dict[str, Any]:
    """Flushes, from the counts each worker prints when it stops (``headrace worker``)."""
    counts = [json.loads(path.read_text()) for path in reports if path.stat().st_size]
    batches = sum(c["batches"] for c in counts)
    if not batches:
        return {"batches": 0}
    messages = sum(c["messages_applied"] + c["messages_duplicate"] for c in counts)
    rows = sum(c["rows_inserted"] + c["rows_rejected"] for c in counts)
    return {
        "batches": batches,
        "messages_per_batch": messages / batches,
        "rows_per_batch": rows / batches,
    }


async def stage_e2e(
    ctx: Context, ds: Dataset, workers: int, protocol: str = "bulk"
) -> dict[str, Any]:
    await ctx.truncate()
    url = await ctx.new_queue(f"bench-e2e{workers}")
    env = {**ctx.env, "HEADRACE_QUEUE_URL": url, "HEADRACE_DB__INSERT_PATH": protocol}
    timeout = ctx.opts.stage_timeout_s
    procs = [
        ctx.child(f"worker{workers}-{i}", ["-m", "cli", "worker"], env) for i in range(workers)
    ]
    producer: Child | None = None
    watch = _LedgerWatch(ctx.engine)
    first = workers == ctx.opts.e2e_workers[0] and protocol == ctx.opts.protocols[0]
    profiler = Profiler(ctx.opts.py_spy_dir if first and not ds.key else None)
    try:
        for proc in procs:
            await proc.wait_for_output("worker_start", 60)
            profiler.attach(proc)
        watch.start()
        counts_before = ctx.moto_counts()
        cpu_before = ctx.cpu_now(*procs)
        started = time.monotonic()
        producer = ctx.child(
            f"producer-e2e{workers}",
            ["-m", "cli", "produce", str(ds.csv_path), "--table", ds.name],
            env,
        )
        cpu_before[producer.name] = 0.0
        profiler.attach(producer)
        produced = await producer.wait(timeout)
        if produced.exit_code != 0:
            raise RuntimeError(f"producer exited {produced.exit_code}:\n{producer.tail()}")
        report = json.loads(producer.stdout_path.read_text())
        finished = await watch.wait_for(int(report["total_messages"]), timeout, procs)
        seconds = finished - started
        cpu_window = cpu_delta(ctx.cpu_now(producer, *procs), cpu_before)
        for proc in procs:
            proc.terminate()
        usages = [await proc.wait(60) for proc in procs]
        counts = diff_counts(ctx.moto_counts(), counts_before)
    finally:
        await watch.stop()
        for proc in [*procs, *([producer] if producer else [])]:
            if proc.running:
                proc.kill()
        await profiler.finish()
    bad_exits = [u for u in usages if u.exit_code != 0]
    if bad_exits:
        raise RuntimeError(f"worker exit codes {[u.exit_code for u in usages]}")
    verify = await verify_source(ctx.settings, ctx.engine, str(ds.csv_path), ds.name)
    await ctx.delete_queue(url)
    return {
        "workers": workers,
        "protocol": protocol,
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
        "batches": _batch_stats([p.stdout_path for p in procs]),
        "verify_ok": verify.ok,
        "verify": verify.line(),
    }


async def stage_e2e_all(ctx: Context, ds: Dataset) -> None:
    for protocol in ctx.opts.protocols:
        out: dict[str, Any] = {}
        for n in ctx.opts.e2e_workers:
            out[str(n)] = res = await stage_e2e(ctx, ds, n, protocol)
            log(
                ctx.console,
                f"{ds.name}: end to end ({protocol}), {n} worker(s): {fmt_rate(res)}; "
                f"{res['verify']}",
            )
            if not res["verify_ok"]:
                raise RuntimeError(f"verification failed: {res['verify']}")
        ctx.results[ds.section(section_name("e2e", protocol))] = out
    await ctx.truncate()
