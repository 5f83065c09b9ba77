"""What every AWS client shares: one botocore config and one idea of a transient failure.

botocore's "standard" retry mode retries throttling, 5xx and lost connections inside each
call, with backoff and a retry quota. When a call still fails, :func:`is_transient` tells the
caller whether making it again later (with :class:`headrace.retry.Backoff`) may succeed.

:func:`s3_client` is the S3 client factory for ``s3://`` sources; the SQS client is made by
:mod:`headrace.sqs`, which adds request accounting. ``HEADRACE_S3_ENDPOINT_URL`` points the S3
client at a non-AWS server (moto, MinIO, a test proxy); such endpoints get path-style
addressing, since virtual-host names of the form ``bucket.127.0.0.1`` do not resolve.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import TYPE_CHECKING

from aiobotocore.config import AioConfig
from aiobotocore.session import get_session
from botocore.exceptions import ClientError, HTTPClientError
from botocore.exceptions import ConnectionError as BotoConnectionError

from headrace.settings import Settings

if TYPE_CHECKING:
    from types_aiobotocore_s3 import S3Client

__all__ = ["aws_config", "is_transient", "s3_client"]

# Error codes of throttling and overload (SQS and S3 spell them differently).
_TRANSIENT_CODES = frozenset(
    {
        "RequestThrottled",
        "ThrottlingException",
        "Throttling",
        "KmsThrottled",
        "ServiceUnavailable",
        "SlowDown",
        "RequestTimeout",
    }
)


def aws_config(settings: Settings, *, pool: int | None = None) -> AioConfig:
    """botocore config for every AWS client: standard retries, bounded timeouts, a sized pool."""
    aws = settings.aws
    return AioConfig(
        region_name=aws.region,
        retries={"mode": "standard", "total_max_attempts": aws.max_attempts},
        connect_timeout=aws.connect_timeout_s,
        read_timeout=aws.read_timeout_s,
        max_pool_connections=pool or aws.max_pool_connections,
    )


def is_transient(exc: BaseException) -> bool:
    """Whether a failed AWS call may succeed when made again: throttling, 5xx, connection lost."""
    if isinstance(exc, ClientError):
        status = exc.response.get("ResponseMetadata", {}).get("HTTPStatusCode", 0)
        return status >= 500 or exc.response.get("Error", {}).get("Code") in _TRANSIENT_CODES
    return isinstance(exc, BotoConnectionError | HTTPClientError)


@asynccontextmanager
async def s3_client(settings: Settings, *, pool: int | None = None) -> AsyncIterator[S3Client]:
    config = aws_config(settings, pool=pool)
    if settings.s3_endpoint_url:
        config = config.merge(AioConfig(s3={"addressing_style": "path"}))
    session = get_session()
    async with session.create_client(
        "s3", endpoint_url=settings.s3_endpoint_url, config=config
    ) as client:
        yield client
