"""S3 client factory for ``s3://`` sources, configured like the SQS client.

Same botocore config as :func:`headrace.sqs.sqs_client` ("standard" retry mode, bounded
timeouts, a sized pool). ``HEADRACE_S3_ENDPOINT_URL`` points it at a non-AWS server (moto,
MinIO, a test proxy); such endpoints get path-style addressing, since virtual-host names of
the form ``bucket.127.0.0.1`` do not resolve.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import TYPE_CHECKING

from aiobotocore.config import AioConfig
from aiobotocore.session import get_session

from headrace.aws import aws_config
from headrace.settings import Settings

if TYPE_CHECKING:
    from types_aiobotocore_s3 import S3Client

__all__ = ["s3_client"]


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
