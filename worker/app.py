"""The worker: poll → decode → buffer → sink (one transaction) → delete; heartbeat alongside.

Read top to bottom: :meth:`Worker.run` builds the parts and starts the loops — pollers
(:mod:`worker.poller`), sinks (:meth:`Worker._flush`), the heartbeat, the age flusher and,
on ECS, scale-in protection — and the database circuit (:mod:`worker.circuit`) stops the
pollers while the database cannot take work. Shutdown order (SIGTERM or :meth:`stop`):
stop receiving → flush buffered batches → let running transactions commit → delete their
messages → release everything else (visibility 0) → close pools. Bounded by
``worker.shutdown_deadline_s``, below ECS's default 30 s stop timeout.
"""

from __future__ import annotations

import asyncio
import os
import signal
import time
from typing import TYPE_CHECKING, Any

import structlog
from sqlalchemy.ext.asyncio import AsyncEngine

from headrace import failpoints
from headrace.aws import s3_client
from headrace.db import create_engine, error_reason, refuse_bad_database_settings
from headrace.errors import ConfigError, DatabaseUnavailable, QueueError, SchemaError
from headrace.exposition import serving
from headrace.metrics import WorkerMetrics, WorkerStats
from headrace.settings import Settings, signing_key
from headrace.sqs import Queue, open_queue
from worker.acker import Acker
from worker.buffer import Batch, Buffer
from worker.circuit import Circuit
from worker.heartbeat import Heartbeat
from worker.inflight import InFlight
from worker.parts import Parts
from worker.payloads import Payloads
from worker.poller import Poller
from worker.protection import TaskProtection
from worker.queuewatch import QueueWatch
from worker.sink import Sink
from worker.tables import Tables

if TYPE_CHECKING:
    from types_aiobotocore_s3 import S3Client

__all__ = ["Worker", "WorkerStats", "run_worker"]

log = structlog.get_logger("worker")

RECEIVE_GRACE_S = 2.0


class Worker:
    def __init__(
        self,
        settings: Settings,
        *,
        queue_url: str | None = None,
        engine: AsyncEngine | None = None,
        metrics: WorkerMetrics | None = None,
    ) -> None:
        self.settings = settings
        self.metrics = metrics or WorkerMetrics()
        self._queue_url_override = queue_url
        self._engine = engine
        self._stopping = asyncio.Event()
        w = settings.worker
        self._inflight = InFlight(
            max_messages=w.max_inflight_messages,
            max_rows=w.max_inflight_rows,
            max_bytes=w.max_inflight_bytes,
            metrics=self.metrics,
        )
        self._buffer = Buffer(
            flush_rows=w.flush_rows, flush_bytes=w.flush_bytes, flush_age_s=w.flush_age_s
        )
        self._batches: asyncio.Queue[Batch] = asyncio.Queue()
        self._protection: TaskProtection | None = None  # ECS scale-in protection, when on ECS
        self._watch: QueueWatch | None = None  # the queue's depth, and whether it answers
        self._circuit: Circuit | None = None
        self.started = False  # the loops run (before: nothing is held, stopping is instant)

    @property
    def stats(self) -> WorkerStats:
        """The counts so far (a view of :attr:`metrics`)."""
        return self.metrics.stats()

    def stop(self) -> None:
        """Begin a graceful shutdown (safe to call from a signal handler)."""
        if not self._stopping.is_set():
            log.info("worker_stopping")
            self._stopping.set()

    @property
    def stopping(self) -> bool:
        return self._stopping.is_set()

    def ready(self) -> bool:
        """``/readyz``: running, the queue answered its last poll, the circuit is closed."""
        watch, circuit = self._watch, self._circuit
        return (
            not self.stopping
            and watch is not None
            and watch.reachable
            and circuit is not None
            and circuit.closed
        )

    async def run(self) -> WorkerStats:
        w = self.settings.worker
        if not w.tables:
            raise ConfigError(
                "set HEADRACE_WORKER__TABLES to the tables this worker may write "
                "(comma-separated), or * for any table: the queue is untrusted input"
            )
        engine = self._engine or create_engine(
            self.settings, pool_size=max(self.settings.db.pool_size, w.sinks)
        )
        try:
            await refuse_bad_database_settings(engine, self.settings.db.connect_timeout_s)
            async with open_queue(
                self.settings,
                metrics=self.metrics,
                queue_url=self._queue_url_override,
                pool=w.pollers + w.sinks + 4,
            ) as queue:
                if queue.info.redrive_policy is None:
                    log.warning("queue_has_no_dlq", queue=queue.url)
                log.info("worker_start", queue=queue.url, pollers=w.pollers, sinks=w.sinks)
                async with s3_client(self.settings) as s3:  # Extended Client payloads
                    await self._run(queue, engine, s3)
        finally:
            if self._engine is None:
                await engine.dispose()
        stats = self.stats
        log.info("worker_stopped", **stats.as_dict())
        return stats

    async def _run(self, queue: Queue, engine: AsyncEngine, s3: S3Client) -> None:
        w = self.settings.worker
        self.started = True
        tables = Tables(engine, allowed=w.tables, timeout_s=self.settings.db.statement_timeout_s)
        acker = Acker(queue, self._inflight, self.metrics, max_delay_s=w.visibility_timeout_s)
        circuit = Circuit(
            engine,
            tables,
            self.metrics,
            resume=self._batches.put,
            expire=lambda batch, exc: acker.poison_held(batch.messages, exc),
            probe_timeout_s=self.settings.db.connect_timeout_s + 5,
            max_park_s=w.max_park_s,
        )
        self._circuit = circuit
        self.metrics.db_pool_in_use.set_function(lambda: _checked_out(engine))
        self._watch = watch = QueueWatch(
            queue, self.metrics, interval_s=self.settings.metrics.queue_poll_s
        )
        await watch.poll()  # before receiving: a restarted worker reports the backlog it found
        sink = Sink(
            engine,
            max_statement_bytes=w.max_statement_bytes,
            statement_timeout_s=self.settings.db.statement_timeout_s,
            on_retry=lambda exc: self.metrics.db_retries.labels(error_reason(exc)).inc(),
            insert_path=self.settings.db.insert_path,
        )
        parts = Parts(
            settings=w,
            metrics=self.metrics,
            inflight=self._inflight,
            buffer=self._buffer,
            batches=self._batches,
            tables=tables,
            circuit=circuit,
            acker=acker,
            stopping=self._stopping,
            signing_key=signing_key(self.settings),
            payloads=Payloads(s3, max_bytes=w.max_payload_bytes, delete=w.delete_payloads),
        )
        pollers = [Poller(queue, parts) for _ in range(w.pollers)]
        heartbeat = Heartbeat(
            acker,
            self._inflight,
            self.metrics,
            interval_s=w.heartbeat_interval_s,
            visibility_timeout_s=w.visibility_timeout_s,
        )
        poll_tasks = [
            asyncio.create_task(p.run(), name=f"poller-{i}") for i, p in enumerate(pollers)
        ]
        sinks = [
            asyncio.create_task(self._sink_loop(sink, parts), name=f"sink-{i}")
            for i in range(w.sinks)
        ]
        aux = [
            asyncio.create_task(heartbeat.run(), name="heartbeat"),
            asyncio.create_task(self._age_flusher(), name="age-flusher"),
            asyncio.create_task(watch.run(), name="queue-watch"),
        ]
        if w.idle_exit_s is not None:
            aux.append(
                asyncio.create_task(
                    self._idle_watch(w.idle_exit_s, queue, pollers, circuit), name="idle-watch"
                )
            )
        if w.ecs_agent_uri:
            self._protection = TaskProtection(
                w.ecs_agent_uri,
                self._inflight,
                metrics=self.metrics,
                expires_min=w.protection_expires_min,
                idle_s=w.protection_idle_s,
            )
            aux.append(asyncio.create_task(self._protection.run(), name="protection"))
        await self._supervise([*poll_tasks, *sinks, *aux])
        await self._shutdown(list(zip(pollers, poll_tasks, strict=True)), sinks, aux, parts)

    async def _supervise(self, tasks: list[asyncio.Task[None]]) -> None:
        """Wait for a stop request; a loop that dies of an error also stops the worker."""
        stop_requested = asyncio.create_task(self._stopping.wait(), name="stop-requested")
        pending: set[asyncio.Task[Any]] = {stop_requested, *tasks}
        while not self.stopping:
            done, pending = await asyncio.wait(pending, return_when=asyncio.FIRST_COMPLETED)
            for task in done:
                if task is not stop_requested and not task.cancelled() and task.exception():
                    self.metrics.task_failures.inc()
                    log.error("task_failed", task=task.get_name(), error=repr(task.exception()))
                    self.stop()
        stop_requested.cancel()

    # --- flushing ----------------------------------------------------------------------------

    async def _age_flusher(self) -> None:
        interval = min(0.2, self.settings.worker.flush_age_s / 2)
        while True:
            await asyncio.sleep(interval)
            for batch in self._buffer.due():
                await self._batches.put(batch)

    async def _sink_loop(self, sink: Sink, parts: Parts) -> None:
        while True:
            batch = await self._batches.get()
            try:
                if self._protection is not None:  # protected before anything commits
                    await self._protection.settled()
                await self._flush(sink, parts, batch)
            finally:
                self._batches.task_done()

    async def _flush(self, sink: Sink, parts: Parts, batch: Batch) -> None:
        started = time.perf_counter()
        acker = parts.acker
        envelopes = [m.envelope for m in batch.messages]
        try:
            result = await sink.write(parts.tables[batch.table], envelopes)
        except (asyncio.CancelledError, ConfigError):
            # A ConfigError (e.g. HEADRACE_DB__INSERT_PATH=bulk on a server without it) is
            # no message's fault: hand the batch back and let the loop's death stop the worker.
            await acker.release(batch.messages)
            raise
        except (DatabaseUnavailable, SchemaError, OSError, TimeoutError) as exc:
            # The database or the table, not the batch: keep the messages (the heartbeat
            # keeps them invisible), stop receiving, retry once the probe says it can work.
            parts.circuit.park(batch, exc)
            return
        except Exception as exc:
            self.metrics.batches.labels("failed").inc()
            log.error(
                "batch_failed",
                table=batch.table,
                messages=len(batch.messages),
                error=repr(exc)[:500],
            )
            if len(batch.messages) > 1:
                # Not the database and not a row's value (those are retried or bisected):
                # something about one message. Try each alone, so the innocent commit.
                for message in batch.messages:
                    await self._batches.put(Batch(batch.table, batch.columns, [message]))
            else:
                await acker.poison_held(batch.messages, exc)
            return
        await failpoints.hit("worker.after_commit")
        deleted = await acker.delete(batch.messages)
        if parts.payloads is not None:  # only now: a redelivery would need the payload
            await parts.payloads.committed([m.pointer for m in deleted if m.pointer is not None])
        duplicate_rows = sum(
            e.row_count + len(e.rejects)
            for e in envelopes
            if (e.run_id, e.seq) not in result.applied
        )
        m = self.metrics
        m.flushed(
            seconds=time.perf_counter() - started,
            rows=sum(msg.rows for msg in batch.messages),
            sent_at=[msg.sent_at for msg in batch.messages],
        )
        m.batches.labels("committed").inc()
        m.messages.labels("applied").inc(len(result.applied))
        m.messages.labels("duplicate").inc(len(batch.messages) - len(result.applied))
        m.rows.labels(batch.table, "inserted").inc(result.rows_inserted)
        m.rows.labels(batch.table, "rejected").inc(result.rows_rejected)
        if result.rows_skipped:
            m.rows.labels(batch.table, "skipped").inc(result.rows_skipped)
        m.rows.labels(batch.table, "duplicate").inc(duplicate_rows)
        log.info(
            "batch_flushed",
            table=batch.table,
            messages=len(batch.messages),
            applied=len(result.applied),
            duplicates=len(result.duplicates),
            rows_inserted=result.rows_inserted,
            rows_rejected=result.rows_rejected,
            rows_skipped=result.rows_skipped,
            statements=result.statements,
            seconds=round(time.perf_counter() - started, 4),
        )

    # --- stopping ----------------------------------------------------------------------------

    async def _idle_watch(
        self, idle_s: float, queue: Queue, pollers: list[Poller], circuit: Circuit
    ) -> None:
        start = time.monotonic()
        while True:
            await asyncio.sleep(min(0.5, idle_s / 4))
            if not circuit.closed:  # waiting for the database is not idleness
                start = time.monotonic()
                continue
            last = max(start, *(p.last_receive_at for p in pollers))
            if len(self._inflight) == 0 and time.monotonic() - last >= idle_s:
                if await _queue_has_messages(queue):  # e.g. released ones, not yet visible
                    start = time.monotonic()
                    continue
                log.info("worker_idle_exit", idle_s=idle_s)
                self.stop()
                return

    async def _shutdown(
        self,
        pollers: list[tuple[Poller, asyncio.Task[None]]],
        sinks: list[asyncio.Task[None]],
        aux: list[asyncio.Task[None]],
        parts: Parts,
    ) -> None:
        deadline = time.monotonic() + self.settings.worker.shutdown_deadline_s
        # 1. Stop receiving. A poller waiting for room or for the database is cancelled. One
        #    inside a long poll gets a short grace: a long poll returns as soon as messages are
        #    there, so one still waiting has most likely got nothing; one that returns in the
        #    grace hands back what it got (a cancelled receive would leave its messages
        #    invisible for a whole visibility timeout).
        tasks = [task for _, task in pollers]
        for poller, task in pollers:
            if not poller.receiving:
                task.cancel()
        await asyncio.wait(tasks, timeout=RECEIVE_GRACE_S)
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        await parts.circuit.stop()  # parked batches stay parked: they are handed back below
        # 2. Flush what is buffered and let running transactions commit.
        for batch in self._buffer.drain():
            await self._batches.put(batch)
        try:
            async with asyncio.timeout(max(0.0, deadline - time.monotonic() - 2.0)):
                await self._batches.join()
        except TimeoutError:
            log.warning("shutdown_deadline_reached", pending_batches=self._batches.qsize())
        for task in sinks:
            task.cancel()
        await asyncio.gather(*sinks, return_exceptions=True)
        # 3. Hand back everything else: queued batches, parked ones, anything still held.
        leftover = list(self._inflight.snapshot())
        while not self._batches.empty():
            leftover.extend(self._batches.get_nowait().messages)
        if leftover:
            await parts.acker.release(list({id(m): m for m in leftover}.values()))
        for task in aux:
            task.cancel()
        await asyncio.gather(*aux, return_exceptions=True)
        if self._protection is not None:  # last: nothing is held any more
            await self._protection.close()


def _checked_out(engine: AsyncEngine) -> float:
    """Connections checked out of the engine's pool (0 for a pool that does not count)."""
    checkedout = getattr(engine.sync_engine.pool, "checkedout", None)
    return float(checkedout()) if callable(checkedout) else 0.0


async def _queue_has_messages(queue: Queue) -> bool:
    names = ["ApproximateNumberOfMessages", "ApproximateNumberOfMessagesNotVisible"]
    try:
        attrs = await queue.attributes(names)
    except QueueError:
        return True
    return any(int(attrs.get(k, "0")) for k in names)


FORCED_EXIT_CODE = 4
"""A second SIGTERM/SIGINT: exit at once (held messages reappear after their visibility
timeout; the ledger makes their redelivery safe)."""


async def run_worker(
    settings: Settings, *, queue_url: str | None = None, metrics: WorkerMetrics | None = None
) -> WorkerStats:
    """Run a worker until SIGTERM/SIGINT (or idle exit), handling the signals gracefully.

    The first signal drains (or, while still starting up — e.g. waiting for an unreachable
    queue — stops at once); a second one exits with :data:`FORCED_EXIT_CODE` right away.
    """
    worker = Worker(settings, queue_url=queue_url, metrics=metrics)
    loop = asyncio.get_running_loop()
    main = asyncio.current_task()
    signals = 0

    def on_signal() -> None:
        nonlocal signals
        signals += 1
        if signals > 1:
            log.warning("worker_forced_exit", code=FORCED_EXIT_CODE)
            os._exit(FORCED_EXIT_CODE)
        if worker.started or main is None:
            worker.stop()
        else:  # nothing held yet: stop waiting for the queue or the database
            log.info("worker_stopping_during_startup")
            main.cancel()

    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, on_signal)
    try:
        async with serving(settings.metrics.port, worker.metrics.registry, ready=worker.ready):
            return await worker.run()
    except asyncio.CancelledError:
        if main is None or signals == 0 or worker.started:
            raise
        main.uncancel()
        return worker.stats
    finally:
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.remove_signal_handler(sig)
