"""Concurrent SendMessageBatch calls: ≤10 entries and ≤ the queue's byte limit per call.

Entries that come back in ``Failed`` are retried with the shared backoff unless SQS says the
fault is the sender's (then the run stops with the reason). botocore's standard retry mode
handles throttling and 5xx of whole calls underneath; a call that still fails with a
transient error (its attempts or botocore's retry quota ran out, e.g. during an outage) is
made again with a slower backoff, so SQS being away for a minute or two does not stop the
run. A send that took effect but lost its answer becomes a duplicate the worker's ledger drops.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable

import structlog

from headrace import failpoints
from headrace.envelope import EncodedMessage
from headrace.errors import QueueError
from headrace.retry import Backoff
from headrace.sqs import MAX_BATCH_ENTRIES, OutgoingMessage, Queue

__all__ = ["Sender"]

log = structlog.get_logger("producer.sender")


class Sender:
    def __init__(
        self,
        queue: Queue,
        *,
        concurrency: int,
        max_batch_bytes: int,
        on_sent: Callable[[EncodedMessage], None],
        on_retry: Callable[[], None],
        signing_key: bytes | None = None,
        backoff: Backoff | None = None,
        call_backoff: Backoff | None = None,
    ) -> None:
        self._queue = queue
        self._max_batch_bytes = max_batch_bytes
        self._on_sent = on_sent
        self._key = signing_key
        self._on_retry = on_retry
        self._backoff = backoff or Backoff(base_s=0.2, cap_s=20.0, attempts=10)
        self._call_backoff = call_backoff or Backoff(base_s=1.0, cap_s=20.0, attempts=10)
        # Waiting messages are bounded by bytes, not by count: one call's worth (so small
        # messages still fill a batch of 10) and never more than one full-size message, whose
        # body is megabytes of memory while it waits.
        self._pending: asyncio.Queue[EncodedMessage | None] = asyncio.Queue()
        self._queued_bytes = 0
        self._room = asyncio.Condition()
        self._tasks: list[asyncio.Task[None]] = []
        self._concurrency = concurrency
        self._failure: BaseException | None = None

    async def __aenter__(self) -> Sender:
        self._tasks = [
            asyncio.create_task(self._run(), name=f"sender-{i}") for i in range(self._concurrency)
        ]
        return self

    async def __aexit__(self, *exc: object) -> None:
        if exc[0] is not None:
            for task in self._tasks:
                task.cancel()
            await asyncio.gather(*self._tasks, return_exceptions=True)

    async def submit(self, message: EncodedMessage) -> None:
        """Queue a message (waits while the senders are busy: backpressure on the reader)."""
        if self._failure is not None:
            raise self._failure
        async with self._room:
            await self._room.wait_for(lambda: self._fits(message.size))
            if self._failure is not None:
                raise self._failure
            self._queued_bytes += message.size
            self._pending.put_nowait(message)

    def _fits(self, size: int) -> bool:
        return (
            self._failure is not None
            or self._queued_bytes == 0
            or self._queued_bytes + size <= self._max_batch_bytes
        )

    async def _taken(self, messages: list[EncodedMessage]) -> None:
        async with self._room:
            self._queued_bytes -= sum(m.size for m in messages)
            self._room.notify_all()

    async def close(self) -> None:
        """Send everything queued, then stop; raises the first sending failure."""
        for _ in self._tasks:
            self._pending.put_nowait(None)
        await asyncio.gather(*self._tasks)
        if self._failure is not None:
            raise self._failure

    async def _run(self) -> None:
        while True:
            first = await self._pending.get()
            if first is None:
                return
            batch = [first]
            size = first.size
            while len(batch) < MAX_BATCH_ENTRIES and not self._pending.empty():
                nxt = self._pending._queue[0]  # type: ignore[attr-defined]
                if nxt is None or size + nxt.size > self._max_batch_bytes:
                    break
                batch.append(self._pending.get_nowait())  # type: ignore[arg-type]
                size += nxt.size
            await self._taken(batch)  # room for the next message while this batch is sent
            if self._failure is not None:
                continue  # drain, so a reader blocked in submit() wakes up and sees the failure
            try:
                await self._send(batch)
            except Exception as exc:
                log.error("send_failed", error=repr(exc)[:500])
                self._failure = self._failure or exc
                async with self._room:  # a reader waiting for room sees the failure
                    self._room.notify_all()

    async def _send(self, batch: list[EncodedMessage]) -> None:
        """Send until every message is confirmed; retry what failed, stop on a sender fault."""
        pending = list(batch)
        attempt = calls_failed = 0
        while pending:
            try:
                outcome = await self._queue.send(
                    [OutgoingMessage(str(m.seq), m.body, m.attributes(self._key)) for m in pending]
                )
            except QueueError as exc:
                calls_failed += 1
                if not exc.transient:
                    raise
                if self._call_backoff.exhausted(calls_failed):
                    raise QueueError(
                        f"SendMessageBatch still failing after {calls_failed} calls: {exc}"
                    ) from exc
                self._on_retry()
                await self._call_backoff.pause(
                    calls_failed, "send_call_failed", logger=log, error=str(exc)[:300]
                )
                continue
            attempt += 1
            await failpoints.hit("producer.after_send")
            for index in outcome.ok:
                self._on_sent(pending[index])
            if not outcome.failed:
                return
            fatal = [f for f in outcome.failed if f[3]]
            if fatal:
                index, code, text, _ = fatal[0]
                raise QueueError(f"SQS refused message seq={pending[index].seq}: {code}: {text}")
            if self._backoff.exhausted(attempt):
                raise QueueError(
                    f"{len(outcome.failed)} entries still failing after {attempt} attempts: "
                    f"{outcome.failed[0][1]}"
                )
            pending = [pending[index] for index, *_ in outcome.failed]
            self._on_retry()
            await self._backoff.pause(
                attempt,
                "send_entries_failed",
                logger=log,
                failed=len(pending),
                code=outcome.failed[0][1],
            )
