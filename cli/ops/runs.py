"""``headrace runs``: what each producer run did, and what the worker has applied of it.

The producer records a run in ``ingest_runs`` (source, table, columns, options, rows read,
sent and rejected, messages sent); the worker writes one ``ingest_ledger`` row per applied
message, keyed ``(run_id, seq)``. A run is complete when the producer finished sending and
every sequence number ``0 .. total_messages-1`` is in the ledger; otherwise the missing
sequence numbers are reported as ranges.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterable, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

import orjson
import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from headrace.errors import HeadraceError
from headrace.tables import ingest_ledger, ingest_runs, rejected_rows

__all__ = ["DUPLICATE_REASON", "RunReport", "load_runs", "missing_ranges"]

DUPLICATE_REASON = "%Duplicate entry%"
"""How a worker-stage reject for a row the table already holds (MySQL error 1062) reads."""


class RunNotFound(HeadraceError):
    """No run with that id (or id prefix) is recorded."""


@dataclass
class RunReport:
    run_id: str
    source: str
    table: str
    status: str  # the producer's: "sending" (or interrupted) or "sent"
    started_at: dt.datetime | None
    finished_at: dt.datetime | None
    rows_read: int
    rows_sent: int
    rows_rejected_producer: int
    messages_sent: int
    total_messages: int | None
    messages_applied: int = 0
    rows_inserted: int = 0
    rows_duplicate: int = 0  # rejected by the database as duplicates of rows already there
    rows_rejected: int = 0  # in rejected_rows now (both stages)
    rows_replayed: int = 0  # inserted later by `headrace rejected replay`
    columns: list[str] = field(default_factory=list)
    options: dict[str, Any] = field(default_factory=dict)
    missing: list[tuple[int, int]] = field(default_factory=list)  # seq ranges, inclusive

    @property
    def expected_messages(self) -> int:
        """Messages the run consists of: all of them once sent, else those sent so far."""
        return self.total_messages if self.total_messages is not None else self.messages_sent

    @property
    def complete(self) -> bool:
        return self.status == "sent" and not self.missing

    @property
    def messages_missing(self) -> int:
        return sum(hi - lo + 1 for lo, hi in self.missing)

    def as_dict(self) -> dict[str, Any]:
        out = asdict(self)
        out["missing"] = [list(r) for r in self.missing]
        out["complete"] = self.complete
        out["messages_missing"] = self.messages_missing
        return out


def missing_ranges(applied: Iterable[int], expected: int) -> list[tuple[int, int]]:
    """The sequence numbers in ``0 .. expected-1`` not in ``applied``, as inclusive ranges."""
    ranges: list[tuple[int, int]] = []
    nxt = 0
    for seq in sorted(s for s in set(applied) if 0 <= s < expected):
        if seq > nxt:
            ranges.append((nxt, seq - 1))
        nxt = seq + 1
    if nxt < expected:
        ranges.append((nxt, expected - 1))
    return ranges


async def load_runs(
    engine: AsyncEngine,
    *,
    since: dt.datetime | None = None,
    table: str | None = None,
    run_id: str | None = None,
    limit: int = 100,
) -> list[RunReport]:
    """The runs started since ``since`` (newest first), or the one run ``run_id`` names (a
    unique prefix is enough); with the worker's side from the ledger and ``rejected_rows``."""
    r = ingest_runs.c
    query = sa.select(ingest_runs).order_by(r.started_at.desc(), r.run_id).limit(limit)
    if since is not None:
        query = query.where(r.started_at >= since)
    if table is not None:
        query = query.where(r.table_name == table)
    if run_id is not None:
        query = query.where(r.run_id.startswith(run_id, autoescape=True))
    async with engine.connect() as conn:
        runs = [_report(row) for row in (await conn.execute(query)).mappings()]
        if run_id is not None and len(runs) != 1:
            found = "no run" if not runs else f"{len(runs)} runs"
            raise RunNotFound(f"{found} with an id starting {run_id!r} (see `headrace runs`)")
        if runs:
            await _fill_worker_side(conn, runs)
    return runs


def _report(row: Any) -> RunReport:
    return RunReport(
        run_id=str(row["run_id"]),
        source=str(row["source"]),
        table=str(row["table_name"]),
        status=str(row["status"]),
        started_at=row["started_at"],
        finished_at=row["finished_at"],
        rows_read=int(row["rows_read"]),
        rows_sent=int(row["rows_sent"]),
        rows_rejected_producer=int(row["rows_rejected"]),
        messages_sent=int(row["messages_sent"]),
        total_messages=None if row["total_messages"] is None else int(row["total_messages"]),
        rows_replayed=int(row["rows_replayed"]),
        columns=list(orjson.loads(row["columns"])) if row["columns"] else [],
        options=dict(orjson.loads(row["options"])) if row["options"] else {},
    )


async def _fill_worker_side(conn: AsyncConnection, runs: Sequence[RunReport]) -> None:
    by_id = {run.run_id: run for run in runs}
    ids = list(by_id)
    lg, rj = ingest_ledger.c, rejected_rows.c
    applied = await conn.execute(
        sa.select(lg.run_id, sa.func.count(), sa.func.coalesce(sa.func.sum(lg.rows_inserted), 0))
        .where(lg.run_id.in_(ids))
        .group_by(lg.run_id)
    )
    for run_id, messages, inserted in applied:
        by_id[str(run_id)].messages_applied = int(messages)
        by_id[str(run_id)].rows_inserted = int(inserted)
    duplicate = sa.case((rj.reason.like(DUPLICATE_REASON), 1), else_=0)
    rejects = await conn.execute(
        sa.select(rj.run_id, sa.func.count(), sa.func.coalesce(sa.func.sum(duplicate), 0))
        .where(rj.run_id.in_(ids))
        .group_by(rj.run_id)
    )
    for run_id, count, dups in rejects:
        by_id[str(run_id)].rows_rejected = int(count)
        by_id[str(run_id)].rows_duplicate = int(dups)
    for run in runs:
        expected = run.expected_messages
        in_range = lg.run_id == run.run_id, lg.seq >= 0, lg.seq < expected
        if run.messages_applied >= expected:
            counted = await conn.execute(sa.select(sa.func.count()).where(*in_range))
            if int(counted.scalar_one()) == expected:
                continue  # every key applied: nothing to list
        seqs = await conn.execute(sa.select(lg.seq).where(*in_range))
        run.missing = missing_ranges((int(s) for (s,) in seqs), expected)
