"""Stage 5, producer memory: the producer alone on a file ``--rss-multiplier`` times larger
(its peak RSS must stay flat)."""

from __future__ import annotations

import json

from bench.context import TABLE, Context
from bench.progress import log

__all__ = ["stage_producer_big"]


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
    producer = ctx.child(
        f"producer-{k}x", ["-m", "cli", "produce", str(big), "--table", TABLE], env
    )
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
    log(
        ctx.console,
        f"producer only, {rows:,} rows: {usage.wall_s:.1f} s, peak RSS "
        f"{usage.max_rss_mb:.0f} MB, {usage.cpu_s:.1f} CPU-s",
    )
