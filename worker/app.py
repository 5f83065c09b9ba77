"""The worker: poll → decode → buffer → sink (one transaction) → delete; heartbeat alongside.

Read top to bottom: :meth:`Worker.run` starts the loops, :meth:`Worker._poll` receives,
:meth:`Worker._flush` writes and acknowledges. Shutdown order (SIGTERM or :meth:`stop`):
stop receiving → flush buffered batches → let running transactions commit → delete their
messages → release everything else (visibility 0) → close pools. Bounded by
``worker.shutdown_deadline_s``, below ECS's default 30 s stop timeout.
"""

from __future__ import annotations

import asyncio
import contextlib
import signal
import time
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import structlog
from botocore.exceptions import BotoCoreError, ClientError
from sqlalchemy.exc import DBAPIError
from sqlalchemy.ext.asyncio import AsyncEngine

from headrace import failpoints
from headrace.db import create_engine
from headrace.envelope import decode
from headrace.errors import DatabaseUnavailable, EnvelopeError, SchemaError
from headrace.retry import Backoff
from headrace.schema import TableSchema, reflect_table
from headrace.settings import Settings
from headrace.sqs import connect_queue, sqs_client
from worker.buffer import Batch, Buffer
from worker.heartbeat import Heartbeat, change_visibility
from worker.inflight import InFlight, Message
from worker.protection import TaskProtection
from worker.sink import Sink

if TYPE_CHECKING:
    from types_aiobotocore_sqs import SQSClient
    from types_aiobotocore_sqs.type_defs import MessageTypeDef

__all__ = ["Worker", "WorkerStats", "run_worker"]

log = structlog.get_logger("worker")

RECEIVE_GRACE_S = 2.0
# After a receive that failed even with botocore's retries (SQS unreachable, say).
RECEIVE_BACKOFF = Backoff(base_s=1.0, cap_s=20.0, attempts=1_000_000)


@dataclass
class WorkerStats:
    receives: int = 0
    messages_received: int = 0
    messages_applied: int = 0
    messages_duplicate: int = 0
    messages_poison: int = 0
    messages_released: int = 0
    rows_inserted: int = 0
    rows_rejected: int = 0
    batches: int = 0
    batch_failures: int = 0
    circuit_opened: int = 0
    schema_drifts: int = 0
    db_retries: int = 0
    task_failures: int = 0
    deletes: int = 0
    protection_enabled: int = 0
    protection_disabled: int = 0
    protection_failures: int = 0
    last_receive_at: float = 0.0


class Worker:
    def __init__(
        self, settings: Settings, *, queue_url: str | None = None, engine: AsyncEngine | None = None
    ) -> None:
        self.settings = settings
        self.stats = WorkerStats()
        self._queue_url_override = queue_url
        self._engine = engine
        self._own_engine = engine is None
        self._stopping = asyncio.Event()
        self._schemas: dict[str, TableSchema] = {}
        w = settings.worker
        self._inflight = InFlight(
            max_messages=w.max_inflight_messages, max_rows=w.max_inflight_rows
        )
        self._buffer = Buffer(
            flush_rows=w.flush_rows, flush_bytes=w.flush_bytes, flush_age_s=w.flush_age_s
        )
        self._batches: asyncio.Queue[Batch] = asyncio.Queue()
        self._client: SQSClient | None = None
        self._db: AsyncEngine | None = None
        self._db_ok = asyncio.Event()
        self._db_ok.set()
        self._probe: asyncio.Task[None] | None = None
        self._parked: list[Batch] = []  # batches waiting for the database to come back
        self._receiving: set[asyncio.Task[Any]] = set()  # pollers inside a receive call
        self._url = ""
        self._protection: TaskProtection | None = None  # ECS scale-in protection, when on ECS

    def stop(self) -> None:
        """Begin a graceful shutdown (safe to call from a signal handler)."""
        if not self._stopping.is_set():
            log.info("worker_stopping")
            self._stopping.set()

    @property
    def stopping(self) -> bool:
        return self._stopping.is_set()

    async def run(self) -> WorkerStats:
        w = self.settings.worker
        engine = self._engine or create_engine(
            self.settings, pool_size=max(self.settings.db.pool_size, w.sinks)
        )
        self._db = engine
        sink = Sink(
            engine,
            max_statement_bytes=w.max_statement_bytes,
            statement_timeout_s=self.settings.db.statement_timeout_s,
            on_retry=self._count_retry,
        )
        try:
            async with sqs_client(self.settings, pool=w.pollers + w.sinks + 4) as client:
                self._client = client
                info = await connect_queue(client, self.settings, self._queue_url_override)
                self._url = info.url
                if info.redrive_policy is None:
                    log.warning("queue_has_no_dlq", queue=self._url)
                log.info("worker_start", queue=self._url, pollers=w.pollers, sinks=w.sinks)
                heartbeat = Heartbeat(
                    client,
                    self._url,
                    self._inflight,
                    interval_s=w.heartbeat_interval_s,
                    visibility_timeout_s=w.visibility_timeout_s,
                )
                pollers = [
                    asyncio.create_task(self._poll(), name=f"poller-{i}") for i in range(w.pollers)
                ]
                sinks = [
                    asyncio.create_task(self._sink_loop(sink), name=f"sink-{i}")
                    for i in range(w.sinks)
                ]
                aux = [
                    asyncio.create_task(heartbeat.run(), name="heartbeat"),
                    asyncio.create_task(self._age_flusher(), name="age-flusher"),
                ]
                if w.idle_exit_s is not None:
                    aux.append(
                        asyncio.create_task(self._idle_watch(w.idle_exit_s), name="idle-watch")
                    )
                if w.ecs_agent_uri:
                    self._protection = TaskProtection(
                        w.ecs_agent_uri,
                        self._inflight,
                        expires_min=w.protection_expires_min,
                        idle_s=w.protection_idle_s,
                    )
                    aux.append(asyncio.create_task(self._protection.run(), name="protection"))
                await self._supervise([*pollers, *sinks, *aux])
                await self._shutdown(pollers, sinks, aux)
        finally:
            if self._own_engine:
                await engine.dispose()
        log.info(
            "worker_stopped",
            **self.stats.__dict__,
            inflight_peak_messages=self._inflight.peak_messages,
            inflight_peak_rows=self._inflight.peak_rows,
        )
        return self.stats

    async def _supervise(self, tasks: list[asyncio.Task[None]]) -> None:
        """Wait for a stop request; a loop that dies of an error also stops the worker."""
        stop_requested = asyncio.create_task(self._stopping.wait(), name="stop-requested")
        pending: set[asyncio.Task[Any]] = {stop_requested, *tasks}
        while not self.stopping:
            done, pending = await asyncio.wait(pending, return_when=asyncio.FIRST_COMPLETED)
            for task in done:
                if task is not stop_requested and not task.cancelled() and task.exception():
                    self.stats.task_failures += 1
                    log.error("task_failed", task=task.get_name(), error=repr(task.exception()))
                    self.stop()
        stop_requested.cancel()

    # --- receiving ---------------------------------------------------------------------------

    async def _poll(self) -> None:
        assert self._client is not None
        w = self.settings.worker
        failures = 0  # consecutive failed receives
        while not self.stopping:
            await self._db_ok.wait()  # circuit open: receiving would only burn receive counts
            room = await self._inflight.wait_for_room()
            if self.stopping:
                return
            me = asyncio.current_task()
            assert me is not None
            self._receiving.add(me)
            try:
                resp = await self._client.receive_message(
                    QueueUrl=self._url,
                    MaxNumberOfMessages=min(10, room),
                    WaitTimeSeconds=w.wait_time_s,
                    VisibilityTimeout=w.visibility_timeout_s,
                    MessageAttributeNames=["All"],
                    MessageSystemAttributeNames=["ApproximateReceiveCount"],
                )
            except (ClientError, BotoCoreError) as exc:
                failures += 1
                delay = RECEIVE_BACKOFF.delay(failures)
                log.warning(
                    "receive_failed",
                    error=str(exc)[:300],
                    failures=failures,
                    retry_in_s=round(delay, 3),
                )
                await asyncio.sleep(delay)
                continue
            finally:
                self._receiving.discard(me)
            failures = 0
            received_at = time.monotonic()
            self.stats.receives += 1
            messages = resp.get("Messages", [])
            if messages:
                self.stats.last_receive_at = received_at
            for raw in messages:
                if self.stopping:  # received while shutting down: hand straight back
                    await self._release_raw(raw, delay_s=0)
                    continue
                if not self._db_ok.is_set():  # the circuit opened during this receive
                    await self._release_raw(raw, delay_s=5)
                    continue
                try:
                    await self._accept(raw, received_at)
                except Exception as exc:  # the loop must outlive any one message
                    log.exception("accept_failed", message_id=raw.get("MessageId"), error=repr(exc))
                    await self._release_raw(raw, delay_s=5)

    async def _accept(self, raw: MessageTypeDef, received_at: float) -> None:
        self.stats.messages_received += 1
        message_id = raw.get("MessageId", "?")
        receive_count = int(raw.get("Attributes", {}).get("ApproximateReceiveCount", "1"))
        try:
            env = decode(raw.get("Body", ""), dict(raw.get("MessageAttributes", {})))
            schema = await self._schema(env.table)
            drift = _column_mismatch(schema, env.columns)
            if drift is not None:  # a column added since the table was read?
                schema = await self._schema(env.table, refresh=True)
                drift = _column_mismatch(schema, env.columns)
        except (EnvelopeError, SchemaError) as exc:
            await self._poison(raw, receive_count, exc)
            return
        except (DBAPIError, OSError, TimeoutError) as exc:  # reflection needs the database
            self._open_circuit(exc)
            await self._release_raw(raw, delay_s=5)
            return
        message = Message(
            message_id=message_id,
            receipt=raw["ReceiptHandle"],
            envelope=env,
            receive_count=receive_count,
            deadline=received_at + self.settings.worker.visibility_timeout_s,
        )
        self._inflight.add(message)
        if drift is not None:
            self._park(Batch(env.table, env.columns, [message]), drift)
            return
        batch = self._buffer.add(message)
        if batch is not None:
            await self._batches.put(batch)

    async def _schema(self, table: str, *, refresh: bool = False) -> TableSchema:
        schema = None if refresh else self._schemas.get(table)
        if schema is None:
            assert self._db is not None
            async with asyncio.timeout(self.settings.db.statement_timeout_s):
                async with self._db.connect() as conn:
                    schema = await reflect_table(conn, table, allowed=self.settings.worker.tables)
            self._schemas[table] = schema
        return schema

    async def _release_raw(self, raw: MessageTypeDef, *, delay_s: int) -> None:
        assert self._client is not None
        with contextlib.suppress(ClientError, BotoCoreError):
            await self._client.change_message_visibility(
                QueueUrl=self._url, ReceiptHandle=raw["ReceiptHandle"], VisibilityTimeout=delay_s
            )

    # --- the database circuit ----------------------------------------------------------------

    def _count_retry(self, errno: int | None) -> None:
        self.stats.db_retries += 1

    def _park(self, batch: Batch, exc: BaseException) -> None:
        """Keep a batch the database cannot take now; the heartbeat keeps it invisible."""
        self._parked.append(batch)
        self._open_circuit(exc)

    def _open_circuit(self, exc: BaseException) -> None:
        """Stop receiving until the database answers again (probed with backoff).

        Also opened on schema drift (the table lost a column our messages carry, or the
        table itself): the messages stay in the queue, not in the DLQ, until the table
        matches them again.
        """
        if self._db_ok.is_set():
            self.stats.circuit_opened += 1
            if isinstance(exc, SchemaError):
                self.stats.schema_drifts += 1
            log.error("circuit_open", error=repr(exc)[:300])
            self._db_ok.clear()
        if self._probe is None or self._probe.done():
            self._probe = asyncio.create_task(self._probe_db(), name="db-probe")

    async def _probe_db(self) -> None:
        assert self._db is not None
        backoff = Backoff(base_s=0.5, cap_s=30.0, attempts=1_000_000)
        attempt = 0
        while not self.stopping:
            attempt += 1
            await asyncio.sleep(backoff.delay(attempt))
            try:
                async with asyncio.timeout(self.settings.db.connect_timeout_s + 5):
                    async with self._db.connect() as conn:
                        await conn.exec_driver_sql("SELECT 1")
                    drift = await self._schema_drift()
            except Exception as exc:
                log.warning("circuit_probe_failed", attempt=attempt, error=repr(exc)[:200])
                if isinstance(exc, TimeoutError):
                    await self._db.dispose()
                continue
            if drift is not None:
                log.error(
                    "schema_drift",
                    error=str(drift)[:500],
                    attempt=attempt,
                    held_messages=sum(len(b.messages) for b in self._parked),
                    hint="messages are kept in the queue until the table matches them again",
                )
                continue
            log.info("circuit_closed", attempts=attempt)
            parked, self._parked = self._parked, []
            for batch in parked:
                await self._batches.put(batch)
            self._db_ok.set()
            return

    async def _schema_drift(self) -> SchemaError | None:
        """Re-read the tables of parked batches; the first mismatch left, if any."""
        for table in {b.table for b in self._parked}:
            try:
                schema = await self._schema(table, refresh=True)
            except SchemaError as exc:
                return exc
            for batch in self._parked:
                if batch.table == table and (error := _column_mismatch(schema, batch.columns)):
                    return error
        return None

    async def _poison(self, raw: MessageTypeDef, receive_count: int, exc: Exception) -> None:
        """Leave a bad message to SQS's redrive: never delete it, back off its visibility."""
        self.stats.messages_poison += 1
        delay = min(self.settings.worker.visibility_timeout_s, 2 ** min(receive_count, 10))
        log.error(
            "poison_message",
            message_id=raw.get("MessageId"),
            receive_count=receive_count,
            error=str(exc)[:500],
            retry_in_s=delay,
        )
        await self._release_raw(raw, delay_s=delay)

    # --- flushing ----------------------------------------------------------------------------

    async def _age_flusher(self) -> None:
        interval = min(0.2, self.settings.worker.flush_age_s / 2)
        while True:
            await asyncio.sleep(interval)
            for batch in self._buffer.due():
                await self._batches.put(batch)

    async def _sink_loop(self, sink: Sink) -> None:
        while True:
            batch = await self._batches.get()
            try:
                if self._protection is not None:  # protected before anything commits
                    await self._protection.settled()
                await self._flush(sink, batch)
            finally:
                self._batches.task_done()

    async def _flush(self, sink: Sink, batch: Batch) -> None:
        started = time.perf_counter()
        schema = self._schemas[batch.table]
        try:
            result = await sink.write(schema, [m.envelope for m in batch.messages])
        except asyncio.CancelledError:
            await self._release(batch.messages)
            raise
        except (DatabaseUnavailable, SchemaError, OSError, TimeoutError) as exc:
            # The database or the table, not the batch: keep the messages (the heartbeat
            # keeps them invisible), stop receiving, retry once the probe says it can work.
            self._park(batch, exc)
            return
        except Exception as exc:
            self.stats.batch_failures += 1
            log.error(
                "batch_failed",
                table=batch.table,
                messages=len(batch.messages),
                error=repr(exc)[:500],
            )
            await self._release(
                batch.messages, delay_s=min(30, self.settings.worker.visibility_timeout_s)
            )
            return
        await failpoints.hit("worker.after_commit")
        await self._delete(batch.messages)
        self.stats.batches += 1
        self.stats.messages_applied += len(result.applied)
        self.stats.messages_duplicate += len(batch.messages) - len(result.applied)
        self.stats.rows_inserted += result.rows_inserted
        self.stats.rows_rejected += result.rows_rejected
        log.info(
            "batch_flushed",
            table=batch.table,
            messages=len(batch.messages),
            applied=len(result.applied),
            duplicates=len(result.duplicates),
            rows_inserted=result.rows_inserted,
            rows_rejected=result.rows_rejected,
            statements=result.statements,
            seconds=round(time.perf_counter() - started, 4),
        )

    async def _delete(self, messages: list[Message]) -> None:
        """Delete after commit. A failed delete only means a redelivery the ledger absorbs."""
        assert self._client is not None
        for i in range(0, len(messages), 10):
            group = messages[i : i + 10]
            entries = [{"Id": str(n), "ReceiptHandle": m.receipt} for n, m in enumerate(group)]
            try:
                resp = await self._client.delete_message_batch(QueueUrl=self._url, Entries=entries)  # type: ignore[arg-type]
                self.stats.deletes += len(resp.get("Successful", []))
                for failed in resp.get("Failed", []):
                    log.warning(
                        "delete_entry_failed",
                        code=failed.get("Code"),
                        message_id=group[int(failed["Id"])].message_id,
                    )
            except (ClientError, BotoCoreError) as exc:
                log.warning("delete_failed", error=str(exc)[:300], messages=len(group))
        await self._inflight.remove(messages)

    async def _release(self, messages: list[Message], delay_s: int = 0) -> None:
        """Hand messages back to the queue (visibility ``delay_s``) without applying them."""
        if self._client is not None and messages:
            await change_visibility(self._client, self._url, messages, delay_s)
            self.stats.messages_released += len(messages)
        await self._inflight.remove(messages)

    # --- stopping ----------------------------------------------------------------------------

    async def _idle_watch(self, idle_s: float) -> None:
        start = time.monotonic()
        while True:
            await asyncio.sleep(min(0.5, idle_s / 4))
            if not self._db_ok.is_set():  # waiting for the database is not idleness
                start = time.monotonic()
                continue
            last = max(self.stats.last_receive_at, start)
            if len(self._inflight) == 0 and time.monotonic() - last >= idle_s:
                if await self._queue_has_messages():  # e.g. released ones, not yet visible
                    start = time.monotonic()
                    continue
                log.info("worker_idle_exit", idle_s=idle_s)
                self.stop()
                return

    async def _queue_has_messages(self) -> bool:
        assert self._client is not None
        try:
            resp = await self._client.get_queue_attributes(
                QueueUrl=self._url,
                AttributeNames=[
                    "ApproximateNumberOfMessages",
                    "ApproximateNumberOfMessagesNotVisible",
                ],
            )
        except (ClientError, BotoCoreError):
            return True
        attrs = resp.get("Attributes", {})
        return any(
            int(attrs.get(k, "0"))
            for k in ("ApproximateNumberOfMessages", "ApproximateNumberOfMessagesNotVisible")
        )

    async def _shutdown(
        self,
        pollers: list[asyncio.Task[None]],
        sinks: list[asyncio.Task[None]],
        aux: list[asyncio.Task[None]],
    ) -> None:
        deadline = time.monotonic() + self.settings.worker.shutdown_deadline_s
        # 1. Stop receiving. A poller waiting for room or for the database is cancelled. One
        #    inside a long poll gets a short grace: a long poll returns as soon as messages are
        #    there, so one still waiting has most likely got nothing; one that returns in the
        #    grace hands back what it got (a cancelled receive would leave its messages
        #    invisible for a whole visibility timeout).
        for task in pollers:
            if task not in self._receiving:
                task.cancel()
        await asyncio.wait(pollers, timeout=RECEIVE_GRACE_S)
        for task in pollers:
            task.cancel()
        await asyncio.gather(*pollers, return_exceptions=True)
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
        leftover: list[Message] = []
        while not self._batches.empty():
            leftover.extend(self._batches.get_nowait().messages)
        leftover.extend(self._inflight.snapshot())
        if leftover:
            await self._release(list({id(m): m for m in leftover}.values()))
        if self._probe is not None:
            aux.append(self._probe)
        for task in aux:
            task.cancel()
        await asyncio.gather(*aux, return_exceptions=True)
        if self._protection is not None:  # last: nothing is held any more
            await self._protection.close()
            p, s = self._protection, self.stats
            s.protection_enabled, s.protection_disabled = p.enables, p.disables
            s.protection_failures = p.failures


def _column_mismatch(schema: TableSchema, columns: tuple[str, ...]) -> SchemaError | None:
    try:
        schema.specs_for(columns)
    except SchemaError as exc:
        return exc
    return None


async def run_worker(settings: Settings, *, queue_url: str | None = None) -> WorkerStats:
    """Run a worker until SIGTERM/SIGINT (or idle exit), handling the signals gracefully."""
    worker = Worker(settings, queue_url=queue_url)
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, worker.stop)
    try:
        return await worker.run()
    finally:
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.remove_signal_handler(sig)
