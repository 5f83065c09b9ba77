"""`make bench`: one run, one throwaway MariaDB, one moto server process, every path measured.

Paths (rows/s always counts *source* rows, bad ones included, over wall time):

1. ceiling: ``LOAD DATA LOCAL INFILE`` of the same CSV, 1 connection and 2 in parallel;
2. sink only: :meth:`worker.sink.Sink.write` on pre-decoded batches, 1/2/4 concurrent sinks;
3. end to end: ``headrace produce`` + 1 or 2 ``headrace worker`` processes through moto,
   from the producer's start to the last commit, then :func:`cli.verify.verify_source`;
4. seed-style: the old pipeline's shape (:mod:`bench.seed`) on a smaller file;
5. CPU seconds and peak RSS of every producer and worker process (``wait4``), and the
   producer's peak RSS on a file ``--rss-multiplier`` times larger;
6. SQS requests and billed 64 KiB units per 1M rows, counted by the moto server process
   (:mod:`bench.motoserver`) and cross-checked against the in-process counters of
   :mod:`headrace.sqs` where the benchmark owns the process (the seed-style programs).

Results: a table on the terminal, ``bench/results/bench-<rows>.json`` and ``.png``
(:mod:`bench.report`).
"""

from __future__ import annotations

import asyncio
import logging
import os
import platform
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from rich.console import Console

from bench import ROOT
from bench.context import MARIADB_ARGS, Context, open_context
from bench.options import Options, parse_args
from bench.procs import sample_forever
from bench.report import finish
from bench.stages.e2e import stage_e2e_all
from bench.stages.latency import stage_latency
from bench.stages.load_data import stage_load_data
from bench.stages.producer_big import stage_producer_big
from bench.stages.producer_options import stage_producer_options
from bench.stages.seed_style import stage_seed
from bench.stages.sink import stage_sink

__all__ = ["main", "run_bench"]


async def run_bench(opts: Options, console: Console) -> dict[str, Any]:
    began = time.perf_counter()
    work = opts.work_dir or Path(tempfile.mkdtemp(prefix="headrace-bench-"))
    work.mkdir(parents=True, exist_ok=True)
    sampler = asyncio.create_task(sample_forever(), name="rss-sampler")
    try:
        async with open_context(opts, console, work) as ctx:
            ctx.results["meta"] = _meta(ctx)
            for ds in ctx.datasets:
                await stage_load_data(ctx, ds)
                await stage_sink(ctx, ds)
                await stage_e2e_all(ctx, ds)
            await stage_seed(ctx)
            await stage_latency(ctx)
            await stage_producer_options(ctx)
            if not opts.skip_rss:
                await stage_producer_big(ctx)
            ctx.results["meta"]["wall_s"] = round(time.perf_counter() - began, 1)
            results = ctx.results
    finally:
        sampler.cancel()
        await asyncio.gather(sampler, return_exceptions=True)
        if not opts.keep and opts.work_dir is None:
            shutil.rmtree(work, ignore_errors=True)
    finish(results, opts.results_dir, console)
    return results


def _meta(ctx: Context) -> dict[str, Any]:
    """What ran, where and with which settings (``wall_s`` is added at the end)."""
    opts = ctx.opts
    return {
        "rows": opts.rows,
        "seed_rows": opts.seed_rows,
        "bad_rows": ctx.bad_rows,
        "tables": {ds.name: {"bad_rows": ds.bad_rows, "key": ds.key} for ds in ctx.datasets},
        "protocols": list(opts.protocols),
        "started_at": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        "cpus": os.cpu_count(),
        "python": platform.python_version(),
        "mariadb": ctx.mariadb.execute("SELECT VERSION()").strip(),
        "mariadb_args": list(MARIADB_ARGS),
        "git": _git_state(),
        "py_spy": str(opts.py_spy_dir) if opts.py_spy_dir else None,
        "settings": {
            "worker": ctx.settings.worker.model_dump(),
            "producer": ctx.settings.producer.model_dump(),
            "db_pool_size": ctx.settings.db.pool_size,
        },
    }


def _git_state() -> dict[str, Any]:
    """The commit measured and the files changed on top of it (results must say what ran)."""

    def git(*args: str) -> str:
        try:
            done = subprocess.run(
                ["git", *args], cwd=ROOT, capture_output=True, text=True, timeout=10, check=False
            )
        except (OSError, subprocess.TimeoutExpired):
            return ""
        return done.stdout if done.returncode == 0 else ""

    changed = [line[3:] for line in git("status", "--porcelain").splitlines() if line.strip()]
    return {"commit": git("rev-parse", "HEAD").strip(), "changed_files": changed}


def main(argv: Sequence[str] | None = None) -> int:
    from headrace.runtime import run

    opts = parse_args(argv)
    # asyncmy logs server notes (e.g. "Name 'pk_x' ignored for PRIMARY key") as warnings.
    logging.getLogger("asyncmy").setLevel(logging.ERROR)
    # Piped (make bench | tee), rich would wrap the tables at 80 columns.
    console = Console() if sys.stdout.isatty() else Console(width=160)
    run(run_bench(opts, console))
    return 0
