"""Messages this worker holds: their receipts, visibility deadlines and the backpressure bound."""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass, field

from headrace.envelope import Envelope

__all__ = ["InFlight", "Message"]


@dataclass(eq=False)
class Message:
    message_id: str
    receipt: str
    envelope: Envelope
    receive_count: int
    deadline: float  # monotonic time at which SQS makes the message visible again
    received_at: float = field(default_factory=time.monotonic)

    @property
    def rows(self) -> int:
        return self.envelope.row_count + len(self.envelope.rejects)


class InFlight:
    """The set of received, not yet deleted messages, bounded by count and rows."""

    def __init__(self, *, max_messages: int, max_rows: int) -> None:
        self._max_messages = max_messages
        self._max_rows = max_rows
        self._messages: dict[int, Message] = {}
        self._rows = 0
        self._avg_rows = max(1.0, max_rows / 4)  # until messages are seen: assume big ones
        self._changed = asyncio.Condition()

    def __len__(self) -> int:
        return len(self._messages)

    @property
    def rows(self) -> int:
        return self._rows

    def room(self) -> int:
        """How many more messages a receive may take (0 when full).

        Messages carry from a few rows to tens of thousands, so the row bound is applied with
        the average rows per message seen so far: a receive never takes far more than fits.
        """
        if self._rows >= self._max_rows:
            return 0
        by_rows = max(1, int((self._max_rows - self._rows) / self._avg_rows))
        return max(0, min(self._max_messages - len(self._messages), by_rows))

    async def wait_for_room(self) -> int:
        async with self._changed:
            await self._changed.wait_for(lambda: self.room() > 0)
            return self.room()

    async def wait_empty(self) -> None:
        async with self._changed:
            await self._changed.wait_for(lambda: not self._messages)

    def add(self, message: Message) -> None:
        self._messages[id(message)] = message
        self._rows += message.rows
        self._avg_rows = 0.8 * self._avg_rows + 0.2 * max(1, message.rows)

    async def remove(self, messages: list[Message]) -> None:
        for m in messages:
            if self._messages.pop(id(m), None) is not None:
                self._rows -= m.rows
        async with self._changed:
            self._changed.notify_all()

    def snapshot(self) -> list[Message]:
        return list(self._messages.values())
