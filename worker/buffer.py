"""Rows buffered across messages, flushed as one batch by rows, bytes or age.

Messages are grouped by table, set of columns and duplicate mode (envelope ``dup``): one batch
becomes one bulk INSERT statement shape (the sink arranges each message's values in the
statement's column order, so files whose headers list the same columns in different orders
share batches).
A message is never split across batches, so its rows and its ledger entry commit together.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field

from worker.inflight import Message

__all__ = ["Batch", "Buffer"]

GroupKey = tuple[str, tuple[str, ...], str]


@dataclass
class Batch:
    table: str
    columns: tuple[str, ...]
    messages: list[Message] = field(default_factory=list)
    rows: int = 0
    raw_bytes: int = 0
    opened_at: float = field(default_factory=time.monotonic)


class Buffer:
    def __init__(self, *, flush_rows: int, flush_bytes: int, flush_age_s: float) -> None:
        self._flush_rows = flush_rows
        self._flush_bytes = flush_bytes
        self._flush_age_s = flush_age_s
        self._open: dict[GroupKey, Batch] = {}

    def __len__(self) -> int:
        return sum(len(b.messages) for b in self._open.values())

    def add(self, message: Message) -> Batch | None:
        """Buffer a message; returns a batch that became full, if any."""
        env = message.envelope
        key = (env.table, tuple(sorted(env.columns)), env.on_duplicate)
        batch = self._open.get(key)
        if batch is None:
            batch = self._open[key] = Batch(env.table, env.columns)
        batch.messages.append(message)
        batch.rows += message.rows
        batch.raw_bytes += env.raw_bytes
        if batch.rows >= self._flush_rows or batch.raw_bytes >= self._flush_bytes:
            return self._open.pop(key)
        return None

    def due(self, now: float | None = None) -> list[Batch]:
        """Batches older than the age limit."""
        now = time.monotonic() if now is None else now
        keys = [k for k, b in self._open.items() if now - b.opened_at >= self._flush_age_s]
        return [self._open.pop(k) for k in keys]

    def drain(self) -> list[Batch]:
        batches = list(self._open.values())
        self._open.clear()
        return batches
