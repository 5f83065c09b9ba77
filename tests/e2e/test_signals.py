"""Signals and start-up errors through the real entry points (`python -m cli …` processes)."""

from __future__ import annotations

import asyncio
import json
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import IO

import pytest
import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncEngine
from support.pipeline import (
    assert_invariant,
    drain_queue,
    produce_cli,
    start_worker,
    stop_process,
)

from cli.datagen import generate_csv
from headrace.settings import Settings
from headrace.tables import ingest_runs
from producer.app import INTERRUPTED_EXIT_CODE
from worker.app import FORCED_EXIT_CODE

pytestmark = pytest.mark.slow

SMALL_MESSAGES = {"HEADRACE_PRODUCER__MAX_MESSAGE_BYTES": "16384"}


async def _until(what: str, condition: object, timeout_s: float = 60) -> None:
    """Poll ``condition()`` (sync or async) with a deadline."""
    deadline = time.monotonic() + timeout_s
    while True:
        value = condition()  # type: ignore[operator]
        if asyncio.iscoroutine(value):
            value = await value
        if value:
            return
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        await asyncio.sleep(0.05)


async def _checkpointed(engine: AsyncEngine) -> int:
    async with engine.connect() as conn:
        sent = (await conn.execute(sa.select(sa.func.max(ingest_runs.c.messages_sent)))).scalar()
    return int(sent or 0)


def _start_producer(env: dict[str, str], source: Path, log: IO[bytes]) -> subprocess.Popen[bytes]:
    return subprocess.Popen(
        [sys.executable, "-m", "cli", "produce", str(source), "--table", "observations"],
        env=env,
        stdout=subprocess.PIPE,
        stderr=log,
    )


async def test_producer_sigterm_stops_cleanly_and_a_rerun_resumes(
    tmp_path: Path, settings: Settings, engine: AsyncEngine, cli_env: dict[str, str]
) -> None:
    data = generate_csv(tmp_path / "big.csv", 20_000, seed=41)
    slow = {
        **cli_env,
        **SMALL_MESSAGES,
        "HEADRACE_PRODUCER__CONCURRENCY": "1",
        "HEADRACE_PRODUCER__CHECKPOINT_EVERY_MESSAGES": "5",
        "HEADRACE_FAILPOINT": "producer.after_send:sleep=0.1",  # a slow queue: still mid-file
    }
    log = (tmp_path / "producer.log").open("wb")
    proc = _start_producer(slow, data.path, log)
    try:
        await _until("a first checkpoint", lambda: _checkpointed(engine))
        proc.send_signal(signal.SIGTERM)
        out, _ = await asyncio.to_thread(proc.communicate, timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
        log.close()
    assert proc.returncode == INTERRUPTED_EXIT_CODE, (tmp_path / "producer.log").read_text()[-2000:]
    report = json.loads(out)
    assert report["interrupted"] is True
    assert report["rows_read"] < 20_000
    # The checkpoint holds every send that finished: nothing confirmed is sent again.
    assert await _checkpointed(engine) == report["messages_sent"]
    rerun = produce_cli({**cli_env, **SMALL_MESSAGES}, data.path, timeout_s=120)
    assert rerun["messages_skipped"] == report["messages_sent"]
    assert rerun["interrupted"] is False
    drain_queue(cli_env, tmp_path / "worker.log")
    await assert_invariant(settings, engine, data.path)


async def test_worker_sigterm_while_waiting_for_an_unreachable_queue_exits_promptly(
    tmp_path: Path, cli_env: dict[str, str]
) -> None:
    dead = "http://127.0.0.1:9"  # discard port: nothing listens
    env = {**cli_env, "HEADRACE_SQS_ENDPOINT_URL": dead, "HEADRACE_QUEUE_URL": f"{dead}/1/q"}
    log_path = tmp_path / "worker.log"
    worker = start_worker(env, log_path)
    try:
        await _until("a failed start-up attempt", lambda: "retrying" in log_path.read_text())
        started = time.monotonic()
        worker.send_signal(signal.SIGTERM)
        code = await asyncio.to_thread(worker.wait, 25)  # the drain deadline
    finally:
        if worker.poll() is None:
            worker.kill()
    assert code == 0, log_path.read_text()[-2000:]
    assert time.monotonic() - started < 25


async def test_a_second_sigterm_forces_the_worker_out(
    tmp_path: Path,
    settings: Settings,
    engine: AsyncEngine,
    cli_env: dict[str, str],
) -> None:
    data = generate_csv(tmp_path / "d.csv", 3_000, seed=42)
    produce_cli(cli_env, data.path)
    stuck = {
        **cli_env,
        "HEADRACE_WORKER__VISIBILITY_TIMEOUT_S": "3",
        "HEADRACE_WORKER__HEARTBEAT_INTERVAL_S": "1",
        "HEADRACE_FAILPOINT": "worker.before_commit:sleep=120",  # a commit that never ends
    }
    log_path = tmp_path / "stuck.log"
    worker = start_worker(stuck, log_path)
    try:
        # Signalled only once a transaction is open: a receive still under way when the
        # signal comes is given up, and the worker then has nothing to hold and exits.
        await _until("the commit that never ends", lambda: "failpoint_hit" in log_path.read_text())
        worker.send_signal(signal.SIGTERM)
        await _until("the drain", lambda: '"worker_stopping"' in log_path.read_text())
        started = time.monotonic()
        worker.send_signal(signal.SIGTERM)
        code = await asyncio.to_thread(worker.wait, 10)
    finally:
        if worker.poll() is None:
            stop_process(worker, timeout_s=1)
    assert code == FORCED_EXIT_CODE, log_path.read_text()[-4000:]
    assert time.monotonic() - started < 10
    drain_queue(cli_env, tmp_path / "drain.log")  # the held messages come back
    await assert_invariant(settings, engine, data.path)


# --- start-up errors: one line naming what to set, exit 2 ----------------------------------


def _cli(env: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "cli", *args],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


def _one_line_error(proc: subprocess.CompletedProcess[str], *names: str) -> None:
    assert proc.returncode == 2, proc.stderr[-3000:]
    errors = [line for line in proc.stderr.splitlines() if line.startswith("headrace: error:")]
    assert len(errors) == 1, proc.stderr[-3000:]
    assert "Traceback" not in proc.stderr
    for name in names:
        assert name in errors[0], errors[0]


@pytest.mark.parametrize("command", ["worker", "produce"])
def test_no_database_configured_is_refused(
    tmp_path: Path, cli_env: dict[str, str], command: str
) -> None:
    env = {k: v for k, v in cli_env.items() if k != "HEADRACE_DATABASE_URL"}
    csv = tmp_path / "x.csv"
    csv.write_text("bot_id\n1\n")
    args = ["produce", str(csv), "--table", "observations"] if command == "produce" else [command]
    _one_line_error(_cli(env, *args), "HEADRACE_DATABASE_URL", "HEADRACE_DB__HOST")
    assert not Path("headrace-demo.sqlite3").exists()


def test_missing_aws_credentials_name_what_to_set(tmp_path: Path, cli_env: dict[str, str]) -> None:
    env = {k: v for k, v in cli_env.items() if not k.startswith("AWS_")}
    env.update(
        AWS_CONFIG_FILE=str(tmp_path / "none"),
        AWS_SHARED_CREDENTIALS_FILE=str(tmp_path / "none"),
        AWS_EC2_METADATA_DISABLED="true",
        AWS_REGION="us-east-1",
    )
    _one_line_error(_cli(env, "worker"), "AWS_ACCESS_KEY_ID")


def test_an_unknown_queue_names_what_to_set(cli_env: dict[str, str]) -> None:
    endpoint = cli_env["HEADRACE_SQS_ENDPOINT_URL"]
    env = {**cli_env, "HEADRACE_QUEUE_URL": f"{endpoint}/123456789012/no-such-queue"}
    _one_line_error(_cli(env, "worker"), "HEADRACE_QUEUE_URL")


def test_a_wrong_database_name_names_what_to_set(cli_env: dict[str, str]) -> None:
    url = cli_env["HEADRACE_DATABASE_URL"].rsplit("/", 1)[0] + "/no_such_db"
    _one_line_error(_cli({**cli_env, "HEADRACE_DATABASE_URL": url}, "worker"), "HEADRACE_DB__NAME")
