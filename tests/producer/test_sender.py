"""The sender's hand-off: bounded by bytes, so full messages do not pile up in memory while
small ones still share a SendMessageBatch call (moto's SQS underneath)."""

from __future__ import annotations

import asyncio
from collections.abc import Sequence

from headrace.envelope import ATTRIBUTE_RESERVE_BYTES, EncodedMessage
from headrace.settings import Settings
from headrace.sqs import BatchOutcome, OutgoingMessage, SqsQueue, open_queue
from producer.sender import Sender

BUDGET = 64 * 1024


class GatedQueue(SqsQueue):
    """The real queue, whose sends wait for ``gate`` and are recorded (entries per call)."""

    def __init__(self, queue: SqsQueue) -> None:
        super().__init__(queue._client, queue.info)
        self.gate = asyncio.Event()
        self.waiting = 0
        self.calls: list[int] = []

    async def send(self, messages: Sequence[OutgoingMessage]) -> BatchOutcome:
        self.waiting += 1
        await self.gate.wait()
        self.waiting -= 1
        self.calls.append(len(messages))
        return await super().send(messages)


def _message(seq: int, body_bytes: int) -> EncodedMessage:
    body = "x" * body_bytes
    return EncodedMessage(seq, body, "json", body_bytes + ATTRIBUTE_RESERVE_BYTES, 1, 0, body_bytes)


async def _settle() -> None:
    """Let every task run until it waits (nothing here waits on I/O while the gate is shut)."""
    for _ in range(50):
        await asyncio.sleep(0)


async def _submit_all(sender: Sender, messages: list[EncodedMessage], done: list[int]) -> None:
    for message in messages:
        await sender.submit(message)
        done.append(message.seq)


async def _held_while_gated(
    settings: Settings, messages: list[EncodedMessage], concurrency: int
) -> tuple[int, GatedQueue]:
    """Submit ``messages`` with every send held at the gate: how many submits went through
    before one had to wait; then open the gate and send them all."""
    sent: list[int] = []
    async with open_queue(settings) as real:
        queue = GatedQueue(real)
        sender = Sender(
            queue,
            concurrency=concurrency,
            max_batch_bytes=BUDGET,
            on_sent=lambda m: sent.append(m.seq),
            on_retry=lambda: None,
        )
        submitted: list[int] = []
        async with sender:
            feeding = asyncio.create_task(_submit_all(sender, messages, submitted))
            await _settle()
            through = len(submitted)
            queue.gate.set()
            await feeding
            await sender.close()
    assert sorted(sent) == [m.seq for m in messages]  # every message sent, once
    return through, queue


async def test_full_size_messages_wait_one_at_a_time(settings: Settings) -> None:
    """Each sender holds one message in its call and at most one more waits: a full message
    is megabytes of memory, so the hand-off is bounded by bytes (not by a count of messages)."""
    messages = [_message(seq, BUDGET - 2 * ATTRIBUTE_RESERVE_BYTES) for seq in range(12)]
    through, queue = await _held_while_gated(settings, messages, concurrency=3)
    assert through == 3 + 1
    assert queue.calls == [1] * 12  # a full message fills a call on its own


async def test_small_messages_still_share_a_call(settings: Settings) -> None:
    """Messages a tenth of the budget: the one sender's call carries 10 of them, and while it
    is held, another call's worth (10) waits; the calls go out full."""
    messages = [_message(seq, BUDGET // 10 - 2 * ATTRIBUTE_RESERVE_BYTES) for seq in range(21)]
    through, queue = await _held_while_gated(settings, messages, concurrency=1)
    assert through == 10 + 10
    assert queue.calls == [10, 10, 1]
