"""Visibility heartbeat: extends every in-flight message before SQS would hand it out again.

ChangeMessageVisibility restarts the timer from now, so each beat sets the full visibility
timeout again for messages whose deadline is closer than two beats away — but never past
SQS's cap of 12 hours since the message was received: near it, the extension shrinks to what
is left, and then stops (the message goes back to the queue; the ledger makes its redelivery
a no-op if it was applied after all).
"""

from __future__ import annotations

import asyncio
import time

import structlog

from headrace import failpoints
from headrace.metrics import WorkerMetrics
from worker.acker import Acker
from worker.inflight import InFlight, Message

__all__ = ["Heartbeat"]

log = structlog.get_logger("worker.heartbeat")

VISIBILITY_CAP_S = 12 * 3600  # SQS: at most 12 hours invisible since the receive
CAP_MARGIN_S = 60


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
        by_timeout: dict[int, list[Message]] = {}
        for m in due:
            left = int(m.received_at + VISIBILITY_CAP_S - CAP_MARGIN_S - started)
            if left > 0:
                by_timeout.setdefault(min(self._visibility_s, left), []).append(m)
        extended = 0
        for timeout_s, group in by_timeout.items():
            ok = await self._acker.set_visibility([m.receipt for m in group], timeout_s, group)
            for index in ok:
                group[index].deadline = started + timeout_s
            extended += len(ok)
            self._metrics.heartbeat_calls.inc(len(group))
            self._metrics.heartbeat_failures.inc(len(group) - len(ok))
        log.debug("heartbeat", extended=extended, due=len(due))
