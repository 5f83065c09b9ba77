"""Session-wide infrastructure: fake AWS environment, one MariaDB and one moto per process.

Under pytest-xdist every worker is its own process with its own session, so each worker
gets its own ``mariadbd`` (own datadir under its own basetemp, own port) and its own
moto server. Tests that kill, restart or reconfigure a server should start a private
:class:`testbed.mariadb.MariaDBServer` in ``tmp_path`` rather than use the shared one.

Every test that needs a server or a process gets the ``services`` marker here, by itself
(see :func:`pytest_collection_modifyitems`); `make unit` runs the rest in seconds and
refuses, in that run, any process or moto server a test starts after all.
"""

from __future__ import annotations

import inspect
import logging
import subprocess
import types
import uuid
from collections.abc import AsyncIterator, Callable, Iterator
from typing import Any

import pytest
from moto.server import ThreadedMotoServer
from sqlalchemy.ext.asyncio import AsyncEngine
from support.pipeline import INSERT_PATHS, cli_env_for, prepare_database

from headrace.db import create_engine
from headrace.settings import InsertPath, Settings
from testbed.mariadb import MariaDBServer
from testbed.moto import AWS_VARS_TO_UNSET, QueuePair, create_queue_pair, fake_aws_env, start_moto

# --- the `services` marker: which tests need a server or a process -------------------------

#: Fixtures that start (or stand on) a server: a test using any of them, directly or through
#: another fixture, is a `services` test.
SERVICE_FIXTURES = frozenset(
    {
        "mariadb_server",
        "mariadb",
        "moto_endpoint",
        "db_url",
        "queue",
        "settings",
        "engine",
        "cli_env",
    }
)
#: Names whose use in a test, in one of its fixtures or in a helper of the same module they
#: call, means it starts a server or a process itself (tests/faults, tests/e2e, tests/bench,
#: the Prometheus and promtool tests, the demo and infrastructure tests).
SERVICE_NAMES = frozenset(
    {
        "subprocess",
        "MariaDBServer",
        "ensure_mariadbd",
        "start_moto",
        "ThreadedMotoServer",
        "PrometheusServer",
        "Pushgateway",
        "find_binary",
        "spawn_server",
        "produce_cli",
        "run_producer",
        "start_worker",
        "create_subprocess_exec",
        # tests/support/deploy.py: the linters of the image and the stack (hadolint,
        # cfn-lint, checkov) run as processes.
        "assert_silent",
        "assert_checkov_passes",
    }
)


def _names_used(function: Callable[..., Any]) -> set[str]:
    """Global and attribute names in ``function``'s code, its nested code (lambdas, inner
    functions) and the code of the same module's functions it calls, transitively."""
    module_globals = getattr(inspect.unwrap(function), "__globals__", {})
    names: set[str] = set()
    todo = [getattr(inspect.unwrap(function), "__code__", None)]
    seen: set[types.CodeType] = set()
    while todo:
        code = todo.pop()
        if code is None or code in seen:
            continue
        seen.add(code)
        names.update(code.co_names)
        todo.extend(const for const in code.co_consts if isinstance(const, types.CodeType))
        for name in code.co_names:
            helper = module_globals.get(name)
            if isinstance(helper, types.FunctionType) and helper.__globals__ is module_globals:
                todo.append(helper.__code__)
    return names


def needs_services(item: pytest.Item) -> bool:
    if not isinstance(item, pytest.Function):
        return True
    if SERVICE_FIXTURES.intersection(item.fixturenames):
        return True
    functions = [item.function] + [
        definition.func
        for definitions in item._fixtureinfo.name2fixturedefs.values()
        for definition in definitions
    ]
    return any(SERVICE_NAMES & _names_used(function) for function in functions)


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        if needs_services(item):
            item.add_marker(pytest.mark.services)


def _unit_run(config: pytest.Config) -> bool:
    """`make unit` (``-m "not services ..."``): the run that must start nothing."""
    return "not services" in str(config.getoption("markexpr", ""))


@pytest.hookimpl(wrapper=True)
def pytest_runtest_protocol(item: pytest.Item) -> Iterator[object]:
    """In a unit run, a test (or fixture) that starts a process or a moto server fails,
    naming what to do, instead of quietly making `make unit` slow."""
    if not _unit_run(item.config):
        return (yield)

    def refuse(*args: object, **kwargs: object) -> None:
        pytest.fail(
            f"{item.nodeid} starts a process or a server in `make unit`: have it use a server "
            "fixture, or add the name it starts it with to SERVICE_NAMES in tests/conftest.py",
            pytrace=False,
        )

    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(subprocess.Popen, "_execute_child", refuse)
        mp.setattr(ThreadedMotoServer, "start", refuse)
        return (yield)


# --- the servers --------------------------------------------------------------------------


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


def pytest_generate_tests(metafunc: pytest.Metafunc) -> None:
    """``both_insert_paths``: every test that uses ``insert_path`` runs on both paths."""
    if metafunc.definition.get_closest_marker("both_insert_paths") and (
        "insert_path" in metafunc.fixturenames
    ):
        metafunc.parametrize("insert_path", INSERT_PATHS)


@pytest.fixture
def insert_path() -> InsertPath:
    """How the sink sends rows (``HEADRACE_DB__INSERT_PATH``); tests of the sink and the
    fault scenarios parametrise it over ``bulk`` and ``text``
    (:data:`support.pipeline.BOTH_INSERT_PATHS`)."""
    return "auto"


@pytest.fixture
def settings(
    db_url: str, queue: QueuePair, moto_endpoint: str, insert_path: InsertPath
) -> Settings:
    """Settings for a test: short polls and flush ages so tests finish quickly; the worker
    may write any table (tests of the allow-list narrow it)."""
    return Settings(
        database_url=db_url,
        db={"insert_path": insert_path},  # type: ignore[arg-type]
        queue_url=queue.queue_url,
        sqs_endpoint_url=moto_endpoint,
        s3_endpoint_url=moto_endpoint,
        worker={"wait_time_s": 1, "flush_age_s": 0.2, "visibility_timeout_s": 30, "tables": ["*"]},  # type: ignore[arg-type]
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
