"""``headrace ledger prune``: delete old ledger keys without giving up exactly-once.

A ledger key ``(run_id, seq)`` stops a message from being applied twice. It must outlive
every copy of its message that could still arrive:

* a copy in the queue or its DLQ: SQS drops a message after the queue's
  ``MessageRetentionPeriod`` (counted from the first send, also in the DLQ), so a key older
  than the longest retention of the two can no longer meet its message;
* a copy the producer sends again: a run that is not complete (still sending, interrupted,
  or with messages not yet applied) re-sends from its checkpoint, so its keys are never
  pruned, whatever their age; a complete run is skipped by the producer
  (``already_complete``) as long as its ``ingest_runs`` row is kept.

So: prune with ``--older-than`` longer than both retention periods (checked), and keep
``ingest_runs``.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import asdict, dataclass
from typing import Any

import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncEngine

from cli.ops.output import utcnow
from headrace.errors import ConfigError
from headrace.settings import Settings
from headrace.sqs import open_queue
from headrace.tables import ingest_ledger, ingest_runs

__all__ = ["PruneResult", "incomplete_runs", "prune_ledger", "retention_floor"]


@dataclass
class PruneResult:
    cutoff: dt.datetime
    deleted: int = 0
    batches: int = 0
    incomplete_runs: int = 0
    kept_incomplete: int = 0  # old keys kept because their run is incomplete

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


async def retention_floor(settings: Settings) -> dt.timedelta:
    """The longest ``MessageRetentionPeriod`` of the queue and its DLQ."""
    if not (settings.queue_url or settings.queue_name):
        raise ConfigError(
            "set HEADRACE_QUEUE_URL so --older-than can be checked against the queues' "
            "retention, or pass --skip-retention-check"
        )
    async with open_queue(settings) as queue:
        periods = [
            int((await queue.attributes(["MessageRetentionPeriod"]))["MessageRetentionPeriod"])
        ]
        dlq = await queue.dead_letter()
        if dlq is not None:
            attrs = await dlq.attributes(["MessageRetentionPeriod"])
            periods.append(int(attrs["MessageRetentionPeriod"]))
    return dt.timedelta(seconds=max(periods))


async def incomplete_runs(engine: AsyncEngine) -> set[str]:
    """Runs whose messages may still be (re)sent: not finished sending, or some not applied."""
    r, lg = ingest_runs.c, ingest_ledger.c
    out: set[str] = set()
    async with engine.connect() as conn:
        runs = (await conn.execute(sa.select(r.run_id, r.status, r.total_messages))).all()
        for run_id, status, total in runs:
            if status != "sent" or total is None:
                out.add(str(run_id))
                continue
            applied = await conn.execute(
                sa.select(sa.func.count()).where(
                    lg.run_id == run_id, lg.seq >= 0, lg.seq < int(total)
                )
            )
            if int(applied.scalar_one()) < int(total):
                out.add(str(run_id))
    return out


async def prune_ledger(
    engine: AsyncEngine, *, older_than: dt.timedelta, batch: int = 1000, dry_run: bool = False
) -> PruneResult:
    """Delete keys applied before now - ``older_than``, ``batch`` per transaction, except
    those of incomplete runs (see the module's docstring for why that is safe)."""
    result = PruneResult(cutoff=utcnow().replace(microsecond=0) - older_than)
    keep = await incomplete_runs(engine)
    result.incomplete_runs = len(keep)
    lg = ingest_ledger.c
    old = [lg.applied_at < result.cutoff]
    prunable = [*old, lg.run_id.not_in(sorted(keep))] if keep else old
    async with engine.connect() as conn:
        if keep:
            kept = await conn.execute(
                sa.select(sa.func.count()).where(*old, lg.run_id.in_(sorted(keep)))
            )
            result.kept_incomplete = int(kept.scalar_one())
        if dry_run:
            n = await conn.execute(sa.select(sa.func.count()).where(*prunable))
            result.deleted = int(n.scalar_one())
            return result
    while True:
        async with engine.begin() as conn:
            keys = (
                await conn.execute(sa.select(lg.run_id, lg.seq).where(*prunable).limit(batch))
            ).all()
            if keys:
                await conn.execute(
                    ingest_ledger.delete().where(
                        sa.tuple_(lg.run_id, lg.seq).in_([tuple(k) for k in keys])
                    )
                )
        if not keys:
            return result
        result.deleted += len(keys)
        result.batches += 1
