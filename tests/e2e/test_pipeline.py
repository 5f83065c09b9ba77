"""End to end through the real entry points: MariaDB + moto SQS, producer and worker processes."""

from __future__ import annotations

import asyncio
import signal
import time
from pathlib import Path

import pytest
import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncEngine
from support.pipeline import (
    assert_invariant,
    count,
    drain_queue,
    produce_cli,
    rejected,
    start_worker,
    stop_process,
    wait_for_ledger,
    worker_report,
)

from cli.datagen import generate_csv
from headrace import failpoints
from headrace.settings import Settings
from headrace.sqs import sqs_client
from headrace.tables import ingest_ledger, ingest_runs
from worker.app import Worker

pytestmark = pytest.mark.slow


async def test_100k_rows_through_the_cli(
    tmp_path: Path, settings: Settings, engine: AsyncEngine, cli_env: dict[str, str]
) -> None:
    data = generate_csv(tmp_path / "drop.csv.gz", 100_000, seed=3)
    worker = start_worker(cli_env, tmp_path / "worker.log")
    try:
        started = time.monotonic()
        report = produce_cli(cli_env, data.path)
        assert report["rows_read"] == 100_000
        assert report["rows_rejected"] == data.bad_rows > 0
        assert report["total_messages"] >= 2
        done = await wait_for_ledger(
            engine, report["run_id"], report["total_messages"], proc=worker
        )
        rows_per_s = 100_000 / (done - started)
        print(f"\n100k rows end to end (MariaDB + moto, 1 worker): {rows_per_s:,.0f} rows/s")
    finally:
        assert stop_process(worker) == 0, (tmp_path / "worker.log").read_text()[-3000:]
    assert await count(engine) == 100_000 - data.bad_rows
    await assert_invariant(settings, engine, data.path)


async def test_scenario_05_rerun_of_a_finished_file_sends_nothing(
    tmp_path: Path, settings: Settings, engine: AsyncEngine, cli_env: dict[str, str]
) -> None:
    data = generate_csv(tmp_path / "again.csv", 5_000, seed=4)
    small = {**cli_env, "HEADRACE_PRODUCER__MAX_MESSAGE_BYTES": "32768"}
    report = produce_cli(small, data.path)
    drain_queue(cli_env, tmp_path / "worker.log")
    await assert_invariant(settings, engine, data.path)

    again = produce_cli(small, data.path)
    assert again["already_complete"] is True
    assert again["messages_sent"] == 0

    # Even with its checkpoint lost (a crash before it was saved), a re-run adds nothing:
    # the same deterministic keys meet the worker's ledger.
    async with engine.begin() as conn:
        await conn.execute(ingest_runs.delete())
    resent = produce_cli(small, data.path)
    assert resent["messages_sent"] == report["total_messages"]
    assert resent["run_id"] == report["run_id"]
    drain_queue(cli_env, tmp_path / "worker2.log")
    counts = worker_report(tmp_path / "worker2.log")
    assert counts["messages_applied"] == 0
    assert counts["messages_duplicate"] == report["total_messages"]
    assert await count(engine) == 5_000 - data.bad_rows
    await assert_invariant(settings, engine, data.path)


async def test_scenario_11_two_workers_get_the_same_messages_concurrently(
    tmp_path: Path, settings: Settings, engine: AsyncEngine, cli_env: dict[str, str]
) -> None:
    """Every message is on the queue twice (at-least-once delivery) and two workers run at
    once: each key is applied by exactly one of them, the other finds it in the ledger."""
    data = generate_csv(tmp_path / "small.csv", 5_000, seed=5)
    small = {**cli_env, "HEADRACE_PRODUCER__MAX_MESSAGE_BYTES": "32768"}
    report = produce_cli(small, data.path, timeout_s=120)
    async with sqs_client(settings) as client:
        url = settings.queue_url or ""
        bodies = []
        while len(bodies) < report["total_messages"]:
            resp = await client.receive_message(
                QueueUrl=url,
                MaxNumberOfMessages=10,
                MessageAttributeNames=["All"],
                VisibilityTimeout=0,
            )
            for m in resp.get("Messages", []):
                bodies.append((m["Body"], m.get("MessageAttributes", {})))
        for body, attrs in bodies:
            await client.send_message(QueueUrl=url, MessageBody=body, MessageAttributes=attrs)  # type: ignore[arg-type]
    # Neither may hold more than 10 messages, so neither can take the whole queue; and both
    # are held before their first receive until both are there (a fail-point waiting for a
    # file), so a worker that starts faster cannot drain the queue alone.
    w = settings.worker.model_copy(
        update={"idle_exit_s": 2.0, "flush_rows": 1000, "max_inflight_messages": 10}
    )
    go = tmp_path / "go"
    failpoints.reset(f"worker.before_receive:until={go}")
    try:
        workers = [Worker(settings.model_copy(update={"worker": w})) for _ in range(2)]
        runs = asyncio.gather(*(x.run() for x in workers))
        deadline = time.monotonic() + 60
        while failpoints.hits("worker.before_receive") < 2:  # a poller of each is waiting
            assert time.monotonic() < deadline, "the workers never got to their first receive"
            await asyncio.sleep(0.05)
        go.touch()
        both = await asyncio.wait_for(runs, timeout=120)
    finally:
        failpoints.reset("")
    assert all(s.messages_received > 0 for s in both), both  # both really worked
    assert sum(s.messages_applied for s in both) == report["total_messages"]
    assert sum(s.messages_duplicate for s in both) == report["total_messages"]
    assert await count(engine, ingest_ledger) == report["total_messages"]
    await assert_invariant(settings, engine, data.path)


async def test_scenario_22_bad_rows_bisected_to_rejected_rows_the_rest_inserted(
    tmp_path: Path, settings: Settings, engine: AsyncEngine, cli_env: dict[str, str]
) -> None:
    good = "2026-11-22 10:00:{s:02d},7,SKU-{i},12.50,3,true,Lamp {i},"
    lines = ["observed_at,bot_id,sku,price,quantity,in_stock,title,note"]
    lines += [good.format(s=i % 60, i=i) for i in range(40)]
    lines[5] = "2026-11-22 10:00:04,7,SKU-4,12.50,99999,true,Lamp,"  # producer: out of range
    lines[9] = "2026-11-22 10:00:00,7,SKU-0,12.50,3,true,Lamp 0 again,"  # DB: duplicate key
    lines[12] = "2026-11-22 10:00:11,7,SKU-11,12.50"  # producer: ragged
    lines[20] = "2026-02-30 10:00:00,7,SKU-19,1.00,3,false,Bad date,"  # producer: no such date
    path = tmp_path / "bad.csv"
    path.write_text("\n".join(lines) + "\n")
    report = produce_cli(cli_env, path, timeout_s=120)
    assert report["rows_rejected"] == 3
    worker = Worker(
        settings.model_copy(
            update={"worker": settings.worker.model_copy(update={"idle_exit_s": 2.0})}
        )
    )
    await asyncio.wait_for(worker.run(), timeout=120)
    got = await rejected(engine)
    assert [(line, stage) for line, stage, _ in got] == [
        (6, "producer"),
        (10, "worker"),
        (13, "producer"),
        (21, "producer"),
    ]
    assert "quantity" in got[0][2]
    assert "out of range" in got[0][2]
    assert "Duplicate entry" in got[1][2]
    assert "expected 8 fields, found 4" in got[2][2]
    assert "observed_at" in got[3][2]
    assert await count(engine) == 36
    await assert_invariant(settings, engine, path)


async def test_scenario_10_heartbeat_keeps_a_slow_batch_from_being_redelivered(
    tmp_path: Path, settings: Settings, engine: AsyncEngine, cli_env: dict[str, str], queue: object
) -> None:
    data = generate_csv(tmp_path / "hb.csv", 3_000, seed=9)
    report = produce_cli(cli_env, data.path, timeout_s=120)
    w = settings.worker.model_copy(
        update={
            "visibility_timeout_s": 2,
            "heartbeat_interval_s": 0.5,
            "idle_exit_s": 3.0,
            "wait_time_s": 1,
        }
    )
    worker = Worker(settings.model_copy(update={"worker": w}))
    failpoints.reset("worker.before_commit:sleep=5")  # each commit waits 2.5 visibility timeouts
    try:
        started = time.monotonic()
        stats = await asyncio.wait_for(worker.run(), timeout=120)
    finally:
        failpoints.reset("")
    assert time.monotonic() - started >= 5  # the slow commit really happened
    assert stats.messages_received == report["total_messages"]  # nothing was received twice
    assert stats.messages_duplicate == 0
    await assert_invariant(settings, engine, data.path)


async def test_scenario_07_sigterm_mid_run_drains_and_loses_no_rows(
    tmp_path: Path, settings: Settings, engine: AsyncEngine, cli_env: dict[str, str]
) -> None:
    data = generate_csv(tmp_path / "term.csv", 30_000, seed=11)
    env = {
        **cli_env,
        "HEADRACE_FAILPOINT": "worker.before_commit:sleep=2",
        "HEADRACE_WORKER__FLUSH_ROWS": "2000",
        "HEADRACE_WORKER__MAX_INFLIGHT_MESSAGES": "10",
    }
    worker = start_worker(env, tmp_path / "worker.log")
    try:
        small = {**cli_env, "HEADRACE_PRODUCER__MAX_MESSAGE_BYTES": "16384"}  # many messages
        report = produce_cli(small, data.path, timeout_s=120)
        assert report["total_messages"] >= 20
        deadline = time.monotonic() + 60
        while "batch_flushed" not in (tmp_path / "worker.log").read_text():
            assert time.monotonic() < deadline, "worker never flushed"
            await asyncio.sleep(0.1)
        sent_at = time.monotonic()
        worker.send_signal(signal.SIGTERM)
        assert worker.wait(timeout=30) == 0
        assert time.monotonic() - sent_at < 25  # within the shutdown deadline
    finally:
        stop_process(worker)
    log = (tmp_path / "worker.log").read_text()
    assert "worker_stopping" in log
    assert "worker_stopped" in log
    async with engine.connect() as conn:
        applied = (
            await conn.execute(sa.select(sa.func.count()).select_from(ingest_ledger))
        ).scalar_one()
    assert 0 < applied < report["total_messages"]  # stopped mid-run
    worker = start_worker(cli_env, tmp_path / "worker2.log", "--idle-exit", "3")
    assert worker.wait(timeout=120) == 0
    await assert_invariant(settings, engine, data.path)
