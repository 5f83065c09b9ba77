"""Envelope v1: how rows travel from the producer to the worker inside one SQS message.

Wire format (documented in the README):

* Body: a JSON object, either as plain UTF-8 text (attribute ``headrace-enc`` = ``json``) or
  zstd-compressed and base64-encoded (``zstd+b64``)::

      {"v": 1, "run": "<32 hex>", "seq": 17, "table": "observations",
       "cols": ["observed_at", ...], "src": "drop.csv.gz",
       "lines": [[2, 3000], [3002, 41]],          # runs of [first source line, row count]
       "rej": [[3001, "raw,csv,text", "reason"]],  # rows refused by the producer
       "n": 3041,                                  # rows carried
       "data": [["2026-11-23 04:00:00", ...],      # one array per column, in "cols" order,
                ["7", ...], ...]}                  # of text or null

  Column-major on purpose: a chunk is encoded and decoded as a handful of arrays, not one
  Python list per row, which is most of the CPU either side would otherwise spend.

* Attributes: ``headrace-v`` (Number, ``1``) and ``headrace-enc``.

``(run, seq)`` is the message's key: it is deterministic for a given source, table and packing
settings, so a re-run of the producer re-creates the same keys and the worker's ledger
drops what was applied before.
"""

from __future__ import annotations

import base64
import binascii
import re
from collections.abc import Generator, Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any

import orjson
import zstandard

from headrace.errors import EnvelopeError
from headrace.schema import Reject, drop_indices, row_text

__all__ = [
    "ATTRIBUTE_RESERVE_BYTES",
    "VERSION",
    "EncodedMessage",
    "Envelope",
    "Packer",
    "decode",
    "encode",
]

VERSION = 1
ATTRIBUTE_RESERVE_BYTES = 128
MAX_DECODED_BYTES = 64 * 1024 * 1024
"""Largest decompressed body a worker accepts (a compressed message is ≤ 1 MiB)."""

_VALUE_TYPES = {str, type(None)}
# Characters SQS refuses in a body (XML 1.0's excluded code points).
_SQS_FORBIDDEN = re.compile("[^\t\n\r\x20-\ud7ff\ue000-\ufffd\U00010000-\U0010ffff]")


@dataclass
class Envelope:
    run_id: str
    seq: int
    table: str
    columns: tuple[str, ...]
    source: str
    data: list[list[str | None]]  # one list per column
    lines: list[int]
    rejects: list[Reject] = field(default_factory=list)
    raw_bytes: int = 0  # size of the decoded JSON: the worker's memory and statement accounting

    @classmethod
    def from_rows(
        cls,
        run_id: str,
        seq: int,
        table: str,
        columns: Sequence[str],
        source: str,
        rows: Sequence[Sequence[str | None]],
        lines: Sequence[int],
        rejects: Sequence[Reject] = (),
        raw_bytes: int = 0,
    ) -> Envelope:
        data = [list(col) for col in zip(*rows, strict=True)] if rows else [[] for _ in columns]
        return cls(
            run_id, seq, table, tuple(columns), source, data, list(lines), list(rejects), raw_bytes
        )

    @property
    def row_count(self) -> int:
        return len(self.lines)

    @property
    def rows(self) -> list[list[str | None]]:
        """Row-major view (tests and tools; the sink zips the columns itself)."""
        return [list(r) for r in zip(*self.data, strict=True)] if self.lines else []


@dataclass(frozen=True)
class EncodedMessage:
    seq: int
    body: str
    encoding: str
    size: int  # body + attributes, UTF-8 bytes as SQS counts them
    row_count: int
    reject_count: int
    raw_bytes: int

    def attributes(self) -> dict[str, Any]:
        return {
            "headrace-v": {"DataType": "Number", "StringValue": str(VERSION)},
            "headrace-enc": {"DataType": "String", "StringValue": self.encoding},
        }


def _runs(lines: Sequence[int]) -> list[list[int]]:
    """[first line, count] runs of consecutive lines (ascending input).

    Divide and conquer on "last - first == length - 1", so the usual case (one-line rows, a
    few gaps for rejects) costs a handful of comparisons instead of one step per row.
    """
    runs: list[list[int]] = []
    stack = [(0, len(lines))]
    while stack:
        lo, hi = stack.pop()
        if hi <= lo:
            continue
        if lines[hi - 1] - lines[lo] == hi - 1 - lo:
            if runs and runs[-1][0] + runs[-1][1] == lines[lo]:
                runs[-1][1] += hi - lo
            else:
                runs.append([lines[lo], hi - lo])
            continue
        mid = (lo + hi) // 2
        stack.append((mid, hi))
        stack.append((lo, mid))
    return runs


def _expand(runs: Iterable[Sequence[int]], limit: int) -> list[int]:
    out: list[int] = []
    for start, count in runs:
        if count < 0 or len(out) + count > limit:  # bound memory before expanding
            raise EnvelopeError("row and line counts differ")
        out.extend(range(start, start + count))
    return out


def _header(env_meta: dict[str, Any]) -> bytes:
    return orjson.dumps(env_meta)[:-1]  # without the closing brace


def _assemble(
    meta: bytes,
    data: Sequence[Sequence[str | None]] | bytes,
    lines: Sequence[int],
    rejects: Sequence[Reject],
) -> bytes:
    rej = orjson.dumps([[r.line, r.raw, r.reason] for r in rejects])
    return b"".join(
        (
            meta,
            b',"lines":',
            orjson.dumps(_runs(lines)),
            b',"rej":',
            rej,
            b',"n":',
            str(len(lines)).encode(),
            b',"data":',
            data if isinstance(data, bytes) else orjson.dumps(data),
            b"}",
        )
    )


def _finish(
    seq: int, raw: bytes, rows: int, rejects: int, compress: zstandard.ZstdCompressor | None
) -> EncodedMessage:
    text = raw.decode("utf-8", "surrogatepass") if compress is None else ""
    if compress is None and not _SQS_FORBIDDEN.search(text):
        enc, body = "json", text
    else:
        compressor = compress or zstandard.ZstdCompressor(level=3)
        enc, body = "zstd+b64", base64.b64encode(compressor.compress(raw)).decode("ascii")
    size = len(body.encode("utf-8")) if enc == "json" else len(body)
    return EncodedMessage(seq, body, enc, size + ATTRIBUTE_RESERVE_BYTES, rows, rejects, len(raw))


def encode(env: Envelope, *, compress: zstandard.ZstdCompressor | None = None) -> EncodedMessage:
    """Encode one envelope (tests and tools; the producer packs with :class:`Packer`)."""
    meta = _header(
        {
            "v": VERSION,
            "run": env.run_id,
            "seq": env.seq,
            "table": env.table,
            "cols": list(env.columns),
            "src": env.source,
        }
    )
    raw = _assemble(meta, env.data, env.lines, env.rejects)
    return _finish(env.seq, raw, env.row_count, len(env.rejects), compress)


def decode(body: str, attributes: dict[str, Any] | None = None) -> Envelope:
    """Parse a message body; any defect raises :class:`EnvelopeError` (a poison message)."""
    enc = "json"
    if attributes:
        attr = attributes.get("headrace-enc")
        if attr is not None:
            enc = str(attr.get("StringValue", "json"))
    try:
        if enc == "zstd+b64":
            compressed = base64.b64decode(body, validate=True)
            # decompress() ignores max_output_size when the frame declares its size.
            if zstandard.frame_content_size(compressed) > MAX_DECODED_BYTES:
                raise EnvelopeError(f"body inflates past {MAX_DECODED_BYTES} bytes")
            raw: bytes = zstandard.ZstdDecompressor().decompress(
                compressed, max_output_size=MAX_DECODED_BYTES
            )
        elif enc == "json":
            raw = body.encode("utf-8")  # raw_bytes counts bytes, not characters
        else:
            raise EnvelopeError(f"unknown envelope encoding {enc!r}")
        doc = orjson.loads(raw)
    except (binascii.Error, zstandard.ZstdError, orjson.JSONDecodeError, ValueError) as exc:
        if isinstance(exc, EnvelopeError):
            raise
        raise EnvelopeError(f"undecodable body ({enc}): {exc}") from None
    if not isinstance(doc, dict):
        raise EnvelopeError("body is not a JSON object")
    version = doc.get("v")
    if version != VERSION:
        raise EnvelopeError(f"unsupported envelope version {version!r}")
    try:
        run_id = doc["run"]
        seq = doc["seq"]
        table = doc["table"]
        cols = doc["cols"]
        n = doc["n"]
        data = doc["data"]
        if not (isinstance(n, int) and n >= 0):
            raise EnvelopeError("malformed row count")
        lines = _expand(doc["lines"], n)
        rejects = [
            Reject(int(line), str(raw_row), str(reason))
            for line, raw_row, reason in doc.get("rej", [])
        ]
        source = str(doc.get("src", ""))
    except (KeyError, TypeError, ValueError) as exc:
        raise EnvelopeError(f"malformed envelope: {exc!r}") from None
    if not (isinstance(run_id, str) and re.fullmatch(r"[0-9a-f]{32}", run_id)):
        raise EnvelopeError("malformed run id")
    if not (isinstance(seq, int) and seq >= 0 and isinstance(table, str) and table):
        raise EnvelopeError("malformed seq or table")
    if not (isinstance(cols, list) and cols and all(isinstance(c, str) and c for c in cols)):
        raise EnvelopeError("malformed column list")
    if len(set(cols)) != len(cols):
        raise EnvelopeError("a column is named twice")
    if len(lines) != n:
        raise EnvelopeError("row and line counts differ")
    if not (isinstance(data, list) and len(data) == len(cols)):
        raise EnvelopeError(f"data does not have {len(cols)} columns")
    if not all(type(c) is list and len(c) == n for c in data):
        raise EnvelopeError(f"a column does not have {n} values")
    if not all(set(map(type, c)) <= _VALUE_TYPES for c in data):
        raise EnvelopeError("a value is neither text nor null")
    return Envelope(run_id, seq, table, tuple(cols), source, data, lines, rejects, len(raw))


class Packer:
    """Packs validated rows into messages no larger than ``budget`` bytes.

    Deterministic: the same rows, header and settings always give the same messages and
    sequence numbers (the resume and dedup guarantees depend on it). Chunks arrive as columns;
    a slice of rows is sized by encoding its columns, and a message is cut when the next slice
    would pass the budget. With compression the cut point is estimated from the previous
    message's ratio, and an over-full message is split in two.
    """

    def __init__(
        self,
        *,
        run_id: str,
        table: str,
        columns: Sequence[str],
        source: str,
        budget: int,
        compression: str = "zstd",
        zstd_level: int = 3,
        max_row_chars: int | None = None,
    ) -> None:
        self.budget = budget
        self._meta = {
            "v": VERSION,
            "run": run_id,
            "table": table,
            "cols": list(columns),
            "src": source,
        }
        self._width = len(columns)
        self._compressor = (
            zstandard.ZstdCompressor(level=zstd_level) if compression == "zstd" else None
        )
        self._ratio = 1.0
        # Pending rows are kept only encoded (each column's slices, brackets stripped): the
        # values themselves can be freed as soon as a chunk is packed.
        self._pieces: list[list[bytes]] = [[] for _ in columns]
        self._lines: list[int] = []
        self._rejects: list[Reject] = []
        self._size = 0
        self._seq = 0
        self._fixed = len(_header({**self._meta, "seq": 10**9})) + 96
        self._room = budget - ATTRIBUTE_RESERVE_BYTES - self._fixed
        # Worst case (incompressible, base64): a row this size still fits on its own.
        self._row_limit = (self._room - 2 * self._width - 16) * 3 // 4 - 64
        # When the table's types bound a row below the limit, no row can be too large.
        self._rows_always_fit = max_row_chars is not None and self._fits_alone(max_row_chars)

    @property
    def next_seq(self) -> int:
        return self._seq

    def _target(self) -> int:
        if self._compressor is None:
            return self._room
        # ratio = raw bytes per body byte of the previous message (base64 included); keep
        # 10% slack for a less compressible stretch, and bound the decoded size.
        return max(self._row_limit, min(int(self._room * self._ratio * 0.9), 16 * self._room))

    def add(
        self,
        rows: Sequence[Sequence[str | None]],
        lines: Sequence[int],
        rejects: Sequence[Reject],
    ) -> Iterator[EncodedMessage]:
        """Add a validated chunk given as rows; yields every message that became full."""
        columns = list(zip(*rows, strict=True)) if rows else [() for _ in range(self._width)]
        yield from self.add_columns(columns, lines, rejects)

    def add_columns(
        self,
        columns: Sequence[Sequence[str | None]],
        lines: Sequence[int],
        rejects: Sequence[Reject],
    ) -> Iterator[EncodedMessage]:
        """Add a validated chunk given as columns; yields every message that became full."""
        for reject in rejects:
            yield from self._take_reject(reject)
        columns, lines = yield from self._without_oversized(columns, lines)
        n = len(lines)
        if not n:
            return
        whole = self._slice(columns, 0, n)
        avg = max(1.0, whole[0] / n)
        i = 0
        while i < n:
            target = self._target()
            j = min(n, i + max(1, int((target - self._size) / avg)))
            cost, parts = whole if (i, j) == (0, n) else self._slice(columns, i, j)
            while j > i + 1 and self._size + cost > target:
                j = i + max(1, (j - i) * 3 // 4)
                cost, parts = self._slice(columns, i, j)
            if self._size + cost <= target:
                self._take(columns, lines, i, j, cost, parts)
                i = j
            elif self._lines or self._rejects:
                yield from self._flush()
            else:  # alone, it still fits the budget in the worst case
                self._take(columns, lines, i, j, cost, parts)
                i = j

    def _fits_alone(self, row_chars: int) -> bool:
        """Whether any row of at most ``row_chars`` characters fits a message on its own."""
        return row_chars * 6 + 8 * self._width + 16 <= self._row_limit  # JSON: ≤ 6 bytes a char

    def _without_oversized(
        self, columns: Sequence[Sequence[str | None]], lines: Sequence[int]
    ) -> Generator[EncodedMessage, None, tuple[Sequence[Sequence[str | None]], Sequence[int]]]:
        """Turn rows too large for any message into rejects (they would never fit)."""
        if self._rows_always_fit:
            return columns, lines
        if self._fits_alone(sum(max(map(len, filter(None, col)), default=0) for col in columns)):
            return columns, lines
        oversized: list[int] = []
        for k, line in enumerate(lines):
            row = [col[k] for col in columns]
            size = len(orjson.dumps(row))
            if size + 8 > self._row_limit:
                oversized.append(k)
                reason = f"row is {size} bytes encoded; a message carries at most {self._row_limit}"
                yield from self._take_reject(Reject(line, row_text(row), reason))
        if not oversized:
            return columns, lines
        return [drop_indices(col, oversized) for col in columns], drop_indices(lines, oversized)

    @staticmethod
    def _slice(columns: Sequence[Sequence[str | None]], i: int, j: int) -> tuple[int, list[bytes]]:
        """Encoded size of rows [i, j) and each column's JSON array for them."""
        parts = [orjson.dumps(col[i:j]) for col in columns]
        return sum(map(len, parts)) + 2 * (j - i), parts

    def _take(
        self,
        columns: Sequence[Sequence[str | None]],
        lines: Sequence[int],
        i: int,
        j: int,
        cost: int,
        parts: list[bytes],
    ) -> None:
        for pieces, part in zip(self._pieces, parts, strict=True):
            pieces.append(part[1:-1])
        self._lines.extend(lines[i:j])
        self._size += cost

    def _take_reject(self, reject: Reject) -> Iterator[EncodedMessage]:
        cost = len(orjson.dumps([reject.line, reject.raw, reject.reason])) + 1
        if cost > self._row_limit:  # a long raw row: cut it so the entry fits a message
            raw, note = reject.raw, f"... [{len(reject.raw)} characters, cut]"
            while raw and cost > self._row_limit:
                raw = raw[: len(raw) * 3 // 4]
                cost = len(orjson.dumps([reject.line, raw + note, reject.reason])) + 1
            reject = Reject(reject.line, raw + note, reject.reason)
        if self._size + cost > self._target() and (self._lines or self._rejects):
            yield from self._flush()
        self._rejects.append(reject)
        self._size += cost

    def finish(self) -> Iterator[EncodedMessage]:
        if self._lines or self._rejects:
            yield from self._flush()

    def _flush(self) -> Iterator[EncodedMessage]:
        lines, rejects = self._lines, self._rejects
        encoded = b"[" + b",".join(b"[" + b",".join(p) + b"]" for p in self._pieces) + b"]"
        self._lines, self._rejects, self._size = [], [], 0
        self._pieces = [[] for _ in range(self._width)]
        yield from self._encode(encoded, lines, rejects)

    def _encode(
        self,
        data: list[list[str | None]] | bytes,
        lines: list[int],
        rejects: list[Reject],
    ) -> Iterator[EncodedMessage]:
        meta = _header({**self._meta, "seq": self._seq})
        raw = _assemble(meta, data, lines, rejects)
        msg = _finish(self._seq, raw, len(lines), len(rejects), self._compressor)
        if msg.size > self.budget and len(lines) + len(rejects) > 1:
            # Rare: over budget after compression. Split the values (decoded again if needed).
            values: list[list[str | None]] = orjson.loads(data) if isinstance(data, bytes) else data
            half_p, half_r = len(lines) // 2, len(rejects) // 2
            if half_p == half_r == 0:  # one row and one reject: split them apart
                half_r = 1
            yield from self._encode([c[:half_p] for c in values], lines[:half_p], rejects[:half_r])
            yield from self._encode([c[half_p:] for c in values], lines[half_p:], rejects[half_r:])
            return
        if msg.size > self.budget:
            raise EnvelopeError(f"a single entry does not fit in {self.budget} bytes")
        if msg.encoding == "zstd+b64":
            self._ratio = max(0.75, msg.raw_bytes / max(1, msg.size))
        self._seq += 1
        yield msg
