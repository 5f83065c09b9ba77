"""Visibility heartbeat: extends every in-flight message before SQS would hand it out again.

ChangeMessageVisibility restarts the timer from now, so each beat sets the full visibility
timeout again for messages whose deadline is closer than two beats away.
"""

from __future__ import annotations

import asyncio
import time
from typing import TYPE_CHECKING

import structlog
from botocore.exceptions import BotoCoreError, ClientError

from headrace import failpoints
from worker.inflight import InFlight, Message

if TYPE_CHECKING:
    from types_aiobotocore_sqs import SQSClient

__all__ = ["Heartbeat", "change_visibility"]

log = structlog.get_logger("worker.heartbeat")


async def change_visibility(
    client: SQSClient, queue_url: str, messages: list[Message], timeout_s: int
) -> list[Message]:
    """Set the visibility of messages (in calls of 10); returns those SQS accepted."""
    ok: list[Message] = []
    for i in range(0, len(messages), 10):
        group = messages[i : i + 10]
        entries = [
            {"Id": str(n), "ReceiptHandle": m.receipt, "VisibilityTimeout": timeout_s}
            for n, m in enumerate(group)
        ]
        try:
            resp = await client.change_message_visibility_batch(QueueUrl=queue_url, Entries=entries)  # type: ignore[arg-type]
        except (ClientError, BotoCoreError) as exc:
            log.warning("change_visibility_failed", error=str(exc)[:300], messages=len(group))
            continue
        for entry in resp.get("Successful", []):
            ok.append(group[int(entry["Id"])])
        for entry in resp.get("Failed", []):
            # Typically an expired receipt: the message went back to the queue and the ledger
            # will make its redelivery a no-op.
            log.warning(
                "change_visibility_entry_failed",
                code=entry.get("Code"),
                message_id=group[int(entry["Id"])].message_id,
            )
    return ok


class Heartbeat:
    def __init__(
        self,
        client: SQSClient,
        queue_url: str,
        inflight: InFlight,
        *,
        interval_s: float,
        visibility_timeout_s: int,
    ) -> None:
        self._client = client
        self._url = queue_url
        self._inflight = inflight
        self._interval_s = interval_s
        self._visibility_s = visibility_timeout_s
        self.extensions = 0

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
        extended = await change_visibility(self._client, self._url, due, self._visibility_s)
        for m in extended:
            m.deadline = started + self._visibility_s
        self.extensions += len(extended)
        log.debug("heartbeat", extended=len(extended), due=len(due))
