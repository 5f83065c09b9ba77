"""Stage 1, the ceiling: the server's own bulk loader on the same CSV, 1 and 2 connections."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path
from typing import Any

from bench.context import DATABASE, Context
from bench.datasets import Dataset
from bench.measure import children_cpu_s, cpu_delta
from bench.progress import fmt_rate, log
from headrace.db import STRICT_SQL_MODE

__all__ = ["stage_load_data"]

LOAD_SQL = """
LOAD DATA LOCAL INFILE %s IGNORE INTO TABLE {table}
CHARACTER SET utf8mb4
FIELDS TERMINATED BY ',' OPTIONALLY ENCLOSED BY '"' ESCAPED BY ''
LINES TERMINATED BY '\\n'
IGNORE 1 LINES
{columns}
"""


def _split_csv(path: Path, parts: int, out_dir: Path) -> list[Path]:
    with path.open("rb") as fh:
        header = fh.readline()
        lines = fh.readlines()
    size = -(-len(lines) // parts)
    out: list[Path] = []
    for i in range(parts):
        part = out_dir / f"{path.stem}.part{i}.csv"
        with part.open("wb") as fh:
            fh.write(header)
            fh.writelines(lines[i * size : (i + 1) * size])
        out.append(part)
    return out


async def _load_data(ctx: Context, ds: Dataset, files: list[Path]) -> dict[str, Any]:
    """One ``mariadb --local-infile`` client per file, all at once (asyncmy 0.2.18 cannot:
    its LOAD DATA LOCAL handler rejects the file name the server sends back as bytes)."""
    base = ctx.mariadb.client_command(
        "--local-infile=1", "--batch", "--skip-column-names", DATABASE, "--execute"
    )

    def sql(path: Path) -> str:
        quoted = str(path).replace("\\", "\\\\").replace("'", "\\'")
        return (
            f"SET SESSION sql_mode = '{STRICT_SQL_MODE}', time_zone = '+00:00';\n"
            + LOAD_SQL.format(table=ds.name, columns=ds.load_columns).replace("%s", f"'{quoted}'")
            + ";\nSELECT @@warning_count, ROW_COUNT();"
        )

    async def one(path: Path) -> tuple[int, int]:
        proc = await asyncio.create_subprocess_exec(
            *base, sql(path), stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE
        )
        out, err = await proc.communicate()
        if proc.returncode != 0:
            raise RuntimeError(f"LOAD DATA failed ({proc.returncode}): {err.decode()[-2000:]}")
        warnings, loaded = out.decode().split()[-2:]
        return int(loaded), int(warnings)

    before = ctx.cpu_now()
    before["mariadb_client"] = children_cpu_s()
    started = time.perf_counter()
    done = await asyncio.gather(*(one(f) for f in files))
    seconds = time.perf_counter() - started
    after = ctx.cpu_now()
    after["mariadb_client"] = children_cpu_s()  # the clients, reaped in the window
    cpu = cpu_delta(after, before)
    loaded = sum(d[0] for d in done)
    in_table = await ctx.count(ds.table)
    if in_table != loaded:
        raise RuntimeError(f"LOAD DATA reported {loaded} rows, the table holds {in_table}")
    return {
        "connections": len(files),
        "seconds": round(seconds, 3),
        "rows": ctx.opts.rows,
        "rows_per_s": ctx.opts.rows / seconds,
        "rows_loaded": loaded,
        "warnings": sum(d[1] for d in done),
        "cpu_s": cpu,
    }


async def stage_load_data(ctx: Context, ds: Dataset) -> None:
    """The ceiling, each variant run ``--ceiling-runs`` times keeping the fastest: a ceiling
    slowed by a passing disturbance would flatter every ratio measured against it."""
    out: dict[str, Any] = {}
    halves = _split_csv(ds.csv_path, 2, ctx.work)  # not timed
    for key, files in (("1", [ds.csv_path]), ("2", halves)):
        runs = []
        for _ in range(ctx.opts.ceiling_runs):
            await ctx.truncate()
            runs.append(await _load_data(ctx, ds, files))
        best = max(runs, key=lambda r: float(r["rows_per_s"]))
        out[key] = {**best, "runs": len(runs), "all_rows_per_s": [r["rows_per_s"] for r in runs]}
        shown = ", ".join(f"{r['rows_per_s']:,.0f}" for r in runs)
        log(
            ctx.console,
            f"{ds.name}: LOAD DATA, {key} connection(s): best of {len(runs)}: "
            f"{fmt_rate(best)} ({shown})",
        )
    for half in halves:
        half.unlink()
    await ctx.truncate()
    ctx.results[ds.section("load_data")] = out
