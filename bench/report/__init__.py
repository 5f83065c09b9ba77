"""The results of a run: derived figures, the terminal tables, the JSON file and the chart.

:func:`finish` is the whole of it; :mod:`~bench.report.derive` adds ratios and targets,
:mod:`~bench.report.tables` prints, :mod:`~bench.report.chart` draws.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from rich.console import Console

from bench.report.chart import write_chart
from bench.report.derive import TARGETS, derive
from bench.report.tables import print_tables

__all__ = ["TARGETS", "derive", "finish", "print_tables", "write_chart"]


def finish(results: dict[str, Any], results_dir: Path, console: Console) -> None:
    derive(results)
    print_tables(results, console)
    results_dir.mkdir(parents=True, exist_ok=True)
    rows = results["meta"]["rows"]
    json_path = results_dir / f"bench-{rows}.json"
    png_path = results_dir / f"bench-{rows}.png"
    tmp = json_path.with_suffix(".json.tmp")
    tmp.write_text(json.dumps(results, indent=2, sort_keys=False) + "\n")
    tmp.replace(json_path)
    write_chart(results, png_path)
    results["files"] = {"json": str(json_path), "png": str(png_path)}
    console.print(f"results: {json_path}, {png_path}")
