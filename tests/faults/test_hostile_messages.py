"""Hostile messages (scenarios 35-44): the queue is untrusted input.

Anyone who may SendMessage can write to the queue. Every forged message must end as poison
(never deleted: SQS dead-letters it after ``maxReceiveCount``) or as per-row rejects with a
reason — and never stall the worker, fail the innocent messages batched beside it, or send
them to the DLQ. Each test sends valid traffic (a real producer run) with forged messages in
the same queue, runs a real worker against MariaDB + moto, and checks: every valid row is in
the table once (the invariant), no valid message was released or failed, and every forged
message is still in the queue or its DLQ.
"""

from __future__ import annotations

import asyncio
import base64
import copy
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import orjson
import pytest
import sqlalchemy as sa
import zstandard
from pydantic import SecretStr
from sqlalchemy.ext.asyncio import AsyncEngine
from support.pipeline import BOTH_INSERT_PATHS, assert_invariant, count

from cli.datagen import GeneratedFile, generate_csv, observations
from headrace.envelope import MAX_DECODED_BYTES, sign
from headrace.metrics import WorkerStats
from headrace.settings import Settings
from headrace.sqs import sqs_client
from headrace.tables import ingest_ledger, rejected_rows
from producer.app import produce
from testbed.moto import QueuePair
from worker.app import Worker

# Every scenario on both ways the sink sends rows (bulk protocol, and the INSERT text Aurora gets).
# Only the tests whose outcome goes through the sink's insert run on both insert paths.
pytestmark = pytest.mark.slow

RUN = "f" * 32
COLS = ["observed_at", "bot_id", "sku", "price", "quantity", "in_stock", "title", "note"]
ROW = ["2026-11-22 10:00:00", "7", "SKU-FORGED", "1.00", "1", "1", "forged", None]
KEY = "a key only the producer's role and the worker know"


def _doc(**changes: Any) -> dict[str, Any]:
    """A well-formed envelope for observations; each test breaks one thing."""
    doc: dict[str, Any] = {
        "v": 1,
        "run": RUN,
        "seq": 0,
        "table": "observations",
        "cols": COLS,
        "src": "forged.csv",
        "lines": [[2, 1]],
        "rej": [],
        "n": 1,
        "data": [[v] for v in ROW],
    }
    doc.update(changes)
    return doc


def _json(doc: Any) -> tuple[str, dict[str, Any]]:
    return orjson.dumps(doc).decode(), _attrs("json")


def _zstd(raw: bytes) -> tuple[str, dict[str, Any]]:
    return base64.b64encode(zstandard.ZstdCompressor().compress(raw)).decode(), _attrs("zstd+b64")


def _attrs(enc: str, v: str = "1") -> dict[str, Any]:
    return {
        "headrace-v": {"DataType": "Number", "StringValue": v},
        "headrace-enc": {"DataType": "String", "StringValue": enc},
    }


async def _send(settings: Settings, messages: list[tuple[str, dict[str, Any]]]) -> None:
    async with sqs_client(settings) as client:
        for body, attrs in messages:
            await client.send_message(
                QueueUrl=settings.queue_url or "", MessageBody=body, MessageAttributes=attrs
            )


async def _valid_messages(engine: AsyncEngine) -> int:
    """Messages the valid run sent (its ingest_runs record)."""
    async with engine.connect() as conn:
        total = await conn.execute(
            sa.text("SELECT COALESCE(SUM(total_messages), 0) FROM ingest_runs")
        )
        return int(total.scalar_one())


@pytest.fixture
def hostile(settings: Settings) -> Settings:
    """The worker writes observations only; a mismatched table is waited for 1 s at most."""
    worker = settings.worker.model_copy(
        update={"tables": ["observations"], "max_park_s": 1.0, "heartbeat_interval_s": 2.0}
    )
    return settings.model_copy(update={"worker": worker})


async def _valid_run(settings: Settings, tmp_path: Path, rows: int = 3_000) -> GeneratedFile:
    """Innocent traffic: a real producer run in several messages."""
    data = generate_csv(tmp_path / "valid.csv", rows, seed=35)
    small = settings.producer.model_copy(update={"max_message_bytes": 32 * 1024})
    report = await produce(
        settings.model_copy(update={"producer": small}), str(data.path), "observations"
    )
    assert report.total_messages >= 3
    return data


async def _run_worker_until(
    settings: Settings, done: Callable[[Worker], Awaitable[bool]], timeout_s: float = 90
) -> WorkerStats:
    """Run a worker in this process until ``done`` says so (polled), then stop it."""
    worker = Worker(settings)
    run = asyncio.create_task(worker.run())
    deadline = time.monotonic() + timeout_s
    try:
        while not await done(worker):
            if run.done():
                raise AssertionError(f"worker ended early: {run.result()}")
            assert time.monotonic() < deadline, f"not done after {timeout_s} s: {worker.stats}"
            await asyncio.sleep(0.1)
    finally:
        worker.stop()
    return await asyncio.wait_for(run, 60)


async def _applied(engine: AsyncEngine) -> set[tuple[str, int]]:
    async with engine.connect() as conn:
        rows = await conn.execute(sa.select(ingest_ledger.c.run_id, ingest_ledger.c.seq))
        return {(str(r), int(s)) for r, s in rows}


async def _check_forged_are_poison(
    settings: Settings,
    engine: AsyncEngine,
    queue: QueuePair,
    data: GeneratedFile,
    forged: list[tuple[str, dict[str, Any]]],
) -> WorkerStats:
    """Send ``forged`` beside a valid run; the valid run lands, each forged one is poison."""
    await _send(settings, forged)

    async def settled(worker: Worker) -> bool:
        return worker.stats.messages_poison >= len(forged) and await _all_valid_applied(engine)

    stats = await _run_worker_until(settings, settled)
    assert RUN not in {run for run, _ in await _applied(engine)}
    assert stats.batch_failures == 0
    assert stats.messages_released == 0  # no innocent message was handed back
    assert stats.circuit_opened == 0  # nor did a forged one stop the worker receiving
    # None deleted, so DLQ-bound: the worker deleted exactly the valid run's messages. (Not
    # counted in the queues: moto reads "visible" and "not visible" at two moments, so a
    # message whose back-off ends between them is in neither.)
    assert stats.deletes == await _valid_messages(engine)
    await assert_invariant(settings, engine, data.path)
    return stats


async def _all_valid_applied(engine: AsyncEngine) -> bool:
    async with engine.connect() as conn:
        total = (
            await conn.execute(sa.text("SELECT COALESCE(SUM(total_messages), -1) FROM ingest_runs"))
        ).scalar_one()
        applied = (
            await conn.execute(
                sa.select(sa.func.count())
                .select_from(ingest_ledger)
                .where(ingest_ledger.c.run_id != RUN)
            )
        ).scalar_one()
    return bool(applied == total)


async def test_scenario_35_table_outside_the_allow_list_is_poison(
    tmp_path: Path, hostile: Settings, engine: AsyncEngine, queue: QueuePair
) -> None:
    """Internal, unlisted (though it exists) and other-schema tables: poison at once."""
    async with engine.begin() as conn:
        await conn.exec_driver_sql("CREATE TABLE other_table (sku VARCHAR(24) PRIMARY KEY)")
    data = await _valid_run(hostile, tmp_path)
    forged = [
        _json(_doc(table="ingest_ledger", cols=["run_id"], data=[["x"]])),
        _json(_doc(table="other_table", cols=["sku"], data=[["x"]])),
        _json(_doc(table="mysql.user", cols=["User"], data=[["x"]])),
        _json(_doc(table="x" * 65)),  # longer than any MySQL identifier
    ]
    await _check_forged_are_poison(hostile, engine, queue, data, forged)
    async with engine.connect() as conn:
        other = (await conn.exec_driver_sql("SELECT COUNT(*) FROM other_table")).scalar_one()
    assert other == 0


async def test_scenario_36_column_the_table_lacks_waits_then_is_poison(
    tmp_path: Path, hostile: Settings, engine: AsyncEngine, queue: QueuePair
) -> None:
    """A column that never appears: parked up to max_park_s (1 s here), then poison; the
    worker receives again and applies the valid run."""
    data = await _valid_run(hostile, tmp_path)
    forged = [_json(_doc(cols=[*COLS[:-1], "no_such_column"]))]
    await _send(hostile, forged)

    async def settled(worker: Worker) -> bool:
        return worker.stats.messages_poison >= 1 and await _all_valid_applied(engine)

    stats = await _run_worker_until(hostile, settled)
    assert stats.batch_failures == 0
    assert stats.schema_drifts >= 1  # it did wait, for a while
    assert stats.deletes == await _valid_messages(engine)  # the forged one was not deleted
    await assert_invariant(hostile, engine, data.path)


async def test_scenario_36_a_listed_table_that_is_missing_is_waited_for(
    tmp_path: Path, hostile: Settings, engine: AsyncEngine, queue: QueuePair
) -> None:
    """Listed but missing (a migration under way): held, and applied once it exists."""
    settings = hostile.model_copy(
        update={
            "worker": hostile.worker.model_copy(
                update={"tables": ["observations", "late"], "max_park_s": 120.0}
            )
        }
    )
    await _send(settings, [_json(_doc(table="late", cols=["sku"], data=[["S1"]]))])

    async def created_later(worker: Worker) -> bool:
        if worker.stats.schema_drifts and not await _table_exists(engine, "late"):
            async with engine.begin() as conn:
                await conn.exec_driver_sql("CREATE TABLE late (sku VARCHAR(24) PRIMARY KEY)")
        return (RUN, 0) in await _applied(engine)

    stats = await _run_worker_until(settings, created_later)
    assert stats.messages_poison == 0
    async with engine.connect() as conn:
        assert (await conn.exec_driver_sql("SELECT sku FROM late")).scalars().all() == ["S1"]


async def _table_exists(engine: AsyncEngine, name: str) -> bool:
    async with engine.connect() as conn:
        found = await conn.execute(
            # This database's only: the shared server holds other tests' databases too.
            sa.text(
                "SELECT COUNT(*) FROM information_schema.tables "
                "WHERE table_schema = DATABASE() AND table_name = :n"
            ),
            {"n": name},
        )
        return bool(found.scalar_one())


async def test_scenario_37_duplicate_or_empty_column_names_are_poison(
    tmp_path: Path, hostile: Settings, engine: AsyncEngine, queue: QueuePair
) -> None:
    data = await _valid_run(hostile, tmp_path)
    forged = [
        _json(_doc(cols=[*COLS[:-1], "sku"])),
        _json(_doc(cols=[*COLS[:-1], ""])),
        _json(_doc(cols=[*COLS[:-1], " note"])),
    ]
    await _check_forged_are_poison(hostile, engine, queue, data, forged)


async def test_scenario_38_counts_that_disagree_are_poison(
    tmp_path: Path, hostile: Settings, engine: AsyncEngine, queue: QueuePair
) -> None:
    data = await _valid_run(hostile, tmp_path)
    forged = [
        _json(_doc(n=2)),
        _json(_doc(lines=[[2, 2]])),
        _json(_doc(data=[[v, v] for v in ROW])),
        _json(_doc(lines=[[5, 1], [3, 1]], n=2, data=[[v, v] for v in ROW])),  # not ascending
        _json(_doc(rej=[[2, "raw", "a row line rejected too"]])),
        _json(_doc(rej=[[9, "a", "r"], [9, "b", "r"]])),
    ]
    await _check_forged_are_poison(hostile, engine, queue, data, forged)


@BOTH_INSERT_PATHS
async def test_scenario_38_a_message_that_fails_its_batch_fails_alone(
    tmp_path: Path, hostile: Settings, engine: AsyncEngine, queue: QueuePair
) -> None:
    """Two forged messages of one run claim the same rejected line: rejected_rows refuses
    the second. That is not a row's value, so a batch holding it is retried message by
    message: one of the two commits, the other is poison, the valid run is untouched —
    however the messages happen to be batched."""
    data = await _valid_run(hostile, tmp_path)
    no_rows = {"n": 0, "lines": [], "data": [[] for _ in COLS]}
    forged = [_json(_doc(seq=seq, rej=[[5, "x", "forged"]], **no_rows)) for seq in (100, 101)]
    await _send(hostile, forged)

    async def settled(worker: Worker) -> bool:
        return worker.stats.messages_poison >= 1 and await _all_valid_applied(engine)

    stats = await _run_worker_until(hostile, settled)
    assert len({(RUN, 100), (RUN, 101)} & await _applied(engine)) == 1
    assert stats.messages_released == 0
    assert stats.deletes == await _valid_messages(engine) + 1  # the one that committed
    await assert_invariant(hostile, engine, data.path)


async def test_scenario_39_numbers_beyond_their_columns_are_poison(
    tmp_path: Path, hostile: Settings, engine: AsyncEngine, queue: QueuePair
) -> None:
    data = await _valid_run(hostile, tmp_path)
    forged = [
        _json(_doc(seq=2**31)),  # ingest_ledger.seq is an INT
        _json(_doc(seq=-1)),
        _json(_doc(lines=[[2**63, 1]])),  # rejected_rows.line is a BIGINT
        _json(_doc(lines=[[0, 1]])),
        _json(_doc(rej=[[2**63, "raw", "reason"]])),
        _json(_doc(seq=True)),
    ]
    await _check_forged_are_poison(hostile, engine, queue, data, forged)


async def test_scenario_40_oversized_or_nested_fields_are_poison(
    tmp_path: Path, hostile: Settings, engine: AsyncEngine, queue: QueuePair
) -> None:
    data = await _valid_run(hostile, tmp_path)
    nested = "[" * 1_000 + '"x"' + "]" * 1_000  # deeper than any encoder writes

    def with_nested(doc: dict[str, Any]) -> tuple[str, dict[str, Any]]:
        body, attrs = _json(doc)
        return body.replace('"NESTED"', nested), attrs

    forged = [
        with_nested(_doc(rej=[[5, "NESTED", "deep"]])),
        with_nested(_doc(data=[["NESTED"] if i == 2 else [v] for i, v in enumerate(ROW)])),
        _zstd(orjson.dumps(_doc(rej=[[5, "r" * 100_000, "long raw"]]))),
        _json(_doc(src="s" * 5_000)),
    ]
    await _check_forged_are_poison(hostile, engine, queue, data, forged)


async def test_scenario_41_decompression_bombs_are_poison(
    tmp_path: Path, hostile: Settings, engine: AsyncEngine, queue: QueuePair
) -> None:
    data = await _valid_run(hostile, tmp_path)
    # A valid envelope padded with whitespace past the decode cap: a few KB compressed.
    padded = orjson.dumps(_doc())[:-1] + b" " * (MAX_DECODED_BYTES + 1) + b"}"
    cobj = zstandard.ZstdCompressor(level=1).compressobj()  # no size in the frame header
    streamed = base64.b64encode(cobj.compress(padded) + cobj.flush()).decode()
    forged = [_zstd(padded), (streamed, _attrs("zstd+b64"))]
    assert all(len(body) < 256 * 1024 for body, _ in forged)
    await _check_forged_are_poison(hostile, engine, queue, data, forged)


async def test_scenario_42_unknown_version_encoding_or_text_is_poison(
    tmp_path: Path, hostile: Settings, engine: AsyncEngine, queue: QueuePair
) -> None:
    data = await _valid_run(hostile, tmp_path)
    body = orjson.dumps(_doc()).decode()
    forged = [
        (orjson.dumps(_doc(v=2)).decode(), _attrs("json", v="2")),
        (body, _attrs("gzip")),
        ("not json at all", _attrs("json")),
        (
            base64.b64encode(
                zstandard.ZstdCompressor().compress(b"\xff\xfe\x00 not utf-8")
            ).decode(),
            _attrs("zstd+b64"),
        ),
        ("[1, 2, 3]", {}),
    ]
    await _check_forged_are_poison(hostile, engine, queue, data, forged)


@BOTH_INSERT_PATHS
async def test_scenario_43_a_valid_envelope_replayed_under_another_run_id(
    tmp_path: Path, hostile: Settings, engine: AsyncEngine, queue: QueuePair
) -> None:
    """A real message sent again under a new run id passes the ledger, but its rows meet the
    table's unique key: each is rejected with the database's reason, nothing is doubled."""
    data = generate_csv(tmp_path / "replay.csv", 500, seed=43)
    captured: list[tuple[str, dict[str, Any]]] = []
    async with sqs_client(hostile) as client:
        report = await produce(hostile, str(data.path), "observations")
        resp = await client.receive_message(
            QueueUrl=hostile.queue_url or "", MaxNumberOfMessages=1, MessageAttributeNames=["All"]
        )
        message = resp["Messages"][0]
        captured.append((message["Body"], dict(message.get("MessageAttributes", {}))))
        await client.change_message_visibility(
            QueueUrl=hostile.queue_url or "",
            ReceiptHandle=message["ReceiptHandle"],
            VisibilityTimeout=0,
        )

    async def all_in(worker: Worker) -> bool:
        return await _all_valid_applied(engine)

    await _run_worker_until(hostile, all_in)
    await assert_invariant(hostile, engine, data.path)
    before = await count(engine, observations)

    body, attrs = captured[0]
    enc = attrs["headrace-enc"]["StringValue"]
    raw = base64.b64decode(body) if enc == "zstd+b64" else body.encode()
    doc = orjson.loads(zstandard.ZstdDecompressor().decompress(raw) if enc == "zstd+b64" else raw)
    replay = copy.deepcopy(doc)
    replay["run"] = RUN
    await _send(hostile, [_json(replay)])

    async def replay_done(worker: Worker) -> bool:
        return (RUN, replay["seq"]) in await _applied(engine)

    stats = await _run_worker_until(hostile, replay_done)
    assert stats.batch_failures == 0
    assert await count(engine, observations) == before  # nothing doubled
    async with engine.connect() as conn:
        reasons = (
            (
                await conn.execute(
                    sa.select(rejected_rows.c.reason).where(rejected_rows.c.run_id == RUN)
                )
            )
            .scalars()
            .all()
        )
    assert len(reasons) == replay["n"] + len(replay["rej"])
    assert sum("Duplicate entry" in r for r in reasons) == replay["n"]
    assert report.total_messages >= 1


async def test_scenario_44_a_burst_of_poison_beside_valid_traffic(
    tmp_path: Path, hostile: Settings, engine: AsyncEngine, queue: QueuePair
) -> None:
    """Forty forged messages of every kind with a valid run: every valid message is applied
    on its first receive (none released, no batch failed, the circuit never opened)."""
    data = await _valid_run(hostile, tmp_path, rows=5_000)
    kinds = [
        _json(_doc(seq=2**31)),
        _json(_doc(table="ingest_runs")),
        ("garbage", _attrs("json")),
        _json(_doc(cols=[*COLS[:-1], "sku"])),
    ]
    forged = [kinds[i % len(kinds)] for i in range(40)]
    await _check_forged_are_poison(hostile, engine, queue, data, forged)


async def test_only_signed_messages_are_applied_when_a_key_is_set(
    tmp_path: Path, hostile: Settings, engine: AsyncEngine, queue: QueuePair
) -> None:
    """With HEADRACE_SIGNING_KEY the producer signs and the worker refuses anything else."""
    signed = hostile.model_copy(update={"signing_key": SecretStr(KEY)})
    data = await _valid_run(signed, tmp_path)
    body = orjson.dumps(_doc()).decode()
    forged = [
        (body, _attrs("json")),  # unsigned
        (body, {**_attrs("json"), "headrace-sig": {"DataType": "String", "StringValue": "x"}}),
        (
            body,
            {
                **_attrs("json"),
                "headrace-sig": {
                    "DataType": "String",
                    "StringValue": sign(b"other key", body, "json"),
                },
            },
        ),
    ]
    await _check_forged_are_poison(signed, engine, queue, data, forged)
    assert RUN not in {r for r, _ in await _applied(engine)}


async def test_a_worker_without_an_allow_list_refuses_to_start(settings: Settings) -> None:
    unlisted = settings.model_copy(
        update={"worker": settings.worker.model_copy(update={"tables": []})}
    )
    with pytest.raises(Exception, match="HEADRACE_WORKER__TABLES"):
        await Worker(unlisted).run()


async def test_an_update_is_poison_unless_the_worker_allows_it(
    tmp_path: Path, hostile: Settings, engine: AsyncEngine, queue: QueuePair
) -> None:
    """`dup: update` overwrites rows, so a worker honours it only when told to
    (HEADRACE_WORKER__ON_DUPLICATE); by default such a message is poison."""
    assert hostile.worker.on_duplicate == ["error", "skip"]
    data = await _valid_run(hostile, tmp_path)
    await _check_forged_are_poison(hostile, engine, queue, data, [_json(_doc(dup="update"))])
