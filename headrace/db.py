"""Database engine factory, error classification and migrations.

No module-level engine: callers build one from settings and dispose of it.
Every MySQL connection runs in strict ``sql_mode`` with UTC, READ COMMITTED isolation
(fewer gap locks between concurrent bulk inserts) and asyncmy's statement cache, which makes
``executemany`` use MariaDB's ``COM_STMT_BULK_EXECUTE``.
"""

from __future__ import annotations

import enum
from pathlib import Path
from typing import Any

import sqlalchemy as sa
from sqlalchemy import event
from sqlalchemy.exc import DBAPIError
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine, create_async_engine

from headrace.settings import Settings

__all__ = [
    "DISCONNECT_ERRORS",
    "DISPOSE_ERRORS",
    "SCHEMA_ERRORS",
    "STRICT_SQL_MODE",
    "ErrorKind",
    "classify_error",
    "create_engine",
    "error_reason",
    "is_disconnect",
    "is_mysql",
    "migrate",
    "mysql_errno",
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


def is_mysql(engine: AsyncEngine | AsyncConnection) -> bool:
    return engine.dialect.name in ("mysql", "mariadb")


def create_engine(settings: Settings, *, pool_size: int | None = None) -> AsyncEngine:
    url = sa.make_url(settings.database_url)
    db = settings.db
    if url.get_backend_name() == "sqlite":
        engine = create_async_engine(url, connect_args={"timeout": db.connect_timeout_s})

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
    size = pool_size or db.pool_size
    return create_async_engine(
        url,
        pool_size=size,
        max_overflow=0,
        pool_timeout=db.pool_timeout_s,
        pool_pre_ping=True,
        pool_recycle=1800,
        isolation_level="READ COMMITTED",
        connect_args={
            "connect_timeout": int(db.connect_timeout_s),
            "init_command": (
                f"SET SESSION sql_mode = '{STRICT_SQL_MODE}', time_zone = '+00:00', "
                f"innodb_lock_wait_timeout = {int(db.lock_wait_timeout_s)}"
            ),
            "stmt_cache_size": db.stmt_cache_size,
            "charset": "utf8mb4",
        },
    )


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
