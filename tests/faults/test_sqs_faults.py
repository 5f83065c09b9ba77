"""SQS misbehaves: partial batch failures, throttling, 5xx, an outage, expired receipt handles.

Scenarios 2, 3, 24 and 25 of the reliability guide. :class:`support.sqsproxy.SqsProxy` sits
between headrace and moto and injects the faults; every test checks that they were injected
(the proxy's counters, the logs) and ends with the invariant check.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import orjson
import pytest
from sqlalchemy.ext.asyncio import AsyncEngine
from structlog.testing import capture_logs
from support.pipeline import (
    assert_invariant,
    cli_env_for,
    count,
    drain_queue,
    produce_cli,
    run_producer,
    start_worker,
    worker_report,
)
from support.sqsproxy import SqsProxy

import producer.app
from cli.datagen import generate_csv
from headrace.settings import Settings
from headrace.tables import ingest_ledger
from producer.app import produce
from producer.sender import Sender
from testbed.moto import create_queue_pair
from worker.app import Worker

pytestmark = pytest.mark.slow

SMALL_MESSAGES = {"HEADRACE_PRODUCER__MAX_MESSAGE_BYTES": "16384"}


@pytest.fixture
def sqs_proxy(moto_endpoint: str) -> Iterator[SqsProxy]:
    with SqsProxy(moto_endpoint) as proxy:
        yield proxy


@pytest.fixture
def proxied(settings: Settings, sqs_proxy: SqsProxy) -> Settings:
    """The test's settings with SQS reached through the proxy."""
    return settings.model_copy(update={"sqs_endpoint_url": sqs_proxy.endpoint_url})


@pytest.fixture
async def patient_queue(settings: Settings, moto_endpoint: str) -> Settings:
    """The test's settings on a queue whose DLQ takes 10 receives (redeliveries are expected)."""
    pair = await create_queue_pair(
        moto_endpoint, "headrace", visibility_timeout_s=30, max_receive_count=10
    )
    return settings.model_copy(update={"queue_url": pair.queue_url})


def _events(log: Path) -> list[dict[str, Any]]:
    return [orjson.loads(line) for line in log.read_text().splitlines() if line.startswith("{")]


def _failed_attempts(log: Path) -> set[tuple[str, str]]:
    """(operation, error code) of every SQS attempt that failed, from ``sqs_attempt_failed``."""
    return {
        (e["operation"], e["error"]) for e in _events(log) if e["event"] == "sqs_attempt_failed"
    }


async def test_scenario_02_send_batch_partial_failed_entries_are_retried(
    tmp_path: Path,
    settings: Settings,
    proxied: Settings,
    sqs_proxy: SqsProxy,
    engine: AsyncEngine,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Entries SQS reports in ``Failed`` (SenderFault false) are sent again; nothing is lost.

    Full messages fill a whole SendMessageBatch, so calls carry several entries only when the
    batch limit is wider than a message: the test widens it to get partial answers.
    """
    data = generate_csv(tmp_path / "partial.csv", 8_000, seed=202)

    def wide_batches(*args: Any, **kwargs: Any) -> Sender:
        return Sender(*args, **{**kwargs, "max_batch_bytes": 256 * 1024})

    monkeypatch.setattr(producer.app, "Sender", wide_batches)
    rule = sqs_proxy.fail_entries("SendMessageBatch", every=2, times=5, entry_every=2)
    p = proxied.producer.model_copy(update={"max_message_bytes": 4096, "concurrency": 4})
    with capture_logs() as logs:
        report = await produce(
            proxied.model_copy(update={"producer": p}), str(data.path), "observations"
        )
    assert rule.fired == 5
    assert sqs_proxy.count(sqs_proxy.partial, "SendMessageBatch") >= 1
    retried = [e for e in logs if e["event"] == "send_entries_failed"]
    assert len(retried) == 5
    assert {e["code"] for e in retried} == {"InternalError"}
    assert report.messages_sent == report.total_messages
    drain_queue(cli_env_for(settings), tmp_path / "drain.log")
    assert await count(engine, ingest_ledger) == report.total_messages
    await assert_invariant(settings, engine, data.path)


async def test_scenario_02_sender_fault_stops_the_run_with_a_clear_error(
    tmp_path: Path,
    settings: Settings,
    proxied: Settings,
    sqs_proxy: SqsProxy,
    engine: AsyncEngine,
) -> None:
    """A ``Failed`` entry with SenderFault true is not retried: the run stops and says why."""
    data = generate_csv(tmp_path / "refused.csv", 10_000, seed=203)
    env = cli_env_for(proxied, **SMALL_MESSAGES)
    rule = sqs_proxy.fail_entries(
        "SendMessageBatch", skip=3, times=1, code="InvalidMessageContents", sender_fault=True
    )
    proc = await asyncio.to_thread(run_producer, env, data.path, timeout_s=120)
    assert rule.fired == 1
    assert proc.returncode == 2, proc.stderr[-3000:]
    assert "headrace: error: SQS refused message seq=" in proc.stderr
    assert "InvalidMessageContents" in proc.stderr
    sqs_proxy.clear()
    rerun = produce_cli(env, data.path, timeout_s=120)
    assert rerun["messages_sent"] + rerun["messages_skipped"] == rerun["total_messages"]
    drain_queue(cli_env_for(settings), tmp_path / "drain.log")
    assert await count(engine, ingest_ledger) == rerun["total_messages"]
    await assert_invariant(settings, engine, data.path)


async def test_scenario_03_throttling_and_5xx_are_retried_without_loss_or_duplicates(
    tmp_path: Path,
    settings: Settings,
    proxied: Settings,
    sqs_proxy: SqsProxy,
    engine: AsyncEngine,
) -> None:
    """Throttling and 5xx on every API in use; two sends took effect but lost their answer."""
    data = generate_csv(tmp_path / "throttled.csv", 12_000, seed=204)
    rules = [
        sqs_proxy.throttle("GetQueueAttributes", times=2),
        sqs_proxy.throttle("SendMessageBatch", every=2, times=6),
        sqs_proxy.error(500, "SendMessageBatch", every=3, times=2, forward=True),
        sqs_proxy.error(503, "SendMessageBatch", every=4, times=2),
        sqs_proxy.throttle("ReceiveMessage", every=2, times=4),
        sqs_proxy.error(500, "ReceiveMessage", every=3, times=2),
        sqs_proxy.error(503, "DeleteMessageBatch", times=2),
    ]
    env = cli_env_for(proxied, **SMALL_MESSAGES)
    report = await asyncio.to_thread(
        produce_cli, env, data.path, timeout_s=120, log_path=tmp_path / "producer.log"
    )
    worker = start_worker(env, tmp_path / "worker.log", "--idle-exit", "2")
    assert await asyncio.to_thread(worker.wait, 120) == 0, (tmp_path / "worker.log").read_text()
    assert [r.fired for r in rules] == [r.times for r in rules]
    assert sqs_proxy.count(sqs_proxy.injected, "SendMessageBatch") == 10
    assert _failed_attempts(tmp_path / "producer.log") == {
        ("GetQueueAttributes", "RequestThrottled"),
        ("SendMessageBatch", "RequestThrottled"),
        ("SendMessageBatch", "InternalError"),
        ("SendMessageBatch", "ServiceUnavailable"),
    }
    assert _failed_attempts(tmp_path / "worker.log") == {
        ("ReceiveMessage", "RequestThrottled"),
        ("ReceiveMessage", "InternalError"),
        ("DeleteMessageBatch", "ServiceUnavailable"),
    }
    assert report["messages_sent"] == report["total_messages"]
    stats = worker_report(tmp_path / "worker.log")
    assert stats["messages_duplicate"] >= 2  # the sends whose answer was lost
    assert stats["messages_applied"] == report["total_messages"]
    assert await count(engine, ingest_ledger) == report["total_messages"]
    await assert_invariant(settings, engine, data.path)


async def test_scenario_24_sqs_unreachable_worker_backs_off_and_recovers(
    tmp_path: Path,
    patient_queue: Settings,
    sqs_proxy: SqsProxy,
    engine: AsyncEngine,
) -> None:
    """Connections refused for 15 s mid-run: the worker logs, waits, and finishes by itself."""
    settings = patient_queue
    data = generate_csv(tmp_path / "outage.csv", 20_000, seed=205)
    report = produce_cli(cli_env_for(settings, **SMALL_MESSAGES), data.path, timeout_s=120)
    w = settings.worker.model_copy(
        update={
            "flush_rows": 1_000,
            "max_inflight_messages": 100,
            "sinks": 1,
            "visibility_timeout_s": 6,
            "heartbeat_interval_s": 1,
            "idle_exit_s": 3,
        }
    )
    worker = Worker(
        settings.model_copy(update={"sqs_endpoint_url": sqs_proxy.endpoint_url, "worker": w})
    )
    with capture_logs() as logs:
        run = asyncio.create_task(worker.run())
        deadline = time.monotonic() + 30
        while worker.stats.batches == 0:
            assert time.monotonic() < deadline, "no batch applied"
            assert not run.done(), run
            await asyncio.sleep(0.05)
        outage_started = time.monotonic()
        with sqs_proxy.down("refuse"):
            before = len(logs)
            while time.monotonic() - outage_started < 15:
                assert not run.done(), run
                await asyncio.sleep(0.2)
            during = logs[before:]
        requests_before = sqs_proxy.count(sqs_proxy.requests)
        stats = await asyncio.wait_for(run, timeout=45)
    attempts = [e for e in during if e["event"] == "sqs_attempt_failed"]
    assert "ReceiveMessage" in {e["operation"] for e in attempts}
    assert len(attempts) <= 100  # botocore's backoff spaces them out: no busy loop
    assert sqs_proxy.count(sqs_proxy.requests) > requests_before  # talking to SQS again
    assert stats.task_failures == 0
    assert stats.batch_failures == 0
    assert await count(engine, ingest_ledger) == report["total_messages"]
    await assert_invariant(settings, engine, data.path)


async def test_scenario_24_sqs_unavailable_producer_rides_it_out(
    tmp_path: Path,
    settings: Settings,
    proxied: Settings,
    sqs_proxy: SqsProxy,
    engine: AsyncEngine,
) -> None:
    """SQS answers 503 to everything for 15 s while the producer sends; the run completes.

    botocore gets 3 attempts per call, far less than the outage: the sender's own retries of
    whole calls must carry the run through.
    """
    data = generate_csv(tmp_path / "outage.csv", 20_000, seed=206)
    env = cli_env_for(
        proxied,
        **SMALL_MESSAGES,
        HEADRACE_PRODUCER__CONCURRENCY="4",
        HEADRACE_AWS__MAX_ATTEMPTS="3",
    )
    producing = asyncio.create_task(
        asyncio.to_thread(produce_cli, env, data.path, timeout_s=120, log_path=tmp_path / "p.log")
    )
    deadline = time.monotonic() + 30
    while sqs_proxy.count(sqs_proxy.requests, "SendMessageBatch") < 3:
        assert time.monotonic() < deadline, "the producer never sent"
        assert not producing.done(), producing
        await asyncio.sleep(0.05)
    with sqs_proxy.down("503"):
        await asyncio.sleep(15)
        assert not producing.done()
    report = await producing
    assert sqs_proxy.count(sqs_proxy.injected, "SendMessageBatch") >= 4
    assert _failed_attempts(tmp_path / "p.log") == {("SendMessageBatch", "ServiceUnavailable")}
    assert any(e["event"] == "send_call_failed" for e in _events(tmp_path / "p.log"))
    assert report["messages_sent"] == report["total_messages"]
    drain_queue(cli_env_for(settings), tmp_path / "drain.log")
    assert await count(engine, ingest_ledger) == report["total_messages"]
    await assert_invariant(settings, engine, data.path)


async def test_scenario_25_expired_receipt_handle_on_delete_is_absorbed_by_the_ledger(
    tmp_path: Path,
    patient_queue: Settings,
    sqs_proxy: SqsProxy,
    engine: AsyncEngine,
) -> None:
    """A commit outlives its visibility (heartbeat stalled): the message is received again,
    applied as a ledger duplicate and deleted; the late delete with the first, now stale,
    receipt handle fails with ReceiptHandleIsInvalid, and the worker carries on."""
    settings = patient_queue
    data = generate_csv(tmp_path / "stale.csv", 3_000, seed=207)
    report = produce_cli(cli_env_for(settings, **SMALL_MESSAGES), data.path, timeout_s=120)
    sqs_proxy.stale_receipts()
    env = cli_env_for(
        settings.model_copy(update={"sqs_endpoint_url": sqs_proxy.endpoint_url}),
        HEADRACE_FAILPOINT="worker.after_commit:sleep=4@1,worker.heartbeat:sleep=6@1",
        HEADRACE_WORKER__VISIBILITY_TIMEOUT_S="2",
        HEADRACE_WORKER__HEARTBEAT_INTERVAL_S="0.5",
    )
    log = tmp_path / "worker.log"
    worker = start_worker(env, log, "--idle-exit", "3")
    assert await asyncio.to_thread(worker.wait, 60) == 0, log.read_text()[-3000:]
    assert sqs_proxy.count(sqs_proxy.failed_entries, "DeleteMessageBatch") >= 1
    stale = [e for e in _events(log) if e["event"] == "delete_entry_failed"]
    assert stale
    assert {e["code"] for e in stale} == {"ReceiptHandleIsInvalid"}
    stats = worker_report(log)
    assert stats["messages_duplicate"] >= len(stale)
    assert stats["task_failures"] == 0
    assert await count(engine, ingest_ledger) == report["total_messages"]
    await assert_invariant(settings, engine, data.path)
