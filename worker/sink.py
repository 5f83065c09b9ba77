"""Writes a batch of messages in one transaction: ledger, rows, rejects, commit.

Order inside the transaction:

1. read the ledger for the batch's keys; messages already applied are duplicates;
2. insert the ledger rows of the fresh messages *first*: a second worker holding the same
   message blocks on the primary key and, once this one commits, fails with a duplicate key,
   rolls back and finds the key applied on its retry;
3. bulk-insert the rows of every fresh message (one ``executemany`` per statement-size slice,
   which asyncmy sends as MariaDB ``COM_STMT_BULK_EXECUTE``); when a row's values fail, roll
   back to a savepoint and bisect with nested savepoints until each bad row is alone;
4. insert the rejects (the producer's and the bisection's) and fix the ledger counts;
5. commit. Only then may the caller delete the messages.

Statements are sized to stay well inside the server's ``max_allowed_packet`` (read once per
pool): a bigger one is not refused with an error, the server drops the connection.
"""

from __future__ import annotations

import asyncio
import itertools
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

import sqlalchemy as sa
import structlog
from sqlalchemy.exc import DBAPIError
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from headrace import failpoints
from headrace.db import (
    DISPOSE_ERRORS,
    SCHEMA_ERRORS,
    ErrorKind,
    classify_error,
    is_disconnect,
    is_mysql,
    mysql_errno,
)
from headrace.envelope import Envelope
from headrace.errors import ConfigError, DatabaseUnavailable, SchemaError
from headrace.loadlocal import escape_tsv, feeding
from headrace.loadlocal import install as install_load_local
from headrace.retry import Backoff
from headrace.schema import TableSchema, row_text
from headrace.settings import InsertPath
from headrace.tables import ingest_ledger, rejected_rows
from worker.sqltext import RowTexts

__all__ = ["BatchResult", "Sink", "compile_insert", "refused_reason"]

log = structlog.get_logger("worker.sink")

Key = tuple[str, int]
# Share of max_allowed_packet one statement's payload may take: the binary protocol adds
# a type and a length to every value, which for short values doubles the size.
PACKET_SHARE = 3
# Bytes of a text statement's packet kept free below max_allowed_packet (command byte, slack).
PACKET_HEADROOM = 1024

Protocol = Literal["bulk", "text", "load", "executemany"]


@dataclass
class BatchResult:
    applied: set[Key] = field(default_factory=set)
    duplicates: set[Key] = field(default_factory=set)
    rows_inserted: int = 0
    rows_rejected: int = 0
    rows_skipped: int = 0  # dup "skip": rows whose key existed, left as they were
    statements: int = 0
    protocol: Protocol | None = None  # how the rows went (None: no fresh rows)


class _LedgerConflict(Exception):
    """Another transaction applied one of our keys first: retry, the re-read skips it."""


class Sink:
    def __init__(
        self,
        engine: AsyncEngine,
        *,
        max_statement_bytes: int,
        statement_timeout_s: float,
        backoff: Backoff | None = None,
        on_retry: Callable[[BaseException], None] | None = None,
        insert_path: InsertPath = "auto",
    ) -> None:
        self._insert_path = insert_path
        if insert_path == "load":
            install_load_local()  # with the engine's local_infile (headrace.db.create_engine)
        self._engine = engine
        self._max_statement_bytes = max_statement_bytes
        self._timeout_s = statement_timeout_s
        self._backoff = backoff or Backoff(base_s=0.2, cap_s=15.0, attempts=8)
        self._on_retry = on_retry
        self._sql: dict[tuple[str, tuple[str, ...], str], tuple[str, tuple[str, ...]]] = {}
        self._counting: set[str] = set()  # statements that count the rows they skip
        self._mysql = is_mysql(engine)
        self._packet_limit: int | None = None  # the server's max_allowed_packet, once read

    @property
    def packet_limit(self) -> int:
        """The server's max_allowed_packet (once read), else what the setting implies."""
        return self._packet_limit or self._max_statement_bytes * PACKET_SHARE

    @property
    def statement_bytes(self) -> int:
        """Payload bytes one INSERT may carry: the setting, or less on a small packet limit."""
        if self._packet_limit is None:
            return self._max_statement_bytes
        return min(self._max_statement_bytes, self._packet_limit // PACKET_SHARE)

    def insert_sql(
        self, schema: TableSchema, columns: Sequence[str], on_duplicate: str = "error"
    ) -> tuple[str, tuple[str, ...]]:
        """The INSERT for this set of columns and duplicate mode, and the order its
        placeholders take.

        Identifiers come from the reflected table only (``specs_for`` refuses any other
        name). The statement lists the columns in the table's order, whatever order a
        message carries them in: :meth:`_apply` arranges each message's values to match.
        ``on_duplicate`` (envelope ``dup``): ``error`` a plain INSERT (a duplicate key is a
        row the database refuses); ``update`` ``ON DUPLICATE KEY UPDATE`` of these columns;
        ``skip`` an update that changes nothing and counts the row (never ``INSERT IGNORE``,
        which would also turn bad values into warnings).
        """
        key = (schema.name, tuple(sorted(columns)), on_duplicate)
        cached = self._sql.get(key)
        if cached is None:
            cached = compile_insert(schema, columns, on_duplicate, self._engine.dialect)
            self._sql[key] = cached
            if on_duplicate == "skip" and self._mysql:
                self._counting.add(cached[0])
        return cached

    async def write(self, schema: TableSchema, envelopes: Sequence[Envelope]) -> BatchResult:
        """Apply a batch exactly once (retrying transient errors), or raise."""
        attempt = 0
        while True:
            attempt += 1
            try:
                async with asyncio.timeout(self._timeout_s):
                    return await self._write_once(schema, envelopes)
            except _LedgerConflict:
                log.info("ledger_conflict_retry", attempt=attempt)
                continue
            except (DBAPIError, OSError, TimeoutError) as exc:
                errno = mysql_errno(exc)
                if errno in SCHEMA_ERRORS:
                    raise SchemaError(f"table {schema.name!r} changed: {exc}"[:500]) from exc
                kind = classify_error(exc)
                if kind is not ErrorKind.RETRY or self._backoff.exhausted(attempt):
                    if kind is ErrorKind.RETRY:
                        raise DatabaseUnavailable(
                            f"gave up after {attempt} attempts: {exc!r}"[:500]
                        ) from exc
                    raise
                if errno in DISPOSE_ERRORS or is_disconnect(exc):
                    # Pooled connections may be as dead as this one, or lead to a server that
                    # is no longer the writer; the next may be another (forget its limit).
                    await self._engine.dispose()
                    self._packet_limit = None
                if self._on_retry is not None:
                    self._on_retry(exc)
                await self._backoff.pause(
                    attempt, "db_retry", logger=log, errno=errno, error=str(exc)[:300]
                )

    async def _write_once(self, schema: TableSchema, envelopes: Sequence[Envelope]) -> BatchResult:
        result = BatchResult()
        async with self._engine.connect() as conn, conn.begin():
            if self._mysql and self._packet_limit is None:
                limit = await conn.exec_driver_sql("SELECT @@max_allowed_packet")
                self._packet_limit = int(limit.scalar_one())
            fresh = await self._claim(conn, envelopes, result)
            if fresh:
                await self._apply(conn, schema, fresh, result)
            await failpoints.hit("worker.before_commit")
        return result

    async def _claim(
        self, conn: AsyncConnection, envelopes: Sequence[Envelope], result: BatchResult
    ) -> list[Envelope]:
        by_key: dict[Key, Envelope] = {}
        for env in envelopes:
            key = (env.run_id, env.seq)
            if key in by_key:
                result.duplicates.add(key)
            else:
                by_key[key] = env
        c = ingest_ledger.c
        existing = await conn.execute(
            sa.select(c.run_id, c.seq).where(sa.tuple_(c.run_id, c.seq).in_(list(by_key)))
        )
        for run_id, seq in existing:
            key = (str(run_id), int(seq))
            by_key.pop(key, None)
            result.duplicates.add(key)
        fresh = list(by_key.values())
        if not fresh:
            return []
        try:
            await conn.execute(
                ingest_ledger.insert(),
                [
                    {
                        "run_id": e.run_id,
                        "seq": e.seq,
                        "table_name": e.table,
                        "rows_inserted": e.row_count,
                        "rows_rejected": len(e.rejects),
                    }
                    for e in fresh
                ],
            )
        except DBAPIError as exc:
            if mysql_errno(exc) == 1062 or isinstance(exc, sa.exc.IntegrityError):
                raise _LedgerConflict from exc
            raise
        return fresh

    async def _apply(
        self, conn: AsyncConnection, schema: TableSchema, fresh: list[Envelope], result: BatchResult
    ) -> None:
        # The buffer batches messages of one column set and one duplicate mode together.
        sql, order = self.insert_sql(schema, fresh[0].columns, fresh[0].on_duplicate)
        owner: list[tuple[int, int]] = []  # (message, row within it) of every row
        for i, env in enumerate(fresh):
            owner.extend((i, k) for k in range(env.row_count))
        raw_bytes = sum(e.raw_bytes for e in fresh) or 1
        integer = [spec.kind == "int" for spec in schema.specs_for(order)]
        arranged = [_arranged(env, order) for env in fresh]
        # LOAD DATA has no ON DUPLICATE KEY UPDATE: the load path writes upserts as text.
        load = self._insert_path == "load" and fresh[0].on_duplicate == "error"
        load_sql = self._load_sql(schema, order) if load else None
        plan = await self._plan(conn, sql, arranged, raw_bytes, integer, load_sql)
        result.protocol = plan.protocol
        bad: list[tuple[int, str]] = []
        if owner and await self._try_insert(conn, plan, 0, len(owner), result):
            bad = await self._isolate(conn, plan, len(owner), result)
        rejects: list[dict[str, Any]] = []
        for env in fresh:
            for r in env.rejects:
                rejects.append(self._reject_row(env, r.line, r.raw, r.reason, "producer"))
        bad_per_message = [0] * len(fresh)
        for index, reason in bad:
            i, k = owner[index]
            env = fresh[i]
            bad_per_message[i] += 1
            # The raw text keeps the message's own column order (the source's header order).
            raw = row_text([col[k] for col in env.data])
            rejects.append(self._reject_row(env, env.lines[k], raw, reason, "worker"))
        if rejects:
            await conn.execute(rejected_rows.insert(), rejects)
        for i, count in enumerate(bad_per_message):
            if count:
                env = fresh[i]
                await conn.execute(
                    ingest_ledger.update()
                    .where(ingest_ledger.c.run_id == env.run_id, ingest_ledger.c.seq == env.seq)
                    .values(
                        rows_inserted=env.row_count - count, rows_rejected=len(env.rejects) + count
                    )
                )
        result.applied.update((e.run_id, e.seq) for e in fresh)
        result.rows_inserted += len(owner) - len(bad) - result.rows_skipped
        result.rows_rejected += len(rejects)

    async def _plan(
        self,
        conn: AsyncConnection,
        sql: str,
        columns: list[list[list[str | None]]],
        raw_bytes: int,
        integer: Sequence[bool],
        load_sql: str | None,
    ) -> _Plan:
        """How this batch's rows go to the server: which protocol, statements of what size.

        ``columns`` holds every message's columns in the statement's order; ``integer`` says
        which of them are of an integer type (the text path may send those unquoted);
        ``load_sql`` is the batch's LOAD statement where the load path may take it.
        """
        raw = await conn.get_raw_connection()
        driver: Any = raw.driver_connection
        protocol = self._protocol(driver)
        joined = [
            list(itertools.chain.from_iterable(cols[j] for cols in columns))
            for j in range(len(columns[0]))
        ]
        if protocol in ("bulk", "executemany"):
            return _BulkPlan(self, sql, joined, protocol, raw_bytes)
        text = _TextPlan(self, sql, RowTexts(joined, integer))
        if protocol == "load" and load_sql is not None:
            return _LoadPlan(self, load_sql, text, joined)
        return text

    def _load_sql(self, schema: TableSchema, columns: Sequence[str]) -> str:
        """``LOAD DATA LOCAL INFILE`` of ``columns`` (names from the reflected table only)."""
        quote = self._engine.dialect.identifier_preparer.quote
        schema.specs_for(columns)  # raises SchemaError for a column not in the table
        names = ", ".join(quote(c) for c in columns)
        return (
            f"LOAD DATA LOCAL INFILE 'headrace' INTO TABLE {quote(schema.name)} "
            "CHARACTER SET utf8mb4 FIELDS TERMINATED BY '\\t' ESCAPED BY '\\\\' "
            f"LINES TERMINATED BY '\\n' ({names})"
        )

    def _protocol(self, driver: Any) -> Protocol:
        """``bulk`` (MariaDB COM_STMT_BULK_EXECUTE), ``text`` (multi-row INSERT text), ``load``
        (LOAD DATA LOCAL, when asked for) or ``executemany`` (the driver's own, SQLite), from
        the setting and what the server offers.
        """
        if not self._mysql:
            return "executemany"
        if self._insert_path == "load":
            return "load"
        bulk = bool(getattr(driver, "_bulk_supported", False)) and (
            int(getattr(driver, "_stmt_cache_size", 0)) > 0
        )
        if self._insert_path == "text" or (self._insert_path == "auto" and not bulk):
            return "text"
        if not bulk:
            raise ConfigError(
                "HEADRACE_DB__INSERT_PATH=bulk, but this server does not offer MariaDB's "
                "COM_STMT_BULK_EXECUTE (or HEADRACE_DB__STMT_CACHE_SIZE is 0): use auto or text"
            )
        return "bulk"

    @staticmethod
    def _reject_row(env: Envelope, line: int, raw: str, reason: str, stage: str) -> dict[str, Any]:
        return {
            "run_id": env.run_id,
            "source": env.source[:1024],
            "line": line,
            "table_name": env.table,
            "stage": stage,
            "reason": reason[:1024],
            "raw": raw,
        }

    async def execute_driver(
        self, conn: AsyncConnection, sql: str | bytes, rows: Sequence[Sequence[str | None]] | None
    ) -> None:
        """One statement on the driver connection, skipping SQLAlchemy's per-row work.

        It runs inside the transaction SQLAlchemy opened on the same connection: with
        ``rows``, one ``executemany`` (asyncmy sends it as one COM_STMT_BULK_EXECUTE on
        MariaDB); without, ``sql`` is a complete statement sent as COM_QUERY.
        """
        raw = await conn.get_raw_connection()
        driver: Any = raw.driver_connection
        dbapi = self._engine.dialect.loaded_dbapi
        try:
            if not self._mysql:
                await driver.executemany(sql, rows)
            else:
                async with driver.cursor() as cursor:
                    if rows is None:
                        await cursor.execute(sql)
                    else:
                        await cursor.executemany(sql, rows)
        except dbapi.Error as exc:
            # The driver's own exception: wrap it as SQLAlchemy would, so callers see one
            # hierarchy, and drop a connection that is no longer usable.
            text = sql if isinstance(sql, str) else "INSERT … (multi-row text)"
            wrapped = DBAPIError.instance(
                text, None, exc, dbapi.Error, dialect=self._engine.dialect
            )
            if is_disconnect(wrapped):
                await conn.invalidate()
            raise wrapped from exc

    async def _try_insert(
        self, conn: AsyncConnection, plan: _Plan, lo: int, hi: int, result: BatchResult
    ) -> DBAPIError | None:
        """Insert rows lo..hi under a savepoint; on a row-value error roll back and return it."""
        savepoint = await conn.begin_nested()
        counting = plan.sql in self._counting
        try:
            if counting:
                await conn.exec_driver_sql(f"SET {_SKIPPED} = 0")
            result.statements += await plan.insert(conn, lo, hi)
            if counting:
                result.rows_skipped += await _skipped(conn)
            await savepoint.commit()
        except DBAPIError as exc:
            if classify_error(exc) is not ErrorKind.ROW:
                raise
            await savepoint.rollback()
            return exc
        return None

    async def _isolate(
        self, conn: AsyncConnection, plan: _Plan, n_rows: int, result: BatchResult
    ) -> list[tuple[int, str]]:
        """Bisect with savepoints: insert every good row, return (index, reason) of the bad."""
        bad: list[tuple[int, str]] = []
        stack = list(plan.slices(0, n_rows))
        stack.reverse()
        while stack:
            lo, hi = stack.pop()
            error = await self._try_insert(conn, plan, lo, hi, result)
            if error is None:
                continue
            if hi - lo == 1:
                bad.append((lo, refused_reason(error)))
            else:
                mid = (lo + hi) // 2
                stack.append((mid, hi))
                stack.append((lo, mid))
        return bad


def compile_insert(
    schema: TableSchema, columns: Sequence[str], on_duplicate: str, dialect: sa.Dialect
) -> tuple[str, tuple[str, ...]]:
    """The INSERT of ``columns`` into ``schema``'s table in a duplicate mode (envelope
    ``dup``), compiled for ``dialect``, and the order its placeholders take.

    Identifiers come from the reflected table only: ``specs_for`` refuses any other name
    (SchemaError). :meth:`Sink.insert_sql` caches these; `headrace rejected replay` uses
    them too, so a replayed row meets the statement its run's messages met."""
    schema.specs_for(columns)
    mysql = dialect.name in ("mysql", "mariadb")
    stmt = _insert(schema.table, columns, on_duplicate, mysql=mysql)
    compiled = stmt.compile(dialect=dialect, column_keys=list(columns))
    return str(compiled), tuple(compiled.positiontup or ())


def refused_reason(error: DBAPIError) -> str:
    """The ``rejected_rows`` reason of a row the database refused."""
    return f"database refused the row: {error.orig}"


_SKIPPED = "@headrace_skipped"
"""Session variable the ``skip`` statement counts the rows it leaves alone in."""


def _insert(
    table: sa.Table, columns: Sequence[str], on_duplicate: str, *, mysql: bool
) -> sa.Insert:
    """The INSERT statement for a duplicate mode (column names already checked)."""
    if on_duplicate == "error":
        return sa.insert(table)
    if not mysql:  # SQLite (the demo): its upsert; skipped rows are not counted there
        from sqlalchemy.dialects import sqlite

        lite = sqlite.insert(table)
        if on_duplicate == "skip":
            return lite.on_conflict_do_nothing()
        key = _conflict_key(table, columns)
        return lite.on_conflict_do_update(
            index_elements=key, set_={c: lite.excluded[c] for c in columns}
        )
    from sqlalchemy.dialects import mysql as my

    stmt = my.insert(table)
    if on_duplicate == "update":
        return stmt.on_duplicate_key_update({c: stmt.inserted[c] for c in columns})
    # skip: set one column to itself (no change) and count the row in a session variable.
    first = table.c[columns[0]]
    counted = sa.func.IF(
        sa.literal_column(f"({_SKIPPED} := COALESCE({_SKIPPED}, 0) + 1) > 0"), first, first
    )
    return stmt.on_duplicate_key_update({columns[0]: counted})


def _conflict_key(table: sa.Table, columns: Sequence[str]) -> list[str]:
    """A unique key (or the primary key) among ``columns``, for SQLite's ON CONFLICT."""
    keys = [tuple(c.name for c in table.primary_key.columns)]
    for constraint in table.constraints:
        if isinstance(constraint, sa.UniqueConstraint):
            keys.append(tuple(c.name for c in constraint.columns))
    for index in table.indexes:
        if index.unique:
            keys.append(tuple(str(c.name) for c in index.columns))
    for key in keys:
        if key and set(key) <= set(columns):
            return list(key)
    raise SchemaError(f"table {table.name!r} has no unique key among the columns carried")


async def _skipped(conn: AsyncConnection) -> int:
    """Rows the ``skip`` statements left alone since the variable was set to 0.

    The variable is set before it is ever read, and read as a BIGINT: a prepared ``SELECT``
    of a user variable keeps the type the variable had when it was prepared (undefined, it
    returned 1 for 2,997 rows on MariaDB 10.11 — the driver prepares every statement)."""
    value = await conn.exec_driver_sql(f"SELECT CAST({_SKIPPED} AS SIGNED)")
    return int(value.scalar_one())


class _Plan:
    """A batch's rows ready to send: cut into statements and executed by index range."""

    protocol: Protocol
    sql: str  # the statement they are sent with (its text form for the text path)

    def slices(self, lo: int, hi: int) -> Iterator[tuple[int, int]]:
        raise NotImplementedError

    async def insert(self, conn: AsyncConnection, lo: int, hi: int) -> int:
        """Insert rows lo..hi; return the number of statements sent."""
        raise NotImplementedError


class _BulkPlan(_Plan):
    """Row tuples for ``executemany``: sized by the batch's share of the JSON it came in."""

    def __init__(
        self,
        sink: Sink,
        sql: str,
        columns: list[list[str | None]],
        protocol: Protocol,
        raw_bytes: int,
    ) -> None:
        self._sink, self.sql, self._columns, self.protocol = sink, sql, columns, protocol
        self._rows: list[Sequence[str | None]] = list(zip(*columns, strict=True))
        # Rows per statement: the batch's share of the JSON it came in, per statement budget.
        self._per_statement = max(1, int(len(self._rows) * sink.statement_bytes / raw_bytes))

    def slices(self, lo: int, hi: int) -> Iterator[tuple[int, int]]:
        for start in range(lo, hi, self._per_statement):
            yield start, min(start + self._per_statement, hi)

    async def insert(self, conn: AsyncConnection, lo: int, hi: int) -> int:
        n = 0
        for start, end in self.slices(lo, hi):
            if self.protocol == "bulk" and any(
                col[start:end].count(None) == end - start for col in self._columns
            ):
                # asyncmy cannot bind an all-NULL column in bulk and would silently take its
                # slow per-value text path: send these rows as INSERT text instead.
                part = [col[start:end] for col in self._columns]
                n += await _TextPlan(self._sink, self.sql, RowTexts(part)).insert(
                    conn, 0, end - start
                )
                continue
            await self._sink.execute_driver(conn, self.sql, self._rows[start:end])
            n += 1
        return n


class _TextPlan(_Plan):
    """Row texts for multi-row ``INSERT … VALUES (…),(…)`` statements sent as COM_QUERY."""

    protocol: Protocol = "text"

    def __init__(self, sink: Sink, sql: str, rows: RowTexts) -> None:
        self._sink, self._rows, self.sql = sink, rows, sql
        self._head, self._tail = _split_values(sql)

    def slices(self, lo: int, hi: int) -> Iterator[tuple[int, int]]:
        return self._rows.slices(lo, hi, self._sink.statement_bytes)

    async def insert(self, conn: AsyncConnection, lo: int, hi: int) -> int:
        n = 0
        pending = list(self.slices(lo, hi))
        pending.reverse()
        while pending:
            start, end = pending.pop()
            sql = (self._head + self._rows.values(start, end) + self._tail).encode(
                "utf-8", "surrogateescape"
            )
            if len(sql) > self._sink.packet_limit - PACKET_HEADROOM and end - start > 1:
                # Characters are counted when cutting; multi-byte text can outgrow a packet.
                mid = (start + end) // 2
                pending.extend(((mid, end), (start, mid)))
                continue
            await self._sink.execute_driver(conn, sql, None)
            n += 1
        return n


class _LoadPlan(_Plan):
    """Rows as one ``LOAD DATA LOCAL INFILE`` from memory (:mod:`headrace.loadlocal`) under a
    savepoint. The server reports a bad value or a duplicate key as a warning there, so a load
    with any warning is rolled back and its rows go as INSERT text, which refuses them exactly
    as the other paths do (and the sink's bisection narrows them down as usual)."""

    protocol: Protocol = "load"

    def __init__(
        self, sink: Sink, sql: str, text: _TextPlan, columns: Sequence[Sequence[str | None]]
    ) -> None:
        self._sink, self.sql, self.text = sink, sql, text
        escaped = [escape_tsv(col) for col in columns]
        self._lines: list[str] = list(map("\t".join, zip(*escaped, strict=True)))

    def slices(self, lo: int, hi: int) -> Iterator[tuple[int, int]]:
        return self.text.slices(lo, hi)

    async def insert(self, conn: AsyncConnection, lo: int, hi: int) -> int:
        data = ("\n".join(self._lines[lo:hi]) + "\n").encode("utf-8", "surrogateescape")
        raw = await conn.get_raw_connection()
        savepoint = await conn.begin_nested()
        try:
            packet = self._sink.packet_limit - PACKET_HEADROOM
            with feeding(raw.driver_connection, data, packet):
                await self._sink.execute_driver(conn, self.sql, None)
            warned = (await conn.exec_driver_sql("SELECT @@warning_count")).scalar_one()
        except DBAPIError as exc:
            if classify_error(exc) is not ErrorKind.ROW:
                raise
            warned = 1
        if warned:
            await savepoint.rollback()
            return await self.text.insert(conn, lo, hi)
        await savepoint.commit()
        return 1


def _split_values(sql: str) -> tuple[str, str]:
    """``INSERT … VALUES `` and whatever follows the placeholder tuple (e.g. an
    ``ON DUPLICATE KEY UPDATE`` clause), around the one ``(%s, …)`` of ``sql``."""
    width = sql.count("%s")
    placeholders = "(" + ", ".join(["%s"] * width) + ")"
    head, found, tail = sql.partition(placeholders)
    if not found:
        raise RuntimeError(f"no placeholder tuple in {sql[:200]!r}")
    return head, tail


def _arranged(env: Envelope, order: Sequence[str]) -> list[list[str | None]]:
    """The message's columns in ``order`` (the statement's), whatever order it carries them in."""
    if tuple(order) == env.columns:
        return env.data
    # Every message of a batch carries the same set of columns (the buffer groups them so)
    # and no name twice (decode refuses that), so this is a permutation.
    index = {name: i for i, name in enumerate(env.columns)}
    return [env.data[index[name]] for name in order]
