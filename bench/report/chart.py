"""The rows/s chart (matplotlib, no display needed): one bar per measured path."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

from bench.report.paths import measured_paths

__all__ = ["write_chart"]


def write_chart(results: dict[str, Any], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    paths = measured_paths(results)
    labels = [p[0] for p in paths]
    values = [float(p[1]["rows_per_s"]) for p in paths]
    colors = []
    for label in labels:
        text = "(text)" in label
        if "LOAD DATA" in label:
            colors.append("#7f7f7f")
        elif "sink only" in label:
            colors.append("#aec7e8" if text else "#1f77b4")
        elif "end to end" in label:
            colors.append("#98df8a" if text else "#2ca02c")
        else:
            colors.append("#d62728")
    fig, ax = plt.subplots(figsize=(10, 0.55 * len(labels) + 1.6))
    y = list(range(len(labels)))[::-1]
    ax.barh(y, values, color=colors)
    ax.set_yticks(y, labels)
    top = max(values) if values else 1.0
    for yi, v in zip(y, values, strict=True):
        ax.text(v + top * 0.01, yi, f"{v:,.0f}", va="center", fontsize=9)
    ax.set_xlim(0, top * 1.18 if math.isfinite(top) else 1)
    ax.set_xlabel("source rows per second (wall time)")
    meta = results["meta"]
    ax.set_title(f"headrace bench: {meta['rows']:,} rows on {meta['cpus']} CPUs")
    ax.grid(axis="x", alpha=0.3)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)
