"""Messages from other producers: plain JSON rows, and Amazon SQS Extended Client pointers.

A message without headrace's ``headrace-v`` attribute is not an envelope. The worker accepts
two such shapes and turns each into the same :class:`~headrace.envelope.Envelope` its own
messages become, so everything after decoding (ledger, sink, rejects) is shared:

* **Plain JSON rows**: ``{"table": "t", "rows": [{"col": value, ...}, ...]}``, or a bare
  object (one row) or array (rows) whose table is the message attribute ``headrace-table``
  or ``worker.default_table``. Values (JSON strings, numbers, booleans, null) become the text
  a CSV field would hold and are typed by the table's rules
  (:meth:`~headrace.schema.TableSchema.validate`); a key the table lacks, a NOT NULL column
  missing or null, a nested value or a value the rules refuse make that row a reject with
  the reason, like a CSV row. The ledger key is derived from the attribute ``headrace-key``
  when the sender sets one, else from the SQS MessageId: only the former makes a message
  sent twice (a producer's retry) count once.
* **Extended Client pointers** (the Java library's and the Python library's, current and
  legacy names): the body ``["software.amazon.payloadoffloading.PayloadS3Pointer",
  {"s3BucketName": b, "s3Key": k}]`` with the attribute ``ExtendedPayloadSize``. The payload
  (fetched by the worker, streamed and size-capped) is then decoded as the body would be.
"""

from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass
from typing import Any

import orjson

from headrace.envelope import MAX_NAME_CHARS, Envelope
from headrace.errors import EnvelopeError
from headrace.schema import MAX_RAW_CHARS, ColumnSpec, Reject, TableSchema

__all__ = [
    "KEY_ATTRIBUTE",
    "POINTER_CLASSES",
    "SIZE_ATTRIBUTES",
    "TABLE_ATTRIBUTE",
    "ForeignRows",
    "S3Pointer",
    "is_envelope",
    "parse_pointer",
    "parse_rows",
    "type_rows",
]

KEY_ATTRIBUTE = "headrace-key"
TABLE_ATTRIBUTE = "headrace-table"
POINTER_CLASSES = frozenset(
    {
        "software.amazon.payloadoffloading.PayloadS3Pointer",
        "com.amazon.sqs.javamessaging.MessageS3Pointer",  # the libraries' legacy name
    }
)
SIZE_ATTRIBUTES = ("ExtendedPayloadSize", "SQSLargePayloadSize")
MAX_ROWS = 100_000  # rows one foreign message may carry
MAX_KEY_CHARS = 1024
_POINTER_START = re.compile(r'\s*\[\s*"')


def _attr(attributes: dict[str, Any] | None, name: str) -> str | None:
    value = (attributes or {}).get(name)
    if not isinstance(value, dict):
        return None
    text = value.get("StringValue")
    return text if isinstance(text, str) else None


def is_envelope(attributes: dict[str, Any] | None) -> bool:
    """Whether a message says it is a headrace envelope (the producer sets ``headrace-v``)."""
    return "headrace-v" in (attributes or {})


@dataclass(frozen=True)
class S3Pointer:
    bucket: str
    key: str
    size: int | None  # ExtendedPayloadSize, when given


def parse_pointer(body: str, attributes: dict[str, Any] | None) -> S3Pointer | None:
    """The S3 object an Extended Client message points at, or None if it is no pointer."""
    size_text = next((t for n in SIZE_ATTRIBUTES if (t := _attr(attributes, n)) is not None), None)
    if size_text is None and _POINTER_START.match(body) is None:
        return None  # the common case, decided without parsing (or copying) the body
    try:
        doc = orjson.loads(body)
    except orjson.JSONDecodeError:
        if size_text is None:
            return None
        raise EnvelopeError("an Extended Client message whose body is not a pointer") from None
    if not (isinstance(doc, list) and len(doc) == 2 and doc[0] in POINTER_CLASSES):
        if size_text is None:
            return None
        raise EnvelopeError("an Extended Client message whose body is not a pointer")
    where = doc[1]
    bucket = where.get("s3BucketName") if isinstance(where, dict) else None
    key = where.get("s3Key") if isinstance(where, dict) else None
    if not (isinstance(bucket, str) and 3 <= len(bucket) <= 63):
        raise EnvelopeError("an S3 pointer without a valid s3BucketName")
    if not (isinstance(key, str) and 0 < len(key) <= MAX_KEY_CHARS):
        raise EnvelopeError("an S3 pointer without a valid s3Key")
    size = None
    if size_text is not None:
        if not size_text.isdigit():
            raise EnvelopeError("ExtendedPayloadSize is not a number")
        size = int(size_text)
    return S3Pointer(bucket, key, size)


@dataclass(frozen=True)
class ForeignRows:
    """A plain JSON message's rows, before typing."""

    run_id: str  # the ledger key's run id (seq is 0)
    source: str  # what rejected_rows.source says: the idempotency key or the message id
    table: str
    rows: list[dict[str, Any]]
    raw_bytes: int


def parse_rows(
    payload: bytes | str,
    attributes: dict[str, Any] | None,
    *,
    message_id: str,
    default_table: str | None,
) -> ForeignRows:
    """Parse a plain JSON message; :class:`EnvelopeError` (poison) when it is none."""
    try:
        doc = orjson.loads(payload)
    except orjson.JSONDecodeError as exc:
        raise EnvelopeError(f"undecodable body (not JSON): {exc}") from None
    table: object = _attr(attributes, TABLE_ATTRIBUTE) or default_table
    if isinstance(doc, dict) and "rows" in doc:
        table, rows = doc.get("table", table), doc["rows"]
        if set(doc) - {"table", "rows"}:
            raise EnvelopeError(
                f"unknown fields beside rows: {sorted(set(doc) - {'table', 'rows'})}"
            )
    elif isinstance(doc, dict):
        rows = [doc]
    else:
        rows = doc
    if not (isinstance(rows, list) and all(isinstance(r, dict) for r in rows)):
        raise EnvelopeError("not rows: expected a JSON object or an array of objects")
    if not 0 < len(rows) <= MAX_ROWS:
        raise EnvelopeError(f"a JSON message carries 1 to {MAX_ROWS} rows, not {len(rows)}")
    if table is None:
        raise EnvelopeError(
            "JSON rows without a table: set it in the body, the headrace-table attribute "
            "or HEADRACE_WORKER__DEFAULT_TABLE"
        )
    if not (isinstance(table, str) and 0 < len(table) <= MAX_NAME_CHARS and table.isprintable()):
        raise EnvelopeError("malformed table name")
    key = _attr(attributes, KEY_ATTRIBUTE)
    if key is not None and not 0 < len(key) <= MAX_KEY_CHARS:
        raise EnvelopeError(f"{KEY_ATTRIBUTE} must be 1 to {MAX_KEY_CHARS} characters")
    source = f"key:{key}" if key is not None else f"sqs:{message_id}"
    run_id = hashlib.sha256(f"foreign\x1f{source}".encode()).hexdigest()[:32]
    size = len(payload.encode() if isinstance(payload, str) else payload)
    return ForeignRows(run_id, source, table, rows, size)


def _text(value: object) -> str | None:
    """A JSON value as the text a CSV field would hold (None: null); ValueError if nested."""
    if value is None or isinstance(value, str):
        return value
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int):
        return str(value)
    if isinstance(value, float):
        return repr(value)
    raise ValueError("is not a JSON string, number, boolean or null")


def _raw(row: dict[str, Any]) -> str:
    text = orjson.dumps(row).decode()
    return text if len(text) <= MAX_RAW_CHARS else text[:MAX_RAW_CHARS] + "... [cut]"


def type_rows(foreign: ForeignRows, schema: TableSchema) -> Envelope:
    """Type the rows by the table's rules: an envelope of the good ones and the rejects."""
    by_name = {name.lower(): spec for name, spec in schema.columns.items()}
    specs: dict[str, ColumnSpec] = {}  # key as sent -> column
    unknown: set[str] = set()
    for row in foreign.rows:
        for key in row:
            if key not in specs and key not in unknown:
                spec = by_name.get(key.lower()) if isinstance(key, str) else None
                if spec is None or any(s is spec for s in specs.values()):
                    unknown.add(key)
                else:
                    specs[key] = spec
    for spec in schema.columns.values():  # a required column no row names: null in each
        if spec.required and all(s is not spec for s in specs.values()):
            specs[spec.name] = spec
    keys = list(specs)
    texts: list[list[str]] = []
    lines: list[int] = []
    rejects: list[Reject] = []
    for line, row in enumerate(foreign.rows, start=1):
        try:
            texts.append(_row_text(row, keys, specs, unknown, schema.name))
            lines.append(line)
        except ValueError as exc:
            rejects.append(Reject(line, _raw(row), str(exc)))
    valid = schema.validate([specs[k] for k in keys], texts, lines)
    for reject in valid.rejects:  # the JSON row, not the CSV text, is what was sent
        rejects.append(Reject(reject.line, _raw(foreign.rows[reject.line - 1]), reject.reason))
    rejects.sort(key=lambda r: r.line)
    return Envelope(
        run_id=foreign.run_id,
        seq=0,
        table=schema.name,
        columns=tuple(specs[k].name for k in keys),
        source=foreign.source,
        data=[list(column) for column in valid.columns],
        lines=list(valid.lines),
        rejects=rejects,
        raw_bytes=foreign.raw_bytes,
    )


def _row_text(
    row: dict[str, Any],
    keys: list[str],
    specs: dict[str, ColumnSpec],
    unknown: set[str],
    table: str,
) -> list[str]:
    extra = sorted(k for k in row if k in unknown)
    if extra:
        raise ValueError(f"column {extra[0]!r} is not a writable column of table {table!r}")
    out: list[str] = []
    for index, key in enumerate(keys, start=1):
        spec = specs[key]
        try:
            value = _text(row.get(key))
        except ValueError as exc:
            raise ValueError(f"column {index} {spec.name!r}: {exc}") from None
        if value is None:
            if not spec.nullable:
                missing = "missing" if key not in row else "null"
                raise ValueError(f"column {index} {spec.name!r}: is {missing} but NOT NULL")
            value = ""  # the CSV rule: an empty field in a nullable column is NULL
        out.append(value)
    return out
