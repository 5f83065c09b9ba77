"""Streaming CSV reading with source line numbers, in chunks of rows.

Bytes are decoded as UTF-8 by a ``TextIOWrapper`` (constant memory) whose error handler
counts invalid bytes and keeps them as surrogates, so one bad byte rejects its row (with line
and column) instead of the file. Parsing is the C ``csv`` module; each row keeps the line it
started on.

:func:`open_reader` and :func:`read_chunks` drive a reader from async code: inline for local
files, in worker threads for sources whose reads wait on the event loop (S3, see
:mod:`producer.sources.s3`).
"""

from __future__ import annotations

import asyncio
import codecs
import csv
import io
import re
from collections.abc import AsyncGenerator, Callable, Iterator
from dataclasses import dataclass
from typing import BinaryIO

from headrace.errors import InputError
from headrace.schema import Reject, row_text
from headrace.settings import ProducerSettings
from producer.sources import Source

__all__ = ["Chunk", "CsvReader", "open_reader", "read_chunks"]

_SURROGATE = re.compile("[\udc80-\udcff]")
_decode_errors = [0]


def _count_and_escape(exc: UnicodeError) -> tuple[str, int]:
    replacement, resume = codecs.lookup_error("surrogateescape")(exc)
    _decode_errors[0] += len(replacement)  # one surrogate per undecodable byte
    return str(replacement), resume


codecs.register_error("headrace-count", _count_and_escape)


@dataclass
class Chunk:
    rows: list[list[str]]
    lines: list[int]
    rejects: list[Reject]  # rows refused before typing (undecodable bytes)


class CsvReader:
    """Reads the header, then yields chunks of ``chunk_rows`` data rows."""

    def __init__(
        self,
        stream: BinaryIO,
        *,
        source: str,
        chunk_rows: int,
        max_field_bytes: int,
        position: Callable[[], int] | None = None,
    ) -> None:
        self.source = source
        self._position = position
        self._chunk_rows = chunk_rows
        self._text = io.TextIOWrapper(stream, encoding="utf-8", errors="headrace-count", newline="")
        csv.field_size_limit(max_field_bytes)
        self._reader = csv.reader(self._text, strict=False)
        # The wrapper decodes ahead of the rows handed out (8 KiB at a time), so count the
        # undecodable bytes decoded so far and not yet found in a row.
        errors_before = _decode_errors[0]
        self.header = self._read_header()
        self._pending_errors = _decode_errors[0] - errors_before
        self.rows_read = 0

    def _read_header(self) -> list[str]:
        try:
            for row in self._reader:
                if row:
                    bad = next((i for i, name in enumerate(row) if _SURROGATE.search(name)), None)
                    if bad is not None:
                        raise InputError(
                            "header is not valid UTF-8",
                            source=self.source,
                            line=self._reader.line_num,
                            column=bad + 1,
                        )
                    return row
        except csv.Error as exc:
            raise InputError(
                f"cannot parse header: {exc}", source=self.source, line=self._reader.line_num + 1
            ) from None
        raise InputError("file is empty: no header line", source=self.source, line=1)

    @property
    def bytes_read(self) -> int:
        """Source bytes consumed so far (as stored; 0 when the stream cannot tell)."""
        return self._position() if self._position is not None else 0

    def chunks(self) -> Iterator[Chunk]:
        reader = self._reader
        size = self._chunk_rows
        while True:
            errors_before = _decode_errors[0]
            rows: list[list[str]] = []
            lines: list[int] = []
            start = reader.line_num + 1
            exhausted = True
            try:
                for row in reader:
                    if row:  # a blank line is not a row
                        rows.append(row)
                        lines.append(start)
                    start = reader.line_num + 1
                    if len(rows) >= size:
                        exhausted = False
                        break
            except csv.Error as exc:
                raise InputError(
                    f"cannot parse CSV: {exc}", source=self.source, line=start
                ) from None
            rejects: list[Reject] = []
            self._pending_errors += _decode_errors[0] - errors_before
            if self._pending_errors > 0:
                rows, lines, rejects, found = self._split_undecodable(rows, lines)
                self._pending_errors = max(0, self._pending_errors - found)
            self.rows_read += len(rows) + len(rejects)
            if rows or rejects:
                yield Chunk(rows, lines, rejects)
            if exhausted:
                return

    @staticmethod
    def _split_undecodable(
        rows: list[list[str]], lines: list[int]
    ) -> tuple[list[list[str]], list[int], list[Reject], int]:
        good_rows: list[list[str]] = []
        good_lines: list[int] = []
        rejects: list[Reject] = []
        found = 0
        for row, line in zip(rows, lines, strict=True):
            bad = next(((ci, m) for ci, v in enumerate(row) if (m := _SURROGATE.search(v))), None)
            if bad is None:
                good_rows.append(row)
                good_lines.append(line)
                continue
            ci, match = bad
            found += sum(len(_SURROGATE.findall(v)) for v in row)
            byte = ord(match.group()) - 0xDC00
            text = row_text(
                [v.encode("utf-8", "surrogateescape").decode("utf-8", "replace") for v in row]
            )
            rejects.append(
                Reject(
                    line,
                    text,
                    f"column {ci + 1}: invalid UTF-8 byte 0x{byte:02x} at offset {match.start()}",
                )
            )
        return good_rows, good_lines, rejects, found

    def close(self) -> None:
        self._text.close()


async def open_reader(source: Source, p: ProducerSettings) -> CsvReader:
    """Open ``source`` and read its header (in a worker thread if ``source.threaded``)."""

    def make() -> CsvReader:
        stream, position = source.open_tracked(
            max_ratio=p.max_gzip_ratio, max_bytes=p.max_decompressed_bytes
        )
        try:
            return CsvReader(
                stream,
                source=source.uri,
                chunk_rows=p.chunk_rows,
                max_field_bytes=p.max_field_bytes,
                position=position,
            )
        except BaseException:
            stream.close()
            raise

    return await asyncio.to_thread(make) if source.threaded else make()


async def read_chunks(reader: CsvReader, *, threaded: bool) -> AsyncGenerator[Chunk, None]:
    """``reader.chunks()``; with ``threaded`` each chunk is read in a worker thread."""
    chunks = reader.chunks()
    if not threaded:
        for chunk in chunks:
            yield chunk
        return
    while (item := await asyncio.to_thread(_next_or_none, chunks)) is not None:
        yield item


def _next_or_none(chunks: Iterator[Chunk]) -> Chunk | None:
    return next(chunks, None)  # StopIteration must not cross a thread/future boundary
