"""The buffer's grouping: a batch is one statement shape (table, column set, duplicate mode)."""

from __future__ import annotations

import time

from headrace.envelope import Envelope
from worker.buffer import Buffer
from worker.inflight import Message


def _message(i: int, columns: tuple[str, ...], mode: str) -> Message:
    env = Envelope.from_rows("a" * 32, i, "t", columns, "s.csv", [["1", "2"]], [i + 2])
    env.on_duplicate = mode
    return Message(f"m{i}", f"r{i}", env, receive_count=1, deadline=time.monotonic() + 60)


def test_duplicate_modes_are_never_batched_together() -> None:
    buffer = Buffer(flush_rows=1000, flush_bytes=1 << 20, flush_age_s=60)
    for i, (cols, mode) in enumerate(
        [(("a", "b"), "error"), (("b", "a"), "error"), (("a", "b"), "update"), (("a", "b"), "skip")]
    ):
        assert buffer.add(_message(i, cols, mode)) is None
    batches = buffer.drain()
    shapes = sorted(
        (sorted(b.columns), [m.envelope.on_duplicate for m in b.messages]) for b in batches
    )
    assert shapes == [
        (["a", "b"], ["error", "error"]),  # column order alone does not split a batch
        (["a", "b"], ["skip"]),
        (["a", "b"], ["update"]),
    ]
