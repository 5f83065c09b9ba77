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
    def __init__(self, queue: Queue, inflight: InFlight, metrics: WorkerMetrics) -> None:
        self._queue = queue
        self._inflight = inflight
        self._metrics = metrics

    async def delete(self, messages: list[Message]) -> None:
        """Delete committed messages and stop holding them."""
        try:
            outcome = await self._queue.delete([m.receipt for m in messages])
        except QueueError as exc:
            log.warning("delete_failed", error=str(exc)[:300], messages=len(messages))
        else:
            self._metrics.deletes.inc(len(outcome.ok))
            for index, code, _, _ in outcome.failed:
                log.warning("delete_entry_failed", code=code, message_id=messages[index].message_id)
        await self._inflight.remove(messages)

    async def release(
        self, messages: Sequence[Message], delay_s: int = 0, *, outcome: str = "released"
    ) -> None:
        """Hand messages back unapplied (visible again after ``delay_s``), counted under
        ``outcome`` (``poison``: never deleted, so SQS moves them to the DLQ in the end)."""
        if messages:
            await self.set_visibility([m.receipt for m in messages], delay_s, messages)
            self._metrics.messages.labels(outcome).inc(len(messages))
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
