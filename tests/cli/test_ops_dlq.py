"""`headrace dlq inspect|redrive` and `headrace ledger prune` on real runs: producer and worker
processes, MariaDB, moto SQS (whose missing StartMessageMoveTask makes redrive use its loop;
the native path is checked against a fake answer at the HTTP level)."""

from __future__ import annotations

import datetime as dt
import math
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import orjson
import pytest
import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncEngine
from support.pipeline import (
    assert_invariant,
    count,
    drain_queue,
    headrace,
    headrace_json,
    produce_cli,
    queued,
    rejected,
    worker_report,
)
from support.sqsproxy import SqsProxy

from cli.datagen import generate_csv
from cli.ops.dlq import open_queues, redrive
from headrace.settings import Settings
from headrace.sqs import sqs_client
from headrace.tables import ingest_ledger
from testbed.moto import QueuePair

pytestmark = pytest.mark.slow

SMALL = {"HEADRACE_PRODUCER__MAX_MESSAGE_BYTES": "16384"}
NEXT_DAY = dt.date(2026, 11, 23)


async def _send(settings: Settings, queue_url: str, bodies: list[str]) -> None:
    async with sqs_client(settings) as sqs:
        for body in bodies:
            await sqs.send_message(QueueUrl=queue_url, MessageBody=body)


async def _counts(settings: Settings, queue_url: str) -> tuple[int, int]:
    """(visible, in flight) messages of a queue."""
    async with sqs_client(settings) as sqs:
        attrs = (
            await sqs.get_queue_attributes(
                QueueUrl=queue_url,
                AttributeNames=[
                    "ApproximateNumberOfMessages",
                    "ApproximateNumberOfMessagesNotVisible",
                ],
            )
        )["Attributes"]
    return int(attrs["ApproximateNumberOfMessages"]), int(
        attrs["ApproximateNumberOfMessagesNotVisible"]
    )


async def _keys(engine: AsyncEngine, run_id: str) -> int:
    async with engine.connect() as conn:
        n = await conn.execute(
            sa.select(sa.func.count())
            .select_from(ingest_ledger)
            .where(ingest_ledger.c.run_id == run_id)
        )
        return int(n.scalar_one())


async def test_inspect_shows_the_poison_and_leaves_it_visible(
    tmp_path: Path, settings: Settings, queue: QueuePair, cli_env: dict[str, str]
) -> None:
    data = generate_csv(tmp_path / "ok.csv", 500, seed=5, bad_ratio=0)
    report = produce_cli(cli_env, data.path)
    await _send(settings, queue.queue_url, ["not json at all", orjson.dumps({"v": 9}).decode()])
    drain_queue(cli_env, tmp_path / "worker.log")  # the poison is dead-lettered on the way
    assert worker_report(tmp_path / "worker.log")["messages_applied"] == report["total_messages"]

    look = headrace_json(cli_env, "dlq", "inspect", "--max", "5")
    assert look["dlq_url"] == queue.dlq_url
    assert look["visible"] == 2
    assert look["oldest_sent_at"] is not None
    reasons = sorted(s["reason"] for s in look["sample"])
    assert len(reasons) == 2
    assert "undecodable body" in reasons[0] or "undecodable body" in reasons[1]
    assert any("unsupported envelope version 9" in r for r in reasons)
    assert all(r.startswith("poison: ") for r in reasons)
    assert all(s["receive_count"] >= 1 for s in look["sample"])
    # The look is over: both are visible again at once, not after --look-s.
    assert await _counts(settings, queue.dlq_url) == (2, 0)

    human = headrace({**cli_env, "COLUMNS": "200"}, "dlq", "inspect")
    assert human.returncode == 0, human.stderr
    assert "2 visible" in human.stdout


async def test_redrive_moves_every_message_once_and_each_is_applied_once(
    tmp_path: Path,
    settings: Settings,
    engine: AsyncEngine,
    queue: QueuePair,
    cli_env: dict[str, str],
) -> None:
    data = generate_csv(tmp_path / "drop.csv", 3_000, seed=8, bad_ratio=0.01)
    report = produce_cli({**cli_env, **SMALL}, data.path)
    total = report["total_messages"]
    assert total >= 3
    # A worker given the wrong signing key refuses every message: all dead-lettered.
    wrong_key = {**cli_env, "HEADRACE_SIGNING_KEY": "rotated-too-early-0123456789abcdef"}
    drain_queue(wrong_key, tmp_path / "refusing.log")
    assert worker_report(tmp_path / "refusing.log")["messages_applied"] == 0
    assert await _counts(settings, queue.dlq_url) == (total, 0)

    look = headrace_json(cli_env, "dlq", "inspect", "--max", "3")
    assert {s["envelope"]["run"] for s in look["sample"]} == {report["run_id"]}
    assert all(s["envelope"]["table"] == "observations" for s in look["sample"])
    assert all("poison_message" in s["reason"] for s in look["sample"])  # the log has it

    dry = headrace_json(cli_env, "dlq", "redrive", "--dry-run")
    assert (dry["method"], dry["found"], dry["moved"]) == ("dry-run", total, 0)
    assert await _counts(settings, queue.dlq_url) == (total, 0)

    moved = headrace_json(cli_env, "dlq", "redrive", "--max-per-second", "100")
    assert moved["method"] == "loop"  # moto has no StartMessageMoveTask
    assert moved["native_error"]
    assert (moved["found"], moved["moved"], moved["failed"]) == (total, total, 0)
    assert await _counts(settings, queue.dlq_url) == (0, 0)
    assert await queued(settings, queue.queue_url) == total

    drain_queue(cli_env, tmp_path / "worker.log")
    counts = worker_report(tmp_path / "worker.log")
    assert (counts["messages_applied"], counts["messages_duplicate"]) == (total, 0)
    assert await _keys(engine, report["run_id"]) == total
    await assert_invariant(settings, engine, data.path)
    run = headrace_json(cli_env, "runs", "show", report["run_id"])
    assert run["complete"] is True


@pytest.fixture
def move_task_endpoint(moto_endpoint: str) -> Iterator[SqsProxy]:
    """moto behind a proxy that answers StartMessageMoveTask and ListMessageMoveTasks as SQS
    does: a handle, then the task RUNNING once and COMPLETED after."""
    with SqsProxy(moto_endpoint) as proxy:
        listed: list[int] = []

        def start(doc: dict[str, Any]) -> dict[str, Any]:
            return {"TaskHandle": "task-handle-1"}

        def tasks(doc: dict[str, Any]) -> dict[str, Any]:
            listed.append(1)
            started = next(d for op, d in proxy.answered if op == "StartMessageMoveTask")
            task: dict[str, Any] = {
                "SourceArn": started["SourceArn"],
                "DestinationArn": started["DestinationArn"],
                "ApproximateNumberOfMessagesMoved": 3 if len(listed) > 1 else 1,
                "ApproximateNumberOfMessagesToMove": 3,
                "StartedTimestamp": 1,
            }
            if len(listed) == 1:
                task.update(Status="RUNNING", TaskHandle="task-handle-1")
            else:
                task.update(Status="COMPLETED")
            return {"Results": [task]}

        proxy.answer("StartMessageMoveTask", start)
        proxy.answer("ListMessageMoveTasks", tasks)
        yield proxy


async def test_redrive_uses_start_message_move_task_where_the_endpoint_has_it(
    settings: Settings, queue: QueuePair, move_task_endpoint: SqsProxy
) -> None:
    await _send(settings, queue.dlq_url, ["a", "b", "c"])
    fake = settings.model_copy(update={"sqs_endpoint_url": move_task_endpoint.endpoint_url})
    async with open_queues(fake) as queues:
        result = await redrive(fake, queues, max_per_second=50)
        arns = (queues.dlq_arn, queues.source_arn)
    assert result.method == "StartMessageMoveTask"
    assert (result.found, result.moved, result.failed) == (3, 3, 0)
    assert result.task["Status"] == "COMPLETED"
    (start,) = [d for op, d in move_task_endpoint.answered if op == "StartMessageMoveTask"]
    assert (start["SourceArn"], start["DestinationArn"]) == arns
    assert start["MaxNumberOfMessagesPerSecond"] == 50
    assert move_task_endpoint.count(move_task_endpoint.requests, "ListMessageMoveTasks") == 2
    # The task moves them, not headrace: it received nothing from the DLQ.
    assert move_task_endpoint.count(move_task_endpoint.requests, "ReceiveMessage") == 0


async def _dead_letter_one(settings: Settings, queue: QueuePair) -> tuple[str, Any]:
    """Take one message out of the queue into its DLQ, as SQS does after maxReceiveCount;
    returns its body and attributes."""
    async with sqs_client(settings) as sqs:
        got = await sqs.receive_message(
            QueueUrl=queue.queue_url, MaxNumberOfMessages=1, MessageAttributeNames=["All"]
        )
        (m,) = got["Messages"]
        await sqs.send_message(
            QueueUrl=queue.dlq_url,
            MessageBody=m["Body"],
            MessageAttributes=m.get("MessageAttributes", {}),
        )
        await sqs.delete_message(QueueUrl=queue.queue_url, ReceiptHandle=m["ReceiptHandle"])
    return m["Body"], m.get("MessageAttributes", {})


async def test_prune_never_removes_a_key_that_could_still_be_redelivered(
    tmp_path: Path,
    settings: Settings,
    engine: AsyncEngine,
    queue: QueuePair,
    cli_env: dict[str, str],
) -> None:
    env = {**cli_env, **SMALL}
    done = generate_csv(tmp_path / "done.csv", 2_000, seed=1, bad_ratio=0)
    finished = produce_cli(env, done.path)
    drain_queue(cli_env, tmp_path / "w1.log")
    # The next day's observations: other keys.
    partial = generate_csv(tmp_path / "partial.csv", 2_000, seed=2, bad_ratio=0, day=NEXT_DAY)
    incomplete = produce_cli(env, partial.path)
    body, attrs = await _dead_letter_one(settings, queue)  # one message waits in the DLQ
    drain_queue(cli_env, tmp_path / "w2.log")
    a, b = finished["total_messages"], incomplete["total_messages"]
    assert (await _keys(engine, finished["run_id"]), await _keys(engine, incomplete["run_id"])) == (
        a,
        b - 1,
    )
    async with engine.begin() as conn:  # forty days go by
        await conn.execute(
            ingest_ledger.update().values(
                applied_at=ingest_ledger.c.applied_at - sa.text("INTERVAL 40 DAY")
            )
        )

    refused = headrace(cli_env, "ledger", "prune", "--older-than", "1d")
    assert refused.returncode == 2
    assert "retention" in refused.stderr  # the DLQ keeps messages 14 days

    dry = headrace_json(cli_env, "ledger", "prune", "--older-than", "30d", "--dry-run")
    assert (dry["deleted"], dry["kept_incomplete"]) == (a, b - 1)
    assert await _keys(engine, finished["run_id"]) == a

    pruned = headrace_json(cli_env, "ledger", "prune", "--older-than", "30d", "--batch", "2")
    assert (pruned["deleted"], pruned["batches"]) == (a, math.ceil(a / 2))
    assert (pruned["incomplete_runs"], pruned["kept_incomplete"]) == (1, b - 1)
    assert await _keys(engine, finished["run_id"]) == 0
    assert await _keys(engine, incomplete["run_id"]) == b - 1

    # The dead-lettered message comes back: its run's keys were kept, so only it applies.
    headrace_json(cli_env, "dlq", "redrive")
    drain_queue(cli_env, tmp_path / "w3.log")
    counts = worker_report(tmp_path / "w3.log")
    assert (counts["messages_applied"], counts["messages_duplicate"]) == (1, 0)
    run = headrace_json(cli_env, "runs", "show", incomplete["run_id"])
    assert (run["complete"], run["rows_inserted"], run["rows_rejected"]) == (True, 2_000, 0)
    # The finished run is not sent again: its run record says so.
    again = produce_cli(env, done.path)
    assert again["already_complete"] is True
    assert again["messages_sent"] == 0
    assert await count(engine) == 4_000
    assert await rejected(engine) == []
    # A copy of an applied message in the DLQ: inspect says a redrive would insert nothing.
    async with sqs_client(settings) as sqs:
        await sqs.send_message(QueueUrl=queue.dlq_url, MessageBody=body, MessageAttributes=attrs)
    (copy,) = headrace_json(cli_env, "dlq", "inspect")["sample"]
    assert copy["reason"].startswith("already applied at ")
