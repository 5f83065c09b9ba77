"""``headrace dlq inspect|redrive`` and ``headrace ledger prune``.

``inspect`` looks at the dead-letter queue without keeping anything: it receives a sample
(at most ``--max``) with a short visibility timeout and makes every sampled message visible
again as soon as it has been read (``ChangeMessageVisibility`` to 0), so the look holds
them for at most ``--look-s``. The sampled messages' receive counts go up by one, which a
DLQ (that has no redrive policy of its own) does not act on.

``redrive`` moves the DLQ's messages back to the queue that dead-lettered them:
``StartMessageMoveTask`` where the endpoint supports it (then it waits for the task), else
a receive → send to the source queue → delete loop. The loop deletes a message from the DLQ
only after SQS confirmed its copy in the source queue, so nothing is lost; a crash between
the send and the delete sends that message once more, which the worker's ledger absorbs (the
same ``(run, seq)`` key inserts nothing twice).
"""

from __future__ import annotations

import argparse
import asyncio
import datetime as dt
import time
from collections.abc import AsyncIterator, Callable, Sequence
from contextlib import asynccontextmanager
from dataclasses import asdict, dataclass, field
from typing import Any

import sqlalchemy as sa
import structlog
from botocore.exceptions import BotoCoreError, ClientError
from sqlalchemy.ext.asyncio import AsyncConnection

from cli.ops import output
from cli.ops.output import parse_age, print_json
from headrace import envelope
from headrace.db import create_engine, database_configured
from headrace.errors import ConfigError, EnvelopeError, QueueError, SchemaError
from headrace.runtime import run
from headrace.schema import reflect_table
from headrace.settings import Settings, signing_key
from headrace.sqs import OutgoingMessage, Received, SqsQueue, open_queue, sqs_client
from headrace.tables import INTERNAL_TABLES, ingest_ledger

__all__ = [
    "Inspection",
    "RedriveResult",
    "add_dlq_parser",
    "add_ledger_parser",
    "inspect_dlq",
    "open_queues",
    "redrive",
    "run_dlq",
    "run_ledger",
]

log = structlog.get_logger("cli.dlq")

_COUNTS = (
    "ApproximateNumberOfMessages",
    "ApproximateNumberOfMessagesNotVisible",
    "ApproximateNumberOfMessagesDelayed",
)
_ATTRIBUTE_KEYS = ("DataType", "StringValue", "BinaryValue")


def add_dlq_parser(sub: Any, make: Callable[..., argparse.ArgumentParser]) -> None:
    dlq = sub.add_parser(
        "dlq",
        help="look into the dead-letter queue, move its messages back",
        description="The dead-letter queue named by the queue's RedrivePolicy "
        "(HEADRACE_QUEUE_URL / --queue-url), or --dlq-url.",
    )
    dlq_sub = dlq.add_subparsers(dest="action", required=True)
    ins = make(
        dlq_sub,
        "inspect",
        "counts, the oldest message's age and a decoded sample, leaving the messages in place",
    )
    red = make(
        dlq_sub,
        "redrive",
        "move every DLQ message back to its queue once; exit 1 when some were left behind",
    )
    for p in (ins, red):
        p.add_argument("--queue-url", help="the source queue (default: HEADRACE_QUEUE_URL)")
        p.add_argument("--dlq-url", help="the DLQ (default: from the queue's RedrivePolicy)")
    ins.add_argument("--max", type=int, default=10, help="messages to sample (10, at most 100)")
    ins.add_argument(
        "--look-s", type=int, default=30, help="longest a sampled message stays hidden (30)"
    )
    red.add_argument("--max-per-second", type=int, help="move at most this many messages a second")
    red.add_argument("--dry-run", action="store_true", help="say what would move, move nothing")
    red.add_argument(
        "--no-native", action="store_true", help="use the receive/send/delete loop directly"
    )


def add_ledger_parser(sub: Any, make: Callable[..., argparse.ArgumentParser]) -> None:
    led = sub.add_parser(
        "ledger",
        help="maintain the worker's ledger of applied messages",
        description="The ledger (ingest_ledger) holds one key per applied message.",
    )
    led_sub = led.add_subparsers(dest="action", required=True)
    prune = make(
        led_sub,
        "prune",
        "delete ledger keys older than --older-than, never those of incomplete runs",
        "Delete ledger keys applied longer ago than --older-than, in small batches, except "
        "the keys of runs that are not complete. Exactly-once needs a key as long as its "
        "message (or a re-send of it) can still arrive: --older-than must exceed the queue's "
        "and the DLQ's MessageRetentionPeriod (checked when HEADRACE_QUEUE_URL is set).",
    )
    prune.add_argument("--older-than", required=True, metavar="AGE", help="e.g. 30d")
    prune.add_argument("--batch", type=int, default=1000, help="keys deleted per transaction")
    prune.add_argument("--dry-run", action="store_true", help="count, delete nothing")
    prune.add_argument(
        "--skip-retention-check",
        action="store_true",
        help="do not compare --older-than with the queues' retention (no queue configured)",
    )


# --- locating the queues ---------------------------------------------------------------------


@dataclass
class _Queues:
    source: SqsQueue
    dlq: SqsQueue
    source_arn: str
    dlq_arn: str


@asynccontextmanager
async def open_queues(
    settings: Settings, *, queue_url: str | None = None, dlq_url: str | None = None
) -> AsyncIterator[_Queues]:
    """The source queue and its DLQ (``dlq_url``, else the one its RedrivePolicy names)."""
    async with open_queue(settings, queue_url=queue_url) as source:
        if dlq_url:
            dlq = await source.sibling(dlq_url)
        else:
            found = await source.dead_letter()
            if found is None:
                raise ConfigError(
                    f"queue {source.url} has no RedrivePolicy naming a dead-letter queue: "
                    "pass --dlq-url"
                )
            dlq = found
        source_arn = (await source.attributes(["QueueArn"]))["QueueArn"]
        dlq_arn = (await dlq.attributes(["QueueArn"]))["QueueArn"]
        yield _Queues(source, dlq, source_arn, dlq_arn)


# --- inspect ---------------------------------------------------------------------------------


@dataclass
class Sample:
    message_id: str
    receive_count: int
    sent_at: dt.datetime | None
    body_bytes: int
    envelope: dict[str, Any] | None  # the header of a valid envelope
    reason: str  # why the worker could not apply it, as far as the message itself tells


@dataclass
class Inspection:
    dlq_url: str
    visible: int
    in_flight: int
    delayed: int
    oldest_sent_at: dt.datetime | None
    sample: list[Sample] = field(default_factory=list)

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


async def inspect_dlq(
    settings: Settings, queues: _Queues, *, max_messages: int, look_s: int
) -> Inspection:
    dlq = queues.dlq
    counts = await dlq.attributes(_COUNTS)
    received: list[Received] = []
    try:
        while len(received) < max_messages:
            got = await dlq.receive(
                max_messages=max_messages - len(received), wait_s=0, visibility_s=look_s
            )
            if not got:
                break
            received.extend(got)
    finally:
        if received:  # visible again now, not after the look's timeout
            await dlq.change_visibility([m.receipt for m in received], 0)
    sample = [_sample(settings, m) for m in received]
    await _database_reasons(settings, sample)
    sent = [s.sent_at for s in sample if s.sent_at is not None]
    return Inspection(
        dlq_url=dlq.url,
        visible=int(counts.get(_COUNTS[0], 0)),
        in_flight=int(counts.get(_COUNTS[1], 0)),
        delayed=int(counts.get(_COUNTS[2], 0)),
        oldest_sent_at=min(sent) if sent else None,
        sample=sample,
    )


def _sample(settings: Settings, m: Received) -> Sample:
    sent = (
        dt.datetime.fromtimestamp(m.sent_at, dt.UTC).replace(tzinfo=None, microsecond=0)
        if m.sent_at is not None
        else None
    )
    header: dict[str, Any] | None = None
    try:
        key = signing_key(settings)
        if key is not None:
            envelope.verify_signature(key, m.body, m.attributes)
        env = envelope.decode(m.body, m.attributes)
    except EnvelopeError as exc:
        reason = f"poison: {exc}"
    else:
        header = {
            "run": env.run_id,
            "seq": env.seq,
            "table": env.table,
            "source": env.source,
            "rows": env.row_count,
            "rejects": len(env.rejects),
            "columns": list(env.columns),
        }
        reason = _valid_reason(settings, env.table, m.message_id)
    return Sample(m.message_id, m.receive_count, sent, len(m.body.encode()), header, reason)


def _valid_reason(settings: Settings, table: str, message_id: str) -> str:
    if table in INTERNAL_TABLES:
        return f"poison: table {table!r} is internal to headrace"
    if not settings.worker.any_table and table not in settings.worker.tables:
        return f"poison: table {table!r} is not in HEADRACE_WORKER__TABLES"
    return (
        "a valid envelope: its table was missing or refused the batch when the worker tried "
        f"(see the worker's poison_message log line for message_id {message_id})"
    )


async def _database_reasons(settings: Settings, sample: list[Sample]) -> None:
    """For valid envelopes, ask the database what the message cannot tell: whether its key
    is applied already, whether its table exists and has its columns (when one is set)."""
    valid = [s for s in sample if s.envelope is not None]
    if not valid or not database_configured(settings):
        return
    engine = create_engine(settings, pool_size=1)
    try:
        async with engine.connect() as conn:
            for s in valid:
                s.reason = await _database_reason(conn, settings, s) or s.reason
    finally:
        await engine.dispose()


async def _database_reason(conn: AsyncConnection, settings: Settings, s: Sample) -> str | None:
    head = s.envelope or {}
    lg = ingest_ledger.c
    applied = await conn.execute(
        sa.select(lg.applied_at).where(lg.run_id == head["run"], lg.seq == head["seq"])
    )
    when = applied.scalar()
    if when is not None:
        return f"already applied at {when} UTC (in the ledger): a redrive inserts nothing"
    try:
        schema = await reflect_table(conn, head["table"], allowed=settings.worker.tables)
    except SchemaError as exc:
        return f"poison: {exc}"
    missing = [c for c in head["columns"] if c not in schema.columns]
    if missing:
        return f"table {schema.name!r} lacks column(s) {', '.join(missing)} (schema drift)"
    return None


def _print_inspection(result: Inspection) -> None:
    oldest = (
        f"{result.oldest_sent_at} UTC ({output.ago(result.oldest_sent_at)}, in the sample)"
        if result.oldest_sent_at
        else "-"
    )
    title = (
        f"DLQ {result.dlq_url}: {result.visible} visible, {result.in_flight} in flight, "
        f"{result.delayed} delayed; oldest sent {oldest}"
    )
    rows = [
        (
            s.message_id[:13],
            s.receive_count,
            output.ago(s.sent_at),
            (
                f"run {s.envelope['run'][:12]} seq {s.envelope['seq']} "
                f"{s.envelope['table']}: {s.envelope['rows']} rows"
            )
            if s.envelope
            else f"{s.body_bytes} bytes, not an envelope",
            s.reason,
        )
        for s in result.sample
    ]
    columns = ["message", "receives", "sent", "carries", "why it is here"]
    output.console().print(output.table(title, columns, rows))


# --- redrive ---------------------------------------------------------------------------------


@dataclass
class RedriveResult:
    method: str  # "StartMessageMoveTask", "loop" or "dry-run"
    found: int  # messages in the DLQ when it started
    moved: int = 0
    failed: int = 0
    task: dict[str, Any] = field(default_factory=dict)
    native_error: str | None = None

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


async def redrive(
    settings: Settings,
    queues: _Queues,
    *,
    max_per_second: int | None = None,
    dry_run: bool = False,
    native: bool = True,
) -> RedriveResult:
    """Move the DLQ's messages back to the source queue (see the module's docstring)."""
    found = int((await queues.dlq.attributes([_COUNTS[0]]))[_COUNTS[0]])
    if dry_run:
        return RedriveResult("dry-run", found)
    native_error = None
    if native:
        try:
            return await _move_task(settings, queues, found, max_per_second)
        except (ClientError, BotoCoreError) as exc:
            # Not there (moto, some emulators) or not allowed: the loop does the same work.
            native_error = str(exc).split("\n", 1)[0][:200]
            log.info("move_task_unavailable", error=native_error)
    result = await _redrive_loop(queues, found, max_per_second)
    result.native_error = native_error
    return result


async def _move_task(
    settings: Settings, queues: _Queues, found: int, max_per_second: int | None
) -> RedriveResult:
    # One attempt: an endpoint without the action answers an error botocore would retry.
    once = settings.model_copy(update={"aws": settings.aws.model_copy(update={"max_attempts": 1})})
    async with sqs_client(once) as client:
        params: dict[str, Any] = {
            "SourceArn": queues.dlq_arn,
            "DestinationArn": queues.source_arn,
        }
        if max_per_second is not None:
            params["MaxNumberOfMessagesPerSecond"] = max_per_second
        started = await client.start_message_move_task(**params)
        handle = started.get("TaskHandle", "")
        while True:
            tasks = await client.list_message_move_tasks(SourceArn=queues.dlq_arn, MaxResults=10)
            # The most recent task first; only a running task still has its handle.
            results = [dict(t) for t in tasks.get("Results", [])]
            task: dict[str, Any] = results[0] if results else {}
            if task.get("TaskHandle", handle) != handle:
                raise QueueError(f"another move task is running from {queues.dlq_arn}")
            status = task.get("Status", "")
            if status not in ("RUNNING", "CANCELLING"):
                break
            await asyncio.sleep(1.0)  # a task moves ≤ 500 messages a second
    moved = int(task.get("ApproximateNumberOfMessagesMoved", 0))
    result = RedriveResult("StartMessageMoveTask", found, moved=moved, task=dict(task))
    if status != "COMPLETED":
        result.failed = max(0, found - moved)
    return result


async def _redrive_loop(queues: _Queues, found: int, max_per_second: int | None) -> RedriveResult:
    """Receive → send → delete, at most ``found`` messages (those there when it started)."""
    result = RedriveResult("loop", found)
    started = time.monotonic()
    empty = 0
    while result.moved + result.failed < found and empty < 2:
        batch = await queues.dlq.receive(
            max_messages=min(10, found - result.moved - result.failed), wait_s=1, visibility_s=60
        )
        if not batch:
            empty += 1
            continue
        empty = 0
        await _move_batch(queues, batch, result)
        if max_per_second:
            ahead = result.moved / max_per_second - (time.monotonic() - started)
            if ahead > 0:
                await asyncio.sleep(ahead)
    return result


async def _move_batch(queues: _Queues, batch: Sequence[Received], result: RedriveResult) -> None:
    outgoing = [
        OutgoingMessage(str(i), m.body, _resendable(m.attributes)) for i, m in enumerate(batch)
    ]
    try:
        sent = await queues.source.send(outgoing)
    except QueueError as exc:
        log.warning("redrive_send_failed", error=str(exc)[:300])
        sent_ok: list[int] = []
    else:
        sent_ok = sorted(sent.ok)
        for index, code, message, _ in sent.failed:
            log.warning(
                "redrive_send_refused",
                message_id=batch[index].message_id,
                code=code,
                error=message[:300],
            )
    left = [m.receipt for i, m in enumerate(batch) if i not in set(sent_ok)]
    if left:  # back to the DLQ's visible messages: nothing is lost
        await queues.dlq.change_visibility(left, 0)
    if sent_ok:
        deleted = await queues.dlq.delete([batch[i].receipt for i in sent_ok])
        for index, code, message, _ in deleted.failed:
            # Sent but still in the DLQ: a later redrive sends it again, the ledger absorbs it.
            log.warning("redrive_delete_failed", code=code, error=message[:300], index=index)
    result.moved += len(sent_ok)
    result.failed += len(left)


def _resendable(attributes: dict[str, Any]) -> dict[str, Any]:
    return {
        name: {k: v for k, v in value.items() if k in _ATTRIBUTE_KEYS}
        for name, value in attributes.items()
    }


def _print_redrive(result: RedriveResult) -> None:
    rows = [
        ("method", result.method),
        ("messages in the DLQ at the start", result.found),
        ("moved back", result.moved),
        ("left in the DLQ", result.failed),
    ]
    if result.native_error:
        rows.append(("StartMessageMoveTask", f"unavailable: {result.native_error}"))
    output.console().print(output.table("dlq redrive", ["", "value"], rows))


def run_dlq(settings: Settings, args: argparse.Namespace) -> int:
    async def go() -> int:
        async with open_queues(settings, queue_url=args.queue_url, dlq_url=args.dlq_url) as queues:
            if args.action == "inspect":
                look = await inspect_dlq(
                    settings, queues, max_messages=min(100, max(1, args.max)), look_s=args.look_s
                )
                print_json(look.as_dict()) if args.json else _print_inspection(look)
                return 0
            moved = await redrive(
                settings,
                queues,
                max_per_second=args.max_per_second,
                dry_run=args.dry_run,
                native=not args.no_native,
            )
            print_json(moved.as_dict()) if args.json else _print_redrive(moved)
            return 1 if moved.failed else 0

    return run(go())


# --- ledger prune ----------------------------------------------------------------------------


def run_ledger(settings: Settings, args: argparse.Namespace) -> int:
    from cli.ops.ledger import prune_ledger, retention_floor
    from headrace.db import create_engine

    age = parse_age(args.older_than)

    async def go() -> int:
        if not args.skip_retention_check:
            floor = await retention_floor(settings)
            if age <= floor:
                raise ConfigError(
                    f"--older-than {args.older_than} is not older than the queues' retention "
                    f"({output.duration(floor)}): a message still in a queue could meet a pruned "
                    "key and be applied twice"
                )
        engine = create_engine(settings, pool_size=1)
        try:
            result = await prune_ledger(
                engine, older_than=age, batch=args.batch, dry_run=args.dry_run
            )
        finally:
            await engine.dispose()
        if args.json:
            print_json(result.as_dict())
        else:
            verb = "would delete" if args.dry_run else "deleted"
            print(
                f"{verb} {result.deleted} ledger keys applied before {result.cutoff} UTC "
                f"in {result.batches} batches; kept {result.kept_incomplete} keys of "
                f"{result.incomplete_runs} incomplete runs"
            )
        return 0

    return run(go())
