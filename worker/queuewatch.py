"""The queue's depth, as every worker sees it: main queue and DLQ, every few seconds.

One GetQueueAttributes per queue per ``metrics.queue_poll_s`` feeds
``headrace_queue_messages{queue,state}``; the DLQ is the one the main queue's RedrivePolicy
names, looked up once. Whether the main queue answered the last poll is the worker's
readiness (with the database circuit). A failed poll is logged, never raised: the gauges
keep their last value and readiness turns false until a poll answers again.
"""

from __future__ import annotations

import asyncio

import structlog

from headrace.errors import QueueError
from headrace.metrics import QUEUE_ATTRIBUTES, WorkerMetrics
from headrace.sqs import Queue

__all__ = ["QueueWatch"]

log = structlog.get_logger("worker.queuewatch")


class QueueWatch:
    def __init__(self, queue: Queue, metrics: WorkerMetrics, *, interval_s: float) -> None:
        self._queue = queue
        self._metrics = metrics
        self._interval_s = interval_s
        self._dlq: Queue | None = None
        self._dlq_looked_up = False
        self.reachable = False  # the main queue answered the last poll

    async def run(self) -> None:
        while True:
            await asyncio.sleep(self._interval_s)
            await self.poll()

    async def poll(self) -> None:
        try:
            attrs = await self._queue.attributes(QUEUE_ATTRIBUTES)
        except QueueError as exc:
            self._reachable(False)
            log.warning("queue_poll_failed", error=str(exc)[:300])
            return
        self._metrics.queue_depth("main", attrs)
        self._reachable(True)
        try:
            if not self._dlq_looked_up:
                self._dlq = await self._queue.dead_letter()
                self._dlq_looked_up = True
            if self._dlq is not None:
                self._metrics.queue_depth("dlq", await self._dlq.attributes(QUEUE_ATTRIBUTES))
        except QueueError as exc:
            log.warning("dlq_poll_failed", error=str(exc)[:300])

    def _reachable(self, ok: bool) -> None:
        self.reachable = ok
        self._metrics.queue_reachable.set(1 if ok else 0)
