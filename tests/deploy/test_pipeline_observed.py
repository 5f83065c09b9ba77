"""The whole observability chain, for real: a worker process serving /metrics, producer
processes pushing to a Pushgateway, a Prometheus scraping both with headrace's rules loaded,
rows moving through MariaDB + moto. Every dashboard query and every rule expression must
return data, and the backlog and message age must rise while the worker is stopped and fall
once it runs again.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import time
import urllib.request
from pathlib import Path
from typing import Any

from sqlalchemy.ext.asyncio import AsyncEngine
from support.pipeline import produce_cli, start_worker, stop_process, wait_for_ledger
from support.promql import EXPRESSIONS, RULE_FILES

from cli.datagen import generate_csv
from headrace.settings import Settings
from headrace.sqs import sqs_client
from testbed.moto import QueuePair
from testbed.prometheus import PrometheusServer, Pushgateway, ScrapeJob
from testbed.servers import pick_port

SCRAPE_S = 0.25  # scrape and rule evaluation interval
STOPPED_S = 3.0  # how long the sent messages wait for a worker; above the 2.5 s bucket
ROWS = 3000
# Alerts whose condition is false in a healthy short run (which is what this run is), so
# the full expression rightly returns nothing: the parts they are built from must return
# data instead. The other alerts are made true on purpose (a message in the DLQ; 10% bad
# rows for the reject rate).
ALERT_PARTS = {
    # p99 above 15 minutes: the recording rule it compares.
    "rule:HeadraceMessageAgeHigh": ["headrace:message_age_at_receive_seconds:p99_5m"],
    # A backlog and no rows for 10 minutes: both sides of the `and`.
    "rule:HeadraceBacklogNotDraining": [
        'sum(headrace:queue_messages:max{queue="main"})',
        'sum(increase(headrace_rows_total{job="headrace-worker"}[10m]))',
    ],
    # The circuit never opens here.
    "rule:HeadraceCircuitOpen": [
        'max by (instance) (headrace_circuit_open{job="headrace-worker"})'
    ],
    # The worker was only stopped with the queue drained (last backlog 0): both sides.
    "rule:HeadraceNoWorkerUp": [
        'sum(max by (state) (last_over_time(headrace_queue_messages{job="headrace-worker",'
        ' queue="main"}[1h])))',
        'sum(up{job="headrace-worker"})',
    ],
    # Heartbeats happen (a slowed first commit) but do not fail: the ratio it compares.
    "rule:HeadraceHeartbeatFailures": ["headrace:heartbeat_failure_ratio:rate5m"],
    # Every producer run finished (progress 1): both sides of the `and`.
    "rule:HeadraceProducerStalled": [
        'headrace_producer_progress_ratio{job="headrace-producer"}',
        'changes(headrace_producer_progress_ratio{job="headrace-producer"}[15m])',
    ],
}


def _value(prom: PrometheusServer, expr: str, at: float | None = None) -> float | None:
    """The single value of ``expr`` (at ``at``), or None when it returns nothing."""
    params = {"query": expr} if at is None else {"query": expr, "time": f"{at:.3f}"}
    result: list[dict[str, Any]] = prom.api("query", **params)["result"]
    return float(result[0]["value"][1]) if result else None


def _wait_value(prom: PrometheusServer, expr: str, ok: Any, timeout_s: float = 60) -> float:
    result = prom.wait_for(
        expr, lambda r: bool(r) and ok(float(r[0]["value"][1])), timeout_s=timeout_s
    )
    return float(result[0]["value"][1])


def _assert_every_expression_returns_data(prom: PrometheusServer) -> None:
    """Every dashboard query and rule expression (or, for an alert that is rightly false
    here, the parts it is built from) returns data."""
    missing = []
    for where, expr in EXPRESSIONS:
        for part in ALERT_PARTS.get(where, [expr]):
            try:
                prom.wait_for(part, bool, timeout_s=20)
            except TimeoutError:
                missing.append(f"{where}: {part}")
    assert missing == [], "\n".join(missing)


async def _produce(env: dict[str, str], path: Path, log: Path) -> dict[str, Any]:
    return await asyncio.to_thread(produce_cli, env, path, timeout_s=120, log_path=log)


async def test_dashboard_and_rules_return_data_from_a_running_pipeline(
    tmp_path: Path,
    settings: Settings,
    engine: AsyncEngine,
    queue: QueuePair,
    cli_env: dict[str, str],
) -> None:
    port = pick_port()
    worker_env = {
        **cli_env,
        "HEADRACE_METRICS__PORT": str(port),
        "HEADRACE_METRICS__QUEUE_POLL_S": "0.5",
        "HEADRACE_WORKER__VISIBILITY_TIMEOUT_S": "4",
        "HEADRACE_WORKER__HEARTBEAT_INTERVAL_S": "1",
    }
    with (
        Pushgateway(tmp_path / "pushgateway") as gateway,
        PrometheusServer(
            tmp_path / "prometheus",
            scrape=[
                ScrapeJob("headrace-worker", [f"127.0.0.1:{port}"]),
                ScrapeJob("pushgateway", [gateway.address], honor_labels=True),
            ],
            rule_files=RULE_FILES,
            scrape_interval_s=SCRAPE_S,
        ) as prom,
    ):
        producer_env = {
            **cli_env,
            "HEADRACE_PRODUCER__MAX_MESSAGE_BYTES": "16384",  # several messages per file
            "HEADRACE_METRICS__PUSHGATEWAY_URL": gateway.url,
            "HEADRACE_METRICS__PUSH_INTERVAL_S": "0.5",
        }
        files = [  # a day each: the table's unique key would refuse another day's rows
            generate_csv(
                tmp_path / f"{name}.csv",
                ROWS,
                seed=31 + i,
                bad_ratio=0.1,
                day=dt.date(2026, 1, i + 1),
            )
            for i, name in enumerate("abc")
        ]

        # 1. A worker up, a file through it; one dead message in the DLQ.
        worker = start_worker(worker_env, tmp_path / "worker-1.log")
        try:
            _wait_value(prom, 'up{job="headrace-worker"}', lambda v: v == 1)
            a = await _produce(producer_env, files[0].path, tmp_path / "producer-a.log")
            await wait_for_ledger(engine, a["run_id"], a["total_messages"], proc=worker)
            async with sqs_client(settings) as client:
                await client.send_message(QueueUrl=queue.dlq_url, MessageBody="dead")
            drained = 'sum(headrace_queue_messages{queue="main", state=~"visible|in_flight"})'
            _wait_value(prom, drained, lambda v: v == 0)
        finally:
            assert stop_process(worker) == 0, (tmp_path / "worker-1.log").read_text()[-3000:]

        # 2. The worker stopped: the producer sends a second file; its messages wait.
        _wait_value(prom, 'up{job="headrace-worker"}', lambda v: v == 0)
        b = await _produce(producer_env, files[1].path, tmp_path / "producer-b.log")
        sent_b = time.time()

        # 3. The worker again, held before its first receive (a fail-point waits for a file)
        #    until Prometheus has seen the backlog it reports: no scrape timing involved.
        #    Its first commit is slowed, so heartbeats extend its messages.
        go = tmp_path / "go"
        worker = start_worker(
            {
                **worker_env,
                "HEADRACE_FAILPOINT": f"worker.before_receive:until={go},"
                "worker.before_commit:sleep=3@1",
            },
            tmp_path / "worker-2.log",
        )
        try:
            visible = 'headrace_queue_messages{queue="main", state="visible"}'
            _wait_value(prom, visible, lambda v: v == b["total_messages"])  # the backlog rose
            # Time itself is the condition here: the held messages are to be STOPPED_S old.
            await asyncio.sleep(max(0.0, sent_b + STOPPED_S - time.time()))
            go.touch()
            await wait_for_ledger(engine, b["run_id"], b["total_messages"], proc=worker)
            _wait_value(prom, drained, lambda v: v == 0)  # ...and fell once applied
            # The message age rose: every message of the second file waited STOPPED_S or
            # more (this worker process has received nothing else yet).
            age = "headrace_message_age_at_receive_seconds"
            received = _wait_value(prom, f"{age}_count", lambda v: v >= b["total_messages"])
            waited = _wait_value(prom, f"{age}_sum", lambda v: v > 0)
            assert _value(prom, f'{age}_bucket{{le="2.5"}}') == 0
            # 4. ...and falls: the third file, sent while the worker runs, waits less on
            # average than the held one did (STOPPED_S at least).
            c = await _produce(producer_env, files[2].path, tmp_path / "producer-c.log")
            await wait_for_ledger(engine, c["run_id"], c["total_messages"], proc=worker)
            total = received + c["total_messages"]
            _wait_value(prom, f"{age}_count", lambda v: v >= total)
            waited_c = _wait_value(prom, f"{age}_sum", lambda v: v > waited) - waited
            assert waited_c / c["total_messages"] < waited / received

            _assert_every_expression_returns_data(prom)

            # What /metrics printed, for a human to read (tmp_path/worker-metrics.txt).
            url = f"http://127.0.0.1:{port}/metrics"
            text = await asyncio.to_thread(lambda: urllib.request.urlopen(url, timeout=5).read())
            (tmp_path / "worker-metrics.txt").write_bytes(text)
        finally:
            assert stop_process(worker) == 0, (tmp_path / "worker-2.log").read_text()[-3000:]
