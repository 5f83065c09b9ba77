"""Progress lines on the terminal while the benchmark runs."""

from __future__ import annotations

import time
from typing import Any

from rich.console import Console

__all__ = ["fmt_rate", "log"]


def log(console: Console, text: str) -> None:
    console.print(f"[dim]{time.strftime('%H:%M:%S')}[/dim] {text}", highlight=False)


def fmt_rate(res: dict[str, Any]) -> str:
    return f"{res['seconds']:.1f} s, {res['rows_per_s']:,.0f} rows/s"
