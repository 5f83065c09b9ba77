"""Envelope v1: how rows travel from the producer to the worker inside one SQS message.

Wire format (documented in the README):

* Body: a JSON object, either as plain UTF-8 text (attribute ``headrace-enc`` = ``json``) or
  zstd-compressed and base64-encoded (``zstd+b64``)::

      {"v": 1, "run": "<32 hex>", "seq": 17, "table": "observations",
       "cols": ["observed_at", ...], "src": "drop.csv.gz",
       "lines": [[2, 3000], [3002, 41]],          # runs of [first source line, row count]
       "rej": [[3001, "raw,csv,text", "reason"]],  # rows refused by the producer
       "n": 3041,                                  # rows carried
       "dup": "update",                            # optional: skip|update (absent: error)
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
import bisect
import hashlib
import hmac
import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

import orjson
import zstandard

from headrace.errors import EnvelopeError
from headrace.schema import Reject

__all__ = [
    "ATTRIBUTE_RESERVE_BYTES",
    "VERSION",
    "EncodedMessage",
    "Envelope",
    "JsonParts",
    "assemble",
    "decode",
    "encode",
    "header",
    "seal",
    "sign",
    "verify_signature",
]

VERSION = 1
ATTRIBUTE_RESERVE_BYTES = 128
MAX_DECODED_BYTES = 24 * 1024 * 1024
"""Largest decompressed body a worker accepts. A message is ≤ 1 MiB and the packer never
lets a compressed one inflate past 16 times its room, so a genuine body stays well below."""
MAX_SEQ = 2**31 - 1  # ingest_ledger.seq is an INT
MAX_LINE = 2**63 - 1  # rejected_rows.line is a BIGINT
MAX_NAME_CHARS = 64  # MySQL identifiers
MAX_REJECT_RAW_CHARS = 8192  # the producer cuts a rejected row's text to 4 KiB (row_text)
MAX_REJECT_REASON_CHARS = 65_536  # the sink keeps 1,024; a long ENUM list may be longer
MAX_SOURCE_CHARS = 4096
ON_DUPLICATE = ("error", "skip", "update")
"""Values of the optional ``dup`` field; absent means ``error`` (older producers send none)."""

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
    on_duplicate: str = "error"  # "dup": what a row whose unique key exists does

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
    ) -> Envelope:
        """An envelope of row-major ``rows`` (tests and tools), sized as :func:`encode` would."""
        data = [list(col) for col in zip(*rows, strict=True)] if rows else [[] for _ in columns]
        env = cls(run_id, seq, table, tuple(columns), source, data, list(lines), list(rejects))
        env.raw_bytes = sum(map(len, assemble(b"{", env.data, env.lines, env.rejects)))
        return env

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

    def attributes(self, signing_key: bytes | None = None) -> dict[str, Any]:
        attrs = {
            "headrace-v": {"DataType": "Number", "StringValue": str(VERSION)},
            "headrace-enc": {"DataType": "String", "StringValue": self.encoding},
        }
        if signing_key is not None:
            signature = sign(signing_key, self.body, self.encoding)
            attrs["headrace-sig"] = {"DataType": "String", "StringValue": signature}
        return attrs


def sign(key: bytes, body: str, encoding: str) -> str:
    """HMAC-SHA256 of the version, the encoding and the body (43 characters, base64url)."""
    mac = hmac.new(key, f"{VERSION}\x1f{encoding}\x1f".encode(), hashlib.sha256)
    mac.update(body.encode("utf-8", "surrogatepass"))
    return base64.urlsafe_b64encode(mac.digest()).decode().rstrip("=")


def verify_signature(key: bytes, body: str, attributes: dict[str, Any] | None) -> None:
    """Refuse (as poison) a message without a valid signature under ``key``."""
    attrs = attributes or {}
    given = str((attrs.get("headrace-sig") or {}).get("StringValue", ""))
    encoding = str((attrs.get("headrace-enc") or {}).get("StringValue", "json"))
    if not given:
        raise EnvelopeError("unsigned message (the worker requires a signature)")
    if not hmac.compare_digest(given, sign(key, body, encoding)):
        raise EnvelopeError("bad signature")


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
    """The line of every row from ``[first, count]`` runs: ascending, each line in range."""
    out: list[int] = []
    after = 0  # lines must rise: no row twice
    for start, count in runs:
        if type(start) is not int or type(count) is not int:
            raise EnvelopeError("a line run is not two integers")
        if count < 0 or len(out) + count > limit:  # bound memory before expanding
            raise EnvelopeError("row and line counts differ")
        if start <= after or start + count - 1 > MAX_LINE:
            raise EnvelopeError("line numbers out of order or out of range")
        out.extend(range(start, start + count))
        after = start + count - 1
    return out


def header(env_meta: dict[str, Any]) -> bytes:
    """The envelope's fixed fields as JSON, left open for :func:`assemble` to complete."""
    return orjson.dumps(env_meta)[:-1]  # without the closing brace


class JsonParts(tuple[bytes, ...]):
    """JSON already encoded, in pieces that concatenate to it (the packer's columns)."""


def assemble(
    meta: bytes,
    data: Sequence[Sequence[str | None]] | JsonParts,
    lines: Sequence[int],
    rejects: Sequence[Reject],
) -> list[bytes]:
    """The body's JSON as pieces (:func:`seal` joins them once: a full message is megabytes,
    and joining the packer's column slices here and again in the body would copy it twice)."""
    rej = orjson.dumps([[r.line, r.raw, r.reason] for r in rejects])
    return [
        meta,
        b',"lines":',
        orjson.dumps(_runs(lines)),
        b',"rej":',
        rej,
        b',"n":',
        str(len(lines)).encode(),
        b',"data":',
        *(data if isinstance(data, JsonParts) else (orjson.dumps(data),)),
        b"}",
    ]


def seal(
    seq: int,
    raw: Sequence[bytes],
    rows: int,
    rejects: int,
    compress: zstandard.ZstdCompressor | None,
) -> EncodedMessage:
    """Encode the body ``raw`` (pieces, :func:`assemble`) as plain JSON or zstd + base64.

    One-shot compression of the joined body, on purpose: the packer cuts messages by the
    previous one's compression ratio, so the compressed sizes must not change between
    versions, or a run resumed by a newer producer would pack other rows under the same
    sequence numbers (streaming the pieces through a compressor gives other sizes above
    ~2 MB)."""
    body_bytes = b"".join(raw)
    text = body_bytes.decode("utf-8", "surrogatepass") if compress is None else ""
    if compress is None and not _SQS_FORBIDDEN.search(text):
        enc, body = "json", text
    else:
        compressor = compress or zstandard.ZstdCompressor(level=3)
        enc, body = "zstd+b64", base64.b64encode(compressor.compress(body_bytes)).decode("ascii")
    size = len(body.encode("utf-8")) if enc == "json" else len(body)
    return EncodedMessage(
        seq, body, enc, size + ATTRIBUTE_RESERVE_BYTES, rows, rejects, len(body_bytes)
    )


def encode(env: Envelope, *, compress: zstandard.ZstdCompressor | None = None) -> EncodedMessage:
    """Encode one envelope (tests and tools; the producer packs with :class:`Packer`)."""
    meta = header(
        {
            "v": VERSION,
            "run": env.run_id,
            "seq": env.seq,
            "table": env.table,
            "cols": list(env.columns),
            "src": env.source,
            **({"dup": env.on_duplicate} if env.on_duplicate != "error" else {}),
        }
    )
    raw = assemble(meta, env.data, env.lines, env.rejects)
    return seal(env.seq, raw, env.row_count, len(env.rejects), compress)


def decode(body: str, attributes: dict[str, Any] | None = None) -> Envelope:
    """Parse a message body; any defect raises :class:`EnvelopeError` (a poison message)."""
    enc = "json"
    if attributes:
        attr = attributes.get("headrace-enc")
        if attr is not None:
            enc = str(attr.get("StringValue", "json"))
    raw = _decoded_body(body, enc)
    try:
        doc = orjson.loads(raw)
    except orjson.JSONDecodeError as exc:
        raise EnvelopeError(f"undecodable body ({enc}): {exc}") from None
    if not isinstance(doc, dict):
        raise EnvelopeError("body is not a JSON object")
    version = doc.get("v")
    if version != VERSION:
        raise EnvelopeError(f"unsupported envelope version {version!r}")
    env, n = _fields(doc)
    env.raw_bytes = len(raw)
    _check(env, n)
    return env


def _decoded_body(body: str, enc: str) -> bytes:
    """The body's JSON bytes: as sent, or base64-decoded and decompressed (size-capped)."""
    if enc == "json":
        return body.encode("utf-8")  # raw_bytes counts bytes, not characters
    if enc != "zstd+b64":
        raise EnvelopeError(f"unknown envelope encoding {enc!r}")
    try:
        compressed = base64.b64decode(body, validate=True)
        # decompress() ignores max_output_size when the frame declares its size.
        if zstandard.frame_content_size(compressed) > MAX_DECODED_BYTES:
            raise EnvelopeError(f"body inflates past {MAX_DECODED_BYTES} bytes")
        raw: bytes = zstandard.ZstdDecompressor().decompress(
            compressed, max_output_size=MAX_DECODED_BYTES
        )
    except (binascii.Error, zstandard.ZstdError, ValueError) as exc:
        if isinstance(exc, EnvelopeError):
            raise
        raise EnvelopeError(f"undecodable body ({enc}): {exc}") from None
    return raw


def _fields(doc: dict[str, Any]) -> tuple[Envelope, int]:
    """The envelope's fields and its row count ``n``, unchecked but for what expanding the
    line runs needs."""
    try:
        n = doc["n"]
        if not (isinstance(n, int) and n >= 0):
            raise EnvelopeError("malformed row count")
        env = Envelope(
            run_id=doc["run"],
            seq=doc["seq"],
            table=doc["table"],
            columns=doc["cols"],
            source=doc.get("src", ""),
            data=doc["data"],
            lines=_expand(doc["lines"], n),
            rejects=[Reject(*_reject(entry)) for entry in doc.get("rej", [])],
            on_duplicate=doc.get("dup", "error"),
        )
    except (KeyError, TypeError, ValueError) as exc:
        if isinstance(exc, EnvelopeError):
            raise
        raise EnvelopeError(f"malformed envelope: {exc!r}") from None
    return env, n


def _reject(entry: Any) -> tuple[int, str, str]:
    """One ``[line, raw, reason]`` entry of ``rej``, of the right types and sizes."""
    line, raw, reason = entry
    if type(line) is not int or not 1 <= line <= MAX_LINE:
        raise EnvelopeError("a rejected row's line is not a line number")
    if type(raw) is not str or len(raw) > MAX_REJECT_RAW_CHARS:
        raise EnvelopeError("a rejected row's text is not text of a bounded size")
    if type(reason) is not str or len(reason) > MAX_REJECT_REASON_CHARS:
        raise EnvelopeError("a rejected row's reason is not text of a bounded size")
    return line, raw, reason


def _in_runs(line: int, lines: list[int]) -> bool:
    """Whether ``line`` is one of the (ascending) row lines."""
    i = bisect.bisect_left(lines, line)
    return i < len(lines) and lines[i] == line


def _is_name(value: object) -> bool:
    return (
        isinstance(value, str)
        and 0 < len(value) <= MAX_NAME_CHARS
        and value.isprintable()
        and value == value.strip()
    )


def _check_optional(env: Envelope) -> None:
    """The fields a message may leave out: ``src`` and ``dup``."""
    if not (isinstance(env.source, str) and len(env.source) <= MAX_SOURCE_CHARS):
        raise EnvelopeError("malformed source")
    if type(env.on_duplicate) is not str or env.on_duplicate not in ON_DUPLICATE:
        raise EnvelopeError("malformed dup (error, skip or update)")


def _check(env: Envelope, n: int) -> None:
    """Every field of the right type and every count agreeing; columns become a tuple."""
    run_id, seq, table, cols, data = env.run_id, env.seq, env.table, env.columns, env.data
    if not (isinstance(run_id, str) and re.fullmatch(r"[0-9a-f]{32}", run_id)):
        raise EnvelopeError("malformed run id")
    if not (type(seq) is int and 0 <= seq <= MAX_SEQ):
        raise EnvelopeError("malformed seq")
    if not _is_name(table):
        raise EnvelopeError("malformed table name")
    if not (isinstance(cols, list) and cols and all(_is_name(c) for c in cols)):
        raise EnvelopeError("malformed column list")
    if len(set(cols)) != len(cols):
        raise EnvelopeError("a column is named twice")
    _check_optional(env)
    if len(env.lines) != n:
        raise EnvelopeError("row and line counts differ")
    reject_lines = {r.line for r in env.rejects}
    if len(reject_lines) != len(env.rejects) or any(
        _in_runs(line, env.lines) for line in reject_lines
    ):
        raise EnvelopeError("a line is both a row and a reject, or rejected twice")
    if not (isinstance(data, list) and len(data) == len(cols)):
        raise EnvelopeError(f"data does not have {len(cols)} columns")
    if not all(type(c) is list and len(c) == n for c in data):
        raise EnvelopeError(f"a column does not have {n} values")
    if not all(set(map(type, c)) <= _VALUE_TYPES for c in data):
        raise EnvelopeError("a value is neither text nor null")
    env.columns = tuple(cols)
