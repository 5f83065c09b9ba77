"""Processes killed at the dangerous moments (fail-points), and poison messages."""

from __future__ import annotations

import asyncio
import os
from pathlib import Path

import pytest
from sqlalchemy.ext.asyncio import AsyncEngine
from support.pipeline import (
    BOTH_INSERT_PATHS,
    assert_invariant,
    count,
    drain_queue,
    produce_cli,
    run_producer,
    start_worker,
    stop_process,
    worker_report,
)

from cli.datagen import generate_csv
from headrace.settings import Settings
from headrace.sqs import sqs_client
from headrace.tables import ingest_ledger
from testbed.moto import QueuePair

# Every scenario on both ways the sink sends rows (bulk protocol, and the INSERT text Aurora gets).
pytestmark = [pytest.mark.slow, BOTH_INSERT_PATHS]

SMALL_MESSAGES = {"HEADRACE_PRODUCER__MAX_MESSAGE_BYTES": "16384"}


async def test_scenario_08_worker_sigkill_before_commit(
    tmp_path: Path, settings: Settings, engine: AsyncEngine, cli_env: dict[str, str]
) -> None:
    await _sigkill_at("worker.before_commit", tmp_path, settings, engine, cli_env)


async def test_scenario_09_worker_sigkill_after_commit_before_delete(
    tmp_path: Path, settings: Settings, engine: AsyncEngine, cli_env: dict[str, str]
) -> None:
    await _sigkill_at("worker.after_commit", tmp_path, settings, engine, cli_env)


async def _sigkill_at(
    point: str, tmp_path: Path, settings: Settings, engine: AsyncEngine, cli_env: dict[str, str]
) -> None:
    """SIGKILL at a fail-point, then drain: nothing lost, the redelivery doubles nothing."""
    data = generate_csv(tmp_path / "k.csv", 10_000, seed=31)
    report = produce_cli({**cli_env, **SMALL_MESSAGES}, data.path, timeout_s=120)
    env = {
        **cli_env,
        "HEADRACE_FAILPOINT": f"{point}:crash@3",
        "HEADRACE_WORKER__FLUSH_ROWS": "500",
        # One sink: batches 1 and 2 are committed *and deleted* before batch 3 reaches the
        # fail-point (two sinks would let batch 2 sit committed but undeleted at the kill).
        "HEADRACE_WORKER__SINKS": "1",
        "HEADRACE_WORKER__VISIBILITY_TIMEOUT_S": "3",
        "HEADRACE_WORKER__HEARTBEAT_INTERVAL_S": "1",
    }
    worker = start_worker(env, tmp_path / "crash.log")
    assert worker.wait(timeout=120) == -9  # died at the fail-point, no cleanup
    applied = await count(engine, ingest_ledger)
    assert 0 < applied < report["total_messages"]
    # The messages of the killed batch come back after their 3 s visibility timeout. The
    # drain keeps its own receives invisible for the default 60 s, so a loaded machine
    # cannot make it see one message twice.
    drain_queue(cli_env, tmp_path / "drain.log")
    assert await count(engine, ingest_ledger) == report["total_messages"]
    duplicates = worker_report(tmp_path / "drain.log")["messages_duplicate"]
    # After the commit, the killed batch's redelivery finds its keys in the ledger; before
    # it, nothing was applied, so nothing is a duplicate.
    assert (duplicates > 0) == (point == "worker.after_commit")
    await assert_invariant(settings, engine, data.path)


async def test_scenario_01_producer_crash_mid_file_then_rerun(
    tmp_path: Path, settings: Settings, engine: AsyncEngine, cli_env: dict[str, str]
) -> None:
    """The producer dies after sending, before its checkpoint; a re-run completes."""
    data = generate_csv(tmp_path / "p.csv", 20_000, seed=32)
    env = {
        **cli_env,
        **SMALL_MESSAGES,
        "HEADRACE_PRODUCER__CHECKPOINT_EVERY_MESSAGES": "5",
        "HEADRACE_FAILPOINT": "producer.after_send:crash@40",
    }
    proc = await asyncio.to_thread(run_producer, env, data.path, timeout_s=120)
    assert proc.returncode == -9
    rerun = produce_cli({**cli_env, **SMALL_MESSAGES}, data.path, timeout_s=120)
    assert rerun["messages_skipped"] > 0  # resumed from the checkpoint, not from scratch
    drain_queue(cli_env, tmp_path / "w.log")
    assert await count(engine, ingest_ledger) == rerun["total_messages"]
    await assert_invariant(settings, engine, data.path)


async def test_scenario_21_poison_message_goes_to_the_dlq_and_others_are_applied(
    tmp_path: Path,
    settings: Settings,
    engine: AsyncEngine,
    cli_env: dict[str, str],
    queue: QueuePair,
) -> None:
    """An undecodable body is never deleted by the worker; SQS moves it to the DLQ."""
    data = generate_csv(tmp_path / "ok.csv", 3_000, seed=33)
    async with sqs_client(settings) as client:
        await client.send_message(QueueUrl=queue.queue_url, MessageBody="this is not an envelope")
    produce_cli(cli_env, data.path, timeout_s=120)
    env = {
        **cli_env,
        "HEADRACE_WORKER__VISIBILITY_TIMEOUT_S": "2",
        "HEADRACE_WORKER__HEARTBEAT_INTERVAL_S": "0.5",
    }
    worker = start_worker(env, tmp_path / "poison.log")
    try:
        deadline = asyncio.get_running_loop().time() + 90
        while True:
            async with sqs_client(settings) as client:
                attrs = await client.get_queue_attributes(
                    QueueUrl=queue.dlq_url, AttributeNames=["ApproximateNumberOfMessages"]
                )
            if int(attrs["Attributes"]["ApproximateNumberOfMessages"]) == 1:
                break
            assert asyncio.get_running_loop().time() < deadline, (
                "poison message never reached the DLQ"
            )
            await asyncio.sleep(0.5)
    finally:
        stop_process(worker)
    log = (tmp_path / "poison.log").read_text()
    assert "poison_message" in log
    await assert_invariant(settings, engine, data.path)
    async with sqs_client(settings) as client:
        got = await client.receive_message(QueueUrl=queue.dlq_url, WaitTimeSeconds=1)
    assert got["Messages"][0]["Body"] == "this is not an envelope"
    assert os.environ.get("HEADRACE_FAILPOINT") is None


async def test_a_dying_loop_stops_the_worker_and_loses_nothing(
    tmp_path: Path, settings: Settings, engine: AsyncEngine, cli_env: dict[str, str]
) -> None:
    """An unexpected error in the heartbeat must not leave a worker running without one."""
    from headrace import failpoints
    from worker.app import Worker

    data = generate_csv(tmp_path / "hb.csv", 3_000, seed=34)
    produce_cli(cli_env, data.path, timeout_s=120)
    w = settings.worker.model_copy(
        update={"visibility_timeout_s": 2, "heartbeat_interval_s": 0.5, "wait_time_s": 1}
    )
    failpoints.reset("worker.heartbeat:raise=boom,worker.before_commit:sleep=3")
    try:
        stats = await asyncio.wait_for(
            Worker(settings.model_copy(update={"worker": w})).run(), timeout=60
        )
    finally:
        failpoints.reset("")
    assert stats.task_failures == 1
    drain_queue(cli_env, tmp_path / "drain.log")  # whatever it held went back to the queue
    await assert_invariant(settings, engine, data.path)
