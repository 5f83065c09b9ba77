"""The database circuit: stop receiving while the database (or a table) cannot take work.

Opened when a flush gives up on the database (retries ran out, it is down or frozen) or when
a table does not match its messages (schema drift: a column they carry is not there, or a
table named in the allow-list is missing while a migration runs). While open: the pollers
wait instead of receiving (so no receive counts are burnt), the batches that could not be
written are parked — the heartbeat keeps their messages invisible — and a probe asks the
database (and re-reads the tables of parked batches) with backoff. Once both answer, the
parked batches go back to the sinks and receiving resumes.

A database outage is waited out for as long as it lasts. A table mismatch is not: the queue
is untrusted, and one forged message naming a column that will never exist must not stop the
worker for good. A batch parked for its table longer than ``max_park_s`` is given up
(``expire``: its messages become poison) and the circuit closes once nothing else is parked.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable

import structlog
from sqlalchemy.ext.asyncio import AsyncEngine

from headrace.errors import SchemaError
from headrace.metrics import WorkerMetrics
from headrace.retry import Backoff
from worker.buffer import Batch
from worker.tables import Tables, column_mismatch

__all__ = ["Circuit"]

log = structlog.get_logger("worker.circuit")

PROBE_BACKOFF = Backoff(base_s=0.5, cap_s=30.0, attempts=1_000_000)


class Circuit:
    def __init__(
        self,
        engine: AsyncEngine,
        tables: Tables,
        metrics: WorkerMetrics,
        *,
        resume: Callable[[Batch], Awaitable[None]],
        expire: Callable[[Batch, SchemaError], Awaitable[None]],
        probe_timeout_s: float,
        max_park_s: float,
    ) -> None:
        self._engine = engine
        self._tables = tables
        self._metrics = metrics
        self._resume = resume
        self._expire = expire
        self._probe_timeout_s = probe_timeout_s
        self._max_park_s = max_park_s
        self._closed = asyncio.Event()
        self._closed.set()
        self._probe: asyncio.Task[None] | None = None
        self.parked: list[Batch] = []  # batches waiting for the database to come back
        self._parked_for_table: dict[int, float] = {}  # id(batch) -> when, for table mismatches

    @property
    def closed(self) -> bool:
        """Whether the database takes work (receiving may go on)."""
        return self._closed.is_set()

    async def wait_closed(self) -> None:
        await self._closed.wait()

    def park(self, batch: Batch, exc: BaseException) -> None:
        """Keep a batch the database cannot take now, and open the circuit."""
        self.parked.append(batch)
        if isinstance(exc, SchemaError):
            self._parked_for_table.setdefault(id(batch), time.monotonic())
        self.open(exc)

    def open(self, exc: BaseException) -> None:
        """Stop receiving until the probe finds the database (and the parked tables) usable."""
        if self._closed.is_set():
            cause = "schema" if isinstance(exc, SchemaError) else "database"
            self._metrics.circuit_opened.labels(cause).inc()
            self._metrics.circuit_open.set(1)
            log.error("circuit_open", error=repr(exc)[:300])
            self._closed.clear()
        if self._probe is None or self._probe.done():
            self._probe = asyncio.create_task(self._probe_until_closed(), name="db-probe")

    async def stop(self) -> None:
        if self._probe is not None:
            self._probe.cancel()
            await asyncio.gather(self._probe, return_exceptions=True)

    async def _probe_until_closed(self) -> None:
        attempt = 0
        while True:
            attempt += 1
            await asyncio.sleep(PROBE_BACKOFF.delay(attempt))
            try:
                async with asyncio.timeout(self._probe_timeout_s):
                    async with self._engine.connect() as conn:
                        await conn.exec_driver_sql("SELECT 1")
                    mismatched = await self._mismatched()
            except Exception as exc:  # the probe must outlive whatever the database does
                log.warning("circuit_probe_failed", attempt=attempt, error=repr(exc)[:200])
                if isinstance(exc, TimeoutError):
                    await self._engine.dispose()
                continue
            mismatched = await self._expire_overdue(mismatched)
            if mismatched:
                log.error(
                    "schema_drift",
                    error=str(next(iter(mismatched.values())))[:500],
                    attempt=attempt,
                    held_messages=sum(len(b.messages) for b in self.parked),
                    hint="messages wait (up to worker.max_park_s) for the table to match them",
                )
                continue
            log.info("circuit_closed", attempts=attempt)
            parked, self.parked = self.parked, []
            self._parked_for_table.clear()
            for batch in parked:
                await self._resume(batch)
            self._metrics.circuit_open.set(0)
            self._closed.set()
            return

    async def _mismatched(self) -> dict[int, SchemaError]:
        """Re-read the tables of parked batches: id(batch) -> why it does not fit its table."""
        found: dict[int, SchemaError] = {}
        for table in {b.table for b in self.parked}:
            try:
                schema = await self._tables.get(table, refresh=True)
            except SchemaError as exc:
                found.update((id(b), exc) for b in self.parked if b.table == table)
                continue
            for batch in self.parked:
                if batch.table == table and (error := column_mismatch(schema, batch.columns)):
                    found[id(batch)] = error
        return found

    async def _expire_overdue(self, mismatched: dict[int, SchemaError]) -> dict[int, SchemaError]:
        """Give up the mismatched batches parked past ``max_park_s``; the mismatches left."""
        now = time.monotonic()
        for batch in list(self.parked):
            error = mismatched.get(id(batch))
            if error is None:
                continue
            since = self._parked_for_table.setdefault(id(batch), now)  # parked for the DB?
            if now - since >= self._max_park_s:
                self.parked.remove(batch)
                del self._parked_for_table[id(batch)]
                del mismatched[id(batch)]
                await self._expire(batch, error)
        return mismatched
