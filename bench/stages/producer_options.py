"""Stage 6, typing cost of the reading options (issue 12): the producer alone on the
observations file as generated, then on the same rows written the way two real exports write
them, each read with the options that file needs. The rewritten files carry the same values,
so every variant must send and reject the same rows; CPU-s per 1M rows are compared."""

from __future__ import annotations

import csv
from collections.abc import Callable
from pathlib import Path
from typing import Any

from bench.context import Context
from bench.progress import log

__all__ = ["VARIANTS", "stage_producer_options"]

Row = list[str]


def _r_style(row: Row) -> Row:
    """R's write.csv: NA for a missing value, ISO 8601 timestamps in UTC with a Z."""
    observed_at, *rest = row
    return [observed_at.replace(" ", "T") + "Z", *(v if v else "NA" for v in rest)]


def _european(row: Row) -> Row:
    """A European BI export: dd.mm.yyyy timestamps, decimal comma, ja/nein."""
    observed_at, bot_id, sku, price, quantity, in_stock, title, note = row
    day, clock = observed_at.split(" ")
    y, m, d = day.split("-")
    word = {"true": "ja", "false": "nein"}.get(in_stock, in_stock)
    return [
        f"{d}.{m}.{y} {clock}",
        bot_id,
        sku,
        price.replace(".", ","),
        quantity,
        word,
        title,
        note,
    ]


VARIANTS: dict[str, tuple[str, Callable[[Row], Row] | None, str, tuple[str, ...]]] = {
    # name: (label, rewrite, delimiter, options)
    "default": ("as generated, no options", None, ",", ()),
    "r_style": ("R write.csv: --null NA, ISO 8601 Z", _r_style, ",", ("--null", "NA")),
    "european": (
        "European: ';', --decimal-comma, --datetime-format, --true/--false",
        _european,
        ";",
        (
            "--delimiter",
            ";",
            "--decimal-comma",
            "--datetime-format",
            "%d.%m.%Y %H:%M:%S",
            "--true",
            "ja",
            "--false",
            "nein",
        ),
    ),
}


def _rewrite(src: Path, dst: Path, rewrite: Callable[[Row], Row], delimiter: str) -> None:
    with src.open(newline="") as fin, dst.open("w", newline="") as fout:
        reader = csv.reader(fin)
        writer = csv.writer(fout, delimiter=delimiter, lineterminator="\n")
        writer.writerow(next(reader))
        writer.writerows(rewrite(row) for row in reader)


async def stage_producer_options(ctx: Context) -> None:
    out: dict[str, Any] = {}
    for name, (label, rewrite, delimiter, options) in VARIANTS.items():
        path = ctx.csv_path
        if rewrite is not None:  # not timed
            path = ctx.work / f"observations-{name}.csv"
            _rewrite(ctx.csv_path, path, rewrite, delimiter)
        tag = name.replace("_", "-")
        report, usage = await ctx.produce_alone(tag, path, options, ctx.opts.stage_timeout_s)
        if rewrite is not None:
            path.unlink()
        run: dict[str, Any] = {"producer": usage.as_dict(), "seconds": round(usage.wall_s, 3)}
        run.update(
            label=label,
            options=list(options),
            rows=ctx.opts.rows,
            rows_sent=int(report["rows_sent"]),
            rows_rejected=int(report["rows_rejected"]),
        )
        out[name] = run
        first = out["default"]
        if (run["rows_sent"], run["rows_rejected"]) != (first["rows_sent"], first["rows_rejected"]):
            raise RuntimeError(f"producer ({name}) typed the same rows differently: {run}")
        run["cpu_vs_default"] = round(run["producer"]["cpu_s"] / first["producer"]["cpu_s"], 3)
        log(
            ctx.console,
            f"producer only, {label}: {run['producer']['cpu_s']:.1f} CPU-s "
            f"({run['cpu_vs_default']:.2f}x default)",
        )
    await ctx.truncate()
    ctx.results["producer_options"] = out
