"""Stage 4, seed-style: the old pipeline's shape (:mod:`bench.seed`) on a smaller file, and the
in-process SQS counters of :mod:`headrace.sqs` checked against the moto server's."""

from __future__ import annotations

import asyncio
import json
import time
from pathlib import Path
from typing import Any

from bench.context import TABLE, Context
from bench.measure import cpu_delta, diff_counts
from bench.procs import Child, Usage
from bench.progress import fmt_rate, log
from cli.datagen import generate_csv, observations
from cli.verify import verify_source

__all__ = ["stage_seed"]

# The seed-style sender stays this many messages ahead of its consumer (see bench/seed.py).
SEED_WINDOW = 200


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
        await consumer.wait_for_output("READY", 60, stdout=True)
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
        cpu = cpu_delta(ctx.cpu_now(sender, consumer), cpu_before)
        counts = diff_counts(ctx.moto_counts(), counts_before)
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
    log(
        ctx.console,
        f"seed-style: {fmt_rate(seed)}; moto {seed['moto_ms_per_request']} CPU-ms a request; "
        f"consumer CPU-bound ceiling {seed['consumer_cpu_bound_rows_per_s']:,.0f} rows/s; "
        f"{verify.line()}",
    )
    if in_table != n:
        raise RuntimeError(f"seed-style left {in_table} rows in the table, expected {n}")
