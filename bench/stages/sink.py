"""Stage 2, sink only: :meth:`worker.sink.Sink.write` on pre-decoded batches, N concurrent;
then 1 sink again with ``--on-duplicate update`` and ``skip`` over the rows just loaded (every
key exists), against plain inserts with 1 sink."""

from __future__ import annotations

import asyncio
import gc
import time
from typing import Any

import orjson
import sqlalchemy as sa

from bench.context import Context
from bench.datasets import Dataset, section_name
from bench.measure import cpu_delta
from bench.progress import fmt_rate, log
from headrace.db import create_engine
from headrace.envelope import Envelope, decode
from headrace.schema import reflect_table
from producer.packer import Packer, Packing

__all__ = ["stage_sink"]


async def _decoded_batches(ctx: Context, ds: Dataset) -> tuple[list[list[Envelope]], int]:
    """The CSV as the worker would receive it: read and validated as the producer does, packed
    by :class:`producer.packer.Packer` (uncompressed, sized for ``envelope_rows`` rows a
    message) and decoded by :func:`headrace.envelope.decode`; grouped into batches the way
    the worker's buffer does (a batch is cut once it holds ``flush_rows`` rows)."""
    from producer.reader import CsvReader
    from producer.sources import open_source

    p = ctx.settings.producer
    async with ctx.engine.connect() as conn:
        schema = await reflect_table(conn, ds.name)
    source = open_source(str(ds.csv_path))
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
                    table=ds.name,
                    columns=[s.name for s in specs],
                    source=source.uri,
                    budget=int(per_envelope * per_row) + 4096,
                    packing=Packing(compression="none"),
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


async def _prepare(ctx: Context, batches: list[list[Envelope]], mode: str) -> None:
    """Empty tables for plain inserts; for a duplicate mode keep the rows (every key exists)
    and forget only the ledger and the rejects, or nothing would apply."""
    if mode == "error":
        await ctx.truncate()
        return
    async with ctx.engine.begin() as conn:
        for table in ("ingest_ledger", "rejected_rows"):
            await conn.execute(sa.text(f"TRUNCATE TABLE {table}"))  # fixed names
    _set_mode(batches, mode)


def _set_mode(batches: list[list[Envelope]], mode: str) -> None:
    for batch in batches:
        for env in batch:
            env.on_duplicate = mode


async def _sink_run(
    ctx: Context,
    ds: Dataset,
    batches: list[list[Envelope]],
    run: tuple[str, int],
    expected_rows: int,
    mode: str = "error",
) -> dict[str, Any]:
    from worker.sink import Sink

    await _prepare(ctx, batches, mode)
    s = ctx.settings
    protocol, concurrency = run
    path = s.model_copy(update={"db": s.db.model_copy(update={"insert_path": protocol})})
    engine = create_engine(path, pool_size=concurrency)  # load: local_infile on its sessions
    try:
        async with engine.connect() as conn:
            schema = await reflect_table(conn, ds.name)
        # Warm the pool: a running worker has its connections open.
        warm = [await engine.connect() for _ in range(concurrency)]
        for conn in warm:
            await conn.execute(sa.text("SELECT 1"))
            await conn.close()
        sink = Sink(
            engine,
            max_statement_bytes=s.worker.max_statement_bytes,
            statement_timeout_s=s.db.statement_timeout_s,
            insert_path=protocol,  # type: ignore[arg-type]  # bulk, text or load (bench.options)
        )
        queue: asyncio.Queue[list[Envelope]] = asyncio.Queue()
        for batch in batches:
            queue.put_nowait(batch)
        totals = {"inserted": 0, "rejected": 0, "skipped": 0, "statements": 0, "batches": 0}
        used: set[str] = set()

        async def loop() -> None:
            while not queue.empty():
                batch = queue.get_nowait()
                result = await sink.write(schema, batch)
                totals["inserted"] += result.rows_inserted
                totals["rejected"] += result.rows_rejected
                totals["skipped"] += result.rows_skipped
                totals["statements"] += result.statements
                totals["batches"] += 1
                used.add(str(result.protocol))

        before = ctx.cpu_now()
        started = time.perf_counter()
        await asyncio.gather(*(loop() for _ in range(concurrency)))
        seconds = time.perf_counter() - started
        cpu = cpu_delta(ctx.cpu_now(), before)
    finally:
        await engine.dispose()
    _set_mode(batches, "error")
    written = totals["inserted"] + totals["skipped"]
    if written != expected_rows:
        raise RuntimeError(f"sink wrote {written} rows ({mode}), expected {expected_rows}")
    if used != {protocol}:
        raise RuntimeError(f"asked for the {protocol} path, the sink used {sorted(used)}")
    return {
        "sinks": concurrency,
        "protocol": protocol,
        "seconds": round(seconds, 3),
        "rows": ctx.opts.rows,
        "rows_per_s": ctx.opts.rows / seconds,
        **totals,
        "cpu_s": cpu,
    }


async def stage_sink(ctx: Context, ds: Dataset) -> None:
    started = time.perf_counter()
    batches, valid_rows = await _decoded_batches(ctx, ds)
    gc.collect()
    gc.freeze()  # a million decoded rows: keep them out of the timed runs' collections
    n_envelopes = sum(len(b) for b in batches)
    envelope_rows = valid_rows / max(1, n_envelopes)
    batch_rows = valid_rows / max(1, len(batches))
    log(
        ctx.console,
        f"{ds.name}: sink input: {valid_rows:,} valid rows in {n_envelopes} envelopes of "
        f"~{envelope_rows:,.0f} rows, {len(batches)} batches of ~{batch_rows:,.0f} rows "
        f"(packed and decoded in {time.perf_counter() - started:.1f} s, not timed)",
    )
    for protocol in ctx.opts.protocols:
        out: dict[str, Any] = {
            "envelope_rows": round(envelope_rows),
            "batch_rows": round(batch_rows),
            "batches": len(batches),
        }
        for n in ctx.opts.sink_concurrency:
            out[str(n)] = await _sink_run(ctx, ds, batches, (protocol, n), valid_rows)
            log(
                ctx.console,
                f"{ds.name}: sink only ({protocol}), {n} concurrent: {fmt_rate(out[str(n)])}",
            )
        if "1" in out and ds.name == "observations" and protocol != "load":
            # The duplicate modes need a finished run's rows in place (a natural key the
            # file carries; trips' AUTO_INCREMENT key is not in its file). LOAD DATA has no
            # ON DUPLICATE KEY UPDATE: the load path writes those modes as INSERT text.
            for mode in ("update", "skip"):
                run = await _sink_run(ctx, ds, batches, (protocol, 1), valid_rows, mode)
                run["vs_plain_1"] = round(run["rows_per_s"] / out["1"]["rows_per_s"], 3)
                out[mode] = run
                log(
                    ctx.console,
                    f"{ds.name}: sink only ({protocol}), 1, --on-duplicate {mode}: {fmt_rate(run)}",
                )
        ctx.results[ds.section(section_name("sink", protocol))] = out
    del batches
    gc.unfreeze()
    gc.collect()
    await ctx.truncate()
