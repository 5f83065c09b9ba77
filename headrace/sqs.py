"""The one seam to SQS: a small queue interface, and its aiobotocore implementation.

The worker and the producer take a :class:`Queue` (receive, delete, change visibility, send,
attributes) rather than a botocore client, as they take an engine: tests can run their logic
against another implementation where that is the point, and everything botocore-specific
stays here. botocore's errors become :class:`~headrace.errors.QueueUnavailable` (transient:
throttling, 5xx, a lost connection — :func:`headrace.aws.is_transient`) or
:class:`~headrace.errors.QueueError` (anything else) at this one boundary; per-entry failures
of batch calls come back as values, never as exceptions.

Clients come from an aiobotocore session with botocore's "standard" retry mode, bounded
timeouts and a pool sized for the concurrency in use; they are made per process, never at
import. When given the process's :class:`~headrace.metrics.Metrics`, a client counts its
requests through aiobotocore's event hooks: ``headrace_sqs_requests_total{operation}`` (HTTP
attempts, retries included) and ``headrace_sqs_billed_units_total{operation}`` (SQS bills
each request in 64 KiB chunks of payload, at least one). Every failed HTTP attempt is logged
as ``sqs_attempt_failed`` (botocore retries silently, so an outage would otherwise show
nothing until a call runs out of attempts).
"""

from __future__ import annotations

import json
import time
from collections.abc import AsyncIterator, Iterable, Mapping, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Protocol

import structlog
from aiobotocore.session import get_session
from botocore.exceptions import (
    BotoCoreError,
    ClientError,
    NoCredentialsError,
    PartialCredentialsError,
)

from headrace.aws import aws_config, is_transient
from headrace.errors import ConfigError, QueueError, QueueUnavailable
from headrace.metrics import Metrics
from headrace.retry import Backoff, retry
from headrace.settings import Settings

if TYPE_CHECKING:
    from types_aiobotocore_sqs import SQSClient

__all__ = [
    "BILLING_CHUNK_BYTES",
    "MAX_BATCH_ENTRIES",
    "BatchOutcome",
    "OutgoingMessage",
    "Queue",
    "QueueInfo",
    "Received",
    "SqsQueue",
    "billed_units",
    "dead_letter_arn",
    "open_queue",
    "sqs_client",
]

BILLING_CHUNK_BYTES = 64 * 1024
"""SQS bills every started 64 KiB of a request's payload as one request."""
MAX_BATCH_ENTRIES = 10
"""Entries in one SendMessageBatch / DeleteMessageBatch / ChangeMessageVisibilityBatch call,
and messages in one ReceiveMessage answer."""

_PAYLOAD_KEY = "headrace_payload_bytes"
# Start-up against an unreachable SQS: about 5 minutes of attempts (each one retried by
# botocore too), then fail so the orchestrator restarts the task.
STARTUP_BACKOFF = Backoff(base_s=1.0, cap_s=30.0, attempts=14)
log = structlog.get_logger("headrace.sqs")


# --- what crosses the seam ---------------------------------------------------------------------


@dataclass(frozen=True)
class Received:
    """One received message, with what headrace reads of it."""

    message_id: str
    receipt: str
    body: str
    attributes: dict[str, Any]  # message attributes: {name: {"DataType", "StringValue"}}
    receive_count: int
    sent_at: float | None  # epoch seconds (SentTimestamp), when SQS told us


@dataclass(frozen=True)
class OutgoingMessage:
    id: str  # unique within one send call
    body: str
    attributes: dict[str, Any]


@dataclass
class BatchOutcome:
    """Per-entry results of a batch call: indices into the request that succeeded or failed."""

    ok: list[int] = field(default_factory=list)
    failed: list[tuple[int, str, str, bool]] = field(default_factory=list)
    """(index, code, message, sender_fault) of each failed entry."""


@dataclass(frozen=True)
class QueueInfo:
    url: str
    max_message_bytes: int
    visibility_timeout_s: int
    redrive_policy: str | None


class Queue(Protocol):
    """What the worker and the producer need of a queue."""

    @property
    def url(self) -> str: ...

    async def receive(
        self, *, max_messages: int, wait_s: int, visibility_s: int
    ) -> list[Received]: ...

    async def delete(self, receipts: Sequence[str]) -> BatchOutcome: ...

    async def change_visibility(self, receipts: Sequence[str], timeout_s: int) -> BatchOutcome: ...

    async def send(self, messages: Sequence[OutgoingMessage]) -> BatchOutcome: ...

    async def attributes(self, names: Sequence[str]) -> dict[str, str]: ...

    async def dead_letter(self) -> Queue | None:
        """The queue's DLQ (from its RedrivePolicy), or ``None`` when it has none."""
        ...


# --- request accounting ------------------------------------------------------------------------


def billed_units(payload_bytes: int) -> int:
    """Billed requests for one API call carrying ``payload_bytes`` (at least 1)."""
    return max(1, -(-payload_bytes // BILLING_CHUNK_BYTES))


def _text_bytes(text: str) -> int:
    return len(text) if text.isascii() else len(text.encode("utf-8", "surrogatepass"))


def _message_bytes(body: object, attributes: object) -> int:
    """Size of one message as SQS counts it: body plus each attribute's name, type and value."""
    size = _text_bytes(body) if isinstance(body, str) else 0
    if isinstance(attributes, Mapping):
        for name, attr in attributes.items():
            size += _text_bytes(str(name))
            if isinstance(attr, Mapping):
                size += _text_bytes(str(attr.get("DataType", "")))
                value = attr.get("StringValue")
                if isinstance(value, str):
                    size += _text_bytes(value)
                binary = attr.get("BinaryValue")
                if isinstance(binary, bytes | bytearray):
                    size += len(binary)
    return size


def _messages_bytes(messages: Iterable[Any]) -> int:
    return sum(
        _message_bytes(m.get("MessageBody", m.get("Body")), m.get("MessageAttributes"))
        for m in messages
        if isinstance(m, Mapping)
    )


class _Accounting:
    """aiobotocore event hooks feeding one process's :class:`Metrics`."""

    def __init__(self, metrics: Metrics) -> None:
        self._metrics = metrics

    @staticmethod
    def note_payload(
        params: Mapping[str, Any], model: Any, context: dict[str, Any], **_: Any
    ) -> None:
        """before-parameter-build: remember the payload a send carries (for every attempt)."""
        op = model.name
        if op == "SendMessage":
            context[_PAYLOAD_KEY] = _messages_bytes([params])
        elif op == "SendMessageBatch":
            context[_PAYLOAD_KEY] = _messages_bytes(params.get("Entries", ()))

    def count_call(
        self, parsed: Mapping[str, Any], model: Any, context: dict[str, Any], **_: Any
    ) -> None:
        """after-call: one request per HTTP attempt; units from the payload sent or received."""
        op = model.name
        sent = int(context.get(_PAYLOAD_KEY, 0))
        attempts = 1 + int(parsed.get("ResponseMetadata", {}).get("RetryAttempts", 0) or 0)
        final = _messages_bytes(parsed.get("Messages", ())) if op == "ReceiveMessage" else sent
        self._metrics.sqs_requests.labels(op).inc(attempts)
        self._metrics.sqs_billed_units.labels(op).inc(
            billed_units(final) + (attempts - 1) * billed_units(sent)
        )

    def count_error(self, event_name: str, context: dict[str, Any], **_: Any) -> None:
        """after-call-error (no HTTP response, e.g. a connection error): count one attempt."""
        op = event_name.rsplit(".", 1)[-1]
        self._metrics.sqs_requests.labels(op).inc()
        self._metrics.sqs_billed_units.labels(op).inc(
            billed_units(int(context.get(_PAYLOAD_KEY, 0)))
        )


def _log_failed_attempt(
    operation: Any, attempts: int, response: Any, caught_exception: BaseException | None, **_: Any
) -> None:
    """needs-retry: a warning per failed HTTP attempt (botocore retries silently)."""
    if caught_exception is not None:
        error = repr(caught_exception)[:300]
    elif response is not None and response[0].status_code >= 400:
        error = str(response[1].get("Error", {}).get("Code") or response[0].status_code)
    else:
        return
    log.warning("sqs_attempt_failed", operation=operation.name, attempt=attempts, error=error)


@asynccontextmanager
async def sqs_client(
    settings: Settings, *, metrics: Metrics | None = None, pool: int | None = None
) -> AsyncIterator[SQSClient]:
    """An SQS client; with ``metrics``, every request is counted there."""
    session = get_session()
    async with session.create_client(
        "sqs", endpoint_url=settings.sqs_endpoint_url, config=aws_config(settings, pool=pool)
    ) as client:
        events = client.meta.events
        if metrics is not None:
            accounting = _Accounting(metrics)
            events.register("before-parameter-build.sqs", accounting.note_payload)
            events.register("after-call.sqs", accounting.count_call)
            events.register("after-call-error.sqs", accounting.count_error)
        events.register("needs-retry.sqs", _log_failed_attempt)
        yield client


# --- the implementation ------------------------------------------------------------------------


_NO_QUEUE_CODES = frozenset({"AWS.SimpleQueueService.NonExistentQueue", "QueueDoesNotExist"})


def _queue_error(exc: ClientError | BotoCoreError, what: str) -> QueueError | ConfigError:
    """botocore's error as headrace's: transient (worth another try later), a setting to fix
    (no credentials, no such queue: one line naming what to set), or not."""
    if isinstance(exc, NoCredentialsError | PartialCredentialsError):
        return ConfigError(
            f"{what}: no AWS credentials found: set AWS_ACCESS_KEY_ID and "
            "AWS_SECRET_ACCESS_KEY (or AWS_PROFILE), or run with an ECS task role"
        )
    code = exc.response.get("Error", {}).get("Code") if isinstance(exc, ClientError) else None
    if code in _NO_QUEUE_CODES:
        return ConfigError(
            f"{what}: the queue does not exist: check HEADRACE_QUEUE_URL or HEADRACE_QUEUE_NAME "
            "(and HEADRACE_AWS__REGION / HEADRACE_SQS_ENDPOINT_URL)"
        )
    if is_transient(exc):
        return QueueUnavailable(
            f"{what}: {exc} (is HEADRACE_QUEUE_URL / HEADRACE_SQS_ENDPOINT_URL reachable?)"[:500]
        )
    return QueueError(f"{what}: {exc}"[:500])


def _outcome(resp: Mapping[str, Any], offset: int = 0) -> BatchOutcome:
    outcome = BatchOutcome()
    for entry in resp.get("Successful", []):
        outcome.ok.append(offset + int(entry["Id"]))
    for entry in resp.get("Failed", []):
        outcome.failed.append(
            (
                offset + int(entry["Id"]),
                str(entry.get("Code", "")),
                str(entry.get("Message", "")),
                bool(entry.get("SenderFault", False)),
            )
        )
    return outcome


class SqsQueue:
    """:class:`Queue` on SQS (or anything speaking its API, such as moto)."""

    def __init__(self, client: SQSClient, info: QueueInfo) -> None:
        self._client = client
        self.info = info

    @property
    def url(self) -> str:
        return self.info.url

    async def receive(self, *, max_messages: int, wait_s: int, visibility_s: int) -> list[Received]:
        try:
            resp = await self._client.receive_message(
                QueueUrl=self.url,
                MaxNumberOfMessages=max(1, min(MAX_BATCH_ENTRIES, max_messages)),
                WaitTimeSeconds=wait_s,
                VisibilityTimeout=visibility_s,
                MessageAttributeNames=["All"],
                MessageSystemAttributeNames=["ApproximateReceiveCount", "SentTimestamp"],
            )
        except (ClientError, BotoCoreError) as exc:
            raise _queue_error(exc, "ReceiveMessage failed") from exc
        out = []
        for raw in resp.get("Messages", []):
            system = raw.get("Attributes", {})
            sent = system.get("SentTimestamp")
            out.append(
                Received(
                    message_id=raw.get("MessageId", "?"),
                    receipt=raw["ReceiptHandle"],
                    body=raw.get("Body", ""),
                    attributes=dict(raw.get("MessageAttributes", {})),
                    receive_count=int(system.get("ApproximateReceiveCount", "1")),
                    sent_at=int(sent) / 1000 if sent and sent.isdigit() else None,
                )
            )
        return out

    async def delete(self, receipts: Sequence[str]) -> BatchOutcome:
        outcome = BatchOutcome()
        for start in range(0, len(receipts), MAX_BATCH_ENTRIES):
            group = receipts[start : start + MAX_BATCH_ENTRIES]
            entries = [{"Id": str(i), "ReceiptHandle": r} for i, r in enumerate(group)]
            try:
                resp = await self._client.delete_message_batch(QueueUrl=self.url, Entries=entries)  # type: ignore[arg-type]
            except (ClientError, BotoCoreError) as exc:
                raise _queue_error(exc, "DeleteMessageBatch failed") from exc
            part = _outcome(resp, start)
            outcome.ok += part.ok
            outcome.failed += part.failed
        return outcome

    async def change_visibility(self, receipts: Sequence[str], timeout_s: int) -> BatchOutcome:
        """Set the visibility of each receipt; a call that fails marks its entries failed."""
        outcome = BatchOutcome()
        for start in range(0, len(receipts), MAX_BATCH_ENTRIES):
            group = receipts[start : start + MAX_BATCH_ENTRIES]
            entries = [
                {"Id": str(i), "ReceiptHandle": r, "VisibilityTimeout": timeout_s}
                for i, r in enumerate(group)
            ]
            try:
                resp = await self._client.change_message_visibility_batch(
                    QueueUrl=self.url,
                    Entries=entries,  # type: ignore[arg-type]
                )
            except (ClientError, BotoCoreError) as exc:
                error = _queue_error(exc, "ChangeMessageVisibilityBatch failed")
                outcome.failed += [
                    (start + i, "CallFailed", str(error), False) for i in range(len(group))
                ]
                continue
            part = _outcome(resp, start)
            outcome.ok += part.ok
            outcome.failed += part.failed
        return outcome

    async def send(self, messages: Sequence[OutgoingMessage]) -> BatchOutcome:
        """One SendMessageBatch (≤ :data:`MAX_BATCH_ENTRIES` messages); indices are positions."""
        if len(messages) > MAX_BATCH_ENTRIES:
            raise ValueError(f"at most {MAX_BATCH_ENTRIES} messages per call")
        try:
            resp = await self._client.send_message_batch(
                QueueUrl=self.url,
                Entries=[
                    {"Id": str(i), "MessageBody": m.body, "MessageAttributes": m.attributes}
                    for i, m in enumerate(messages)
                ],
            )
        except (ClientError, BotoCoreError) as exc:
            raise _queue_error(exc, "SendMessageBatch failed") from exc
        return _outcome(resp)

    async def attributes(self, names: Sequence[str]) -> dict[str, str]:
        return await _attributes(self._client, self.url, names)

    async def sibling(self, url: str) -> SqsQueue:
        """Another queue on the same client (and metrics), described."""
        return SqsQueue(self._client, await _describe(self._client, url))

    async def dead_letter(self) -> SqsQueue | None:
        """The DLQ the RedrivePolicy names (same client, so its requests are counted too)."""
        arn = dead_letter_arn(self.info.redrive_policy)
        if arn is None:
            return None
        # arn:aws:sqs:<region>:<account>:<name>; a DLQ lives in the queue's own region.
        *_, account, name = arn.split(":")
        try:
            resp = await self._client.get_queue_url(QueueName=name, QueueOwnerAWSAccountId=account)
        except (ClientError, BotoCoreError) as exc:
            raise _queue_error(exc, f"dead-letter queue {arn} not found") from exc
        return SqsQueue(self._client, await _describe(self._client, resp["QueueUrl"]))


def dead_letter_arn(redrive_policy: str | None) -> str | None:
    """``deadLetterTargetArn`` of a RedrivePolicy (JSON text), if it names one."""
    if not redrive_policy:
        return None
    try:
        arn = json.loads(redrive_policy).get("deadLetterTargetArn")
    except (ValueError, AttributeError):
        return None
    return arn if isinstance(arn, str) and arn.count(":") >= 5 else None


async def _attributes(client: SQSClient, url: str, names: Sequence[str]) -> dict[str, str]:
    try:
        resp = await client.get_queue_attributes(QueueUrl=url, AttributeNames=list(names))  # type: ignore[arg-type]
    except (ClientError, BotoCoreError) as exc:
        raise _queue_error(exc, f"cannot read attributes of queue {url}") from exc
    return {str(k): str(v) for k, v in resp.get("Attributes", {}).items()}


# --- start-up ----------------------------------------------------------------------------------


async def _resolve_url(client: SQSClient, settings: Settings, override: str | None) -> str:
    if override:
        return override
    if settings.queue_url:
        return settings.queue_url
    if settings.queue_name:
        try:
            resp = await client.get_queue_url(QueueName=settings.queue_name)
        except (ClientError, BotoCoreError) as exc:
            raise _queue_error(exc, f"queue {settings.queue_name!r} not found") from exc
        return resp["QueueUrl"]
    raise ConfigError("set HEADRACE_QUEUE_URL (or HEADRACE_QUEUE_NAME) or pass --queue-url")


async def connect_queue(
    client: SQSClient, settings: Settings, override: str | None = None
) -> QueueInfo:
    """Resolve the queue and read its limits, riding out a transient SQS outage at start-up."""

    async def once() -> QueueInfo:
        return await _describe(client, await _resolve_url(client, settings, override))

    return await retry(once, backoff=STARTUP_BACKOFF, what="connect_queue")


async def _describe(client: SQSClient, url: str) -> QueueInfo:
    attrs = await _attributes(
        client, url, ["MaximumMessageSize", "VisibilityTimeout", "RedrivePolicy"]
    )
    return QueueInfo(
        url=url,
        max_message_bytes=int(attrs.get("MaximumMessageSize", 262_144)),
        visibility_timeout_s=int(attrs.get("VisibilityTimeout", 30)),
        redrive_policy=attrs.get("RedrivePolicy"),
    )


@asynccontextmanager
async def open_queue(
    settings: Settings,
    *,
    metrics: Metrics | None = None,
    queue_url: str | None = None,
    pool: int | None = None,
) -> AsyncIterator[SqsQueue]:
    """A client for this process and the queue it works on, connected and described."""
    started = time.monotonic()
    async with sqs_client(settings, metrics=metrics, pool=pool) as client:
        info = await connect_queue(client, settings, queue_url)
        log.debug("queue_connected", queue=info.url, seconds=round(time.monotonic() - started, 3))
        yield SqsQueue(client, info)
