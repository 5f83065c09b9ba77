"""The producer: source → reader → typing → packer → sender → checkpoint."""

from __future__ import annotations

import asyncio
import hashlib
import signal
import time
from contextlib import aclosing
from dataclasses import dataclass, field

import structlog
from sqlalchemy.ext.asyncio import AsyncEngine

from headrace import envelope
from headrace.db import create_engine, db_call
from headrace.envelope import EncodedMessage
from headrace.errors import InputError
from headrace.metrics import ProducerMetrics, ProducerStats
from headrace.schema import ColumnSpec, Layout, Reject, TableSchema, reflect_table
from headrace.settings import DEFAULT_CHUNK_ROWS, Settings, signing_key
from headrace.sqs import Queue, open_queue
from producer.checkpoint import Checkpoint
from producer.claimcheck import ClaimCheck, open_claim_check
from producer.memory import map_big_buffers
from producer.packer import Packer, Packing
from producer.reader import CsvReader, open_reader, read_chunks
from producer.sender import Sender
from producer.sources import Source, open_location

__all__ = ["INTERRUPTED_EXIT_CODE", "ProduceReport", "make_run_id", "produce", "run_producer"]

INTERRUPTED_EXIT_CODE = 4
"""`headrace produce` stopped by SIGTERM/SIGINT: the sends in flight finished and the
checkpoint was saved; run the same command again to resume."""

log = structlog.get_logger("producer")


@dataclass
class ProduceReport:
    """What a producer run did; live while it runs (the demo's progress bar reads it).

    The counts are a view of the process's :class:`ProducerMetrics` (the one owner of what
    the producer counts); the rest describes the run.
    """

    source: str
    table: str
    metrics: ProducerMetrics = field(default_factory=ProducerMetrics, repr=False)
    run_id: str = ""
    total_messages: int = 0
    already_complete: bool = False
    interrupted: bool = False  # stopped by SIGTERM/SIGINT: re-run to resume
    elapsed_s: float = 0.0
    source_bytes: int = 0

    @property
    def stats(self) -> ProducerStats:
        return self.metrics.stats(self.table)

    @property
    def rows_read(self) -> int:
        return self.stats.rows_read

    @property
    def rows_sent(self) -> int:
        return self.stats.rows_sent

    @property
    def rows_rejected(self) -> int:
        return self.stats.rows_rejected

    @property
    def messages_sent(self) -> int:
        return self.stats.messages_sent

    @property
    def messages_skipped(self) -> int:
        return self.stats.messages_skipped

    @property
    def rows_per_s(self) -> float:
        return self.rows_read / self.elapsed_s if self.elapsed_s else 0.0

    def as_dict(self) -> dict[str, object]:
        """The report as `headrace produce` prints it."""
        stats = self.stats
        return {
            "source": self.source,
            "table": self.table,
            "run_id": self.run_id,
            "rows_read": stats.rows_read,
            "rows_sent": stats.rows_sent,
            "rows_rejected": stats.rows_rejected,
            "messages_sent": stats.messages_sent,
            "messages_skipped": stats.messages_skipped,
            "total_messages": self.total_messages,
            "bytes_sent": stats.bytes_sent,
            "send_retries": stats.send_retries,
            "s3_resumes": stats.s3_resumes,
            "requests": stats.send_requests,
            "already_complete": self.already_complete,
            "interrupted": self.interrupted,
            "elapsed_s": self.elapsed_s,
            "source_bytes": self.source_bytes,
        }


def make_run_id(
    source: Source, table: str, header: list[str], *, budget: int, settings: Settings
) -> str:
    """Deterministic run id: the same file, table and packing settings give the same keys."""
    p = settings.producer
    parts = [
        f"v{envelope.VERSION}",
        source.uri,
        str(source.size),
        source.version,
        table,
        "\x1f".join(header),
        str(budget),
        p.compression,
        str(p.zstd_level),
    ]
    # How the file is read and written: only when not the default, so default run ids stay.
    if fingerprint := p.csv.fingerprint():
        parts.append(fingerprint)
    if p.on_duplicate != "error":
        parts.append(f"on_duplicate={p.on_duplicate}")
    if p.claim_check_bucket is not None:  # oversized rows become messages: other seqs
        parts.append("claim-check")
    if p.chunk_rows != DEFAULT_CHUNK_ROWS:  # the packer cuts messages within chunks
        parts.append(f"chunk_rows={p.chunk_rows}")
    return hashlib.sha256("\x1e".join(parts).encode("utf-8", "surrogatepass")).hexdigest()[:32]


async def produce(
    settings: Settings,
    location: str,
    table: str,
    *,
    queue_url: str | None = None,
    report: ProduceReport | None = None,
    metrics: ProducerMetrics | None = None,
    stop: asyncio.Event | None = None,
) -> ProduceReport:
    """Send every row of ``location`` (a path or ``s3://bucket/key``) to the queue, or report
    it; resumable. Counts go to ``report.metrics``, else ``metrics``, else a new owner. Once
    ``stop`` is set, reading stops, the sends in flight finish, the checkpoint is saved and
    the report says ``interrupted``."""
    started = time.perf_counter()
    metrics = report.metrics if report is not None else (metrics or ProducerMetrics())
    async with open_location(settings, location, metrics=metrics) as source:
        report = report or ProduceReport(source=source.uri, table=table, metrics=metrics)
        try:
            await _produce(settings, source, table, queue_url, report, stop or asyncio.Event())
        finally:
            report.elapsed_s = time.perf_counter() - started
            structlog.contextvars.unbind_contextvars("run_id")
    if not report.already_complete:
        log.info(
            "produce_interrupted" if report.interrupted else "produce_done",
            rows_read=report.rows_read,
            rows_sent=report.rows_sent,
            rows_rejected=report.rows_rejected,
            messages=report.total_messages,
            skipped=report.messages_skipped,
            elapsed_s=round(report.elapsed_s, 3),
        )
    return report


async def run_producer(
    settings: Settings,
    location: str,
    table: str,
    *,
    queue_url: str | None = None,
    metrics: ProducerMetrics | None = None,
) -> ProduceReport:
    """:func:`produce` until done or SIGTERM/SIGINT (then it stops cleanly, resumable)."""
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    try:
        return await produce(
            settings, location, table, queue_url=queue_url, metrics=metrics, stop=stop
        )
    finally:
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.remove_signal_handler(sig)


async def _produce(
    settings: Settings,
    source: Source,
    table: str,
    queue_url: str | None,
    report: ProduceReport,
    stop: asyncio.Event,
) -> None:
    report.source_bytes = source.size
    report.metrics.progress.labels(table).set(0)
    p = settings.producer
    map_big_buffers()  # peak RSS stays flat (producer.memory)
    engine = create_engine(settings, pool_size=1)
    try:
        async with (
            open_queue(
                settings, metrics=report.metrics, queue_url=queue_url, pool=p.concurrency + 2
            ) as queue,
            open_claim_check(settings) as claims,
        ):
            info = queue.info
            budget = min(info.max_message_bytes, p.max_message_bytes or info.max_message_bytes)
            schema = await db_call(lambda: _reflect(engine, table), engine=engine, what="reflect")
            schema = schema.typed(p.csv)
            reader = await open_reader(source, p)
            try:
                specs, layout = schema.resolve_columns(reader.header, p.csv, source=source.uri)
                run_id = make_run_id(source, table, reader.header, budget=budget, settings=settings)
                report.run_id = run_id
                structlog.contextvars.bind_contextvars(run_id=run_id)
                checkpoint = await Checkpoint.open(
                    engine,
                    run_id=run_id,
                    source=source.uri,
                    version=source.version,
                    size=source.size,
                    table=table,
                    columns=[s.name for s in specs],
                    options=_options(settings, queue.url, budget),
                )
                if checkpoint.status == "sent":
                    report.already_complete = True
                    log.info("run_already_complete", source=source.uri, table=table)
                    _finished(report.metrics, table)
                    return
                log.info(
                    "produce_start",
                    source=source.uri,
                    table=table,
                    queue=queue.url,
                    budget_bytes=budget,
                    resume_from=checkpoint.resume_from,
                )
                run = _Run(settings, queue, schema, specs, layout, checkpoint, report, stop, claims)
                await run.pump(reader, threaded=source.threaded, budget=budget)
                _finished(report.metrics, table)
            finally:
                reader.close()
    finally:
        await engine.dispose()


def _options(settings: Settings, queue_url: str, budget: int) -> dict[str, object]:
    """How the run reads and packs, for its record in ``ingest_runs`` (`headrace runs show`)."""
    p = settings.producer
    return {
        "queue_url": queue_url,
        "budget_bytes": budget,
        "compression": p.compression,
        "zstd_level": p.zstd_level,
        "chunk_rows": p.chunk_rows,
        "max_rejects_per_file": p.max_rejects_per_file,
        # Only when not the default, as in the run id; `rejected replay` types with `csv`.
        **({"on_duplicate": p.on_duplicate} if p.on_duplicate != "error" else {}),
        **({"csv": p.csv.model_dump(mode="json")} if p.csv.fingerprint() else {}),
    }


def _finished(metrics: ProducerMetrics, table: str) -> None:
    metrics.progress.labels(table).set(1)
    metrics.last_run.labels(table).set(time.time())


async def _reflect(engine: AsyncEngine, table: str) -> TableSchema:
    async with engine.connect() as conn:
        return await reflect_table(conn, table)


def _check_reject_cap(cap: int | None, rejected: int, rejects: list[Reject], source: str) -> None:
    """Stop the run once more rows than ``producer.max_rejects_per_file`` were rejected."""
    if cap is None or rejected <= cap:
        return
    first = rejects[0] if rejects else None
    raise InputError(
        f"more than {cap} rows rejected (producer.max_rejects_per_file); "
        f"last reason: {first.reason if first else '?'}",
        source=source,
        line=first.line if first else None,
    )


def _max_row_chars(specs: list[ColumnSpec]) -> int | None:
    """The longest a valid row can be, from the column types (None: some are unbounded)."""
    bounds = [s.max_chars for s in specs]
    return None if None in bounds else sum(b for b in bounds if b is not None)


@dataclass
class _Run:
    """One run's fixed parts, while it reads, types, packs and sends."""

    settings: Settings
    queue: Queue
    schema: TableSchema
    specs: list[ColumnSpec]
    layout: Layout | None
    checkpoint: Checkpoint
    report: ProduceReport
    stop: asyncio.Event
    claims: ClaimCheck | None = None  # rows bigger than a message go to S3 behind a pointer

    def _packer(self, source: str, budget: int) -> Packer:
        p = self.settings.producer
        return Packer(
            run_id=self.checkpoint.run_id,
            table=self.schema.name,
            columns=[s.name for s in self.specs],
            source=source,
            budget=budget,
            packing=Packing(
                compression=p.compression,
                zstd_level=p.zstd_level,
                max_row_chars=_max_row_chars(self.specs),
                on_duplicate=p.on_duplicate,
                claim_check=self.claims is not None,
            ),
        )

    def _sender(self, budget: int) -> Sender:
        """The sender, confirming each sent message to the checkpoint and the metrics."""
        checkpoint, m, table = self.checkpoint, self.report.metrics, self.schema.name
        rows_sent, messages_sent = m.rows.labels(table, "sent"), m.messages.labels(table)
        bytes_sent = m.bytes.labels(table, "sent")

        def on_sent(message: EncodedMessage) -> None:
            checkpoint.mark_sent(message.seq, message.row_count)
            messages_sent.inc()
            rows_sent.inc(message.row_count)
            bytes_sent.inc(message.size)

        return Sender(
            self.queue,
            concurrency=self.settings.producer.concurrency,
            max_batch_bytes=budget,
            on_sent=on_sent,
            on_retry=m.send_retries.labels(table).inc,
            signing_key=signing_key(self.settings),
        )

    async def pump(self, reader: CsvReader, *, threaded: bool, budget: int) -> None:
        """Read, type, pack and send every row; save the checkpoint as sends are confirmed."""
        settings, schema, specs = self.settings, self.schema, self.specs
        checkpoint, report = self.checkpoint, self.report
        p = settings.producer
        packer = self._packer(reader.source, budget)

        m, table = report.metrics, schema.name
        rows_read, rows_rejected = (m.rows.labels(table, o) for o in ("read", "rejected"))
        bytes_read, progress = m.bytes.labels(table, "read"), m.progress.labels(table)
        # What this run has counted so far (rows read, rows rejected, source bytes): kept
        # here too, so the per-chunk step needs no walk over the registry.
        counted = {"rows": 0, "rejected": 0, "bytes": 0}
        sender = self._sender(budget)

        async def dispatch(message: EncodedMessage) -> None:
            report.total_messages = message.seq + 1
            if checkpoint.already_sent(message.seq, message.row_count):
                m.messages_skipped.labels(table).inc()
                return
            await sender.submit(
                message
                if message.size <= budget or self.claims is None
                else await self.claims.pointer(checkpoint.run_id, message)
            )

        def count_read() -> None:
            rows_read.inc(reader.rows_read - counted["rows"])
            counted["rows"] = reader.rows_read
            now = reader.bytes_read
            bytes_read.inc(max(0, now - counted["bytes"]))
            counted["bytes"] = max(counted["bytes"], now)
            if report.source_bytes:
                progress.set(min(1.0, counted["bytes"] / report.source_bytes))

        async with sender, aclosing(read_chunks(reader, threaded=threaded)) as chunks:
            async for chunk in chunks:
                if self.stop.is_set():
                    break
                valid = schema.validate(specs, chunk.rows, chunk.lines, self.layout)
                rejects = sorted(chunk.rejects + valid.rejects, key=lambda r: r.line)
                count_read()
                rows_rejected.inc(len(rejects))
                counted["rejected"] += len(rejects)
                _check_reject_cap(
                    p.max_rejects_per_file, counted["rejected"], rejects, reader.source
                )
                for message in packer.add_columns(valid.columns, valid.lines, rejects):
                    await dispatch(message)
                if checkpoint.watermark - checkpoint.persisted >= p.checkpoint_every_messages:
                    await checkpoint.save(
                        rows_read=report.rows_read, rows_rejected=report.rows_rejected
                    )
                await asyncio.sleep(0)
            if self.stop.is_set():
                # Not the packer's partial message: a re-run must build the same messages.
                await sender.close()  # the sends in flight finish
                report.interrupted = True
                await checkpoint.save(
                    rows_read=report.rows_read, rows_rejected=report.rows_rejected
                )
                return
            for message in packer.finish():
                await dispatch(message)
            await sender.close()
        count_read()
        await checkpoint.save(
            rows_read=report.rows_read,
            rows_rejected=report.rows_rejected,
            total_messages=report.total_messages,
        )
