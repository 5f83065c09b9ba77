"""Messages this worker holds: their receipts, visibility deadlines and the backpressure bound."""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass, field

from headrace.envelope import Envelope
from headrace.foreign import S3Pointer
from headrace.metrics import WorkerMetrics
from headrace.sqs import MAX_BATCH_ENTRIES

__all__ = ["InFlight", "Message"]


@dataclass(eq=False)
class Message:
    message_id: str
    receipt: str
    envelope: Envelope
    receive_count: int
    deadline: float  # monotonic time at which SQS makes the message visible again
    received_at: float = field(default_factory=time.monotonic)
    sent_at: float | None = None  # SentTimestamp (epoch seconds), when SQS told us
    pointer: S3Pointer | None = None  # where an Extended Client message's payload is

    @property
    def rows(self) -> int:
        return self.envelope.row_count + len(self.envelope.rejects)


class InFlight:
    """The set of received, not yet deleted messages, bounded by count, rows and bytes."""

    def __init__(
        self,
        *,
        max_messages: int,
        max_rows: int,
        max_bytes: int = 2**62,
        metrics: WorkerMetrics | None = None,
    ) -> None:
        self._metrics = metrics or WorkerMetrics()
        self._max_messages = max_messages
        self._max_rows = max_rows
        self._max_bytes = max_bytes
        self._messages: dict[int, Message] = {}
        self._rows = 0
        self._bytes = 0  # decoded bytes of the messages held
        self._avg_rows = max(1.0, max_rows / 4)  # until messages are seen: assume big ones
        self._avg_bytes = max(1.0, min(max_bytes / 4, 16 * 1024 * 1024))
        self._changed = asyncio.Condition()
        self._held = asyncio.Event()  # set while anything is held
        self._empty_since: float | None = time.monotonic()
        self._peak_messages = 0
        self._peak_rows = 0
        # Room promised to a receive under way, per polling task:
        # [messages, estimated rows, estimated bytes].
        self._reserved: dict[asyncio.Task[object], list[float]] = {}
        self._metrics.inflight_oldest_age.set_function(self.oldest_age)  # read at each scrape

    def __len__(self) -> int:
        return len(self._messages)

    @property
    def rows(self) -> int:
        return self._rows

    def room(self) -> int:
        """How many more messages a receive may take (0 when full).

        Messages carry from a few rows to tens of thousands, so the row and byte bounds are
        applied with the average rows and bytes per message seen so far: a receive never takes
        far more than fits. Room reserved for receives under way is taken already.
        """
        messages = len(self._messages)
        rows, size = float(self._rows), float(self._bytes)
        for task, (n, r, b) in self._reserved.items():
            if not task.done():
                messages += int(n)
                rows += r
                size += b
        if rows >= self._max_rows or size >= self._max_bytes:
            return 0
        by_rows = max(1, int((self._max_rows - rows) / self._avg_rows))
        by_bytes = max(1, int((self._max_bytes - size) / self._avg_bytes))
        return max(0, min(self._max_messages - messages, by_rows, by_bytes))

    async def wait_for_room(self) -> int:
        """Wait for room, then reserve it (≤ one receive's worth) for the caller's receive.

        Concurrent pollers would otherwise each see the same room and take it twice. The
        reservation turns into messages as the calling task adds them (:meth:`add`), and what is
        left of it is dropped at that task's next call (or when the task ends).
        """
        me = asyncio.current_task()
        assert me is not None
        async with self._changed:
            if self._reserved.pop(me, None) is not None:
                self._changed.notify_all()
            await self._changed.wait_for(lambda: self.room() > 0)
            room = min(MAX_BATCH_ENTRIES, self.room())
            self._reserved[me] = [room, room * self._avg_rows, room * self._avg_bytes]
            return room

    async def wait_empty(self) -> None:
        async with self._changed:
            await self._changed.wait_for(lambda: not self._messages)

    async def wait_held(self) -> None:
        """Return once at least one message is held."""
        await self._held.wait()

    @property
    def empty_since(self) -> float | None:
        """Monotonic time since which nothing is held (``None`` while something is)."""
        return self._empty_since

    def add(self, message: Message) -> None:
        try:
            task = asyncio.current_task()
        except RuntimeError:  # no event loop running
            task = None
        reserved = self._reserved.get(task) if task is not None else None
        if reserved is not None:
            reserved[0] = max(0, reserved[0] - 1)
            reserved[1] = max(0.0, reserved[1] - message.rows)
            reserved[2] = max(0.0, reserved[2] - message.envelope.raw_bytes)
        self._messages[id(message)] = message
        self._rows += message.rows
        self._bytes += message.envelope.raw_bytes
        self._avg_rows = 0.8 * self._avg_rows + 0.2 * max(1, message.rows)
        self._avg_bytes = 0.8 * self._avg_bytes + 0.2 * max(1, message.envelope.raw_bytes)
        self._empty_since = None
        self._held.set()
        if len(self._messages) > self._peak_messages:
            self._peak_messages = len(self._messages)
            self._metrics.inflight_peak_messages.set(self._peak_messages)
        if self._rows > self._peak_rows:
            self._peak_rows = self._rows
            self._metrics.inflight_peak_rows.set(self._peak_rows)
        self._gauge()

    async def remove(self, messages: list[Message]) -> None:
        for m in messages:
            if self._messages.pop(id(m), None) is not None:
                self._rows -= m.rows
                self._bytes -= m.envelope.raw_bytes
        self._gauge()
        if not self._messages and self._empty_since is None:
            self._empty_since = time.monotonic()
            self._held.clear()
        async with self._changed:
            self._changed.notify_all()

    def _gauge(self) -> None:
        self._metrics.inflight_messages.set(len(self._messages))
        self._metrics.inflight_rows.set(self._rows)

    def oldest_age(self) -> float:
        """Now minus the SentTimestamp of the oldest message held (0 when none is)."""
        sent = [m.sent_at for m in list(self._messages.values()) if m.sent_at is not None]
        return max(0.0, time.time() - min(sent)) if sent else 0.0

    def snapshot(self) -> list[Message]:
        return list(self._messages.values())
