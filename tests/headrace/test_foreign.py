"""Messages from other producers: JSON rows typed by the table's rules, Extended Client
pointers recognised in the Java and Python libraries' formats (current and legacy)."""

from __future__ import annotations

from typing import Any

import orjson
import pytest

from headrace.errors import EnvelopeError
from headrace.foreign import S3Pointer, parse_pointer, parse_rows, type_rows
from headrace.schema import TableSchema

ROW = {
    "observed_at": "2026-11-22 04:00:00",
    "bot_id": 7,
    "sku": "SKU-1",
    "price": 12.5,
    "quantity": 3,
    "in_stock": True,
    "title": "Acme kettle",
}


def _rows(doc: Any, attrs: dict[str, Any] | None = None, table: str | None = None) -> Any:
    return parse_rows(orjson.dumps(doc), attrs, message_id="m-1", default_table=table)


def _attr(value: str, kind: str = "String") -> dict[str, str]:
    return {"DataType": kind, "StringValue": value}


def test_rows_are_typed_like_csv_fields_and_bad_rows_become_rejects(obs: TableSchema) -> None:
    rows = [
        ROW,
        {**ROW, "sku": "SKU-2", "quantity": 99_999},  # out of SMALLINT's range
        {**ROW, "sku": "SKU-3", "colour": "red"},  # a column the table lacks
        {k: v for k, v in ROW.items() if k != "sku"},  # NOT NULL column missing
        {**ROW, "sku": "SKU-5", "price": [1]},  # nested
        {**ROW, "sku": "SKU-6", "note": None, "in_stock": "no"},  # null in a nullable column
        {**ROW, "sku": "SKU-7", "title": None},  # null in a NOT NULL column
    ]
    env = type_rows(_rows({"table": "observations", "rows": rows}), obs)
    assert env.table == "observations"
    assert env.seq == 0
    assert len(env.run_id) == 32
    assert env.source == "sqs:m-1"
    assert env.lines == [1, 6]
    by_column = dict(zip(env.columns, env.data, strict=True))
    assert by_column["price"] == ["12.5", "12.5"]  # the JSON number as CSV text
    assert by_column["in_stock"] == ["1", "0"]
    assert by_column["note"] == [None, None]
    reasons = {r.line: r.reason for r in env.rejects}
    assert sorted(reasons) == [2, 3, 4, 5, 7]
    assert "'quantity'" in reasons[2]
    assert "out of range" in reasons[2]
    assert "'colour' is not a writable column" in reasons[3]
    assert "'sku': is missing but NOT NULL" in reasons[4]
    assert "'price': is not a JSON string, number, boolean or null" in reasons[5]
    assert "'title': is null but NOT NULL" in reasons[7]
    assert orjson.loads(next(r.raw for r in env.rejects if r.line == 3))["colour"] == "red"


def test_the_ledger_key_comes_from_headrace_key_else_the_message_id() -> None:
    keyed = {"headrace-key": _attr("order-42")}
    a = _rows([ROW], keyed, "observations")
    b = parse_rows(orjson.dumps([ROW]), keyed, message_id="m-2", default_table="observations")
    assert a.run_id == b.run_id  # the same key: a re-send is a duplicate
    assert a.source == "key:order-42"
    plain = _rows([ROW], None, "observations")
    other = parse_rows(orjson.dumps([ROW]), None, message_id="m-2", default_table="observations")
    assert plain.run_id != other.run_id
    assert plain.source == "sqs:m-1"


def test_the_table_comes_from_the_body_the_attribute_or_the_default() -> None:
    assert _rows({"table": "a", "rows": [ROW]}, {"headrace-table": _attr("b")}, "c").table == "a"
    assert _rows(ROW, {"headrace-table": _attr("b")}, "c").table == "b"
    assert _rows([ROW], None, "c").table == "c"
    with pytest.raises(EnvelopeError, match="without a table"):
        _rows([ROW])


@pytest.mark.parametrize(
    "body",
    [b"not json", b"[1, 2]", b'"text"', b"[]", b'{"rows": {}}', b'{"rows": [], "x": 1}'],
)
def test_what_is_not_rows_is_poison(body: bytes) -> None:
    with pytest.raises(EnvelopeError):
        parse_rows(body, None, message_id="m", default_table="observations")


@pytest.mark.parametrize(
    ("cls", "size_attribute"),
    [
        ("software.amazon.payloadoffloading.PayloadS3Pointer", "ExtendedPayloadSize"),
        ("com.amazon.sqs.javamessaging.MessageS3Pointer", "SQSLargePayloadSize"),
    ],
)
def test_extended_client_pointers_are_recognised(cls: str, size_attribute: str) -> None:
    body = orjson.dumps([cls, {"s3BucketName": "drops", "s3Key": "a/b.json"}]).decode()
    attrs = {size_attribute: _attr("1234", "Number")}
    assert parse_pointer(body, attrs) == S3Pointer("drops", "a/b.json", 1234)
    assert parse_pointer(body, None) == S3Pointer("drops", "a/b.json", None)


def test_other_bodies_are_no_pointers_and_broken_pointers_are_poison() -> None:
    size = {"ExtendedPayloadSize": _attr("10", "Number")}
    assert parse_pointer('["a", "b"]', None) is None
    assert parse_pointer('{"rows": []}', None) is None
    assert parse_pointer("not json", None) is None
    with pytest.raises(EnvelopeError, match="not a pointer"):
        parse_pointer("not json", size)
    cls = "software.amazon.payloadoffloading.PayloadS3Pointer"
    with pytest.raises(EnvelopeError, match="s3Key"):
        parse_pointer(orjson.dumps([cls, {"s3BucketName": "drops"}]).decode(), size)
