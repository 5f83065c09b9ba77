"""Escaping a column of values for a text format, a column at a time (INSERT text, LOAD DATA)."""

from __future__ import annotations

import re
from collections.abc import Sequence

__all__ = ["escape_column"]


def escape_column(
    values: Sequence[str | None], *, needs: re.Pattern[str], table: dict[int, str], null: str
) -> Sequence[str]:
    """The column's values with ``table`` applied (``str.translate``), None as ``null``.

    Per-value work only when the column holds a character ``needs`` finds or a None: a clean
    column comes back as the same object."""
    try:
        joined = "".join(values)  # type: ignore[arg-type]  # TypeError: a None among them
    except TypeError:
        joined = None
    if joined is not None:
        text: Sequence[str] = values  # type: ignore[assignment]  # no None: all str
        if needs.search(joined) is None:
            return text
        return [v.translate(table) for v in text]
    if needs.search("".join(filter(None, values))) is None:
        return [null if v is None else v for v in values]
    return [null if v is None else v.translate(table) for v in values]
