"""Messages from other producers through a real worker process (MariaDB, moto SQS and S3):
plain JSON rows and Amazon SQS Extended Client pointers land, are counted, and their bad
rows go to rejected_rows; the ledger key is the idempotency key when one is sent."""

from __future__ import annotations

import uuid
from decimal import Decimal
from pathlib import Path
from typing import Any

import orjson
import pytest
import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncEngine
from support.pipeline import count, drain_queue, headrace_json, worker_report

from cli.datagen import observations
from headrace import envelope
from headrace.aws import s3_client
from headrace.envelope import Envelope
from headrace.settings import Settings
from headrace.sqs import sqs_client
from headrace.tables import ingest_ledger, rejected_rows
from testbed.moto import QueuePair

pytestmark = pytest.mark.slow

POINTER = "software.amazon.payloadoffloading.PayloadS3Pointer"


def _row(sku: str, **changes: Any) -> dict[str, Any]:
    row = {
        "observed_at": "2026-11-22 04:00:00",
        "bot_id": 7,
        "sku": sku,
        "price": 12.5,
        "quantity": 3,
        "in_stock": True,
        "title": "Acme kettle",
        "note": None,
    }
    return {**row, **changes}


def _s(value: str, kind: str = "String") -> dict[str, str]:
    return {"DataType": kind, "StringValue": value}


async def _send(settings: Settings, queue_url: str, body: str, attrs: dict[str, Any]) -> None:
    async with sqs_client(settings) as sqs:
        await sqs.send_message(QueueUrl=queue_url, MessageBody=body, MessageAttributes=attrs)


async def _skus(engine: AsyncEngine) -> dict[str, tuple[Any, ...]]:
    o = observations.c
    async with engine.connect() as conn:
        rows = await conn.execute(sa.select(o.sku, o.price, o.quantity, o.in_stock, o.note))
        return {str(r[0]): tuple(r[1:]) for r in rows}


async def _rejects(engine: AsyncEngine) -> list[tuple[str, int, str]]:
    c = rejected_rows.c
    async with engine.connect() as conn:
        rows = await conn.execute(sa.select(c.source, c.line, c.reason).order_by(c.source, c.line))
        return [(str(s), int(n), str(r)) for s, n, r in rows]


async def test_json_rows_land_are_typed_and_counted(
    tmp_path: Path,
    settings: Settings,
    engine: AsyncEngine,
    queue: QueuePair,
    cli_env: dict[str, str],
) -> None:
    url = queue.queue_url
    keyed = orjson.dumps(
        {
            "table": "observations",
            "rows": [_row("J-1"), _row("J-2", quantity=99_999), _row("J-3", colour="red")],
        }
    ).decode()
    key = {"headrace-key": _s("order-42")}
    await _send(settings, url, keyed, key)
    await _send(settings, url, keyed, key)  # the sender's retry: one effect
    await _send(
        settings, url, orjson.dumps(_row("J-4")).decode(), {"headrace-table": _s("observations")}
    )
    await _send(settings, url, orjson.dumps([_row("J-5"), _row("J-6", in_stock="no")]).decode(), {})
    await _send(
        settings, url, orjson.dumps({"table": "ingest_ledger", "rows": [_row("x")]}).decode(), {}
    )

    env = {**cli_env, "HEADRACE_WORKER__DEFAULT_TABLE": "observations"}
    drain_queue(env, tmp_path / "worker.log")
    counts = worker_report(tmp_path / "worker.log")
    assert (counts["messages_applied"], counts["messages_duplicate"]) == (3, 1)
    assert counts["rows_inserted"] == 4
    assert counts["rows_rejected"] == 2

    assert await _skus(engine) == {
        sku: (Decimal("12.50"), 3, stock, None)
        for sku, stock in (("J-1", True), ("J-4", True), ("J-5", True), ("J-6", False))
    }
    rejects = await _rejects(engine)
    assert [(s, n) for s, n, _ in rejects] == [("key:order-42", 2), ("key:order-42", 3)]
    assert "out of range" in rejects[0][2]
    assert "'colour' is not a writable column" in rejects[1][2]
    async with engine.connect() as conn:
        keys = (await conn.execute(sa.select(sa.func.count()).select_from(ingest_ledger))).scalar()
    assert keys == 3
    groups = headrace_json(cli_env, "rejected", "list", "--table", "observations")
    assert sum(g["count"] for g in groups) == 2
    # The message for headrace's own table is poison: in the DLQ now.
    async with sqs_client(settings) as sqs:
        dead = await sqs.receive_message(QueueUrl=queue.dlq_url, MaxNumberOfMessages=10)
    assert ["ingest_ledger" in m["Body"] for m in dead["Messages"]] == [True]


async def _put(settings: Settings, bucket: str, key: str, body: str) -> None:
    async with s3_client(settings) as s3:
        await s3.put_object(Bucket=bucket, Key=key, Body=body.encode())


async def _exists(settings: Settings, bucket: str, key: str) -> bool:
    async with s3_client(settings) as s3:
        listed = await s3.list_objects_v2(Bucket=bucket, Prefix=key)
    return any(o["Key"] == key for o in listed.get("Contents", []))


def _pointer(bucket: str, key: str) -> str:
    return orjson.dumps([POINTER, {"s3BucketName": bucket, "s3Key": key}]).decode()


async def test_extended_client_pointers_are_applied_and_their_objects_kept_or_deleted(
    tmp_path: Path,
    settings: Settings,
    engine: AsyncEngine,
    queue: QueuePair,
    cli_env: dict[str, str],
) -> None:
    bucket = f"payloads-{uuid.uuid4().hex[:12]}"
    async with s3_client(settings) as s3:
        await s3.create_bucket(Bucket=bucket)
    url = queue.queue_url
    rows = orjson.dumps({"table": "observations", "rows": [_row(f"P-{i}") for i in range(500)]})
    await _put(settings, bucket, "a/rows.json", rows.decode())
    size = {"ExtendedPayloadSize": _s(str(len(rows)), "Number")}
    await _send(settings, url, _pointer(bucket, "a/rows.json"), size)
    # A headrace envelope offloaded the same way: its own attributes plus the size.
    env = Envelope.from_rows(
        "ab" * 16,
        0,
        "observations",
        ["observed_at", "bot_id", "sku", "price", "quantity", "in_stock", "title"],
        "claim.csv",
        [["2026-11-22 05:00:00", "1", "E-1", "1.00", "1", "1", "t"]],
        [2],
    )
    encoded = envelope.encode(env)
    await _put(settings, bucket, "b/envelope", encoded.body)
    await _send(
        settings,
        url,
        _pointer(bucket, "b/envelope"),
        {**encoded.attributes(), "ExtendedPayloadSize": _s(str(len(encoded.body)), "Number")},
    )
    await _send(settings, url, _pointer(bucket, "missing/key"), size)  # points nowhere: poison

    drain_queue(cli_env, tmp_path / "keep.log")
    counts = worker_report(tmp_path / "keep.log")
    assert (counts["messages_applied"], counts["rows_inserted"]) == (2, 501)
    assert await count(engine) == 501
    assert await _exists(settings, bucket, "a/rows.json")  # default: kept
    assert await _exists(settings, bucket, "b/envelope")

    more = orjson.dumps([_row("P-x")]).decode()
    await _put(settings, bucket, "c/more.json", more)
    await _send(
        settings, url, _pointer(bucket, "c/more.json"), {"headrace-table": _s("observations")}
    )
    deleting = {**cli_env, "HEADRACE_WORKER__DELETE_PAYLOADS": "true"}
    drain_queue(deleting, tmp_path / "delete.log")
    assert worker_report(tmp_path / "delete.log")["messages_applied"] == 1
    assert await count(engine) == 502
    assert not await _exists(settings, bucket, "c/more.json")  # after commit and delete
