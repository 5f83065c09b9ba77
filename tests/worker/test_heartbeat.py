"""The heartbeat against the Queue seam itself (no moto: what matters is which receipts it
asks to extend, and for how long)."""

from __future__ import annotations

import time
from collections.abc import Sequence

from headrace.envelope import Envelope
from headrace.metrics import WorkerMetrics
from headrace.sqs import BatchOutcome, OutgoingMessage, Received
from worker.acker import Acker
from worker.heartbeat import CAP_MARGIN_S, VISIBILITY_CAP_S, Heartbeat
from worker.inflight import InFlight, Message


class RecordingQueue:
    """A :class:`headrace.sqs.Queue` that records visibility changes and refuses ``refused``."""

    url = "memory://queue"

    def __init__(self, refused: frozenset[str] = frozenset()) -> None:
        self.calls: list[tuple[list[str], int]] = []
        self._refused = refused

    async def receive(self, *, max_messages: int, wait_s: int, visibility_s: int) -> list[Received]:
        return []

    async def delete(self, receipts: Sequence[str]) -> BatchOutcome:
        return BatchOutcome(ok=list(range(len(receipts))))

    async def change_visibility(self, receipts: Sequence[str], timeout_s: int) -> BatchOutcome:
        self.calls.append((list(receipts), timeout_s))
        outcome = BatchOutcome()
        for i, receipt in enumerate(receipts):
            if receipt in self._refused:
                outcome.failed.append((i, "ReceiptHandleIsInvalid", "expired", True))
            else:
                outcome.ok.append(i)
        return outcome

    async def send(self, messages: Sequence[OutgoingMessage]) -> BatchOutcome:
        return BatchOutcome(ok=list(range(len(messages))))

    async def attributes(self, names: Sequence[str]) -> dict[str, str]:
        return {}

    async def dead_letter(self) -> None:
        return None


def _message(receipt: str, *, received_ago_s: float, deadline_in_s: float) -> Message:
    env = Envelope.from_rows("0" * 32, 0, "observations", ("sku",), "t.csv", [["S"]], [2])
    now = time.monotonic()
    return Message(
        receipt, receipt, env, receive_count=1, deadline=now + deadline_in_s,
        received_at=now - received_ago_s,
    )  # fmt: skip


async def test_extends_due_messages_never_past_the_12_hour_cap() -> None:
    queue = RecordingQueue(refused=frozenset({"expired"}))
    metrics = WorkerMetrics()
    inflight = InFlight(max_messages=10, max_rows=100, metrics=metrics)
    held = {
        "due": _message("due", received_ago_s=10, deadline_in_s=1),
        "not-due": _message("not-due", received_ago_s=10, deadline_in_s=600),
        # 100 s of SQS's 12 hours left: extended by what is left, less the margin.
        "near-cap": _message("near-cap", received_ago_s=VISIBILITY_CAP_S - 100, deadline_in_s=1),
        # Inside the margin: not extended at all (SQS would refuse; it goes back).
        "at-cap": _message("at-cap", received_ago_s=VISIBILITY_CAP_S - 30, deadline_in_s=1),
        "expired": _message("expired", received_ago_s=10, deadline_in_s=1),
    }
    for m in held.values():
        inflight.add(m)
    acker = Acker(queue, inflight, metrics, max_delay_s=60)
    beat = Heartbeat(acker, inflight, metrics, interval_s=5, visibility_timeout_s=60)

    before = time.monotonic()
    await beat.beat()

    asked = {receipt: timeout for receipts, timeout in queue.calls for receipt in receipts}
    assert set(asked) == {"due", "near-cap", "expired"}
    assert asked["due"] == asked["expired"] == 60
    assert 100 - CAP_MARGIN_S - 2 <= asked["near-cap"] <= 100 - CAP_MARGIN_S
    assert held["due"].deadline >= before + 60  # SQS took it: the new deadline is tracked
    assert held["expired"].deadline < before + 60  # refused: nothing changed
    assert metrics.stats().heartbeat_calls == 3
    assert metrics.stats().heartbeat_failures == 1
