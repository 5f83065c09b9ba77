"""``headrace rejected``: list the rejected rows by reason, export them to fix, replay them.

``rejected_rows.raw`` holds each refused row as one CSV line in the source's column order
(the run records that order in ``ingest_runs.columns``), so ``export`` writes a CSV that
`headrace produce` reads again after it was fixed, and ``replay`` types the rows anew with
the table's rules (:meth:`headrace.schema.TableSchema.validate`) and inserts those that pass
now, deleting exactly those from ``rejected_rows`` in the same transaction. Rows cut to fit
``rejected_rows`` (longer than 4,096 characters) cannot be exported or replayed whole and are
reported as skipped.
"""

from __future__ import annotations

import csv
import io
import re
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from typing import Any, TextIO

import orjson
import sqlalchemy as sa
from sqlalchemy.exc import DBAPIError
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from cli.ops.runs import RunNotFound
from headrace.csvformat import CsvFormat
from headrace.db import ErrorKind, classify_error
from headrace.errors import HeadraceError
from headrace.schema import ColumnSpec, TableSchema, ValidatedChunk, reflect_table
from headrace.tables import ingest_runs, rejected_rows
from worker.sink import compile_insert, refused_reason

__all__ = [
    "ExportResult",
    "ReasonGroup",
    "ReplayResult",
    "export_rejected",
    "list_rejected",
    "reason_group",
    "replay_rejected",
]

_CUT = re.compile(r"\.\.\. \[\d+ characters, cut\]\Z")


# The value a reason quotes (a CSV field, a duplicate key): left out of the group's reason.
_VALUE = re.compile(
    r"""(column \d+ '[^']*': |[Ee]ntry |[Vv]alue:? )('(?:[^'\\]|\\.)*'|"(?:[^"\\]|\\.)*")"""
)


def reason_group(reason: str) -> str:
    """A reason without the value it quotes: the rows refused for the same cause group."""
    return _VALUE.sub(r"\1…", reason)


@dataclass
class ReasonGroup:
    table: str
    stage: str
    reason: str  # with the quoted value left out
    count: int
    example: str  # one full reason
    first_line: int
    run_ids: set[str] = field(default_factory=set)

    def as_dict(self) -> dict[str, Any]:
        out = asdict(self)
        out["run_ids"] = sorted(self.run_ids)
        return out


async def list_rejected(
    engine: AsyncEngine,
    *,
    run_id: str | None = None,
    table: str | None = None,
    reason_like: str | None = None,
    limit: int = 50,
) -> list[ReasonGroup]:
    """Rejected rows grouped by table, stage and reason (values left out), the most frequent
    first; ``reason_like`` is a SQL LIKE pattern on the full reason."""
    c = rejected_rows.c
    query = sa.select(c.table_name, c.stage, c.reason, c.run_id, c.line).where(
        *_filters(run_id, table, reason_like)
    )
    groups: dict[tuple[str, str, str], ReasonGroup] = {}
    async with engine.connect() as conn:
        async for t, stage, reason, rid, line in await conn.stream(query):
            key = (str(t), str(stage), reason_group(str(reason)))
            group = groups.get(key)
            if group is None:
                group = groups[key] = ReasonGroup(*key, 0, str(reason), int(line))
            group.count += 1
            group.first_line = min(group.first_line, int(line))
            group.run_ids.add(str(rid))
    ordered = sorted(groups.values(), key=lambda g: (-g.count, g.table, g.stage, g.reason))
    return ordered[:limit]


def _filters(
    run_id: str | None, table: str | None, reason_like: str | None
) -> list[sa.ColumnElement[bool]]:
    c = rejected_rows.c
    out: list[sa.ColumnElement[bool]] = []
    if run_id is not None:
        out.append(c.run_id == run_id)
    if table is not None:
        out.append(c.table_name == table)
    if reason_like is not None:
        out.append(c.reason.like(reason_like))
    return out


@dataclass
class _Run:
    run_id: str
    source: str
    table: str
    columns: list[str]
    fmt: CsvFormat  # how the source was written (null markers, layouts, --map …)
    on_duplicate: str  # how its rows were written (--on-duplicate)


async def _run_record(conn: AsyncConnection, run_id: str) -> _Run:
    r = ingest_runs.c
    row = (
        await conn.execute(
            sa.select(r.run_id, r.source, r.table_name, r.columns, r.options).where(
                r.run_id.startswith(run_id, autoescape=True)
            )
        )
    ).all()
    if len(row) != 1:
        found = "no run" if not row else f"{len(row)} runs"
        raise RunNotFound(f"{found} with an id starting {run_id!r} (see `headrace runs`)")
    rid, source, table, columns, options = row[0]
    if not columns:
        raise HeadraceError(
            f"run {rid} was recorded before headrace kept its columns (migration 0002): "
            "its rejected rows have no header to export or replay"
        )
    recorded = orjson.loads(options) if options else {}
    fmt = CsvFormat.model_validate(recorded.get("csv") or {})
    on_duplicate = str(recorded.get("on_duplicate", "error"))
    return _Run(str(rid), str(source), str(table), list(orjson.loads(columns)), fmt, on_duplicate)


@dataclass
class ExportResult:
    run_id: str
    rows: int = 0
    skipped_cut: list[int] = field(default_factory=list)  # lines too long to export whole


async def export_rejected(
    engine: AsyncEngine, out: TextIO, *, run_id: str, reason_like: str | None = None
) -> ExportResult:
    """Write the run's header, then its rejected rows' original text in line order."""
    async with engine.connect() as conn:
        run = await _run_record(conn, run_id)
        c = rejected_rows.c
        rows = await conn.stream(
            sa.select(c.line, c.raw)
            .where(*_filters(run.run_id, None, reason_like))
            .order_by(c.line)
        )
        result = ExportResult(run.run_id)
        writer = csv.writer(out, lineterminator="\n")
        writer.writerow(run.columns)
        async for line, raw in rows:
            if _CUT.search(raw):
                result.skipped_cut.append(int(line))
                continue
            out.write(raw + "\n")
            result.rows += 1
    return result


@dataclass
class ReplayResult:
    run_id: str
    table: str
    inserted: int = 0
    still_rejected: int = 0
    skipped_cut: list[int] = field(default_factory=list)
    reasons: dict[str, int] = field(default_factory=dict)  # new reason (grouped) -> rows

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


async def replay_rejected(
    engine: AsyncEngine, *, run_id: str, reason_like: str | None = None
) -> ReplayResult:
    """Try the run's rejected rows again, in one transaction.

    Rows that pass the table's rules and the database now are inserted and deleted from
    ``rejected_rows``; the others keep their row there with the new reason. The rejected
    rows are locked (``SELECT ... FOR UPDATE``), so two replays at once cannot both insert.
    """
    async with engine.begin() as conn:
        run = await _run_record(conn, run_id)
        plain = await reflect_table(conn, run.table)
        # The producer refused rows as the file wrote them (its null markers, layouts, all
        # its fields); the worker's rejects hold the values the producer had typed, in the
        # loaded columns' order: each kind is typed again the way it was first.
        schema = plain.typed(run.fmt)
        specs, layout = schema.resolve_columns(run.columns, run.fmt, source=run.source)
        typed_again = plain.specs_for([s.name for s in specs])
        c = rejected_rows.c
        found = await conn.execute(
            sa.select(c.id, c.line, c.raw, c.stage)
            .where(*_filters(run.run_id, None, reason_like))
            .order_by(c.line)
            .with_for_update()
        )
        result = ReplayResult(run.run_id, run.table)
        ids: dict[int, int] = {}  # line -> rejected_rows.id
        batches: dict[bool, tuple[list[list[str]], list[int]]] = {True: ([], []), False: ([], [])}
        for rid, line, raw, stage in found:
            if _CUT.search(raw):
                result.skipped_cut.append(int(line))
                continue
            ids[int(line)] = int(rid)
            rows, lines = batches[stage == "producer"]
            rows.append(next(csv.reader(io.StringIO(raw)), []))
            lines.append(int(line))
        from_file = schema.validate(specs, *batches[True], layout)
        from_worker = plain.validate(typed_again, *batches[False])
        lines = [*batches[True][1], *batches[False][1]]
        valid = ValidatedChunk(
            columns=[[*a, *b] for a, b in zip(from_file.columns, from_worker.columns, strict=True)],
            lines=from_file.lines + from_worker.lines,
            rejects=from_file.rejects + from_worker.rejects,
        )
        refused = {r.line: r.reason for r in valid.rejects}
        refused.update(
            await _insert_each(conn, schema, specs, valid.rows, valid.lines, run.on_duplicate)
        )
        inserted = [ids[line] for line in lines if line not in refused]
        if inserted:
            await conn.execute(rejected_rows.delete().where(c.id.in_(inserted)))
            await conn.execute(
                ingest_runs.update()
                .where(ingest_runs.c.run_id == run.run_id)
                .values(rows_replayed=ingest_runs.c.rows_replayed + len(inserted))
            )
        for line, reason in refused.items():
            await conn.execute(
                rejected_rows.update().where(c.id == ids[line]).values(reason=reason[:1024])
            )
            group = reason_group(reason)
            result.reasons[group] = result.reasons.get(group, 0) + 1
        result.inserted, result.still_rejected = len(inserted), len(refused)
    return result


async def _insert_each(
    conn: AsyncConnection,
    schema: TableSchema,
    specs: Sequence[ColumnSpec],
    rows: Sequence[Sequence[str | None]],
    lines: Sequence[int],
    on_duplicate: str,
) -> dict[int, str]:
    """Insert row by row under a savepoint, with the statement the run's messages met (its
    duplicate mode included); returns the reason of each row refused."""
    names = [s.name for s in specs]
    sql, placeholders = compile_insert(schema, names, on_duplicate, conn.dialect)
    order = [names.index(n) for n in placeholders]
    refused: dict[int, str] = {}
    for row, line in zip(rows, lines, strict=True):
        savepoint = await conn.begin_nested()
        try:
            await conn.exec_driver_sql(sql, tuple(row[i] for i in order))
        except DBAPIError as exc:
            if classify_error(exc) is not ErrorKind.ROW:
                raise
            await savepoint.rollback()
            refused[line] = refused_reason(exc)
        else:
            await savepoint.commit()
    return refused
