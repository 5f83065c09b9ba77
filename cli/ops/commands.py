"""Arguments and output of the operator commands (registered by :mod:`cli.main`)."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

from sqlalchemy.ext.asyncio import AsyncEngine

from cli.ops import output
from cli.ops.output import ago, parse_age, print_json, utcnow
from headrace.runtime import run
from headrace.settings import Settings

__all__ = ["OPS_COMMANDS", "add_ops_parsers", "run_ops"]

OPS_COMMANDS = frozenset({"runs", "rejected", "dlq", "ledger"})

EXIT_CODES = (
    "exit codes: 0 done; 1 done, but something needs attention (see the command's help); "
    "2 refused or failed (arguments, settings, unknown run, database or SQS errors)"
)


def _json_flag(p: argparse.ArgumentParser) -> None:
    p.add_argument("--json", action="store_true", help="print JSON for scripts instead of tables")


def _sub(
    sub: Any, name: str, help_text: str, description: str | None = None
) -> argparse.ArgumentParser:
    p: argparse.ArgumentParser = sub.add_parser(
        name, help=help_text, description=description or help_text, epilog=EXIT_CODES
    )
    _json_flag(p)
    return p


def add_ops_parsers(sub: Any) -> None:
    """``runs``, ``rejected``, ``dlq`` and ``ledger`` under the ``headrace`` parser."""
    runs = _sub(
        sub,
        "runs",
        "what each producer run did and whether the worker applied all of it",
        "List producer runs (newest first): rows read/sent/inserted/duplicate/rejected, "
        "messages sent vs applied, and the sequence numbers still missing. "
        "`runs show RUN` exits 1 when the run is incomplete.",
    )
    runs.add_argument("--since", metavar="AGE", help="only runs started this long ago (1d, 12h)")
    runs.add_argument("--table", help="only runs into this table")
    runs.add_argument("--limit", type=int, default=50, help="at most this many runs (50)")
    runs_sub = runs.add_subparsers(dest="action")
    show = _sub(runs_sub, "show", "one run in detail (a unique id prefix is enough)")
    show.add_argument("run", help="run id or a unique prefix of it")

    rej = sub.add_parser(
        "rejected",
        help="rejected rows: list by reason, export to fix, replay",
        description="Rows in rejected_rows: group them by reason, export a run's rows as the "
        "original CSV lines, or try them again after the table or the data was fixed.",
        epilog=EXIT_CODES,
    )
    rej_sub = rej.add_subparsers(dest="action", required=True)
    lst = _sub(rej_sub, "list", "rejected rows grouped by table, stage and reason, with counts")
    lst.add_argument("--run", help="only this run")
    lst.add_argument("--table", help="only this table")
    lst.add_argument("--reason-like", metavar="PATTERN", help="SQL LIKE pattern on the reason")
    lst.add_argument("--limit", type=int, default=50, help="at most this many reasons (50)")
    exp = _sub(
        rej_sub,
        "export",
        "write a run's rejected rows as CSV (header first), ready to fix and produce again",
    )
    exp.add_argument("--run", required=True, help="run id (or a unique prefix)")
    exp.add_argument("--format", choices=["csv"], default="csv")
    exp.add_argument("--reason-like", metavar="PATTERN", help="SQL LIKE pattern on the reason")
    exp.add_argument("--output", "-o", type=Path, help="file to write (default: stdout)")
    rep = _sub(
        rej_sub,
        "replay",
        "insert a run's rejected rows that fit now; exit 1 when some are still rejected",
    )
    rep.add_argument("--run", required=True, help="run id (or a unique prefix)")
    rep.add_argument("--reason-like", metavar="PATTERN", help="SQL LIKE pattern on the reason")
    _add_queue_parsers(sub)


def _add_queue_parsers(sub: Any) -> None:
    from cli.ops.dlq import add_dlq_parser, add_ledger_parser

    add_dlq_parser(sub, _sub)
    add_ledger_parser(sub, _sub)


def _with_engine(settings: Settings, fn: Callable[[AsyncEngine], Awaitable[int]]) -> int:
    from headrace.db import create_engine

    async def go() -> int:
        engine = create_engine(settings, pool_size=1)
        try:
            return await fn(engine)
        finally:
            await engine.dispose()

    return run(go())


def run_ops(settings: Settings, args: argparse.Namespace) -> int:
    if args.command == "runs":
        return _with_engine(settings, lambda engine: _runs(engine, args))
    if args.command == "rejected":
        return _with_engine(settings, lambda engine: _rejected(engine, args))
    from cli.ops.dlq import run_dlq, run_ledger

    if args.command == "dlq":
        return run_dlq(settings, args)
    return run_ledger(settings, args)


# --- runs ----------------------------------------------------------------------------------


async def _runs(engine: AsyncEngine, args: argparse.Namespace) -> int:
    from cli.ops.runs import load_runs

    if args.action == "show":
        (one,) = await load_runs(engine, run_id=args.run)
        if args.json:
            print_json(one.as_dict())
        else:
            _print_run(one)
        return 0 if one.complete else 1
    since = utcnow() - parse_age(args.since) if args.since else None
    runs = await load_runs(engine, since=since, table=args.table, limit=args.limit)
    if args.json:
        print_json([r.as_dict() for r in runs])
        return 0
    rows = [
        (
            r.run_id[:12],
            Path(r.source).name or r.source,
            r.table,
            ago(r.started_at),
            r.rows_read,
            r.rows_sent,
            r.rows_inserted + r.rows_replayed,
            r.rows_duplicate,
            r.rows_rejected,
            f"{r.messages_applied}/{r.expected_messages}",
            _state(r),
        )
        for r in runs
    ]
    columns = ["run", "source", "table", "started", "read", "sent", "inserted", "dup"]
    columns += ["rejected", "applied", "state"]
    output.console().print(output.table(f"{len(runs)} runs", columns, rows))
    return 0


def _state(r: Any) -> str:
    if r.complete:
        return "complete"
    missing = ", ".join(f"{lo}-{hi}" if hi > lo else str(lo) for lo, hi in r.missing[:3])
    more = ", ..." if len(r.missing) > 3 else ""
    sending = "sending; " if r.status != "sent" else ""
    return f"{sending}missing seq {missing}{more}" if missing else f"{sending}all sent applied"


def _print_run(r: Any) -> None:
    fields = [
        ("run", r.run_id),
        ("source", r.source),
        ("table", r.table),
        ("columns", ", ".join(r.columns) or "-"),
        ("options", ", ".join(f"{k}={v}" for k, v in r.options.items()) or "-"),
        ("started", f"{r.started_at} UTC ({ago(r.started_at)})"),
        ("finished sending", f"{r.finished_at} UTC" if r.finished_at else "not yet"),
        ("rows read", r.rows_read),
        ("rows sent", r.rows_sent),
        ("rows rejected by the producer", r.rows_rejected_producer),
        ("rows inserted", r.rows_inserted),
        ("rows inserted by replay", r.rows_replayed),
        ("rows duplicate (refused by a key)", r.rows_duplicate),
        ("rows in rejected_rows now", r.rows_rejected),
        ("messages sent", f"{r.messages_sent} of {r.total_messages or '?'}"),
        ("messages applied", f"{r.messages_applied} of {r.expected_messages}"),
        ("missing (seq ranges)", _ranges(r.missing)),
        ("state", _state(r)),
    ]
    output.console().print(output.table(f"run {r.run_id}", ["", "value"], fields))


def _ranges(ranges: list[tuple[int, int]]) -> str:
    return ", ".join(f"{lo}-{hi}" if hi > lo else str(lo) for lo, hi in ranges) or "none"


# --- rejected ------------------------------------------------------------------------------


async def _rejected(engine: AsyncEngine, args: argparse.Namespace) -> int:
    from cli.ops import rejected

    if args.action == "list":
        groups = await rejected.list_rejected(
            engine,
            run_id=args.run,
            table=args.table,
            reason_like=args.reason_like,
            limit=args.limit,
        )
        if args.json:
            print_json([g.as_dict() for g in groups])
        else:
            rows = [
                (g.count, g.table, g.stage, len(g.run_ids), g.first_line, g.reason) for g in groups
            ]
            title = f"{sum(g.count for g in groups)} rejected rows, {len(groups)} reasons"
            columns = ["count", "table", "stage", "runs", "first line", "reason"]
            output.console().print(output.table(title, columns, rows))
        return 0
    if args.action == "export":
        return await _export(engine, args)
    result = await rejected.replay_rejected(engine, run_id=args.run, reason_like=args.reason_like)
    if args.json:
        print_json(result.as_dict())
    else:
        now = sorted(result.reasons.items(), key=lambda x: -x[1])
        title = (
            f"run {result.run_id}: {result.inserted} rows inserted into {result.table}, "
            f"{result.still_rejected} still rejected"
            + (f", {len(result.skipped_cut)} too long to replay" if result.skipped_cut else "")
        )
        output.console().print(
            output.table(title, ["count", "reason now"], [(n, reason) for reason, n in now])
        )
    return 1 if result.still_rejected or result.skipped_cut else 0


async def _export(engine: AsyncEngine, args: argparse.Namespace) -> int:
    from cli.ops.rejected import export_rejected

    if args.output is None:
        result = await export_rejected(
            engine, sys.stdout, run_id=args.run, reason_like=args.reason_like
        )
    else:
        with args.output.open("w", encoding="utf-8", newline="") as out:
            result = await export_rejected(
                engine, out, run_id=args.run, reason_like=args.reason_like
            )
    summary = {"run_id": result.run_id, "rows": result.rows, "skipped_cut": result.skipped_cut}
    if args.json and args.output is not None:
        print_json(summary)
    else:  # stdout holds the CSV: the summary goes to stderr
        cut = f"; {len(result.skipped_cut)} rows too long to export whole" * bool(
            result.skipped_cut
        )
        print(f"exported {result.rows} rows of run {result.run_id}{cut}", file=sys.stderr)
    return 1 if result.skipped_cut else 0
