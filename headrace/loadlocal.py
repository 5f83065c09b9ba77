"""``LOAD DATA LOCAL INFILE`` from memory, for the ``load`` insert path (MySQL, Aurora MySQL).

The server asks the client for the "file" a ``LOAD DATA LOCAL INFILE`` names; asyncmy would
open that path on the local disk. :func:`install` replaces asyncmy's sender with one that
answers only with the bytes :func:`feeding` registered for that connection — it never
reads a file, whatever name a server asks for, and refuses a request nothing was
registered for. Rows are written as tab-separated text with backslash escapes
(:func:`escape_tsv`), ``\\N`` for NULL. The statement must go as COM_QUERY (a driver
cursor's ``execute`` without parameters): asyncmy's prepared-statement path does not answer
the server's request and loses the connection.

With ``LOCAL`` the server turns conversion and duplicate-key errors into warnings (it cannot
stop the client mid-stream), so the sink checks ``@@warning_count`` after each load and, on
any warning, rolls the load back and inserts those rows as INSERT text instead, which
refuses bad rows exactly as the other paths do (:class:`worker.sink.Sink`).
"""

from __future__ import annotations

import re
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from typing import Any

from headrace.escape import escape_column

__all__ = ["NULL", "escape_tsv", "feeding", "install"]

NULL = "\\N"
_TSV_ESCAPES = str.maketrans({"\\": "\\\\", "\t": "\\t", "\n": "\\n", "\r": "\\r", "\x00": "\\0"})
_NEEDS_TSV_ESCAPE = re.compile("[\\\\\t\n\r\x00]")
_PACKET = 1 << 20  # bytes a data packet (below any max_allowed_packet a server allows)
_pending: dict[int, tuple[bytes, int]] = {}  # id(asyncmy connection) -> (data, packet size)


def escape_tsv(values: Sequence[str | None]) -> Sequence[str]:
    """A column's values for a tab-separated line, None as ``\\N``."""
    return escape_column(values, needs=_NEEDS_TSV_ESCAPE, table=_TSV_ESCAPES, null=NULL)


@contextmanager
def feeding(connection: Any, data: bytes, packet_bytes: int = _PACKET) -> Iterator[None]:
    """Register ``data`` as what ``connection``'s next ``LOAD DATA LOCAL`` sends, in packets
    of at most ``packet_bytes`` (the server refuses any packet over its max_allowed_packet)."""
    _pending[id(connection)] = (data, max(1024, min(packet_bytes, _PACKET)))
    try:
        yield
    finally:
        _pending.pop(id(connection), None)


class _MemoryFile:
    """asyncmy's ``LoadLocalFile`` interface, answering from :data:`_pending`."""

    def __init__(self, filename: str, connection: Any) -> None:
        self.connection = connection

    async def send_data(self) -> None:
        from asyncmy import errors

        conn = self.connection
        pending = _pending.pop(id(conn), None)
        try:
            if pending is None:
                raise errors.OperationalError(2000, "LOAD DATA LOCAL asked for data nobody gave")
            data, size = pending
            view = memoryview(data)
            for start in range(0, len(view), size):
                conn.write_packet(bytes(view[start : start + size]))
                await conn._proto.drain()
        finally:
            conn.write_packet(b"")  # the end of the data
            await conn._proto.drain()


def install() -> None:
    """Make asyncmy answer ``LOAD DATA LOCAL`` requests from memory only (idempotent)."""
    import asyncmy.connection

    setattr(asyncmy.connection, "LoadLocalFile", _MemoryFile)  # noqa: B010 - replacing it is the point
