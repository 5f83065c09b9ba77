"""The seed-style baseline: the old pipeline's shape, re-created for comparison.

* ``python -m bench.seed send CSV``: reads the CSV with ``csv.DictReader`` and puts **10 rows
  per SQS message** as a JSON array of objects (SendMessageBatch of 10 messages, a few calls in
  flight, so the sender is not what limits the baseline). With ``--progress-file`` it stays at
  most ``--window`` messages ahead of the consumer: moto scans its whole queue on every
  receive and delete (and wakes every long poll on every send), which real SQS does not, so
  an unbounded backlog would measure moto rather than the consumer's design.
* ``python -m bench.seed consume --rows N``: **100 concurrent asyncio handlers**, each in a
  loop: receive **one** message (20 s long poll) → **one INSERT** of its 10 rows → **COMMIT**
  → DeleteMessage. Its own SQLAlchemy pool of at most 50 connections (handlers beyond that
  wait for a connection, as they would have with a pool smaller than the handler count).
  Exits once N rows are committed. A failed INSERT (e.g. a duplicate key: moto may hand the
  same message to two concurrent long polls, and SQS delivers at least once) leaves the
  message undeleted for a redelivery, as the old pipeline did; the count is reported.

The progress file holds the consumer's count of finished messages (8 bytes, shared with
``mmap``; no extra SQS or database requests).

Both print one JSON line on stdout (wall-clock times, so they compare across processes) with
this process's SQS request counts from its :class:`headrace.metrics.Metrics` (the in-process
hooks; the benchmark checks them against the moto server's own counts). The consumer prints
``READY`` first, once its pool and handlers are up.
"""

from __future__ import annotations

import argparse
import asyncio
import csv
import json
import mmap
import struct
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import sqlalchemy as sa
from sqlalchemy.exc import DBAPIError
from sqlalchemy.ext.asyncio import AsyncEngine, create_async_engine

from cli.datagen import observations
from headrace.db import database_url
from headrace.metrics import Metrics
from headrace.runtime import run
from headrace.settings import Settings, load_settings
from headrace.sqs import sqs_client

__all__ = ["main"]

ROWS_PER_MESSAGE = 10
SEND_CONCURRENCY = 4


@contextmanager
def _progress(path: Path | None) -> Iterator[mmap.mmap | None]:
    """The shared counter of messages the consumer has finished (None: no pacing)."""
    if path is None:
        yield None
        return
    with path.open("r+b") as fh, mmap.mmap(fh.fileno(), 8) as mm:
        yield mm


def _emit(doc: dict[str, Any]) -> None:
    sys.stdout.write(json.dumps(doc) + "\n")
    sys.stdout.flush()


async def send(path: Path, limit: int | None, progress: Path | None, window: int) -> dict[str, Any]:
    settings = load_settings()
    metrics = Metrics()
    url = settings.queue_url or ""
    with path.open(newline="", encoding="utf-8") as fh:
        rows = list(csv.DictReader(fh))
    if limit is not None:
        rows = rows[:limit]
    bodies = [
        json.dumps(rows[i : i + ROWS_PER_MESSAGE]) for i in range(0, len(rows), ROWS_PER_MESSAGE)
    ]
    calls = [bodies[i : i + 10] for i in range(0, len(bodies), 10)]
    first_send = 0.0
    sent = 0
    paused_s = 0.0
    with _progress(progress) as shared:
        async with sqs_client(settings, metrics=metrics, pool=SEND_CONCURRENCY + 2) as client:
            queue: asyncio.Queue[list[str]] = asyncio.Queue()
            for call in calls:
                queue.put_nowait(call)

            async def sender() -> None:
                nonlocal sent, paused_s
                while not queue.empty():
                    batch = queue.get_nowait()
                    while (
                        shared is not None and sent - struct.unpack_from("<q", shared)[0] > window
                    ):
                        paused_s += 0.005
                        await asyncio.sleep(0.005)
                    sent += len(batch)
                    entries = [{"Id": str(n), "MessageBody": b} for n, b in enumerate(batch)]
                    resp = await client.send_message_batch(QueueUrl=url, Entries=entries)  # type: ignore[arg-type]
                    if resp.get("Failed"):
                        raise RuntimeError(f"send failed: {resp['Failed'][0]}")

            first_send = time.time()
            await asyncio.gather(*(sender() for _ in range(SEND_CONCURRENCY)))
    return {
        "role": "sender",
        "rows": len(rows),
        "messages": len(bodies),
        "first_send": first_send,
        "last_send": time.time(),
        "window": window if progress is not None else None,
        "paused_s": round(paused_s / SEND_CONCURRENCY, 3),
        "sqs": metrics.sqs_counts(),
    }


def _row(obj: dict[str, str]) -> dict[str, Any]:
    return {
        "observed_at": obj["observed_at"],
        "bot_id": int(obj["bot_id"]),
        "sku": obj["sku"],
        "price": obj["price"],
        "quantity": int(obj["quantity"]),
        "in_stock": 1 if obj["in_stock"] == "true" else 0,
        "title": obj["title"],
        "note": obj["note"] or None,
    }


async def consume(
    rows: int, handlers: int, pool: int, wait_s: int, progress: Path | None
) -> dict[str, Any]:
    settings = load_settings()
    engine = create_async_engine(
        database_url(settings),
        pool_size=pool,
        max_overflow=0,
        connect_args={"charset": "utf8mb4"},
    )
    with _progress(progress) as shared:
        return await _consume(shared, engine, settings, rows, handlers, pool, wait_s)


async def _consume(  # noqa: PLR0915 - the old consumer's shape, kept whole as the baseline
    shared: mmap.mmap | None,
    engine: AsyncEngine,
    settings: Settings,
    rows: int,
    handlers: int,
    pool: int,
    wait_s: int,
) -> dict[str, Any]:
    metrics = Metrics()
    url = settings.queue_url or ""
    done = asyncio.Event()
    failures: dict[str, int] = {}
    committed = 0
    messages = 0
    first_commit = 0.0
    last_commit = 0.0
    try:
        # Open the pool's connections first: a long-running consumer has them already.
        conns = [await engine.connect() for _ in range(pool)]
        for conn in conns:
            await conn.execute(sa.text("SELECT 1"))
            await conn.close()
        async with sqs_client(settings, metrics=metrics, pool=handlers + 4) as client:
            receiving: set[int] = set()

            async def handler(me: int) -> None:
                nonlocal committed, messages, first_commit, last_commit
                while not done.is_set():
                    receiving.add(me)
                    try:
                        resp = await client.receive_message(
                            QueueUrl=url, MaxNumberOfMessages=1, WaitTimeSeconds=wait_s
                        )
                    finally:
                        receiving.discard(me)
                    for message in resp.get("Messages", []):
                        batch = [_row(o) for o in json.loads(message["Body"])]
                        try:
                            async with engine.begin() as conn:  # one INSERT, then COMMIT
                                await conn.execute(observations.insert().values(batch))
                        except DBAPIError as exc:
                            # As the old pipeline: the message stays for a redelivery. A
                            # duplicate key means this message was delivered twice.
                            failures[type(exc).__name__] = failures.get(type(exc).__name__, 0) + 1
                            continue
                        now = time.time()
                        first_commit = first_commit or now
                        last_commit = now
                        committed += len(batch)
                        messages += 1
                        await client.delete_message(
                            QueueUrl=url, ReceiptHandle=message["ReceiptHandle"]
                        )
                        if shared is not None:
                            struct.pack_into("<q", shared, 0, messages)
                    if committed >= rows:
                        done.set()

            tasks = [asyncio.create_task(handler(i)) for i in range(handlers)]
            sys.stdout.write("READY\n")
            sys.stdout.flush()
            waiter = asyncio.create_task(done.wait())
            await asyncio.wait([waiter, *tasks], return_when=asyncio.FIRST_COMPLETED)
            failed = [t for t in tasks if t.done() and t.exception() is not None]
            # Handlers waiting in a long poll stop now; those holding a message finish it
            # (commit and delete) and then see ``done``.
            for i, task in enumerate(tasks):
                if i in receiving or failed:
                    task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
            waiter.cancel()
            if failed:
                raise RuntimeError(f"a handler failed: {failed[0].exception()!r}")
    finally:
        await engine.dispose()
    return {
        "role": "consumer",
        "rows": committed,
        "messages": messages,
        "handlers": handlers,
        "pool": pool,
        "first_commit": first_commit,
        "last_commit": last_commit,
        "failed_inserts": failures,
        "sqs": metrics.sqs_counts(),
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="seed-style baseline (old pipeline shape)")
    sub = parser.add_subparsers(dest="role", required=True)
    s = sub.add_parser("send")
    s.add_argument("csv", type=Path)
    s.add_argument("--rows", type=int, default=None, help="only the first N rows")
    c = sub.add_parser("consume")
    c.add_argument("--rows", type=int, required=True, help="exit once this many rows committed")
    c.add_argument("--handlers", type=int, default=100)
    c.add_argument("--pool", type=int, default=50)
    c.add_argument("--wait", type=int, default=20, help="long-poll seconds")
    for sp in (s, c):
        sp.add_argument("--progress-file", type=Path, help="8-byte file shared by both")
    s.add_argument("--window", type=int, default=200, help="most messages ahead of the consumer")
    args = parser.parse_args(argv)
    if args.role == "send":
        _emit(run(send(args.csv, args.rows, args.progress_file, args.window)))
    else:
        _emit(run(consume(args.rows, args.handlers, args.pool, args.wait, args.progress_file)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
