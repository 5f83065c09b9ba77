"""How the operator commands print: a rich table for people, JSON for scripts."""

from __future__ import annotations

import datetime as dt
import os
import re
import sys
from collections.abc import Sequence
from typing import Any

import orjson
from rich.console import Console
from rich.table import Table

from headrace.errors import ConfigError

__all__ = ["ago", "console", "duration", "parse_age", "print_json", "table", "utcnow"]

_AGE = re.compile(r"(\d+)\s*([smhdw])", re.ASCII)
_UNIT_S = {"s": 1, "m": 60, "h": 3600, "d": 86_400, "w": 7 * 86_400}


def parse_age(text: str) -> dt.timedelta:
    """``30d``, ``12h``, ``1w2d``, ``90m``, ``45s`` (a number alone is days)."""
    value = text.strip().lower()
    if value.isdigit():
        return dt.timedelta(days=int(value))
    parts = _AGE.findall(value)
    if not parts or _AGE.sub("", value).strip():
        raise ConfigError(f"not a duration: {text!r} (use e.g. 90m, 12h, 1d, 2w)")
    return dt.timedelta(seconds=sum(int(n) * _UNIT_S[u] for n, u in parts))


def utcnow() -> dt.datetime:
    """Now, as the naive UTC the tables store."""
    return dt.datetime.now(dt.UTC).replace(tzinfo=None)


def ago(when: dt.datetime | None, now: dt.datetime | None = None) -> str:
    if when is None:
        return "-"
    seconds = int(((now or utcnow()) - when).total_seconds())
    for unit, size in (("d", 86_400), ("h", 3600), ("m", 60)):
        if seconds >= size:
            return f"{seconds // size}{unit} ago"
    return f"{max(seconds, 0)}s ago"


def duration(delta: dt.timedelta) -> str:
    """``14d``, ``4d 6h``, ``90m``: a period as `parse_age` reads it."""
    seconds = int(delta.total_seconds())
    parts = []
    for unit, size in (("d", 86_400), ("h", 3600), ("m", 60), ("s", 1)):
        if seconds >= size:
            parts.append(f"{seconds // size}{unit}")
            seconds %= size
    return " ".join(parts) or "0s"


def print_json(obj: object) -> None:
    sys.stdout.write(
        orjson.dumps(obj, option=orjson.OPT_INDENT_2 | orjson.OPT_NAIVE_UTC).decode() + "\n"
    )


def console() -> Console:
    """stdout for the answer (stderr keeps the logs); no colours when it is not a terminal."""
    # Piped: no folding at 80 columns, unless COLUMNS says how wide.
    wide = None if sys.stdout.isatty() or "COLUMNS" in os.environ else 200
    return Console(highlight=False, soft_wrap=False, width=wide)


def table(title: str, columns: Sequence[str], rows: Sequence[Sequence[Any]]) -> Table:
    out = Table(title=title, title_justify="left")
    for i, name in enumerate(columns):
        numeric = name in ("read", "sent", "inserted", "dup", "rejected", "count", "receives")
        out.add_column(  # numbers and the first column (an id) never wrap
            name, justify="right" if numeric else "left", no_wrap=numeric or i == 0
        )
    for row in rows:
        out.add_row(*("-" if v is None else str(v) for v in row))
    return out
