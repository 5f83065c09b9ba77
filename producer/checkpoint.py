"""The producer's checkpoint in ``ingest_runs``: the contiguous prefix of sent messages.

Messages finish out of order; the watermark is the first sequence number not yet confirmed
sent, so everything below it can be skipped after a crash. Anything at or above it is sent
again and dropped by the worker's ledger, so the checkpoint saves work but never decides
correctness.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

import orjson
import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncEngine

from headrace.db import db_call
from headrace.tables import ingest_runs

__all__ = ["Checkpoint"]


def _now() -> dt.datetime:
    return dt.datetime.now(dt.UTC).replace(tzinfo=None, microsecond=0)


@dataclass
class Checkpoint:
    engine: AsyncEngine
    run_id: str
    resume_from: int = 0  # messages below this were sent by an earlier attempt
    status: str = "sending"
    watermark: int = 0
    persisted: int = 0
    rows_sent: int = 0  # rows of the messages confirmed sent, by this attempt or an earlier one
    _done: set[int] = field(default_factory=set)

    @classmethod
    async def open(
        cls,
        engine: AsyncEngine,
        *,
        run_id: str,
        source: str,
        version: str,
        size: int,
        table: str,
        columns: Sequence[str] = (),
        options: Mapping[str, object] | None = None,
    ) -> Checkpoint:
        """Read (or start) the run's row; retried while the database is unavailable.

        ``columns`` (the source's, in its order) and ``options`` (how it was read and packed)
        go into the run record that `headrace runs` shows and `headrace rejected export` uses.
        """
        record = {
            "run_id": run_id,
            "source": source[:1024],
            "source_version": version[:128],
            "source_bytes": size,
            "table_name": table,
            "columns": orjson.dumps(list(columns)).decode(),
            "options": orjson.dumps(dict(options or {})).decode(),
        }

        async def once() -> Checkpoint:
            return await cls._open(engine, record)

        return await db_call(once, engine=engine, what="checkpoint_open")

    @classmethod
    async def _open(cls, engine: AsyncEngine, record: dict[str, object]) -> Checkpoint:
        run_id = str(record["run_id"])
        async with engine.begin() as conn:
            row = (
                await conn.execute(
                    sa.select(ingest_runs.c.messages_sent, ingest_runs.c.status).where(
                        ingest_runs.c.run_id == run_id
                    )
                )
            ).first()
            if row is None:
                await conn.execute(
                    ingest_runs.insert().values(
                        **record,
                        status="sending",
                        messages_sent=0,
                        rows_read=0,
                        rows_rejected=0,
                        started_at=_now(),
                        updated_at=_now(),
                    )
                )
                return cls(engine, run_id)
        sent = int(row.messages_sent)
        return cls(
            engine, run_id, resume_from=sent, status=str(row.status), watermark=sent, persisted=sent
        )

    def already_sent(self, seq: int, rows: int) -> bool:
        """Whether message ``seq`` was sent by an earlier attempt (then it counts as sent)."""
        if seq >= self.resume_from:
            return False
        self.rows_sent += rows
        return True

    def mark_sent(self, seq: int, rows: int = 0) -> None:
        self.rows_sent += rows
        self._done.add(seq)
        while self.watermark in self._done:
            self._done.discard(self.watermark)
            self.watermark += 1

    async def save(
        self,
        *,
        rows_read: int,
        rows_rejected: int,
        total_messages: int | None = None,
    ) -> None:
        values: dict[str, object] = {
            "messages_sent": self.watermark,
            "updated_at": _now(),
        }
        if self.resume_from == 0 or total_messages is not None:
            # A resumed attempt re-reads from the start: its counts catch up only at the end.
            values.update(
                rows_read=rows_read, rows_rejected=rows_rejected, rows_sent=self.rows_sent
            )
        if total_messages is not None:
            values.update(status="sent", total_messages=total_messages, finished_at=_now())
            self.status = "sent"
        watermark = self.watermark

        async def once() -> None:  # idempotent: the same values again
            async with self.engine.begin() as conn:
                await conn.execute(
                    ingest_runs.update().where(ingest_runs.c.run_id == self.run_id).values(**values)
                )

        await db_call(once, engine=self.engine, what="checkpoint_save")
        self.persisted = watermark
