"""The real code paths move the metrics: a worker and a producer in this process, against
MariaDB and moto, read through their owners and through ``/metrics`` itself."""

from __future__ import annotations

import asyncio
import sys
import time
from collections.abc import Callable
from pathlib import Path

import aiohttp
from pydantic import SecretStr
from sqlalchemy.ext.asyncio import AsyncEngine
from support.pipeline import cli_env_for, wait_for_ledger
from support.tcpproxy import TcpProxy

from cli.datagen import generate_csv
from headrace.envelope import Envelope
from headrace.exposition import serving
from headrace.metrics import ProducerMetrics, WorkerMetrics
from headrace.settings import Settings
from headrace.sqs import sqs_client
from producer.app import produce
from testbed.mariadb import MariaDBServer
from testbed.moto import QueuePair
from worker.app import Worker
from worker.inflight import InFlight, Message


async def _until(condition: Callable[[], bool], what: str, timeout_s: float = 30) -> None:
    """Poll ``condition`` with a deadline."""
    deadline = time.monotonic() + timeout_s
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"{what}: not true after {timeout_s} s")
        await asyncio.sleep(0.05)


async def _get(port: int, path: str) -> tuple[int, str]:
    async with (
        aiohttp.ClientSession() as session,
        session.get(f"http://127.0.0.1:{port}{path}") as resp,
    ):
        return resp.status, await resp.text()


async def _health_cli(settings: Settings, port: int, *extra: str) -> int:
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "cli",
        "health",
        "--port",
        str(port),
        *extra,
        env=cli_env_for(settings),
        stderr=asyncio.subprocess.DEVNULL,
    )
    return await proc.wait()


def test_oldest_inflight_age_follows_the_messages_held() -> None:
    metrics = WorkerMetrics()
    inflight = InFlight(max_messages=100, max_rows=1000, metrics=metrics)
    env = Envelope.from_rows("0" * 32, 0, "observations", ("sku",), "t.csv", [["a"]], [2])
    old = Message("m0", "r0", env, 1, time.monotonic() + 60, sent_at=time.time() - 100)
    new = Message("m1", "r1", env, 1, time.monotonic() + 60, sent_at=time.time() - 1)
    assert metrics.value("headrace_inflight_oldest_message_age_seconds") == 0
    inflight.add(new)
    inflight.add(old)
    assert 100 <= metrics.value("headrace_inflight_oldest_message_age_seconds") < 200
    asyncio.run(inflight.remove([old]))
    assert 1 <= metrics.value("headrace_inflight_oldest_message_age_seconds") < 100
    asyncio.run(inflight.remove([new]))
    assert metrics.value("headrace_inflight_oldest_message_age_seconds") == 0


async def test_producer_counts_bytes_read_progress_and_last_run(
    tmp_path: Path, settings: Settings
) -> None:
    data = generate_csv(tmp_path / "p.csv.gz", 3000, seed=11, bad_ratio=0.01)
    metrics = ProducerMetrics()
    before = time.time()
    report = await produce(settings, str(data.path), "observations", metrics=metrics)
    t = {"table": "observations"}
    # gzip: the compressed bytes as stored, all of them by the end.
    assert metrics.value("headrace_producer_bytes_total", stage="read", **t) == (
        data.path.stat().st_size
    )
    assert metrics.value("headrace_producer_progress_ratio", **t) == 1
    assert metrics.value("headrace_producer_last_run_timestamp_seconds", **t) >= before
    assert report.rows_read == 3000
    assert metrics.value("headrace_producer_bytes_total", stage="sent", **t) > 0


async def test_worker_moves_its_metrics_and_serves_them(
    tmp_path: Path, settings: Settings, engine: AsyncEngine, queue: QueuePair
) -> None:
    settings = settings.model_copy(
        update={"metrics": settings.metrics.model_copy(update={"queue_poll_s": 0.2})}
    )
    data = generate_csv(tmp_path / "w.csv", 2000, seed=12, bad_ratio=0.01)
    report = await produce(settings, str(data.path), "observations")
    async with sqs_client(settings) as client:  # one message sits in the DLQ
        await client.send_message(QueueUrl=queue.dlq_url, MessageBody="dead")

    metrics = WorkerMetrics()
    worker = Worker(settings, engine=engine, metrics=metrics)
    v = metrics.value
    async with serving(0, metrics.registry, ready=worker.ready) as port:
        assert port is not None
        assert (await _get(port, "/readyz"))[0] == 503  # not polled the queue yet
        task = asyncio.create_task(worker.run())
        try:
            await wait_for_ledger(engine, report.run_id, report.total_messages)
            await _until(lambda: v("headrace_rows_total", table="observations",
                                   outcome="inserted") + v("headrace_rows_total",
                                   table="observations", outcome="rejected") == 2000,
                         "every row counted")  # fmt: skip
            await _until(
                lambda: (
                    v("headrace_queue_messages", queue="main", state="visible") == 0
                    and v("headrace_queue_messages", queue="dlq", state="visible") == 1
                ),
                "queue gauges polled",
            )
            n = report.total_messages
            assert v("headrace_message_age_at_receive_seconds_count") == n
            assert v("headrace_message_latency_seconds_count") == n
            batches = v("headrace_batches_total", outcome="committed")
            assert batches >= 1
            assert v("headrace_batch_seconds_count") == batches
            assert v("headrace_batch_rows_count") == batches
            assert v("headrace_batch_rows_sum") == 2000
            assert v("headrace_queue_reachable") == 1
            assert v("headrace_inflight_oldest_message_age_seconds") == 0
            assert v("headrace_db_pool_connections_in_use") == 0
            async with engine.connect():
                assert v("headrace_db_pool_connections_in_use") == 1

            status, text = await _get(port, "/metrics")
            assert status == 200
            assert 'headrace_queue_messages{queue="dlq",state="visible"} 1.0' in text
            assert "headrace_message_latency_seconds_bucket" in text
            assert 'headrace_db_retries_total{reason="deadlock"} 0.0' in text
            (tmp_path / "metrics.txt").write_text(text)
            assert await _get(port, "/healthz") == (200, "ok\n")
            assert (await _get(port, "/readyz"))[0] == 200
            assert await _health_cli(settings, port) == 0
            assert await _health_cli(settings, port, "--ready") == 0
        finally:
            worker.stop()
            await asyncio.wait_for(task, 60)
        assert (await _get(port, "/readyz"))[0] == 503  # stopped: not ready
        assert await _health_cli(settings, port, "--ready") == 1
    assert await _health_cli(settings, port) == 1  # nothing listens any more


async def test_not_ready_while_the_circuit_is_open(
    tmp_path: Path, settings: Settings, engine: AsyncEngine, mariadb: MariaDBServer
) -> None:
    """/readyz answers 503 while the database cannot take work, 200 once it can again."""
    data = generate_csv(tmp_path / "r.csv", 200, seed=13)
    assert settings.database_url is not None
    url = settings.database_url.get_secret_value()
    with TcpProxy(mariadb.host, mariadb.port) as proxy:
        proxied = settings.model_copy(
            update={"database_url": SecretStr(url.replace(f":{mariadb.port}/", f":{proxy.port}/"))}
        )
        metrics = WorkerMetrics()
        worker = Worker(proxied, metrics=metrics)
        task = asyncio.create_task(worker.run())
        try:
            async with serving(0, metrics.registry, ready=worker.ready) as port:
                assert port is not None
                await _until(lambda: worker.ready(), "ready")
                proxy.refuse()  # from now on, no new connection reaches the database
                proxy.cut()  # and the pooled ones are gone
                report = await produce(settings, str(data.path), "observations")  # direct
                await _until(lambda: metrics.value("headrace_circuit_open") == 1, "open")
                assert (await _get(port, "/readyz"))[0] == 503
                assert (await _get(port, "/healthz"))[0] == 200  # alive all the same
                proxy.refuse(False)
                await _until(lambda: metrics.value("headrace_circuit_open") == 0, "closed", 90)
                assert (await _get(port, "/readyz"))[0] == 200
                await wait_for_ledger(engine, report.run_id, report.total_messages)
        finally:
            worker.stop()
            await asyncio.wait_for(task, 60)
