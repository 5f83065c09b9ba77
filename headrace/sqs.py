"""SQS client factory and queue facts, shared by producer and worker.

Clients come from an aiobotocore session with botocore's "standard" retry mode (retries
throttling and 5xx with backoff and a retry quota), bounded timeouts and a connection pool
sized for the concurrency in use. They are created per process, never at import.

Every client counts its requests (always on, through aiobotocore's event hooks) in two
Prometheus counters of the default registry: ``headrace_sqs_requests_total{operation}``
(HTTP attempts, retries included) and ``headrace_sqs_billed_units_total{operation}`` (SQS
bills each request in 64 KiB chunks of payload, at least one: the message bodies and message
attributes sent by SendMessage/SendMessageBatch or returned by ReceiveMessage).

Every failed HTTP attempt is logged as ``sqs_attempt_failed`` (botocore retries silently, so
an outage would otherwise show nothing until a call runs out of attempts).
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterable, Mapping
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import structlog
from aiobotocore.session import get_session
from botocore.exceptions import ClientError
from prometheus_client import Counter

from headrace.aws import aws_config, is_transient
from headrace.errors import ConfigError, QueueError
from headrace.retry import Backoff, retry
from headrace.settings import Settings

if TYPE_CHECKING:
    from types_aiobotocore_sqs import SQSClient

__all__ = [
    "BILLING_CHUNK_BYTES",
    "SQS_BILLED_UNITS",
    "SQS_REQUESTS",
    "QueueInfo",
    "billed_units",
    "connect_queue",
    "queue_info",
    "request_counts",
    "resolve_queue_url",
    "sqs_client",
]

BILLING_CHUNK_BYTES = 64 * 1024
"""SQS bills every started 64 KiB of a request's payload as one request."""

SQS_REQUESTS = Counter(
    "headrace_sqs_requests_total",
    "SQS API requests sent (HTTP attempts, retries included), by operation.",
    ["operation"],
)
SQS_BILLED_UNITS = Counter(
    "headrace_sqs_billed_units_total",
    "SQS billed request units (one per started 64 KiB of payload, at least one per request).",
    ["operation"],
)
_PAYLOAD_KEY = "headrace_payload_bytes"
# Start-up against an unreachable SQS: about 5 minutes of attempts (each one retried by
# botocore too), then fail so the orchestrator restarts the task.
STARTUP_BACKOFF = Backoff(base_s=1.0, cap_s=30.0, attempts=14)
log = structlog.get_logger("headrace.sqs")


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


def _note_payload(params: Mapping[str, Any], model: Any, context: dict[str, Any], **_: Any) -> None:
    """before-parameter-build: remember the payload a send carries (for every attempt)."""
    op = model.name
    if op == "SendMessage":
        context[_PAYLOAD_KEY] = _messages_bytes([params])
    elif op == "SendMessageBatch":
        context[_PAYLOAD_KEY] = _messages_bytes(params.get("Entries", ()))


def _count_call(parsed: Mapping[str, Any], model: Any, context: dict[str, Any], **_: Any) -> None:
    """after-call: one request per HTTP attempt; units from the payload sent or received."""
    op = model.name
    sent = int(context.get(_PAYLOAD_KEY, 0))
    attempts = 1 + int(parsed.get("ResponseMetadata", {}).get("RetryAttempts", 0) or 0)
    final = _messages_bytes(parsed.get("Messages", ())) if op == "ReceiveMessage" else sent
    SQS_REQUESTS.labels(op).inc(attempts)
    SQS_BILLED_UNITS.labels(op).inc(billed_units(final) + (attempts - 1) * billed_units(sent))


def _count_error(event_name: str, context: dict[str, Any], **_: Any) -> None:
    """after-call-error (no HTTP response, e.g. a connection error): count one attempt."""
    op = event_name.rsplit(".", 1)[-1]
    SQS_REQUESTS.labels(op).inc()
    SQS_BILLED_UNITS.labels(op).inc(billed_units(int(context.get(_PAYLOAD_KEY, 0))))


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


def request_counts() -> dict[str, dict[str, float]]:
    """This process's counts so far: ``{operation: {"requests": n, "billed_units": u}}``."""
    out: dict[str, dict[str, float]] = {}
    for key, counter in (("requests", SQS_REQUESTS), ("billed_units", SQS_BILLED_UNITS)):
        for metric in counter.collect():
            for sample in metric.samples:
                if sample.name.endswith("_total"):
                    op = sample.labels["operation"]
                    out.setdefault(op, {"requests": 0.0, "billed_units": 0.0})[key] = sample.value
    return out


@asynccontextmanager
async def sqs_client(settings: Settings, *, pool: int | None = None) -> AsyncIterator[SQSClient]:
    session = get_session()
    async with session.create_client(
        "sqs", endpoint_url=settings.sqs_endpoint_url, config=aws_config(settings, pool=pool)
    ) as client:
        events = client.meta.events
        events.register("before-parameter-build.sqs", _note_payload)
        events.register("after-call.sqs", _count_call)
        events.register("after-call-error.sqs", _count_error)
        events.register("needs-retry.sqs", _log_failed_attempt)
        yield client


async def resolve_queue_url(
    client: SQSClient, settings: Settings, override: str | None = None
) -> str:
    if override:
        return override
    if settings.queue_url:
        return settings.queue_url
    if settings.queue_name:
        try:
            resp = await client.get_queue_url(QueueName=settings.queue_name)
        except ClientError as exc:
            if is_transient(exc):
                raise
            raise QueueError(f"queue {settings.queue_name!r} not found: {exc}") from None
        return resp["QueueUrl"]
    raise ConfigError("set HEADRACE_QUEUE_URL (or HEADRACE_QUEUE_NAME) or pass --queue-url")


@dataclass(frozen=True)
class QueueInfo:
    url: str
    max_message_bytes: int
    visibility_timeout_s: int
    redrive_policy: str | None


async def connect_queue(
    client: SQSClient, settings: Settings, override: str | None = None
) -> QueueInfo:
    """Resolve the queue and read its limits, riding out a transient SQS outage at start-up."""

    async def once() -> QueueInfo:
        return await queue_info(client, await resolve_queue_url(client, settings, override))

    return await retry(
        once, should_retry=is_transient, backoff=STARTUP_BACKOFF, what="connect_queue"
    )


async def queue_info(client: SQSClient, url: str) -> QueueInfo:
    """Read the queue's limits once at start-up (GetQueueAttributes)."""
    try:
        resp = await client.get_queue_attributes(
            QueueUrl=url,
            AttributeNames=["MaximumMessageSize", "VisibilityTimeout", "RedrivePolicy"],
        )
    except ClientError as exc:
        if is_transient(exc):
            raise
        raise QueueError(f"cannot read attributes of queue {url}: {exc}") from None
    attrs = resp.get("Attributes", {})
    return QueueInfo(
        url=url,
        max_message_bytes=int(attrs.get("MaximumMessageSize", 262_144)),
        visibility_timeout_s=int(attrs.get("VisibilityTimeout", 30)),
        redrive_policy=attrs.get("RedrivePolicy"),
    )
