"""What every source shares: an identity, gzip detection and the decompression caps.

A source has an identity (URI, size and version) from which the run id is derived, and opens
as a binary stream read with constant memory. gzip is detected by its magic bytes; the
decompressed size and ratio are capped so a gzip bomb stops with a clear error.
"""

from __future__ import annotations

import gzip
import io
from collections.abc import Callable
from dataclasses import dataclass
from typing import BinaryIO, ClassVar, NamedTuple

from headrace.errors import InputError

__all__ = ["GZIP_MAGIC", "S3_SCHEME", "BoundedReader", "Opened", "Source"]

GZIP_MAGIC = b"\x1f\x8b"
S3_SCHEME = "s3://"


class Opened(NamedTuple):
    """An open source: the (decompressed) stream, and how far into the source it has read."""

    stream: BinaryIO
    position: Callable[[], int]
    """Source bytes fetched so far, as stored (compressed for gzip): progress against
    ``Source.size``. Lock-free, so the event loop may ask while a thread reads."""


@dataclass(frozen=True)
class Source:
    """A source's identity and how to open it: a ``FileSource`` or an ``S3Source``."""

    uri: str
    size: int
    version: str  # mtime (files) or ETag (S3): a changed file is a new run

    threaded: ClassVar[bool] = False
    """Whether reading blocks on I/O done by the event loop (S3): then read it off the loop,
    in a worker thread (see :func:`producer.reader.open_reader`)."""

    def open(self, *, max_ratio: float, max_bytes: int) -> BinaryIO:
        return self.open_tracked(max_ratio=max_ratio, max_bytes=max_bytes).stream

    def open_tracked(self, *, max_ratio: float, max_bytes: int) -> Opened:
        """:meth:`open`, with the position in the source for progress."""
        raw = self._open_raw()
        # The unbuffered stream under the buffer: its tell() takes no lock (the buffer's does,
        # and a threaded S3 read holds it while it waits on the loop).
        position = raw.raw.tell
        try:
            gzipped = raw.peek(2)[:2] == GZIP_MAGIC
        except BaseException:
            raw.close()
            raise
        if gzipped:
            stream: BinaryIO = gzip.GzipFile(fileobj=raw, mode="rb")  # type: ignore[assignment]
            bounded = BoundedReader(
                stream, raw, source=self.uri, max_ratio=max_ratio, max_bytes=max_bytes
            )
            return Opened(io.BufferedReader(bounded, buffer_size=1024 * 1024), position)
        return Opened(raw, position)

    def _open_raw(self) -> io.BufferedReader:
        raise NotImplementedError


class BoundedReader(io.RawIOBase):
    """A decompressing stream that refuses to inflate past a size or ratio."""

    def __init__(
        self,
        inner: BinaryIO,
        compressed: BinaryIO,
        *,
        source: str,
        max_ratio: float,
        max_bytes: int,
    ) -> None:
        self._inner = inner
        self._compressed = compressed
        self._source = source
        self._max_ratio = max_ratio
        self._max_bytes = max_bytes
        self.produced = 0

    def readable(self) -> bool:
        return True

    def readinto(self, buffer: memoryview) -> int:  # type: ignore[override]
        data = self._inner.read(len(buffer))
        n = len(data)
        buffer[:n] = data
        self.produced += n
        if self.produced > self._max_bytes:
            raise InputError(
                f"decompressed data passed {self._max_bytes} bytes "
                "(producer.max_decompressed_bytes)",
                source=self._source,
            )
        consumed = max(1, self._compressed.tell())
        if self.produced > 16 * 1024 * 1024 and self.produced / consumed > self._max_ratio:
            raise InputError(
                f"compression ratio passed {self._max_ratio:g}:1 (a gzip bomb?); "
                "raise producer.max_gzip_ratio if the file is genuine",
                source=self._source,
            )
        return n

    def close(self) -> None:
        try:
            self._inner.close()
            self._compressed.close()
        finally:
            super().close()
