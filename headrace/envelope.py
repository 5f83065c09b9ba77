"""Envelope v1: how rows travel from the producer to the worker inside one SQS message.

Wire format (documented in the README):

* Body: a JSON object, either as plain UTF-8 text (attribute ``headrace-enc`` = ``json``) or
  zstd-compressed and base64-encoded (``zstd+b64``)::

      {"v": 1, "run": "<32 hex>", "seq": 17, "table": "observations",
       "cols": ["observed_at", ...], "src": "drop.csv.gz",
       "lines": [[2, 3000], [3002, 41]],          # runs of [first source line, row count]
       "rows": [["2026-11-23 04:00:00", ...], ...], # text or null, in "cols" order
       "rej": [[3001, "raw,csv,text", "reason"]]}   # rows refused by the producer

* Attributes: ``headrace-v`` (Number, ``1``) and ``headrace-enc``.

``(run, seq)`` is the message's key: it is deterministic for a given source, table and packing
settings, so a re-run of the producer re-creates the same keys and the worker's ledger
drops what was applied before.
"""

from __future__ import annotations

import base64
import binascii
import re
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any

import orjson
import zstandard

from headrace.errors import EnvelopeError
from headrace.schema import Reject, row_text

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

# Characters SQS refuses in a body (XML 1.0's excluded code points).
_SQS_FORBIDDEN = re.compile("[^\t\n\r\x20-\ud7ff\ue000-\ufffd\U00010000-\U0010ffff]")


@dataclass
class Envelope:
    run_id: str
    seq: int
    table: str
    columns: tuple[str, ...]
    source: str
    rows: list[Sequence[str | None]]
    lines: list[int]
    rejects: list[Reject] = field(default_factory=list)
    raw_bytes: int = 0  # size of the decoded JSON: the worker's memory and statement accounting


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
    runs: list[list[int]] = []
    for line in lines:
        if runs and runs[-1][0] + runs[-1][1] == line:
            runs[-1][1] += 1
        else:
            runs.append([line, 1])
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
    meta: bytes, row_parts: Sequence[bytes], lines: Sequence[int], rejects: Sequence[Reject]
) -> bytes:
    rej = orjson.dumps([[r.line, r.raw, r.reason] for r in rejects])
    return b"".join(
        (
            meta,
            b',"lines":',
            orjson.dumps(_runs(lines)),
            b',"rej":',
            rej,
            b',"rows":[',
            b",".join(row_parts),
            b"]}",
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
    parts = [orjson.dumps(list(r)) for r in env.rows]
    raw = _assemble(meta, parts, env.lines, env.rejects)
    return _finish(env.seq, raw, len(env.rows), len(env.rejects), compress)


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
        rows = doc["rows"]
        lines = _expand(doc["lines"], len(rows) if isinstance(rows, list) else 0)
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
    if not (isinstance(cols, list) and cols and all(isinstance(c, str) for c in cols)):
        raise EnvelopeError("malformed column list")
    width = len(cols)
    if not isinstance(rows, list) or len(rows) != len(lines):
        raise EnvelopeError("row and line counts differ")
    if not all(type(r) is list and len(r) == width for r in rows):
        raise EnvelopeError(f"a row does not have {width} values")
    return Envelope(run_id, seq, table, tuple(cols), source, rows, lines, rejects, len(raw))


class Packer:
    """Packs validated rows into messages no larger than ``budget`` bytes.

    Deterministic: the same rows, header and settings always give the same messages and
    sequence numbers (the resume and dedup guarantees depend on it). Rows are serialised
    once each; a message is cut when the next row would pass the budget. With compression the
    cut point is estimated from the previous message's ratio and an over-full message is
    split in two.
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
    ) -> None:
        self.budget = budget
        self._meta = {
            "v": VERSION,
            "run": run_id,
            "table": table,
            "cols": list(columns),
            "src": source,
        }
        self._compressor = (
            zstandard.ZstdCompressor(level=zstd_level) if compression == "zstd" else None
        )
        self._ratio = 1.0
        self._parts: list[bytes] = []
        self._lines: list[int] = []
        self._rejects: list[Reject] = []
        self._size = 0
        self._seq = 0
        self._fixed = len(_header({**self._meta, "seq": 10**9})) + 64
        # Worst case (incompressible, base64): a row this size still fits on its own.
        self._row_limit = (budget - ATTRIBUTE_RESERVE_BYTES - self._fixed) * 3 // 4 - 64

    @property
    def next_seq(self) -> int:
        return self._seq

    def _target(self) -> int:
        room = self.budget - ATTRIBUTE_RESERVE_BYTES - self._fixed
        if self._compressor is None:
            return room
        # base64 inflates by 4/3; keep 10% slack for a less compressible stretch.
        return max(room // 2, int(room * 0.75 * self._ratio * 0.9))

    def add(
        self,
        rows: Sequence[Sequence[str | None]],
        lines: Sequence[int],
        rejects: Sequence[Reject],
    ) -> Iterator[EncodedMessage]:
        """Add a validated chunk; yields every message that became full."""
        for reject in rejects:
            yield from self._take_reject(reject)
        dumps = orjson.dumps
        target = self._target()
        for row, line in zip(rows, lines, strict=True):
            part = dumps(row)
            cost = len(part) + 8
            if cost > self._row_limit:
                # A single row larger than a message can carry: report it instead.
                reason = (
                    f"row is {len(part)} bytes encoded; a message carries at most {self._row_limit}"
                )
                yield from self._take_reject(Reject(line, row_text(row), reason))
                target = self._target()
                continue
            if self._size + cost > target and (self._parts or self._rejects):
                yield from self._flush()
                target = self._target()
            self._parts.append(part)
            self._lines.append(line)
            self._size += cost

    def _take_reject(self, reject: Reject) -> Iterator[EncodedMessage]:
        cost = len(orjson.dumps([reject.line, reject.raw, reject.reason])) + 1
        if cost > self._row_limit:  # a long raw row: cut it so the entry fits a message
            raw, note = reject.raw, f"... [{len(reject.raw)} characters, cut]"
            while raw and cost > self._row_limit:
                raw = raw[: len(raw) * 3 // 4]
                cost = len(orjson.dumps([reject.line, raw + note, reject.reason])) + 1
            reject = Reject(reject.line, raw + note, reject.reason)
        if self._size + cost > self._target() and (self._parts or self._rejects):
            yield from self._flush()
        self._rejects.append(reject)
        self._size += cost

    def finish(self) -> Iterator[EncodedMessage]:
        if self._parts or self._rejects:
            yield from self._flush()

    def _flush(self) -> Iterator[EncodedMessage]:
        parts, lines, rejects = self._parts, self._lines, self._rejects
        self._parts, self._lines, self._rejects, self._size = [], [], [], 0
        yield from self._encode(parts, lines, rejects)

    def _encode(
        self, parts: list[bytes], lines: list[int], rejects: list[Reject]
    ) -> Iterator[EncodedMessage]:
        meta = _header({**self._meta, "seq": self._seq})
        raw = _assemble(meta, parts, lines, rejects)
        msg = _finish(self._seq, raw, len(parts), len(rejects), self._compressor)
        if msg.size > self.budget and len(parts) + len(rejects) > 1:
            half_p, half_r = len(parts) // 2, len(rejects) // 2
            if half_p == half_r == 0:  # one row and one reject: split them apart
                half_r = 1
            yield from self._encode(parts[:half_p], lines[:half_p], rejects[:half_r])
            yield from self._encode(parts[half_p:], lines[half_p:], rejects[half_r:])
            return
        if msg.size > self.budget:
            raise EnvelopeError(f"a single entry does not fit in {self.budget} bytes")
        if msg.encoding == "zstd+b64":
            self._ratio = max(1.0, msg.raw_bytes / max(1, msg.size))
        self._seq += 1
        yield msg
