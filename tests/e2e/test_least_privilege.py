"""Each role runs with exactly the grants the README's Security section lists, and no more.

A MariaDB with grant tables (privileges enforced), one user per role: migrate creates the
tables, the producer sends a real file, the worker applies it (with rejects), and the
invariant holds — so the documented grants are sufficient.
"""

from __future__ import annotations

import asyncio
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
from support.pipeline import assert_invariant, cli_env_for, produce_cli, start_worker

from cli.datagen import create_example_table, generate_csv
from headrace.db import create_engine
from headrace.settings import Settings
from testbed.mariadb import MariaDBServer
from testbed.moto import QueuePair

pytestmark = pytest.mark.slow

DB = "shop"
# The README's table, statement for statement (the migrate user's grants are per schema:
# alembic_version does not exist before the first migration).
GRANTS = {
    "headrace_migrate": [
        f"GRANT CREATE, ALTER, INDEX, DROP, REFERENCES, SELECT, INSERT, UPDATE, DELETE ON {DB}.*",
    ],
    "headrace_worker": [
        f"GRANT SELECT, INSERT ON {DB}.observations",
        f"GRANT SELECT, INSERT, UPDATE ON {DB}.ingest_ledger",
        f"GRANT INSERT ON {DB}.rejected_rows",
    ],
    "headrace_producer": [
        f"GRANT SELECT ON {DB}.observations",
        f"GRANT SELECT, INSERT, UPDATE ON {DB}.ingest_runs",
    ],
}


@pytest.fixture
def server(tmp_path: Path) -> Iterator[MariaDBServer]:
    server = MariaDBServer(tmp_path / "db", grant_tables=True)
    server.start()
    try:
        yield server
    finally:
        server.stop()


def _url(server: MariaDBServer, user: str) -> str:
    return f"mysql+asyncmy://{user}:pw-{user}@{server.host}:{server.port}/{DB}"


def _create_user(server: MariaDBServer, user: str) -> None:
    server.execute(f"CREATE USER '{user}'@'%' IDENTIFIED BY 'pw-{user}'")


def _grant(server: MariaDBServer, user: str) -> None:
    for grant in GRANTS[user]:
        server.execute(f"{grant} TO '{user}'@'%'")


async def test_each_role_works_with_exactly_its_documented_grants(
    tmp_path: Path, server: MariaDBServer, queue: QueuePair, settings: Settings
) -> None:
    server.execute(f"CREATE DATABASE {DB}")
    for user in GRANTS:
        _create_user(server, user)
    _grant(server, "headrace_migrate")
    env = cli_env_for(settings)
    migrate = await asyncio.to_thread(
        subprocess.run,
        [sys.executable, "-m", "cli", "migrate"],
        env={**env, "HEADRACE_DATABASE_URL": _url(server, "headrace_migrate")},
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert migrate.returncode == 0, migrate.stderr[-3000:]
    root = Settings(database_url=server.url(DB))
    engine = create_engine(root)
    try:
        await create_example_table(engine)  # the user's own table, created by its owner
    finally:
        await engine.dispose()
    _grant(server, "headrace_worker")
    _grant(server, "headrace_producer")

    data = generate_csv(tmp_path / "drop.csv", 5_000, seed=11)
    report = produce_cli(
        {**env, "HEADRACE_DATABASE_URL": _url(server, "headrace_producer")}, data.path
    )
    assert report["rows_rejected"] == data.bad_rows > 0
    worker_env = {**env, "HEADRACE_DATABASE_URL": _url(server, "headrace_worker")}
    worker = start_worker(worker_env, tmp_path / "worker.log", "--idle-exit", "2")
    assert worker.wait(timeout=180) == 0, (tmp_path / "worker.log").read_text()[-3000:]
    log = (tmp_path / "worker.log").read_text()
    assert "denied" not in log.lower(), log[-3000:]

    engine = create_engine(root)
    try:
        await assert_invariant(root, engine, data.path)
    finally:
        await engine.dispose()
