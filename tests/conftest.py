"""Session-wide infrastructure: fake AWS environment, one MariaDB and one moto per process.

Under pytest-xdist every worker is its own process with its own session, so each worker
gets its own ``mariadbd`` (own datadir under its own basetemp, own port) and its own
moto server. Tests that kill, restart or reconfigure a server should start a private
:class:`testbed.mariadb.MariaDBServer` in ``tmp_path`` rather than use the shared one.
"""

from __future__ import annotations

import logging
import uuid
from collections.abc import AsyncIterator, Iterator

import pytest
from sqlalchemy.ext.asyncio import AsyncEngine
from support.pipeline import cli_env_for, prepare_database

from headrace.db import create_engine
from headrace.settings import Settings
from testbed.mariadb import MariaDBServer
from testbed.moto import AWS_VARS_TO_UNSET, QueuePair, create_queue_pair, fake_aws_env, start_moto


@pytest.fixture(scope="session", autouse=True)
def aws_env(tmp_path_factory: pytest.TempPathFactory) -> Iterator[None]:
    """Fake credentials and region for the whole session; no config files are read."""
    missing = tmp_path_factory.mktemp("aws") / "does-not-exist"
    with pytest.MonkeyPatch.context() as mp:
        fake = fake_aws_env(str(missing / "config"), str(missing / "credentials"))
        for name, value in fake.items():
            mp.setenv(name, value)
        for name in AWS_VARS_TO_UNSET:
            mp.delenv(name, raising=False)
        yield


@pytest.fixture(scope="session")
def mariadb_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[MariaDBServer]:
    """A running mariadbd shared by the session (i.e. by one xdist worker).

    Use :meth:`MariaDBServer.create_database` with a unique name per test.
    """
    server = MariaDBServer(tmp_path_factory.mktemp("mariadb"))
    try:
        server.start()
        yield server
    finally:
        server.stop()


@pytest.fixture
def mariadb(mariadb_server: MariaDBServer) -> MariaDBServer:
    """The shared server, resumed/restarted first if an earlier test left it down."""
    mariadb_server.ensure_running()
    return mariadb_server


@pytest.fixture(scope="session")
def moto_endpoint(aws_env: None) -> Iterator[str]:
    """Endpoint URL of an in-process moto server (SQS, S3, ...) on 127.0.0.1."""
    logging.getLogger("werkzeug").setLevel(logging.WARNING)  # a line per request otherwise
    server, endpoint_url = start_moto()
    try:
        yield endpoint_url
    finally:
        server.stop()


# --- headrace on top of the servers ---------------------------------------------------------


@pytest.fixture
async def db_url(mariadb: MariaDBServer) -> str:
    """A fresh database on the shared server, migrated to head with alembic, with the
    example ``observations`` table most tests load."""
    url = mariadb.create_database(f"t_{uuid.uuid4().hex[:12]}")
    await prepare_database(url)
    return url


@pytest.fixture
async def queue(moto_endpoint: str) -> QueuePair:
    """A fresh queue with a DLQ (maxReceiveCount 3) on the session's moto server."""
    return await create_queue_pair(
        moto_endpoint, "headrace", visibility_timeout_s=30, max_receive_count=3
    )


@pytest.fixture
def settings(db_url: str, queue: QueuePair, moto_endpoint: str) -> Settings:
    """Settings for a test: short polls and flush ages so tests finish quickly."""
    return Settings(
        database_url=db_url,
        queue_url=queue.queue_url,
        sqs_endpoint_url=moto_endpoint,
        s3_endpoint_url=moto_endpoint,
        worker={"wait_time_s": 1, "flush_age_s": 0.2, "visibility_timeout_s": 30},  # type: ignore[arg-type]
    )


@pytest.fixture
async def engine(settings: Settings) -> AsyncIterator[AsyncEngine]:
    engine = create_engine(settings)
    try:
        yield engine
    finally:
        await engine.dispose()


@pytest.fixture
def cli_env(settings: Settings) -> dict[str, str]:
    """Environment for `headrace` (`python -m cli`) subprocesses of this test."""
    return cli_env_for(settings)
