"""The command line of ``python -m bench``: flags, their defaults and :class:`Options`."""

from __future__ import annotations

import argparse
import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from bench import ROOT

__all__ = ["DEFAULT_RESULTS", "Options", "parse_args"]

DEFAULT_RESULTS = ROOT / "bench" / "results"


@dataclass
class Options:
    rows: int
    seed_rows: int
    rss_multiplier: int
    skip_rss: bool
    results_dir: Path
    work_dir: Path | None
    keep: bool
    sink_concurrency: list[int]
    e2e_workers: list[int]
    envelope_rows: int | None
    seed_handlers: int
    seed_pool: int
    stage_timeout_s: float
    py_spy_dir: Path | None = None
    ceiling_runs: int = 2
    protocols: tuple[str, ...] = ("bulk", "text", "load")
    tables: tuple[str, ...] = ("observations", "trips")
    latency_runs: int = 50


def _ints(text: str) -> list[int]:
    return [int(x) for x in text.split(",") if x.strip()]


def parse_args(argv: Sequence[str] | None = None) -> Options:
    parser = argparse.ArgumentParser(
        prog="python -m bench", description="headrace benchmark (see bench/run.py)"
    )
    parser.add_argument(
        "--rows", type=int, default=int(os.environ.get("BENCH_ROWS", 1_000_000)), help="CSV rows"
    )
    parser.add_argument(
        "--seed-rows",
        type=int,
        default=int(os.environ.get("BENCH_SEED_ROWS", 50_000)),
        help="rows for the seed-style baseline",
    )
    parser.add_argument("--rss-multiplier", type=int, default=5, help="bigger producer-only file")
    parser.add_argument("--skip-rss", action="store_true", help="skip the bigger producer run")
    parser.add_argument("--results-dir", type=Path, default=DEFAULT_RESULTS)
    parser.add_argument("--work-dir", type=Path, help="keep data, logs and datadir here")
    parser.add_argument("--keep", action="store_true", help="keep the temporary work dir")
    parser.add_argument("--sink-concurrency", type=_ints, default=[1, 2, 4])
    parser.add_argument("--e2e-workers", type=_ints, default=[1, 2])
    parser.add_argument(
        "--envelope-rows", type=int, help="rows per envelope for the sink stage (flush_rows/5)"
    )
    parser.add_argument("--seed-handlers", type=int, default=100)
    parser.add_argument("--seed-pool", type=int, default=50)
    parser.add_argument("--stage-timeout", type=float, default=900.0, help="seconds per step")
    parser.add_argument(
        "--ceiling-runs", type=int, default=2, help="LOAD DATA runs per variant (the best counts)"
    )
    parser.add_argument(
        "--py-spy",
        type=Path,
        metavar="DIR",
        help="profile the 1-worker end-to-end run's producer and worker with py-spy (raw "
        "collapsed stacks and SVG flame graphs in DIR; perturbs that run's figures)",
    )
    parser.add_argument(
        "--protocols",
        default="bulk,text,load",
        help="sink and end-to-end paths: bulk (MariaDB COM_STMT_BULK_EXECUTE), text "
        "(multi-row INSERT text, the MySQL protocol Aurora gets by default) and/or load "
        "(LOAD DATA LOCAL INFILE from memory, MySQL protocol too)",
    )
    parser.add_argument(
        "--tables",
        default="observations,trips",
        help="observations (natural key in random order) and/or trips (AUTO_INCREMENT key)",
    )
    parser.add_argument(
        "--latency-runs", type=int, default=50, help="1-row files sent to an idle worker"
    )
    a = parser.parse_args(argv)
    protocols = tuple(p.strip() for p in a.protocols.split(",") if p.strip())
    tables = tuple(t.strip() for t in a.tables.split(",") if t.strip())
    if not set(protocols) <= {"bulk", "text", "load"} or not protocols:
        parser.error("--protocols takes bulk, text and/or load")
    if not set(tables) <= {"observations", "trips"} or "observations" not in tables:
        parser.error("--tables takes observations (always) and trips")
    if a.rows < 100 or a.seed_rows < 10:
        parser.error("--rows must be >= 100 and --seed-rows >= 10")
    return Options(
        rows=a.rows,
        seed_rows=a.seed_rows,
        rss_multiplier=a.rss_multiplier,
        skip_rss=a.skip_rss,
        results_dir=a.results_dir,
        work_dir=a.work_dir,
        keep=a.keep,
        sink_concurrency=a.sink_concurrency,
        e2e_workers=a.e2e_workers,
        envelope_rows=a.envelope_rows,
        seed_handlers=a.seed_handlers,
        seed_pool=a.seed_pool,
        stage_timeout_s=a.stage_timeout,
        py_spy_dir=a.py_spy,
        ceiling_runs=max(1, a.ceiling_runs),
        protocols=protocols,
        tables=tables,
        latency_runs=max(0, a.latency_runs),
    )
