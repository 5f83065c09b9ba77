"""``s3://bucket/key`` sources: streamed with GETs that resume where a cut left off.

Identity: the URI, ``ContentLength`` and the ``ETag`` (plus the ``VersionId`` on a versioned
bucket) from one HeadObject; every GET carries ``If-Match: <ETag>`` (and the ``VersionId``),
so the object cannot change under the reader: a replaced object fails with a clear error
(412) instead of mixing two versions in one run.

A connection cut, reset or read timeout in the middle of the body is resumed with a ranged
GET from the first byte not yet handed out (``Range: bytes=N-``): the bytes continue exactly
where they stopped, so the gzip decompressor, the UTF-8 decoder and the CSV parser above never
notice. Consecutive failures are bounded and spaced by :class:`headrace.retry.Backoff`; each
resume is logged (``s3_resume``). Missing objects, denied access and a replaced object are
not retried: they stop the run with an :class:`InputError` naming the source.

The bridge. The reader stack (gzip, ``TextIOWrapper``, C ``csv``) is synchronous and pulls
bytes with ``readinto``; the S3 body is an aiobotocore (aiohttp) stream that belongs to the
producer's event loop. :class:`S3Body` is a blocking ``RawIOBase`` whose ``readinto`` submits
one read to that loop (``asyncio.run_coroutine_threadsafe``) and waits for it, so it must be
called from a worker thread, never the loop's own (that would deadlock; it raises instead).
The producer therefore opens an S3 source and advances its chunk iterator in worker threads
(``asyncio.to_thread``, see :func:`producer.reader.open_reader`): parsing runs off the loop
while the loop keeps sending messages, and downloads stay on the one loop and client that
own the connection pool. The cost is one thread hop per ``readinto`` (up to 1 MiB, through a
``BufferedReader``) and one per chunk of rows; memory stays bounded by those buffers plus
aiohttp's flow-controlled socket buffer. Local files keep the plain synchronous path.
"""

from __future__ import annotations

import asyncio
import io
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, ClassVar

import aiohttp
import structlog
from botocore.exceptions import BotoCoreError, ClientError, IncompleteReadError

from headrace.aws import is_transient, s3_client
from headrace.errors import InputError
from headrace.metrics import ProducerMetrics
from headrace.retry import Backoff
from headrace.settings import Settings
from producer.sources.base import S3_SCHEME, Source

if TYPE_CHECKING:
    from _typeshed import WriteableBuffer
    from aiobotocore.response import StreamingBody
    from types_aiobotocore_s3 import S3Client

__all__ = ["RESUME_BACKOFF", "S3Body", "S3Source", "open_s3_source", "parse_s3_uri"]

log = structlog.get_logger("producer.sources.s3")

RESUME_BACKOFF = Backoff(base_s=0.2, cap_s=10.0, attempts=8)
"""Consecutive failed attempts at one read before the run stops (botocore's own standard-mode
retries of each GET come on top)."""

READ_BYTES = 1024 * 1024  # one loop round trip per MiB (the BufferedReader's size)


def parse_s3_uri(location: str) -> tuple[str, str]:
    """``s3://bucket/key`` → ``(bucket, key)``."""
    bucket, _, key = location.removeprefix(S3_SCHEME).partition("/")
    if not location.startswith(S3_SCHEME) or not bucket or not key:
        raise InputError("expected s3://bucket/key", source=location)
    return bucket, key


@dataclass(frozen=True)
class S3Source(Source):
    bucket: str
    key: str
    etag: str
    version_id: str | None
    client: S3Client = field(repr=False, compare=False)
    loop: asyncio.AbstractEventLoop = field(repr=False, compare=False)
    backoff: Backoff = field(default=RESUME_BACKOFF, repr=False, compare=False)
    metrics: ProducerMetrics | None = field(default=None, repr=False, compare=False)

    threaded: ClassVar[bool] = True

    def _open_raw(self) -> io.BufferedReader:
        return io.BufferedReader(S3Body(self), buffer_size=READ_BYTES)


@asynccontextmanager
async def open_s3_source(
    settings: Settings,
    location: str,
    *,
    backoff: Backoff = RESUME_BACKOFF,
    metrics: ProducerMetrics | None = None,
) -> AsyncIterator[S3Source]:
    """HeadObject once for the identity; the client lives as long as the block."""
    bucket, key = parse_s3_uri(location)
    uri = f"{S3_SCHEME}{bucket}/{key}"
    async with s3_client(settings, pool=2) as client:
        try:
            head = await client.head_object(Bucket=bucket, Key=key)
        except ClientError as exc:
            raise _input_error(exc, uri) from None
        except BotoCoreError as exc:  # unreachable endpoint, no credentials, ...
            raise InputError(f"cannot read object: {exc}", source=uri) from None
        etag = head["ETag"]
        version_id = head.get("VersionId")
        version = etag.strip('"') + (f" {version_id}" if version_id else "")
        yield S3Source(
            uri=uri,
            size=head["ContentLength"],
            version=version,
            bucket=bucket,
            key=key,
            etag=etag,
            version_id=version_id,
            client=client,
            loop=asyncio.get_running_loop(),
            backoff=backoff,
            metrics=metrics,
        )


class S3Body(io.RawIOBase):
    """The object's bytes as a blocking stream; the GETs run on the source's event loop."""

    def __init__(self, source: S3Source) -> None:
        self._src = source
        self._pos = 0  # bytes handed out so far: where a resumed GET starts
        self._body: StreamingBody | None = None

    def readable(self) -> bool:
        return True

    def tell(self) -> int:
        return self._pos

    def readinto(self, buffer: WriteableBuffer, /) -> int:
        if self._on_loop_thread():
            raise RuntimeError(
                "an S3 source must be read from a worker thread (asyncio.to_thread), "
                "not on its event loop"
            )
        view = memoryview(buffer).cast("B")
        future = asyncio.run_coroutine_threadsafe(self._read(len(view)), self._src.loop)
        data = future.result()
        n = len(data)
        view[:n] = data
        return n

    def close(self) -> None:
        body, self._body = self._body, None
        if body is not None:
            if self._on_loop_thread():
                body.close()
            elif not self._src.loop.is_closed():
                self._src.loop.call_soon_threadsafe(body.close)
        super().close()

    def _on_loop_thread(self) -> bool:
        try:
            return asyncio.get_running_loop() is self._src.loop
        except RuntimeError:
            return False

    async def _read(self, n: int) -> bytes:
        src = self._src
        failures = 0
        while self._pos < src.size:
            if self.closed:
                raise ValueError("read of a closed S3 stream")
            try:
                data = await self._read_once(n)
            except Exception as exc:
                self._drop_body()
                if isinstance(exc, InputError):
                    raise
                if not _transient(exc):
                    if isinstance(exc, ClientError | BotoCoreError):
                        raise _input_error(exc, src.uri, src.etag) from None
                    raise
                failures += 1
                if src.backoff.exhausted(failures):
                    raise InputError(
                        f"download failed at byte {self._pos} of {src.size} "
                        f"after {failures} attempts: {exc}",
                        source=src.uri,
                    ) from exc
                if src.metrics is not None:
                    src.metrics.s3_resumes.inc()
                await src.backoff.pause(
                    failures,
                    "s3_resume",
                    logger=log,
                    source=src.uri,
                    offset=self._pos,
                    size=src.size,
                    error=repr(exc)[:300],
                )
                continue
            self._pos += len(data)
            return data
        return b""

    async def _read_once(self, n: int) -> bytes:
        if self._body is None:
            self._body = await self._get()
        data = await self._body.read(n)
        if not data:
            raise _BodyEndedEarly(f"body ended at byte {self._pos} of {self._src.size}")
        return data

    async def _get(self) -> StreamingBody:
        """GetObject from the current offset, pinned to the version read by HeadObject."""
        src = self._src
        params: dict[str, Any] = {"Bucket": src.bucket, "Key": src.key, "IfMatch": src.etag}
        if src.version_id:
            params["VersionId"] = src.version_id
        if self._pos:
            params["Range"] = f"bytes={self._pos}-"
        resp = await src.client.get_object(**params)
        body = resp["Body"]
        length = resp.get("ContentLength")
        ranged = resp.get("ContentRange", "")
        if length != src.size - self._pos or (
            self._pos and not ranged.startswith(f"bytes {self._pos}-")
        ):
            body.close()
            raise InputError(
                f"GetObject from byte {self._pos} answered {length} bytes "
                f"({ranged or 'no Content-Range'}); expected {src.size - self._pos}",
                source=src.uri,
            )
        return body

    def _drop_body(self) -> None:
        body, self._body = self._body, None
        if body is not None:
            body.close()


class _BodyEndedEarly(Exception):
    """The body stopped before the object's length without an error of its own."""


def _transient(exc: BaseException) -> bool:
    """Worth a resumed GET: what any AWS call retries, and a body cut or ended early."""
    return is_transient(exc) or isinstance(
        exc,
        IncompleteReadError
        | aiohttp.ClientError  # ClientPayloadError: the body was cut mid-way
        | OSError  # TimeoutError, ConnectionResetError
        | _BodyEndedEarly,
    )


def _input_error(exc: BaseException, uri: str, etag: str = "") -> InputError:
    if not isinstance(exc, ClientError):
        return InputError(f"cannot read object: {exc!r}", source=uri)
    status = exc.response.get("ResponseMetadata", {}).get("HTTPStatusCode", 0)
    error = exc.response.get("Error", {})
    code = error.get("Code", "") or str(status)
    if status == 404 or code in {"NoSuchKey", "NoSuchBucket", "NoSuchVersion"}:
        what = "no such object" if code in {"404", "NoSuchKey"} else "not found"
        return InputError(f"{what} ({code})", source=uri)
    if status == 403:
        return InputError(f"access denied ({code}); the producer needs s3:GetObject", source=uri)
    if status == 412:
        return InputError(
            f"the object was replaced while being read (ETag {etag} no longer matches); "
            "no byte of the new version was used, re-run to load it",
            source=uri,
        )
    return InputError(f"cannot read object: {code}: {error.get('Message', exc)}", source=uri)
