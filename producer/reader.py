"""Streaming CSV reading with source line numbers, in chunks of rows.

Bytes are decoded as UTF-8 (or the file's encoding, :class:`headrace.csvformat.CsvFormat`)
by a ``TextIOWrapper`` (constant memory) whose error handler counts invalid bytes and keeps
them as surrogates, so one bad byte rejects its row (with line and column) instead of the
file. Parsing is the C ``csv`` module with the file's dialect; each row keeps the line it
started on (lines skipped before the header count).

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
from collections.abc import AsyncGenerator, Callable, Iterable, Iterator
from dataclasses import dataclass
from itertools import accumulate, islice
from typing import BinaryIO

from headrace.csvformat import CsvFormat
from headrace.errors import InputError
from headrace.schema import Reject, row_text
from headrace.settings import ProducerSettings
from producer.sources import Source

__all__ = ["Chunk", "CsvReader", "open_reader", "read_chunks"]

# U+DC80..U+DCFF: an undecodable byte kept by surrogateescape; U+DC00..U+DC7F: one below
# 0x80 that UTF-16 could not decode (never produced by the UTF-8 decoder).
_SURROGATE = re.compile("[\udc00-\udcff]")
_decode_errors = [0]
_CODECS = {"utf-8": "utf-8", "latin-1": "latin-1", "cp1252": "cp1252", "utf-16": "utf-16"}
"""Python's codec for each CsvFormat encoding."""
_NAMES = {"utf-8": "UTF-8", "utf-16": "UTF-16"}
_BOMS = (codecs.BOM_UTF16_LE, codecs.BOM_UTF16_BE)


def _count_and_escape(exc: UnicodeError) -> tuple[str, int]:
    replacement, resume = codecs.lookup_error("surrogateescape")(exc)
    _decode_errors[0] += len(replacement)  # one surrogate per undecodable byte
    return str(replacement), resume


def _count_and_mark(exc: UnicodeError) -> tuple[str, int]:
    """Like :func:`_count_and_escape` for any byte (UTF-16 fails on bytes below 0x80 too)."""
    if not isinstance(exc, UnicodeDecodeError):
        raise exc
    bad = exc.object[exc.start : exc.end]
    _decode_errors[0] += len(bad)
    return "".join(chr(0xDC00 + b) for b in bad), exc.end


codecs.register_error("headrace-count", _count_and_escape)
codecs.register_error("headrace-mark", _count_and_mark)


_BREAK = re.compile(r"\r\n|\r|\n")


def _lines_of(row: list[str]) -> int:
    """The physical lines a parsed row took: one, plus the line breaks kept in its fields."""
    return 1 + sum(len(_BREAK.findall(field)) for field in row if "\n" in field or "\r" in field)


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
        fmt: CsvFormat | None = None,
    ) -> None:
        self.source = source
        self._position = position
        self._chunk_rows = chunk_rows
        fmt = fmt or CsvFormat()
        self.encoding = fmt.encoding
        if fmt.encoding == "utf-16":
            _require_bom(stream, source)
        self._text = io.TextIOWrapper(
            stream,
            encoding=_codec(fmt),
            errors="headrace-count" if fmt.encoding == "utf-8" else "headrace-mark",
            newline="",
        )
        csv.field_size_limit(max_field_bytes)
        # The wrapper decodes ahead of the rows handed out (8 KiB at a time), so count the
        # undecodable bytes decoded so far and not yet found in a row.
        errors_before = _decode_errors[0]
        self._offset, skipped_errors = self._skip(fmt.skip_lines)
        if fmt == CsvFormat():
            self._reader = csv.reader(self._text, strict=False)
        else:
            self._reader = csv.reader(
                self._text,
                strict=False,
                delimiter=fmt.delimiter,
                quotechar=fmt.quote,
                escapechar=fmt.escape,
                doublequote=fmt.doublequote,
            )
        if fmt.header:
            self.header = self._read_header()
        else:
            self.header = list(fmt.columns)
        self._pending_errors = _decode_errors[0] - errors_before - skipped_errors
        self.rows_read = 0

    def _skip(self, count: int) -> tuple[int, int]:
        """Skip ``count`` physical lines before the header (the line numbers go on from
        them); returns it and the undecodable bytes those lines held (no row has them)."""
        found = 0
        for n in range(count):
            line = self._text.readline()
            if not line:
                raise InputError(
                    f"the file has {n} lines, fewer than the {count} to skip",
                    source=self.source,
                    line=n,
                )
            found += len(_SURROGATE.findall(line))
        return count, found

    def _read_header(self) -> list[str]:
        try:
            for row in self._reader:
                if row:
                    bad = next((i for i, name in enumerate(row) if _SURROGATE.search(name)), None)
                    if bad is not None:
                        raise InputError(
                            f"header is not valid {_NAMES.get(self.encoding, self.encoding)}",
                            source=self.source,
                            line=self._reader.line_num + self._offset,
                            column=bad + 1,
                        )
                    return row
        except csv.Error as exc:
            raise InputError(
                f"cannot parse header: {exc}",
                source=self.source,
                line=self._reader.line_num + 1 + self._offset,
            ) from None
        raise InputError("file is empty: no header line", source=self.source, line=1)

    @property
    def bytes_read(self) -> int:
        """Source bytes consumed so far (as stored; 0 when the stream cannot tell)."""
        return self._position() if self._position is not None else 0

    def chunks(self) -> Iterator[Chunk]:
        size = self._chunk_rows
        while True:
            errors_before = _decode_errors[0]
            rows: list[list[str]] = []
            lines: list[int] = []
            exhausted = False
            while len(rows) < size and not exhausted:  # blank lines are not rows
                exhausted = self._take(size - len(rows), rows, lines)
            if self._offset:
                lines = [line + self._offset for line in lines]
            rejects: list[Reject] = []
            self._pending_errors += _decode_errors[0] - errors_before
            if self._pending_errors > 0:
                rows, lines, rejects, found = self._split_undecodable(rows, lines, self.encoding)
                self._pending_errors = max(0, self._pending_errors - found)
            self.rows_read += len(rows) + len(rejects)
            if rows or rejects:
                yield Chunk(rows, lines, rejects)
            if exhausted:
                return

    def _take(self, count: int, rows: list[list[str]], lines: list[int]) -> bool:
        """Parse up to ``count`` rows (blank lines included) onto ``rows`` and the lines they
        start on onto ``lines``, leaving out blank lines; whether the file ended.

        The rows are taken by the C parser in one call. When they used as many lines as they
        are rows, each is one line; otherwise a row's lines are 1 + the line breaks in its
        fields (quoted fields keep theirs: ``\r\n``, ``\r`` or ``\n`` is one each)."""
        reader = self._reader
        before = reader.line_num
        batch: list[list[str]] = []
        try:
            batch.extend(islice(reader, count))  # keeps the rows parsed before an error
        except csv.Error as exc:
            start = before + 1 + sum(map(_lines_of, batch))
            raise InputError(
                f"cannot parse CSV: {exc}", source=self.source, line=start + self._offset
            ) from None
        if reader.line_num - before == len(batch):
            starts: Iterable[int] = range(before + 1, before + 1 + len(batch))
        else:
            starts = accumulate(map(_lines_of, batch[:-1]), initial=before + 1)
        if [] in batch:
            kept = [(row, line) for row, line in zip(batch, starts, strict=True) if row]
            rows.extend(row for row, _ in kept)
            lines.extend(line for _, line in kept)
        else:
            rows.extend(batch)
            lines.extend(starts)
        return len(batch) < count

    @staticmethod
    def _split_undecodable(
        rows: list[list[str]], lines: list[int], encoding: str = "utf-8"
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
            if encoding == "utf-8":
                text = row_text(
                    [v.encode("utf-8", "surrogateescape").decode("utf-8", "replace") for v in row]
                )
            else:
                text = row_text([_SURROGATE.sub("\ufffd", v) for v in row])
            name = _NAMES.get(encoding, encoding)
            rejects.append(
                Reject(
                    line,
                    text,
                    f"column {ci + 1}: invalid {name} byte 0x{byte:02x} at offset {match.start()}",
                )
            )
        return good_rows, good_lines, rejects, found

    def close(self) -> None:
        self._text.close()


def _codec(fmt: CsvFormat) -> str:
    """Python's codec for the file; utf-8-sig when a UTF-8 BOM could precede skipped lines
    or a first data row (by default the header's first name drops it)."""
    if fmt.encoding == "utf-8" and (fmt.skip_lines or not fmt.header):
        return "utf-8-sig"
    return _CODECS[fmt.encoding]


def _require_bom(stream: BinaryIO, source: str) -> None:
    """A UTF-16 file must say its byte order (a BOM); without one it would be guessed."""
    peek = getattr(stream, "peek", None)
    head = peek(2)[:2] if peek is not None else b""
    if head not in _BOMS:
        raise InputError(
            "a utf-16 file must start with a byte-order mark (FF FE or FE FF)",
            source=source,
            line=1,
        )


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
                fmt=p.csv,
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
