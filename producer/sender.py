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
from typing import TYPE_CHECKING

import structlog
from botocore.exceptions import BotoCoreError, ClientError

from headrace import failpoints
from headrace.aws import is_transient
from headrace.envelope import EncodedMessage
from headrace.errors import QueueError
from headrace.retry import Backoff

if TYPE_CHECKING:
    from types_aiobotocore_sqs import SQSClient

__all__ = ["Sender"]

log = structlog.get_logger("producer.sender")
MAX_ENTRIES = 10


class Sender:
    def __init__(
        self,
        client: SQSClient,
        queue_url: str,
        *,
        concurrency: int,
        max_batch_bytes: int,
        on_sent: Callable[[EncodedMessage], None],
        backoff: Backoff | None = None,
        call_backoff: Backoff | None = None,
    ) -> None:
        self._client = client
        self._url = queue_url
        self._max_batch_bytes = max_batch_bytes
        self._on_sent = on_sent
        self._backoff = backoff or Backoff(base_s=0.2, cap_s=20.0, attempts=10)
        self._call_backoff = call_backoff or Backoff(base_s=1.0, cap_s=20.0, attempts=10)
        self._queue: asyncio.Queue[EncodedMessage | None] = asyncio.Queue(maxsize=concurrency)
        self._tasks: list[asyncio.Task[None]] = []
        self._concurrency = concurrency
        self._failure: BaseException | None = None
        self.requests = 0

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
        await self._queue.put(message)

    async def close(self) -> None:
        """Send everything queued, then stop; raises the first sending failure."""
        for _ in self._tasks:
            await self._queue.put(None)
        await asyncio.gather(*self._tasks)
        if self._failure is not None:
            raise self._failure

    async def _run(self) -> None:
        while True:
            first = await self._queue.get()
            if first is None:
                return
            if self._failure is not None:
                continue  # drain, so a reader blocked in submit() wakes up and sees the failure
            batch = [first]
            size = first.size
            while len(batch) < MAX_ENTRIES and not self._queue.empty():
                nxt = self._queue._queue[0]  # type: ignore[attr-defined]
                if nxt is None or size + nxt.size > self._max_batch_bytes:
                    break
                batch.append(self._queue.get_nowait())  # type: ignore[arg-type]
                size += nxt.size
            try:
                await self._send(batch)
            except Exception as exc:
                log.error("send_failed", error=repr(exc)[:500])
                self._failure = self._failure or exc

    async def _send(self, batch: list[EncodedMessage]) -> None:
        pending = {str(m.seq): m for m in batch}
        attempt = calls_failed = 0
        while pending:
            self.requests += 1
            try:
                resp = await self._client.send_message_batch(
                    QueueUrl=self._url,
                    Entries=[
                        {"Id": key, "MessageBody": m.body, "MessageAttributes": m.attributes()}
                        for key, m in pending.items()
                    ],
                )
            except (BotoCoreError, ClientError) as exc:
                calls_failed += 1
                if not is_transient(exc):
                    raise QueueError(f"SendMessageBatch refused: {exc}") from exc
                if calls_failed >= self._call_backoff.attempts:
                    raise QueueError(
                        f"SendMessageBatch still failing after {calls_failed} calls: {exc}"
                    ) from exc
                delay = self._call_backoff.delay(calls_failed)
                log.warning(
                    "send_call_failed",
                    calls_failed=calls_failed,
                    delay_s=round(delay, 3),
                    error=str(exc)[:300],
                )
                await asyncio.sleep(delay)
                continue
            attempt += 1
            await failpoints.hit("producer.after_send")
            for ok in resp.get("Successful", []):
                message = pending.pop(ok["Id"])
                self._on_sent(message)
            failed = resp.get("Failed", [])
            if not failed:
                return
            fatal = [f for f in failed if f.get("SenderFault")]
            if fatal:
                f = fatal[0]
                raise QueueError(
                    f"SQS refused message seq={f['Id']}: {f.get('Code')}: {f.get('Message')}"
                )
            if attempt >= self._backoff.attempts:
                raise QueueError(
                    f"{len(failed)} entries still failing after {attempt} attempts: {failed[0]}"
                )
            delay = self._backoff.delay(attempt)
            log.warning(
                "send_entries_failed",
                failed=len(failed),
                attempt=attempt,
                delay_s=round(delay, 3),
                code=failed[0].get("Code"),
            )
            await asyncio.sleep(delay)
