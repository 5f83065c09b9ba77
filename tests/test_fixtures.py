"""The test infrastructure itself: real mariadbd, pause/resume/restart, moto queues."""

from __future__ import annotations

import asyncio
import json
import socket
import uuid
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import asyncmy
import pytest
from aiobotocore.session import get_session

import testbed.mariadb as mariadb_module
from testbed.mariadb import MariaDBServer, MariaDBStartError, ensure_mariadbd
from testbed.moto import create_queue_pair

# Generous for a loaded CI box, tiny compared with "hangs forever".
QUERY_TIMEOUT_S = 10.0
PAUSED_PROBE_S = 0.5


def _db_name() -> str:
    return f"t_{uuid.uuid4().hex[:12]}"


@asynccontextmanager
async def _connect(
    server: MariaDBServer, database: str | None = None
) -> AsyncIterator[asyncmy.Connection]:
    conn = await asyncio.wait_for(
        asyncmy.connect(
            host=server.host, port=server.port, user="root", database=database, autocommit=True
        ),
        QUERY_TIMEOUT_S,
    )
    try:
        yield conn
    finally:
        conn.close()


async def _scalar(server: MariaDBServer, sql: str, database: str | None = None) -> Any:
    async with _connect(server, database) as conn, conn.cursor() as cur:
        await asyncio.wait_for(cur.execute(sql), QUERY_TIMEOUT_S)
        row = await cur.fetchone()
        return row[0]


@pytest.fixture
def private_server(tmp_path: Path) -> Iterator[MariaDBServer]:
    server = MariaDBServer(tmp_path / "mariadb")
    try:
        server.start()
        yield server
    finally:
        server.stop()


def test_ensure_mariadbd_finds_binary() -> None:
    assert Path(ensure_mariadbd()).name == "mariadbd"


async def test_mariadb_accepts_queries_with_asyncmy(mariadb: MariaDBServer) -> None:
    name = _db_name()
    async with _connect(mariadb) as conn, conn.cursor() as cur:
        await cur.execute(f"CREATE DATABASE `{name}`")
        await cur.execute(f"USE `{name}`")
        await cur.execute(
            "CREATE TABLE item (id BIGINT PRIMARY KEY, label VARCHAR(50) NOT NULL) ENGINE=InnoDB"
        )
        await cur.executemany(
            "INSERT INTO item (id, label) VALUES (%s, %s)", [(1, "alpha"), (2, "beta ✓")]
        )
        await cur.execute("SELECT id, label FROM item ORDER BY id")
        rows = await cur.fetchall()
    assert [tuple(r) for r in rows] == [(1, "alpha"), (2, "beta ✓")]
    assert mariadb.url(name) == f"mysql+asyncmy://root@127.0.0.1:{mariadb.port}/{name}"
    assert await _scalar(mariadb, "SELECT @@character_set_server") == "utf8mb4"
    assert await _scalar(mariadb, "SELECT @@max_connections") == 200


async def test_create_database_helper(mariadb: MariaDBServer) -> None:
    name = _db_name()
    url = mariadb.create_database(name)
    assert url.endswith(f"/{name}")
    assert await _scalar(mariadb, "SELECT DATABASE()", database=name) == name
    with pytest.raises(RuntimeError, match="exists"):
        mariadb.create_database(name)


async def test_pause_makes_queries_hang_until_resume(mariadb: MariaDBServer) -> None:
    async with _connect(mariadb) as conn:
        mariadb.pause()
        try:
            assert mariadb.paused
            # An established connection: the query is sent but never answered.
            with pytest.raises(TimeoutError):
                async with conn.cursor() as cur:
                    await asyncio.wait_for(cur.execute("SELECT 1"), PAUSED_PROBE_S)
            # A new connection: the kernel accepts TCP, but no handshake arrives.
            with pytest.raises(TimeoutError):
                await asyncio.wait_for(_scalar(mariadb, "SELECT 1"), PAUSED_PROBE_S)
        finally:
            mariadb.resume()
    assert not mariadb.paused
    assert await _scalar(mariadb, "SELECT 1") == 1


async def test_restart_keeps_committed_data(private_server: MariaDBServer) -> None:
    server = private_server
    name = _db_name()
    server.create_database(name)
    async with _connect(server, name) as conn, conn.cursor() as cur:
        await cur.execute("CREATE TABLE t (id INT PRIMARY KEY)")
        await cur.execute("INSERT INTO t VALUES (1), (2), (3)")
    old_pid, port = server.pid, server.port

    server.restart()
    assert server.pid != old_pid
    assert server.port == port
    assert await _scalar(server, "SELECT COUNT(*) FROM t", name) == 3

    # Crash (SIGKILL) and start again: committed rows survive InnoDB recovery.
    async with _connect(server, name) as conn, conn.cursor() as cur:
        await cur.execute("INSERT INTO t VALUES (4)")
    server.kill()
    assert not server.running
    server.start()
    assert server.port == port
    assert await _scalar(server, "SELECT COUNT(*) FROM t", name) == 4


async def test_restart_with_extra_args(private_server: MariaDBServer) -> None:
    private_server.restart(["--max-allowed-packet=64K"])
    assert await _scalar(private_server, "SELECT @@global.max_allowed_packet") == 65536


def test_start_failure_reports_error_log(tmp_path: Path) -> None:
    server = MariaDBServer(tmp_path / "bad", ["--no-such-option-at-all"])
    with pytest.raises(MariaDBStartError, match="no-such-option-at-all") as excinfo:
        server.start()
    assert "tail of" in str(excinfo.value)
    assert not server.running


async def test_grant_tables_mode_enforces_read_only(tmp_path: Path) -> None:
    # With --skip-grant-tables every session is all-powerful and read_only is ignored;
    # tests about read_only need real grant tables and an unprivileged user.
    server = MariaDBServer(tmp_path / "mariadb", grant_tables=True)
    server.start()
    try:
        name = _db_name()
        server.create_database(name)
        server.execute(
            f"CREATE TABLE `{name}`.t (id INT PRIMARY KEY);"
            "CREATE USER app@'127.0.0.1' IDENTIFIED BY 'pw';"
            f"GRANT ALL ON `{name}`.* TO app@'127.0.0.1';"
            "SET GLOBAL read_only = 1;"
        )
        conn = await asyncmy.connect(
            host=server.host, port=server.port, user="app", password="pw", database=name
        )
        try:
            async with conn.cursor() as cur:
                with pytest.raises(asyncmy.errors.OperationalError, match="read-only"):
                    await cur.execute("INSERT INTO t VALUES (1)")
        finally:
            conn.close()
    finally:
        server.stop()


async def test_moto_queue_pair_has_redrive_policy(moto_endpoint: str) -> None:
    queue_url, dlq_url = await create_queue_pair(
        moto_endpoint, "fixtures", visibility_timeout_s=7, max_receive_count=3
    )
    assert queue_url != dlq_url
    async with get_session().create_client(
        "sqs", region_name="us-east-1", endpoint_url=moto_endpoint
    ) as sqs:
        dlq = await sqs.get_queue_attributes(QueueUrl=dlq_url, AttributeNames=["QueueArn"])
        main = await sqs.get_queue_attributes(QueueUrl=queue_url, AttributeNames=["All"])
    attrs = main["Attributes"]
    redrive = json.loads(attrs["RedrivePolicy"])
    assert redrive["deadLetterTargetArn"] == dlq["Attributes"]["QueueArn"]
    assert int(redrive["maxReceiveCount"]) == 3
    assert attrs["VisibilityTimeout"] == "7"
    assert attrs["MaximumMessageSize"] == "1048576"  # moto 5.2.5 default, 1 MiB


def test_start_retries_when_port_is_taken(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    with socket.socket() as squatter:
        squatter.bind(("127.0.0.1", 0))
        squatter.listen()
        taken = squatter.getsockname()[1]
        ports = iter([taken])
        real_pick = mariadb_module.pick_port
        monkeypatch.setattr(mariadb_module, "pick_port", lambda: next(ports, None) or real_pick())
        server = MariaDBServer(tmp_path / "mariadb")
        try:
            server.start()
            assert server.port != taken
            assert "Bind on TCP/IP port" in server.error_log_tail(200)
            assert server.execute("SELECT 1").strip() == "1"
        finally:
            server.stop()


def test_stop_and_ensure_running_handle_paused_and_killed(
    private_server: MariaDBServer,
) -> None:
    server = private_server
    server.pause()
    server.ensure_running()  # resumes
    assert server.execute("SELECT 1").strip() == "1"
    server.pause()
    server.stop()  # SIGTERM must still work on a stopped process
    assert not server.running
    server.ensure_running()  # starts again
    server.kill()
    server.ensure_running()
    assert server.execute("SELECT 1").strip() == "1"
