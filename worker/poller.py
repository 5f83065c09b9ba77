"""Receiving: long-poll the queue, decode each message, check it against its table, buffer it.

One loop per poller, top to bottom: wait for the circuit and for room → receive → for each
message: decode and check (a message that cannot be applied is poison: left for SQS's
redrive, never deleted) → hold it → buffer it (a full batch goes to the sinks). The loop
cannot die of one bad message, and a failed receive backs off and tries again.
"""

from __future__ import annotations

import asyncio
import time

import structlog
from sqlalchemy.exc import DBAPIError

from headrace import failpoints
from headrace.envelope import Envelope, decode, verify_signature
from headrace.errors import EnvelopeError, QueueError, SchemaError, TableNotFound
from headrace.foreign import (
    ForeignRows,
    S3Pointer,
    is_envelope,
    parse_pointer,
    parse_rows,
    type_rows,
)
from headrace.retry import Backoff
from headrace.sqs import Queue, Received
from worker.buffer import Batch
from worker.inflight import Message
from worker.parts import Parts
from worker.payloads import PayloadUnavailable

__all__ = ["Poller"]

log = structlog.get_logger("worker.poller")

# After a receive that failed even with botocore's retries (SQS unreachable, say).
RECEIVE_BACKOFF = Backoff(base_s=1.0, cap_s=20.0, attempts=1_000_000)
# A message whose table the database cannot be asked about now: back in 5 s.
RETRY_LATER_S = 5
# Bodies this large (decompression and parsing take milliseconds) are decoded in a thread.
OFF_LOOP_BYTES = 64 * 1024


class Poller:
    def __init__(self, queue: Queue, parts: Parts) -> None:
        self._queue = queue
        self._settings = parts.settings
        self._inflight = parts.inflight
        self._buffer = parts.buffer
        self._batches = parts.batches
        self._tables = parts.tables
        self._circuit = parts.circuit
        self._acker = parts.acker
        self._metrics = parts.metrics
        self._stopping = parts.stopping
        self._signing_key = parts.signing_key
        self._payloads = parts.payloads
        self.receiving = False  # inside a receive call (shutdown gives those a grace)
        self.last_receive_at = 0.0  # monotonic time of the last receive that got messages

    async def run(self) -> None:
        w = self._settings
        failures = 0  # consecutive failed receives
        while not self._stopping.is_set():
            await self._circuit.wait_closed()  # open: receiving would only burn receive counts
            room = await self._inflight.wait_for_room()
            if self._stopping.is_set():
                return
            await failpoints.hit("worker.before_receive")
            self.receiving = True
            try:
                received = await self._queue.receive(
                    max_messages=room, wait_s=w.wait_time_s, visibility_s=w.visibility_timeout_s
                )
            except QueueError as exc:
                failures += 1
                self._metrics.receive_failures.inc()
                await RECEIVE_BACKOFF.pause(
                    failures, "receive_failed", logger=log, error=str(exc)[:300]
                )
                continue
            finally:
                self.receiving = False
            failures = 0
            received_at = time.monotonic()
            self._metrics.receives.inc()
            if received:
                self.last_receive_at = received_at
            for raw in received:
                await self._take(raw, received_at)

    async def _take(self, raw: Received, received_at: float) -> None:
        if self._stopping.is_set():  # received while shutting down: hand straight back
            await self._hand_back(raw, 0)
        elif not self._circuit.closed:  # the circuit opened during this receive
            await self._hand_back(raw, RETRY_LATER_S)
        else:
            try:
                await self._accept(raw, received_at)
            except Exception as exc:  # the loop must outlive any one message
                log.exception("accept_failed", message_id=raw.message_id, error=repr(exc))
                await self._hand_back(raw, RETRY_LATER_S)

    async def _accept(self, raw: Received, received_at: float) -> None:
        self._metrics.received(raw.sent_at)
        try:
            pointer, decoded = await self._decode(raw)
        except EnvelopeError as exc:
            await self._poison(raw, exc)
            return
        except PayloadUnavailable as exc:  # S3 did not answer: later, like the database
            log.warning("payload_unavailable", message_id=raw.message_id, error=str(exc)[:300])
            await self._hand_back(raw, RETRY_LATER_S)
            return
        try:
            if isinstance(decoded, ForeignRows):  # typed by the table's rules, as CSV is
                decoded = type_rows(decoded, await self._tables.get(decoded.table))
            env = decoded
            drift = await self._tables.mismatch(env.table, env.columns)
        except TableNotFound as exc:
            if not (isinstance(decoded, Envelope) and self._tables.waits_for(decoded.table)):
                await self._poison(raw, exc)
                return
            env, drift = decoded, exc  # listed but not there (yet): wait as for a column
        except SchemaError as exc:
            await self._poison(raw, exc)
            return
        except (DBAPIError, OSError, TimeoutError) as exc:  # reflection needs the database
            self._circuit.open(exc)
            await self._hand_back(raw, RETRY_LATER_S)
            return
        message = Message(
            message_id=raw.message_id,
            receipt=raw.receipt,
            envelope=env,
            receive_count=raw.receive_count,
            deadline=received_at + self._settings.visibility_timeout_s,
            received_at=received_at,
            sent_at=raw.sent_at,
            pointer=pointer,
        )
        self._inflight.add(message)
        if drift is not None:
            self._circuit.park(Batch(env.table, env.columns, [message]), drift)
            return
        batch = self._buffer.add(message)
        if batch is not None:
            await self._batches.put(batch)

    async def _decode(self, raw: Received) -> tuple[S3Pointer | None, Envelope | ForeignRows]:
        """The envelope (or another producer's JSON rows), signature checked first when a key
        is set, an Extended Client payload read from S3 first; big bodies off the loop."""
        if self._signing_key is not None:
            verify_signature(self._signing_key, raw.body, raw.attributes)
        pointer = parse_pointer(raw.body, raw.attributes)
        body = raw.body
        if pointer is not None:
            if self._payloads is None:
                raise EnvelopeError("an Extended Client pointer, and no S3 client to read it")
            body = await self._payloads.fetch(pointer)
        if is_envelope(raw.attributes) or not self._settings.accept_json:
            if len(body) < OFF_LOOP_BYTES:
                env = decode(body, raw.attributes)
            else:
                env = await asyncio.to_thread(decode, body, raw.attributes)
            if env.on_duplicate not in self._settings.on_duplicate:
                raise EnvelopeError(
                    f"duplicate mode {env.on_duplicate!r} is not allowed here "
                    "(HEADRACE_WORKER__ON_DUPLICATE)"
                )
            return pointer, env
        foreign = parse_rows(
            body,
            raw.attributes,
            message_id=raw.message_id,
            default_table=self._settings.default_table,
        )
        return pointer, foreign

    async def _poison(self, raw: Received, exc: Exception) -> None:
        """Leave a bad message to SQS's redrive: never delete it, back off its visibility."""
        await self._acker.poison(raw.message_id, raw.receipt, raw.receive_count, exc)

    async def _hand_back(self, raw: Received, delay_s: int) -> None:
        """A message never held: visible again after ``delay_s`` (best effort)."""
        await self._acker.set_visibility([raw.receipt], delay_s)
