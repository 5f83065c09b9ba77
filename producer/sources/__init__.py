"""Where CSV bytes come from: local files and S3 objects, gzip-compressed or not.

:func:`open_location` is the one opener: a path gives a :class:`FileSource`, an
``s3://bucket/key`` an :class:`S3Source` (streamed, resumed after a cut). Both open as a
binary stream with gzip detected by its magic bytes and capped (:mod:`.base`).
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from headrace.metrics import ProducerMetrics
from headrace.settings import Settings
from producer.sources.base import S3_SCHEME, BoundedReader, Source
from producer.sources.file import FileSource, open_source
from producer.sources.s3 import S3Source, open_s3_source

__all__ = [
    "BoundedReader",
    "FileSource",
    "S3Source",
    "Source",
    "open_location",
    "open_s3_source",
    "open_source",
]


@asynccontextmanager
async def open_location(
    settings: Settings, location: str, *, metrics: ProducerMetrics | None = None
) -> AsyncIterator[Source]:
    """The source at a path or ``s3://bucket/key``, usable until the block ends (resumed
    S3 reads are counted in ``metrics``)."""
    if location.startswith(S3_SCHEME):
        async with open_s3_source(settings, location, metrics=metrics) as source:
            yield source
    else:
        yield open_source(location)
