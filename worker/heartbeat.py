"""Visibility heartbeat: extends every in-flight message before SQS would hand it out again.

ChangeMessageVisibility restarts the timer from now, so each beat sets the full visibility
timeout again for messages whose deadline is closer than two beats away.
"""

from __future__ import annotations

import asyncio
import time

import structlog

from headrace import failpoints
from headrace.metrics import WorkerMetrics
from worker.acker import Acker
from worker.inflight import InFlight

__all__ = ["Heartbeat"]

log = structlog.get_logger("worker.heartbeat")


class Heartbeat:
    def __init__(
        self,
        acker: Acker,
        inflight: InFlight,
        metrics: WorkerMetrics,
        *,
        interval_s: float,
        visibility_timeout_s: int,
    ) -> None:
        self._acker = acker
        self._inflight = inflight
        self._metrics = metrics
        self._interval_s = interval_s
        self._visibility_s = visibility_timeout_s

    async def run(self) -> None:
        while True:
            await asyncio.sleep(self._interval_s)
            await self.beat()

    async def beat(self) -> None:
        now = time.monotonic()
        horizon = now + 2 * self._interval_s + 1
        due = [m for m in self._inflight.snapshot() if m.deadline <= horizon]
        if not due:
            return
        await failpoints.hit("worker.heartbeat")
        started = time.monotonic()
        ok = await self._acker.set_visibility([m.receipt for m in due], self._visibility_s, due)
        for index in ok:
            due[index].deadline = started + self._visibility_s
        self._metrics.heartbeat_calls.inc(len(due))
        self._metrics.heartbeat_failures.inc(len(due) - len(ok))
        log.debug("heartbeat", extended=len(ok), due=len(due))
