"""Database engine factory, error classification and migrations.

No module-level engine: callers build one from settings and dispose of it.
Every MySQL connection runs in strict ``sql_mode`` with UTC, READ COMMITTED isolation
(fewer gap locks between concurrent bulk inserts) and asyncmy's statement cache, which makes
``executemany`` use MariaDB's ``COM_STMT_BULK_EXECUTE``.
"""

from __future__ import annotations

import asyncio
import enum
import ipaddress
import ssl
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any, TypeVar

import sqlalchemy as sa
from sqlalchemy import event
from sqlalchemy.exc import DBAPIError
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine, create_async_engine
from sqlalchemy.util import await_only

from headrace.errors import ConfigError, DatabaseUnavailable, HeadraceError
from headrace.retry import Backoff, retry
from headrace.settings import Settings, TlsMode

__all__ = [
    "DB_CALL_BACKOFF",
    "DISCONNECT_ERRORS",
    "DISPOSE_ERRORS",
    "SCHEMA_ERRORS",
    "STRICT_SQL_MODE",
    "AuthTokenSigner",
    "ErrorKind",
    "classify_error",
    "create_engine",
    "database_configured",
    "database_error",
    "database_url",
    "db_call",
    "error_reason",
    "is_disconnect",
    "is_mysql",
    "migrate",
    "mysql_errno",
    "rds_auth_token_signer",
    "refuse_bad_database_settings",
    "tls_context",
    "tls_mode",
]

STRICT_SQL_MODE = (
    "STRICT_ALL_TABLES,NO_ZERO_IN_DATE,NO_ZERO_DATE,ERROR_FOR_DIVISION_BY_ZERO,"
    "NO_ENGINE_SUBSTITUTION"
)

# Errors caused by the values of one row: isolate the row, insert the rest.
ROW_ERRORS = frozenset(
    {
        1048,  # column cannot be null
        1062,  # duplicate entry
        1264,  # out of range
        1265,  # data truncated
        1292,  # incorrect datetime/date value
        1366,  # incorrect integer/decimal/string value
        1367,  # illegal value
        1406,  # data too long
        1411,  # incorrect value for function
        1452,  # foreign key fails
        1364,  # field has no default
        3819,  # check constraint violated (MySQL)
        4025,  # check constraint violated (MariaDB)
        4078,  # illegal parameter data type
    }
)
# Transient: retry the whole transaction after a backoff, disposing the pool where needed.
RETRY_ERRORS = frozenset(
    {
        1040,  # too many connections
        1205,  # lock wait timeout
        1213,  # deadlock
        1290,  # read-only (Aurora failover: the old writer)
        1836,  # read-only mode
        2002,  # can't connect
        2003,  # can't connect
        2006,  # server has gone away
        2013,  # lost connection during query
        2014,  # commands out of sync
        2055,  # lost connection
        1927,  # connection killed
        1053,  # server shutdown in progress
        1158,  # network read error
        1159,  # network read timeout
        1160,  # network write error
        1161,  # network write timeout
        1180,  # got error during commit
        1317,  # query interrupted
    }
)
# The pool must be thrown away: the server we talk to is not the writer any more.
DISPOSE_ERRORS = frozenset({1290, 1836})
# The connection itself is gone or unusable (a deadlock or lock wait leaves it fine).
DISCONNECT_ERRORS = frozenset(
    {1053, 1158, 1159, 1160, 1161, 1927, 2002, 2003, 2006, 2013, 2014, 2055}
)
# The table changed under us: a column or the table is not there any more.
SCHEMA_ERRORS = frozenset({1054, 1146})
PACKET_TOO_LARGE = 1153


class ErrorKind(enum.Enum):
    ROW = "row"  # one row's values: bisect to find it
    RETRY = "retry"  # transient: retry the transaction
    TOO_LARGE = "too_large"  # statement over max_allowed_packet: split the batch
    FATAL = "fatal"  # schema or programming error: stop, keep the messages


def mysql_errno(exc: BaseException) -> int | None:
    """The MySQL error number inside a SQLAlchemy or driver exception, if any."""
    orig = exc.orig if isinstance(exc, DBAPIError) else exc
    args = getattr(orig, "args", ())
    if args and isinstance(args[0], int):
        return args[0]
    return None


def is_disconnect(exc: BaseException) -> bool:
    """The connection is lost (not merely the statement or transaction refused)."""
    if isinstance(exc, OSError | TimeoutError):
        return True
    if isinstance(exc, DBAPIError) and exc.connection_invalidated:
        return True
    if isinstance(exc, sa.exc.InterfaceError):  # e.g. asyncmy's "Cancelled during execution"
        return True
    return mysql_errno(exc) in DISCONNECT_ERRORS


def classify_error(exc: BaseException) -> ErrorKind:
    if is_disconnect(exc):
        return ErrorKind.RETRY
    errno = mysql_errno(exc)
    if errno is not None:
        if errno in ROW_ERRORS:
            return ErrorKind.ROW
        if errno in RETRY_ERRORS:
            return ErrorKind.RETRY
        if errno == PACKET_TOO_LARGE:
            return ErrorKind.TOO_LARGE
        return ErrorKind.FATAL
    if isinstance(exc, sa.exc.IntegrityError):  # SQLite: unique / not-null violations
        return ErrorKind.ROW
    if isinstance(exc, sa.exc.OperationalError):  # SQLite: database is locked
        return ErrorKind.RETRY
    return ErrorKind.FATAL


_REASONS = {
    1213: "deadlock",
    1205: "lock_wait",
    1040: "too_many_connections",
    1290: "read_only",
    1836: "read_only",
}


def error_reason(exc: BaseException) -> str:
    """A bounded label for a retried error (metrics): deadlock, lock_wait, read_only, …"""
    if isinstance(exc, TimeoutError):
        return "timeout"
    reason = _REASONS.get(mysql_errno(exc) or 0)
    if reason is not None:
        return reason
    return "disconnect" if is_disconnect(exc) else "other"


# Refusals no retry can fix: the settings must change.
_ACCESS_DENIED = frozenset({1044, 1045, 1698})
_UNKNOWN_DATABASE = 1049
DB_CALL_BACKOFF = Backoff(base_s=0.5, cap_s=10.0, attempts=8)
"""One database call outside the worker's sink (reflection, the producer's checkpoint): about
40 s of attempts, enough for an Aurora failover."""

T = TypeVar("T")


def _driver_message(exc: BaseException) -> str:
    orig = exc.orig if isinstance(exc, DBAPIError) else exc
    args: tuple[object, ...] = tuple(getattr(orig, "args", ()))
    if len(args) >= 2 and isinstance(args[0], int):
        return str(args[1])
    return str(orig).splitlines()[0] if str(orig) else type(orig).__name__


def database_error(exc: BaseException, url: sa.URL) -> HeadraceError | None:
    """A failed database call as headrace's error, one line naming what to set: ConfigError
    for what only the settings can fix (TLS trust, credentials, database name),
    DatabaseUnavailable for what may pass (down, failover, lost connection); None when it is
    neither (a statement's own error, for the caller)."""
    where = f"database {url.host or 'localhost'}:{url.port or 3306}"
    message = _driver_message(exc)[:300]
    if "CERTIFICATE_VERIFY_FAILED" in message or "doesn't match" in message:
        return ConfigError(
            f"{where}: TLS certificate not trusted ({message}); set HEADRACE_DB__TLS_CA to the "
            "CA bundle that signed it (RDS: global-bundle.pem) or check HEADRACE_DB__TLS_MODE"
        )
    errno = mysql_errno(exc)
    if errno in _ACCESS_DENIED:
        return ConfigError(
            f"{where} refused user {url.username!r}: {message}; check HEADRACE_DATABASE_URL or "
            "HEADRACE_DB__USER/HEADRACE_DB__PASSWORD/HEADRACE_DB__IAM_AUTH (a server requiring "
            "TLS refuses plaintext too: HEADRACE_DB__TLS_MODE)"
        )
    if errno == _UNKNOWN_DATABASE:
        return ConfigError(
            f"{where}: {message}; check the database name in HEADRACE_DATABASE_URL or "
            "HEADRACE_DB__NAME"
        )
    if classify_error(exc) is ErrorKind.RETRY:
        return DatabaseUnavailable(
            f"{where} unavailable: {message} (HEADRACE_DATABASE_URL or HEADRACE_DB__HOST/PORT)"
        )
    return None


async def db_call(
    fn: Callable[[], Awaitable[T]],
    *,
    engine: AsyncEngine,
    what: str,
    backoff: Backoff = DB_CALL_BACKOFF,
) -> T:
    """``fn()`` (one short transaction), retried with the shared policy while the database is
    unavailable; its errors become :func:`database_error`'s."""

    async def once() -> T:
        try:
            return await fn()
        except (DBAPIError, OSError, TimeoutError) as exc:
            error = database_error(exc, engine.url)
            if error is None:
                raise
            raise error from exc

    return await retry(once, backoff=backoff, what=what)


async def refuse_bad_database_settings(engine: AsyncEngine, timeout_s: float) -> None:
    """Connect once at start-up and raise :class:`ConfigError` for what only the settings can
    fix (TLS trust, credentials, database name). A database that is down or slow is not an
    error here: the worker waits for it (its circuit), the producer retries."""
    try:
        async with asyncio.timeout(timeout_s), engine.connect() as conn:
            await conn.exec_driver_sql("SELECT 1")
    except (DBAPIError, OSError, TimeoutError) as exc:
        error = database_error(exc, engine.url)
        if isinstance(error, ConfigError):
            raise error from exc


def is_mysql(engine: AsyncEngine | AsyncConnection) -> bool:
    return engine.dialect.name in ("mysql", "mariadb")


NO_DATABASE = (
    "no database configured: set HEADRACE_DATABASE_URL (mysql+asyncmy://user:pw@host:3306/db), "
    "or HEADRACE_DB__HOST, HEADRACE_DB__USER, HEADRACE_DB__PASSWORD (or "
    "HEADRACE_DB__IAM_AUTH=true) and HEADRACE_DB__NAME"
)


def database_configured(settings: Settings) -> bool:
    """Whether a database is set at all (the URL or any of the parts)."""
    return settings.database_url is not None or bool(settings.db.parts_given)


def database_url(settings: Settings) -> sa.URL:
    """Where to connect: ``HEADRACE_DATABASE_URL`` or the ``HEADRACE_DB__*`` parts.

    Exactly one of the two must be given (settings refuse both); with neither this raises
    :class:`ConfigError` naming the variables: there is no silent local fallback (only
    ``headrace demo`` brings its own SQLite file).
    """
    db = settings.db
    if settings.database_url is not None:
        return sa.make_url(settings.database_url.get_secret_value())
    if not db.parts_given:
        raise ConfigError(NO_DATABASE)
    needed = ["host", "user", "name"] + ([] if db.iam_auth else ["password"])
    missing = [f"HEADRACE_DB__{k.upper()}" for k in needed if getattr(db, k) is None]
    if missing:
        raise ConfigError(f"incomplete database settings: also set {', '.join(missing)}")
    return sa.URL.create(
        "mysql+asyncmy",
        username=db.user,
        password=db.password.get_secret_value() if db.password is not None else None,
        host=db.host,
        port=db.port,
        database=db.name,
    )


def _is_loopback(host: str | None) -> bool:
    if not host or host == "localhost":
        return True  # no host: asyncmy's default (localhost)
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def tls_mode(settings: Settings, url: sa.URL) -> TlsMode:
    """The TLS mode in force: the setting, else required (disabled for a loopback host)."""
    if settings.db.tls_mode is not None:
        return settings.db.tls_mode
    return "disabled" if _is_loopback(url.host) else "required"


def tls_context(settings: Settings, url: sa.URL) -> ssl.SSLContext | None:
    """The SSLContext asyncmy connects with (None: plaintext), after ``HEADRACE_DB__TLS_*``.

    ``required`` encrypts without checking the certificate; ``verify-ca`` checks it against
    ``tls_ca`` (or the system's CAs); ``verify-identity`` also checks the host name.
    """
    mode = tls_mode(settings, url)
    if mode == "disabled":
        return None
    ca = settings.db.tls_ca
    if ca is not None and not ca.is_file():
        raise ConfigError(f"HEADRACE_DB__TLS_CA: no such file: {ca}")
    try:
        ctx = ssl.create_default_context(cafile=str(ca) if ca is not None else None)
    except ssl.SSLError as exc:
        raise ConfigError(f"HEADRACE_DB__TLS_CA: not a PEM CA bundle: {ca} ({exc})") from None
    ctx.minimum_version = ssl.TLSVersion.TLSv1_2
    if mode == "required":
        ctx.check_hostname = False
        ctx.verify_mode = ssl.CERT_NONE
    else:
        ctx.check_hostname = mode == "verify-identity"
        ctx.verify_mode = ssl.CERT_REQUIRED
    return ctx


AuthTokenSigner = Callable[[str, int, str], str]
"""``(host, port, user) -> token``: the password of one new connection (RDS IAM auth)."""


def rds_auth_token_signer(region: str) -> AuthTokenSigner:
    """botocore's RDS ``generate_db_auth_token`` (a local signature, valid 15 minutes), with
    credentials from the standard chain; the client is made on first use."""
    clients: list[Any] = []

    def sign(host: str, port: int, user: str) -> str:
        if not clients:
            import botocore.session

            clients.append(botocore.session.get_session().create_client("rds", region_name=region))
        token: str = clients[0].generate_db_auth_token(host, port, user, Region=region)
        return token

    return sign


def _use_auth_tokens(engine: AsyncEngine, url: sa.URL, signer: AuthTokenSigner) -> None:
    """Every new connection gets a fresh token as its password (pooled ones keep theirs)."""
    host, port, user = url.host or "localhost", url.port or 3306, url.username or ""

    @event.listens_for(engine.sync_engine, "do_connect")
    def _token(_dialect: Any, _record: Any, _cargs: Any, cparams: dict[str, Any]) -> None:
        # Signing may fetch credentials (ECS/IMDS): off the event loop, awaited from the
        # pool's greenlet like the connect itself.
        cparams["password"] = await_only(asyncio.to_thread(signer, host, port, user))


def create_engine(
    settings: Settings,
    *,
    pool_size: int | None = None,
    auth_token: AuthTokenSigner | None = None,
) -> AsyncEngine:
    """The engine for ``settings``; ``auth_token`` replaces botocore's signer (tests)."""
    url = database_url(settings)
    db = settings.db
    if url.get_backend_name() == "sqlite":
        engine = create_async_engine(
            url, connect_args={"timeout": db.connect_timeout_s}, hide_parameters=True
        )

        @event.listens_for(engine.sync_engine, "connect")
        def _sqlite_pragmas(dbapi_conn: Any, _record: Any) -> None:
            # Let SQLAlchemy, not pysqlite, emit BEGIN, so SAVEPOINTs work (SQLAlchemy docs).
            dbapi_conn.isolation_level = None
            cursor = dbapi_conn.cursor()
            cursor.execute("PRAGMA journal_mode=WAL")
            cursor.execute("PRAGMA synchronous=NORMAL")
            cursor.execute("PRAGMA busy_timeout=30000")
            cursor.close()

        @event.listens_for(engine.sync_engine, "begin")
        def _sqlite_begin(conn: Any) -> None:
            conn.exec_driver_sql("BEGIN IMMEDIATE")

        return engine
    if db.iam_auth and tls_mode(settings, url) == "disabled":
        # RDS refuses IAM tokens over plaintext, and a token is a 15-minute credential.
        raise ConfigError(
            "HEADRACE_DB__IAM_AUTH needs TLS: set HEADRACE_DB__TLS_MODE to required, "
            "verify-ca or verify-identity"
        )
    size = pool_size or db.pool_size
    connect_args: dict[str, Any] = {
        "connect_timeout": int(db.connect_timeout_s),
        "init_command": (
            f"SET SESSION sql_mode = '{STRICT_SQL_MODE}', time_zone = '+00:00', "
            f"innodb_lock_wait_timeout = {int(db.lock_wait_timeout_s)}"
        ),
        "stmt_cache_size": db.stmt_cache_size,
        "charset": "utf8mb4",
    }
    if db.insert_path == "load":
        # The server may then ask for "local files": answered from memory only, never disk.
        from headrace.loadlocal import install

        install()
        connect_args["local_infile"] = True
    ctx = tls_context(settings, url)
    if ctx is not None:
        connect_args["ssl"] = ctx
    engine = create_async_engine(
        url,
        pool_size=size,
        max_overflow=0,
        pool_timeout=db.pool_timeout_s,
        pool_pre_ping=True,
        pool_recycle=1800,  # below the 15-minute life of an IAM token too
        isolation_level="READ COMMITTED",
        hide_parameters=True,  # row values never reach an exception's text (logs)
        connect_args=connect_args,
    )
    if db.iam_auth:
        _use_auth_tokens(engine, url, auth_token or rds_auth_token_signer(settings.aws.region))
    return engine


def _alembic_config(connection: sa.Connection | None = None) -> Any:
    from alembic.config import Config

    import migrations

    cfg = Config()
    cfg.set_main_option("script_location", str(Path(migrations.__file__).parent))
    cfg.attributes["connection"] = connection
    return cfg


async def migrate(engine: AsyncEngine, revision: str = "head") -> None:
    """``alembic upgrade head`` on this engine (the same settings as the app)."""
    from alembic import command

    def _upgrade(sync_conn: sa.Connection) -> None:
        command.upgrade(_alembic_config(sync_conn), revision)

    async with engine.begin() as conn:
        await conn.run_sync(_upgrade)
