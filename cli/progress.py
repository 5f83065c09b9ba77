"""Progress at the terminal for `headrace produce` and `headrace worker --idle-exit`.

When stderr is a terminal (and neither ``--json`` nor an explicit ``HEADRACE_LOG_FORMAT=json``
asks for machine output) the command shows what `headrace demo` shows: a rich progress bar
fed by the process's metrics owner (the producer's rows, bytes read of the source size and
an ETA; the worker's rows applied, their rate and the backlog the queue reports), logs only
from warnings up, and a summary table at the end instead of the JSON report. Otherwise
nothing changes: JSON log lines on stderr, the JSON report on stdout.
"""

from __future__ import annotations

import argparse
import asyncio
import sys
import time
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from typing import Any

from rich.console import Console
from rich.progress import (
    BarColumn,
    DownloadColumn,
    Progress,
    TaskProgressColumn,
    TextColumn,
    TimeElapsedColumn,
    TimeRemainingColumn,
)
from rich.table import Table

from headrace.metrics import ProducerMetrics, WorkerMetrics
from headrace.settings import Settings

__all__ = ["add_json_flags", "interactive", "produce_summary", "producing", "working"]

REFRESH_S = 0.25


def add_json_flags(sub: Any) -> None:
    """``--json`` on `produce` and `worker`: JSON logs and report even at a terminal."""
    for name in ("produce", "worker"):
        sub.choices[name].add_argument(
            "--json",
            action="store_true",
            help="JSON log lines and a JSON report, even when stderr is a terminal",
        )


def interactive(args: argparse.Namespace, settings: Settings) -> bool:
    """Whether to show progress: stderr is a terminal and no JSON output was asked for."""
    if args.command not in ("produce", "worker") or getattr(args, "json", False):
        return False
    if args.command == "worker" and args.idle_exit is None:
        return False  # a long-running service: its logs are its output
    if "log_format" in settings.model_fields_set and settings.log_format == "json":
        return False
    return sys.stderr.isatty()


def _console() -> Console:
    return Console(stderr=True)


async def _refresh(update: Callable[[], None]) -> None:
    while True:
        update()
        await asyncio.sleep(REFRESH_S)


@asynccontextmanager
async def _bar(progress: Progress, update: Callable[[], None]) -> AsyncIterator[None]:
    with progress:
        task = asyncio.create_task(_refresh(update))
        try:
            yield
        finally:
            task.cancel()
            await asyncio.gather(task, return_exceptions=True)
            update()


@asynccontextmanager
async def producing(metrics: ProducerMetrics, table: str, *, show: bool) -> AsyncIterator[None]:
    """A bar of source bytes read (its size once known), rows read and their rate, an ETA."""
    if not show:
        yield
        return
    progress = Progress(
        TextColumn("[bold]{task.description}"),
        BarColumn(),
        TaskProgressColumn(),
        DownloadColumn(),
        TextColumn("{task.fields[rows]:>12,} rows  {task.fields[rate]:>9,.0f} rows/s"),
        TimeElapsedColumn(),
        TextColumn("ETA"),
        TimeRemainingColumn(),
        console=_console(),
    )
    task = progress.add_task(f"produce → {table}", total=None, rows=0, rate=0.0)
    started = time.monotonic()

    def update() -> None:
        read = metrics.value("headrace_producer_bytes_total", table=table, stage="read")
        ratio = metrics.value("headrace_producer_progress_ratio", table=table)
        rows = metrics.stats(table).rows_read
        elapsed = max(time.monotonic() - started, 1e-6)
        total = read / ratio if ratio > 0 else None
        progress.update(task, completed=read, total=total, rows=rows, rate=rows / elapsed)

    async with _bar(progress, update):
        yield


@asynccontextmanager
async def working(metrics: WorkerMetrics, *, show: bool) -> AsyncIterator[None]:
    """Rows applied (inserted + rejected), their rate, and the backlog when the queue told."""
    if not show:
        yield
        return
    progress = Progress(
        TextColumn("[bold]worker"),
        TextColumn("{task.fields[rows]:>12,} rows applied  {task.fields[rate]:>9,.0f} rows/s"),
        TextColumn("{task.fields[messages]:>8,} messages  backlog {task.fields[backlog]}"),
        TimeElapsedColumn(),
        console=_console(),
    )
    task = progress.add_task("worker", total=None, rows=0, rate=0.0, messages=0, backlog="?")
    started = time.monotonic()

    def update() -> None:
        stats = metrics.stats()
        rows = stats.rows_inserted + stats.rows_rejected
        known = metrics.value("headrace_queue_reachable") > 0
        backlog = sum(
            metrics.value("headrace_queue_messages", queue="main", state=state)
            for state in ("visible", "in_flight", "delayed")
        )
        progress.update(
            task,
            rows=rows,
            rate=rows / max(time.monotonic() - started, 1e-6),
            messages=stats.messages_applied + stats.messages_duplicate,
            backlog=f"{int(backlog):,}" if known else "?",
        )

    async with _bar(progress, update):
        yield


def produce_summary(report: dict[str, Any]) -> None:
    """The producer's report as a table, for people."""
    table = Table(title=f"produced {report['source']} → {report['table']}", show_header=False)
    for key in (
        "run_id",
        "rows_read",
        "rows_sent",
        "rows_rejected",
        "messages_sent",
        "messages_skipped",
        "total_messages",
        "bytes_sent",
        "send_retries",
        "already_complete",
        "interrupted",
    ):
        value = report[key]
        table.add_row(key.replace("_", " "), f"{value:,}" if type(value) is int else str(value))
    rate = report["rows_read"] / report["elapsed_s"] if report["elapsed_s"] else 0.0
    table.add_row("elapsed", f"{report['elapsed_s']:.1f} s ({rate:,.0f} rows/s)")
    _console().print(table)


def worker_summary(stats: dict[str, Any]) -> None:
    table = Table(title="worker", show_header=False)
    for key in (
        "messages_applied",
        "messages_duplicate",
        "messages_poison",
        "rows_inserted",
        "rows_rejected",
        "batches",
        "batch_failures",
        "db_retries",
    ):
        table.add_row(key.replace("_", " "), f"{int(stats.get(key, 0)):,}")
    _console().print(table)
