"""SQS client factory and queue facts, shared by producer and worker.

Clients come from an aiobotocore session with botocore's "standard" retry mode (retries
throttling and 5xx with backoff and a retry quota), bounded timeouts and a connection pool
sized for the concurrency in use. They are created per process, never at import.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import TYPE_CHECKING

from aiobotocore.config import AioConfig
from aiobotocore.session import get_session
from botocore.exceptions import ClientError

from headrace.errors import ConfigError, QueueError
from headrace.settings import Settings

if TYPE_CHECKING:
    from types_aiobotocore_sqs import SQSClient

__all__ = ["QueueInfo", "queue_info", "resolve_queue_url", "sqs_client"]


def _config(settings: Settings, *, pool: int | None = None) -> AioConfig:
    aws = settings.aws
    return AioConfig(
        region_name=aws.region,
        retries={"mode": "standard", "total_max_attempts": aws.max_attempts},
        connect_timeout=aws.connect_timeout_s,
        read_timeout=aws.read_timeout_s,
        max_pool_connections=pool or aws.max_pool_connections,
    )


@asynccontextmanager
async def sqs_client(settings: Settings, *, pool: int | None = None) -> AsyncIterator[SQSClient]:
    session = get_session()
    async with session.create_client(
        "sqs", endpoint_url=settings.sqs_endpoint_url, config=_config(settings, pool=pool)
    ) as client:
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
            raise QueueError(f"queue {settings.queue_name!r} not found: {exc}") from None
        return resp["QueueUrl"]
    raise ConfigError("set HEADRACE_QUEUE_URL (or HEADRACE_QUEUE_NAME) or pass --queue-url")


@dataclass(frozen=True)
class QueueInfo:
    url: str
    max_message_bytes: int
    visibility_timeout_s: int
    redrive_policy: str | None


async def queue_info(client: SQSClient, url: str) -> QueueInfo:
    """Read the queue's limits once at start-up (GetQueueAttributes)."""
    try:
        resp = await client.get_queue_attributes(
            QueueUrl=url,
            AttributeNames=["MaximumMessageSize", "VisibilityTimeout", "RedrivePolicy"],
        )
    except ClientError as exc:
        raise QueueError(f"cannot read attributes of queue {url}: {exc}") from None
    attrs = resp.get("Attributes", {})
    return QueueInfo(
        url=url,
        max_message_bytes=int(attrs.get("MaximumMessageSize", 262_144)),
        visibility_timeout_s=int(attrs.get("VisibilityTimeout", 30)),
        redrive_policy=attrs.get("RedrivePolicy"),
    )
