"""Stage 5, producer memory: the producer alone on a file ``--rss-multiplier`` times larger
(its peak RSS must stay flat)."""

from __future__ import annotations

from bench.context import Context
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
    report, usage = await ctx.produce_alone(f"{k}x", big, (), ctx.opts.stage_timeout_s * k)
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
