"""Session-wide infrastructure: fake AWS environment, one MariaDB and one moto per process.

Under pytest-xdist every worker is its own process with its own session, so each worker
gets its own ``mariadbd`` (own datadir under its own basetemp, own port) and its own
moto server. Tests that kill, restart or reconfigure a server should start a private
:class:`support.mariadb.MariaDBServer` in ``tmp_path`` rather than use the shared one.
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from support.mariadb import MariaDBServer
from support.moto import FAKE_ACCESS_KEY, FAKE_SECRET_KEY, REGION, start_moto

# Variables that could point boto at real accounts, other endpoints or slow metadata
# lookups if they leak in from the developer's shell or CI.
_AWS_VARS_TO_UNSET = (
    "AWS_PROFILE",
    "AWS_DEFAULT_PROFILE",
    "AWS_SESSION_TOKEN",
    "AWS_SECURITY_TOKEN",
    "AWS_ROLE_ARN",
    "AWS_WEB_IDENTITY_TOKEN_FILE",
    "AWS_CONTAINER_CREDENTIALS_RELATIVE_URI",
    "AWS_CONTAINER_CREDENTIALS_FULL_URI",
    "AWS_ENDPOINT_URL",
    "AWS_ENDPOINT_URL_SQS",
    "AWS_ENDPOINT_URL_S3",
)


@pytest.fixture(scope="session", autouse=True)
def aws_env(tmp_path_factory: pytest.TempPathFactory) -> Iterator[None]:
    """Fake credentials and region for the whole session; no config files are read."""
    missing = tmp_path_factory.mktemp("aws") / "does-not-exist"
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("AWS_ACCESS_KEY_ID", FAKE_ACCESS_KEY)
        mp.setenv("AWS_SECRET_ACCESS_KEY", FAKE_SECRET_KEY)
        mp.setenv("AWS_DEFAULT_REGION", REGION)
        mp.setenv("AWS_REGION", REGION)
        mp.setenv("AWS_CONFIG_FILE", str(missing / "config"))
        mp.setenv("AWS_SHARED_CREDENTIALS_FILE", str(missing / "credentials"))
        mp.setenv("AWS_EC2_METADATA_DISABLED", "true")
        for name in _AWS_VARS_TO_UNSET:
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
    server, endpoint_url = start_moto()
    try:
        yield endpoint_url
    finally:
        server.stop()
