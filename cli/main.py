"""The `headrace` command: produce, worker, migrate, health, demo, generate, verify, and the
operator commands runs, rejected, dlq, ledger (:mod:`cli.ops`)."""

from __future__ import annotations

import argparse
import gc
import importlib
import sys
from collections.abc import Callable, Sequence
from pathlib import Path

import orjson

from cli.csvflags import add_format_flags, apply_format_flags
from cli.ops import OPS_COMMANDS, add_ops_parsers, run_ops
from cli.progress import add_json_flags, interactive
from headrace.errors import HeadraceError
from headrace.logs import configure_logging
from headrace.runtime import run
from headrace.settings import Settings, load_settings

__all__ = ["main"]


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="headrace", description="Move big CSV drops into MySQL through SQS."
    )
    sub = parser.add_subparsers(dest="command", required=True)

    p = sub.add_parser("produce", help="stream a CSV (.csv or .csv.gz) into the queue")
    p.add_argument("source", help="path of the CSV file, or s3://bucket/key")
    p.add_argument("--table", required=True, help="target table (must exist; columns are checked)")
    p.add_argument("--queue-url", help="overrides HEADRACE_QUEUE_URL")
    add_format_flags(p, writing=True)

    w = sub.add_parser("worker", help="consume the queue into the database until SIGTERM")
    w.add_argument("--queue-url", help="overrides HEADRACE_QUEUE_URL")
    w.add_argument(
        "--idle-exit", type=float, metavar="SECONDS", help="exit after this long with nothing to do"
    )

    sub.add_parser("migrate", help="create/upgrade headrace's tables (alembic upgrade head)")

    h = sub.add_parser(
        "health", help="ask this container's worker or producer whether it is healthy (exit 0/1)"
    )
    h.add_argument(
        "--port",
        type=int,
        help="metrics port (default: HEADRACE_METRICS__PORT, else the deploy assets' 9400)",
    )
    h.add_argument("--ready", action="store_true", help="ask /readyz instead of /healthz")
    h.add_argument("--timeout", type=float, default=5.0, metavar="SECONDS")

    d = sub.add_parser("demo", help="generate data and run producer + worker on embedded defaults")
    d.add_argument("--rows", type=int, default=1_000_000)
    d.add_argument("--data-dir", type=Path, default=Path("demo-data"))
    d.add_argument(
        "--reset", action="store_true", help="empty the demo tables of an external database first"
    )

    g = sub.add_parser("generate", help="write a realistic CSV for the example observations table")
    g.add_argument("path", type=Path, help="output file (.csv or .csv.gz)")
    g.add_argument("--rows", type=int, default=1_000_000)
    g.add_argument("--seed", type=int, default=7)
    g.add_argument(
        "--bad-ratio", type=float, default=0.001, help="share of rows that must be rejected"
    )

    v = sub.add_parser(
        "verify", help="compare a source file with the target table and rejected_rows"
    )
    v.add_argument("source", help="path of the CSV file, or s3://bucket/key")
    v.add_argument("--table", required=True)
    add_format_flags(v, writing=False)
    add_ops_parsers(sub)
    add_json_flags(sub)
    return parser


def _print_json(obj: object) -> None:
    sys.stdout.write(orjson.dumps(obj, option=orjson.OPT_INDENT_2).decode() + "\n")


def _produce(settings: Settings, args: argparse.Namespace) -> int:
    from cli.progress import produce_summary, producing
    from headrace.exposition import pushing, serving
    from headrace.metrics import ProducerMetrics
    from producer.app import INTERRUPTED_EXIT_CODE, ProduceReport, run_producer

    metrics = ProducerMetrics()
    m = settings.metrics
    show = interactive(args, settings)

    async def go() -> ProduceReport:
        async with (
            serving(m.port, metrics.registry),
            pushing(
                m.pushgateway_url,
                metrics.registry,
                job="headrace-producer",
                grouping={"table": args.table},
                interval_s=m.push_interval_s,
            ),
            producing(metrics, args.table, show=show),
        ):
            return await run_producer(
                settings, args.source, args.table, queue_url=args.queue_url, metrics=metrics
            )

    report = run(go())
    produce_summary(report.as_dict()) if show else _print_json(report.as_dict())
    return INTERRUPTED_EXIT_CODE if report.interrupted else 0


def _health(settings: Settings, args: argparse.Namespace) -> int:
    from headrace.exposition import DEFAULT_PORT, probe

    port = args.port or settings.metrics.port or DEFAULT_PORT
    path = "/readyz" if args.ready else "/healthz"
    ok = probe(port, path, timeout_s=args.timeout)
    print(f"{path} on port {port}: {'ok' if ok else 'not ok'}", file=sys.stderr)
    return 0 if ok else 1


def _worker(settings: Settings, args: argparse.Namespace) -> int:
    from cli.progress import worker_summary, working
    from headrace.metrics import WorkerMetrics, WorkerStats
    from worker.app import run_worker

    show = interactive(args, settings)
    if args.idle_exit is not None:
        settings = settings.model_copy(
            update={"worker": settings.worker.model_copy(update={"idle_exit_s": args.idle_exit})}
        )
    metrics = WorkerMetrics()

    async def go() -> WorkerStats:
        async with working(metrics, show=show):
            return await run_worker(settings, queue_url=args.queue_url, metrics=metrics)

    stats = run(go())
    # What this worker did: a table at a terminal, else JSON for scripts (logs go to stderr).
    worker_summary(stats.as_dict()) if show else _print_json(stats.as_dict())
    return 0 if stats.batch_failures == 0 and stats.task_failures == 0 else 3


def _migrate(settings: Settings) -> int:
    from headrace.db import create_engine, migrate

    async def go() -> None:
        engine = create_engine(settings)
        try:
            await migrate(engine)
        finally:
            await engine.dispose()

    run(go())
    return 0


def _demo(settings: Settings, args: argparse.Namespace) -> int:
    from rich.console import Console

    from cli.demo import run_demo

    result = run(
        run_demo(
            settings, rows=args.rows, data_dir=args.data_dir, reset=args.reset, console=Console()
        )
    )
    return 0 if result.verify.ok else 1


def _generate(args: argparse.Namespace) -> int:
    from cli.datagen import generate_csv

    out = generate_csv(args.path, args.rows, seed=args.seed, bad_ratio=args.bad_ratio)
    _print_json({"path": str(out.path), "rows": out.rows, "bad_rows": out.bad_rows})
    return 0


def _verify(settings: Settings, args: argparse.Namespace) -> int:
    from cli.verify import verify_source
    from headrace.db import create_engine

    async def go() -> bool:
        engine = create_engine(settings)
        try:
            report = await verify_source(settings, engine, args.source, args.table)
        finally:
            await engine.dispose()
        _print_json({**report.__dict__, "ok": report.ok})
        print(report.line(), file=sys.stderr)
        return report.ok

    return 0 if run(go()) else 1


_PRELOAD = {
    "produce": ("producer.app", "producer.sources.s3"),
    "worker": ("worker.app",),
    "demo": ("cli.demo", "producer.app", "worker.app"),
    "verify": ("cli.verify", "producer.reader", "producer.sources.s3"),
}


def _quiet_gc() -> None:
    """Move start-up objects out of the collector's way.

    Imports leave ~10^5 long-lived objects that every full collection would walk again while
    the pipeline allocates millions of short-lived ones; freezing them is the documented
    remedy (gc.freeze) and a larger first generation makes young collections rarer.
    """
    gc.collect()
    gc.freeze()
    gc.set_threshold(50_000, 20, 20)


def _logging_for(args: argparse.Namespace, settings: Settings) -> None:
    if args.command == "demo":
        configure_logging("WARNING", settings.log_format)
    elif interactive(args, settings):  # a progress bar: only warnings, readable
        configure_logging("WARNING", "console")
    else:
        configure_logging(settings.log_level, settings.log_format)


_COMMANDS: dict[str, Callable[[Settings, argparse.Namespace], int]] = {
    "produce": _produce,
    "worker": _worker,
    "migrate": lambda settings, _args: _migrate(settings),
    "health": _health,
    "demo": _demo,
    "generate": lambda _settings, args: _generate(args),
    "verify": _verify,
}


def main(argv: Sequence[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    for module in _PRELOAD.get(args.command, ()):
        importlib.import_module(module)
    _quiet_gc()
    try:
        settings = load_settings()
        if args.command in ("produce", "verify"):
            settings = apply_format_flags(settings, args)
        _logging_for(args, settings)
        if args.command in OPS_COMMANDS:
            return run_ops(settings, args)
        return _COMMANDS[args.command](settings, args)
    except HeadraceError as exc:
        print(f"headrace: error: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
