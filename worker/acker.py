"""Acknowledgement: delete messages whose rows committed, hand back the others.

A delete comes only after the commit; a failed delete (an expired receipt, SQS away) only
means a redelivery, which the ledger turns into a no-op. A released message becomes visible
again after ``delay_s`` and counts one more receive when it comes back.
"""

from __future__ import annotations

from collections.abc import Sequence

import structlog

from headrace.errors import QueueError
from headrace.metrics import WorkerMetrics
from headrace.sqs import Queue
from worker.inflight import InFlight, Message

__all__ = ["Acker"]

log = structlog.get_logger("worker.acker")


class Acker:
    def __init__(
        self, queue: Queue, inflight: InFlight, metrics: WorkerMetrics, *, max_delay_s: int
    ) -> None:
        self._queue = queue
        self._inflight = inflight
        self._metrics = metrics
        self._max_delay_s = max_delay_s

    async def delete(self, messages: list[Message]) -> list[Message]:
        """Delete committed messages and stop holding them; returns those SQS deleted."""
        deleted: list[Message] = []
        try:
            outcome = await self._queue.delete([m.receipt for m in messages])
        except QueueError as exc:
            log.warning("delete_failed", error=str(exc)[:300], messages=len(messages))
        else:
            self._metrics.deletes.inc(len(outcome.ok))
            deleted = [messages[i] for i in outcome.ok]
            for index, code, _, _ in outcome.failed:
                log.warning("delete_entry_failed", code=code, message_id=messages[index].message_id)
        await self._inflight.remove(messages)
        return deleted

    async def release(self, messages: Sequence[Message], delay_s: int = 0) -> None:
        """Hand messages back unapplied (visible again after ``delay_s``)."""
        if messages:
            await self.set_visibility([m.receipt for m in messages], delay_s, messages)
            self._metrics.messages.labels("released").inc(len(messages))
        await self._inflight.remove(list(messages))

    async def poison(
        self, message_id: str, receipt: str, receive_count: int, exc: BaseException
    ) -> None:
        """A message that cannot be applied: never deleted, visible again after a delay that
        grows with its receive count, so SQS moves it to the DLQ after ``maxReceiveCount``."""
        self._metrics.messages.labels("poison").inc()
        delay = min(self._max_delay_s, 2 ** min(receive_count, 10))
        log.error(
            "poison_message",
            message_id=message_id,
            receive_count=receive_count,
            error=str(exc)[:500],
            retry_in_s=delay,
        )
        await self.set_visibility([receipt], delay)

    async def poison_held(self, messages: Sequence[Message], exc: BaseException) -> None:
        """:meth:`poison` for messages this worker holds, which it then stops holding."""
        for m in messages:
            await self.poison(m.message_id, m.receipt, m.receive_count, exc)
        await self._inflight.remove(list(messages))

    async def set_visibility(
        self, receipts: Sequence[str], timeout_s: int, messages: Sequence[Message] | None = None
    ) -> list[int]:
        """ChangeMessageVisibility for each receipt; returns the indices SQS accepted."""
        outcome = await self._queue.change_visibility(receipts, timeout_s)
        for index, code, text, _ in outcome.failed:
            # Typically an expired receipt: the message went back to the queue and the ledger
            # will make its redelivery a no-op.
            log.warning(
                "change_visibility_failed",
                code=code,
                error=text[:300],
                message_id=messages[index].message_id if messages else None,
            )
        return outcome.ok
