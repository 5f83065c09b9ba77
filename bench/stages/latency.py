"""Stage 6, latency for small drops: a 1-row file, ``--latency-runs`` times, to one idle
worker (default settings: a long poll waiting, ``flush_age_s`` before a flush), from the
moment the producer's send reached SQS (the moto server's clock) to the moment the bench saw
the message in the ledger (a fresh READ COMMITTED read every 10 ms, so up to ~10 ms late)."""

from __future__ import annotations

import asyncio
import json
import statistics
import time
import urllib.request
from typing import Any

import sqlalchemy as sa

from bench.context import TABLE, Context
from bench.progress import log
from cli.datagen import HEADER
from headrace.tables import ingest_ledger

__all__ = ["stage_latency"]

POLL_S = 0.01


def _last_send_s(ctx: Context) -> float:
    with urllib.request.urlopen(f"{ctx.endpoint}/__bench__/last-send", timeout=10) as resp:
        doc: dict[str, int] = json.loads(resp.read())
    return doc["unix_ns"] / 1e9


async def _ledger_count(ctx: Context) -> int:
    async with ctx.engine.connect() as conn:
        result = await conn.execute(sa.select(sa.func.count()).select_from(ingest_ledger))
        return int(result.scalar_one())


async def stage_latency(ctx: Context) -> None:
    runs = ctx.opts.latency_runs
    if runs <= 0:
        return
    await ctx.truncate()
    url = await ctx.new_queue("bench-latency")
    env = {**ctx.env, "HEADRACE_QUEUE_URL": url}
    worker = ctx.child("worker-latency", ["-m", "cli", "worker"], env)
    seconds: list[float] = []
    try:
        await worker.wait_for_output("worker_start", 60)
        for i in range(runs):
            path = ctx.work / f"latency-{i}.csv"
            path.write_text(
                ",".join(HEADER) + f"\n2026-11-22 10:00:00,1,LAT-{i:06d},9.99,5,true,one row {i},\n"
            )
            producer = ctx.child(
                f"producer-latency-{i}", ["-m", "cli", "produce", str(path), "--table", TABLE], env
            )
            deadline = time.monotonic() + 60
            while await _ledger_count(ctx) < i + 1:
                if not worker.running:
                    raise RuntimeError(f"latency worker exited:\n{worker.tail()}")
                if time.monotonic() > deadline:
                    raise TimeoutError(f"1-row file {i} not committed within 60 s")
                await asyncio.sleep(POLL_S)
            seen = time.time()
            usage = await producer.wait(60)
            if usage.exit_code != 0:
                raise RuntimeError(f"producer exited {usage.exit_code}:\n{producer.tail()}")
            seconds.append(seen - _last_send_s(ctx))
            path.unlink()
    finally:
        if worker.running:
            worker.terminate()
            await worker.wait(60)
    await ctx.delete_queue(url)
    await ctx.truncate()
    ctx.results["latency"] = _summary(seconds)
    lat = ctx.results["latency"]
    log(
        ctx.console,
        f"latency, 1-row file, {runs} runs: p50 {lat['p50_s']:.2f} s, p99 {lat['p99_s']:.2f} s, "
        f"max {lat['max_s']:.2f} s",
    )


def _summary(seconds: list[float]) -> dict[str, Any]:
    ordered = sorted(seconds)
    # p99 of n samples: the value at rank ceil(0.99 n) (the maximum for n ≤ 100).
    rank = max(1, -(-99 * len(ordered) // 100))
    return {
        "runs": len(ordered),
        "p50_s": statistics.median(ordered),
        "p99_s": ordered[rank - 1],
        "max_s": ordered[-1],
        "min_s": ordered[0],
        "all_s": [round(s, 4) for s in seconds],
        "poll_s": POLL_S,
    }
