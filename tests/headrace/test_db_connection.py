"""The database connection against a real TLS-only MariaDB: TLS modes, IAM tokens, errors.

One private ``mariadbd`` with grant tables, a throwaway CA and ``require_secure_transport``.
"""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
import sqlalchemy as sa
from support.tls import TlsFiles, make_ca_and_server_cert

from headrace.db import create_engine, database_error, db_call
from headrace.errors import ConfigError
from headrace.settings import Settings
from testbed.mariadb import MariaDBServer, MariaDBTls

PASSWORD = "pw-" + uuid.uuid4().hex[:8]


@pytest.fixture(scope="module")
def tls_files(tmp_path_factory: pytest.TempPathFactory) -> TlsFiles:
    return make_ca_and_server_cert(tmp_path_factory.mktemp("tls"))


@pytest.fixture(scope="module")
def tls_db(
    tmp_path_factory: pytest.TempPathFactory, tls_files: TlsFiles
) -> Iterator[MariaDBServer]:
    """TLS only (plaintext refused), privileges enforced; user ``app`` with a password."""
    tls = MariaDBTls(tls_files.cert, tls_files.key, tls_files.ca, require_secure_transport=True)
    server = MariaDBServer(tmp_path_factory.mktemp("tlsdb"), grant_tables=True, tls=tls)
    server.start()
    server.execute(
        "CREATE DATABASE app; "
        f"CREATE USER 'app'@'127.0.0.1' IDENTIFIED BY '{PASSWORD}'; "
        "GRANT SELECT ON app.* TO 'app'@'127.0.0.1'"
    )
    try:
        yield server
    finally:
        server.stop()


def _settings(server: MariaDBServer, password: str | None = PASSWORD, **db: object) -> Settings:
    return Settings(
        db={  # type: ignore[arg-type]
            "host": "127.0.0.1",
            "port": server.port,
            "user": "app",
            "password": password,
            "name": "app",
            **db,
        }
    )


async def _cipher(settings: Settings, **kwargs: object) -> str:
    engine = create_engine(settings, **kwargs)  # type: ignore[arg-type]
    try:
        async with engine.connect() as conn:
            row = (await conn.execute(sa.text("SHOW SESSION STATUS LIKE 'Ssl_cipher'"))).one()
            return str(row[1])
    finally:
        await engine.dispose()


async def test_verify_ca_and_verify_identity_connect_over_tls(
    tls_db: MariaDBServer, tls_files: TlsFiles
) -> None:
    for mode in ("verify-ca", "verify-identity", "required"):
        cipher = await _cipher(_settings(tls_db, tls_mode=mode, tls_ca=tls_files.ca))
        assert cipher.startswith("TLS_"), (mode, cipher)


async def test_plaintext_is_refused_by_the_server(tls_db: MariaDBServer) -> None:
    settings = _settings(tls_db, tls_mode="disabled")
    engine = create_engine(settings)
    try:
        with pytest.raises(ConfigError, match="refused user 'app'"):
            await db_call(lambda: _select_1(engine), engine=engine, what="probe")
    finally:
        await engine.dispose()


async def test_a_wrong_ca_fails_with_a_clear_error(tls_db: MariaDBServer, tmp_path: Path) -> None:
    other = make_ca_and_server_cert(tmp_path / "other", label="someone-else")
    engine = create_engine(_settings(tls_db, tls_mode="verify-ca", tls_ca=other.ca))
    try:
        with pytest.raises(ConfigError) as err:
            await db_call(lambda: _select_1(engine), engine=engine, what="probe")
    finally:
        await engine.dispose()
    message = str(err.value)
    assert "TLS certificate not trusted" in message
    assert "HEADRACE_DB__TLS_CA" in message
    assert "\n" not in message


def test_a_missing_ca_file_names_the_variable(tls_db: MariaDBServer, tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="HEADRACE_DB__TLS_CA: no such file"):
        create_engine(_settings(tls_db, tls_mode="verify-ca", tls_ca=tmp_path / "nope.pem"))


async def _select_1(engine: sa.ext.asyncio.AsyncEngine) -> None:
    async with engine.connect() as conn:
        await conn.execute(sa.text("SELECT 1"))


class FakeSigner:
    """Stands in for botocore's RDS signer: counts calls, returns the given token."""

    def __init__(self, token: str) -> None:
        self.token = token
        self.calls: list[tuple[str, int, str]] = []

    def __call__(self, host: str, port: int, user: str) -> str:
        self.calls.append((host, port, user))
        return self.token


async def test_iam_auth_signs_a_fresh_token_per_new_connection(
    tls_db: MariaDBServer, tls_files: TlsFiles
) -> None:
    settings = _settings(
        tls_db, password=None, iam_auth=True, tls_mode="verify-identity", tls_ca=tls_files.ca
    )
    signer = FakeSigner(PASSWORD)  # the token is the password the server checks
    engine = create_engine(settings, pool_size=2, auth_token=signer)
    try:

        async def hold() -> None:
            async with engine.connect() as conn:
                await conn.execute(sa.text("SELECT SLEEP(0.2)"))

        await asyncio.gather(hold(), hold())  # two new connections
        assert signer.calls == [("127.0.0.1", tls_db.port, "app")] * 2
        await _select_1(engine)  # a pooled one: no new token
        assert len(signer.calls) == 2
        await engine.dispose()
        await _select_1(engine)  # a new connection after the pool was emptied
        assert len(signer.calls) == 3
    finally:
        await engine.dispose()
    wrong = FakeSigner("not-the-token")
    engine = create_engine(settings, auth_token=wrong)
    try:
        with pytest.raises(ConfigError, match="refused user 'app'"):
            await db_call(lambda: _select_1(engine), engine=engine, what="probe")
    finally:
        await engine.dispose()
    assert wrong.calls


def test_unavailable_and_statement_errors_are_told_apart() -> None:
    url = sa.make_url("mysql+asyncmy://u@db:3306/x")
    lost = sa.exc.OperationalError("SELECT 1", {}, Exception(2013, "Lost connection"))
    assert "unavailable" in str(database_error(lost, url))
    syntax = sa.exc.ProgrammingError("SELEC 1", {}, Exception(1064, "syntax"))
    assert database_error(syntax, url) is None


def test_iam_auth_without_tls_is_refused() -> None:
    """An IAM token is a credential: it never travels in plaintext."""
    settings = Settings(
        db={  # type: ignore[arg-type]
            "host": "aurora.example",
            "user": "loader",
            "name": "app",
            "iam_auth": True,
            "tls_mode": "disabled",
        }
    )
    with pytest.raises(ConfigError, match="HEADRACE_DB__IAM_AUTH needs TLS"):
        create_engine(settings, auth_token=lambda host, port, user: "token")
