"""Packs validated rows into envelope-v1 messages no larger than the queue allows.

The wire format itself (encode/decode) lives in :mod:`headrace.envelope`; only the producer
packs, so the packing policy lives here.
"""

from __future__ import annotations

from collections.abc import Generator, Iterator, Sequence
from dataclasses import dataclass

import orjson
import zstandard

from headrace.envelope import (
    ATTRIBUTE_RESERVE_BYTES,
    VERSION,
    EncodedMessage,
    JsonParts,
    assemble,
    header,
    seal,
)
from headrace.errors import EnvelopeError
from headrace.schema import Reject, drop_indices, row_text

__all__ = ["DEFAULT_PACKING", "Packer", "Packing"]


@dataclass(frozen=True)
class Packing:
    """How a run's messages are packed, besides the envelope's own fields."""

    compression: str = "zstd"
    zstd_level: int = 3
    max_row_chars: int | None = None  # longest row the table can hold (else: reject early)
    on_duplicate: str = "error"  # envelope v1's optional "dup"
    claim_check: bool = False  # a row too big for any message: a message of its own


DEFAULT_PACKING = Packing()


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
        packing: Packing = DEFAULT_PACKING,
    ) -> None:
        compression, zstd_level = packing.compression, packing.zstd_level
        max_row_chars, on_duplicate = packing.max_row_chars, packing.on_duplicate
        claim_check = packing.claim_check
        self.budget = budget
        # A row too big for any message: a message of its own, over budget, for the caller
        # to put in S3 behind a pointer (claim check); else a reject.
        self._claim_check = claim_check
        self._meta: dict[str, object] = {
            "v": VERSION,
            "run": run_id,
            "table": table,
            "cols": list(columns),
            "src": source,
        }
        if on_duplicate != "error":  # envelope v1's optional field; absent means error
            self._meta["dup"] = on_duplicate
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
        self._fixed = len(header({**self._meta, "seq": 10**9})) + 96
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
        """Turn rows too large for any message into rejects (they would never fit), or with
        the claim check into messages of their own (bigger than the budget)."""
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
                if self._claim_check:
                    yield from self._encode([[v] for v in row], [line], [], oversize=True)
                    continue
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
        data = _data_json(self._pieces)
        self._lines, self._rejects, self._size = [], [], 0
        self._pieces = [[] for _ in range(self._width)]
        yield from self._encode(data, lines, rejects)

    def _encode(
        self,
        data: list[list[str | None]] | JsonParts,
        lines: list[int],
        rejects: list[Reject],
        *,
        oversize: bool = False,
    ) -> Iterator[EncodedMessage]:
        meta = header({**self._meta, "seq": self._seq})
        raw = assemble(meta, data, lines, rejects)
        msg = seal(self._seq, raw, len(lines), len(rejects), self._compressor)
        if msg.size > self.budget and len(lines) + len(rejects) > 1:
            # Rare: over budget after compression. Split the values (decoded again if needed).
            values: list[list[str | None]] = (
                orjson.loads(b"".join(data)) if isinstance(data, JsonParts) else data
            )
            half_p, half_r = len(lines) // 2, len(rejects) // 2
            if half_p == half_r == 0:  # one row and one reject: split them apart
                half_r = 1
            yield from self._encode([c[:half_p] for c in values], lines[:half_p], rejects[:half_r])
            yield from self._encode([c[half_p:] for c in values], lines[half_p:], rejects[half_r:])
            return
        if msg.size > self.budget and not oversize:
            raise EnvelopeError(f"a single entry does not fit in {self.budget} bytes")
        if msg.encoding == "zstd+b64" and not oversize:
            self._ratio = max(0.75, msg.raw_bytes / max(1, msg.size))
        self._seq += 1
        yield msg


def _data_json(columns: Sequence[Sequence[bytes]]) -> JsonParts:
    """The ``data`` array (a list of columns) from each column's encoded slices, in pieces."""
    parts = [b"["]
    for k, pieces in enumerate(columns):
        parts.append(b",[" if k else b"[")
        for m, piece in enumerate(pieces):
            if m:
                parts.append(b",")
            parts.append(piece)
        parts.append(b"]")
    parts.append(b"]")
    return JsonParts(parts)
