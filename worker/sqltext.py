"""Multi-row ``INSERT … VALUES`` text for servers without MariaDB's bulk protocol (MySQL,
Aurora MySQL): values escaped a column at a time, rows joined, statements cut to a size.

Every value is sent as a quoted string literal (``NULL`` for None), exactly as the bulk
protocol sends it as a string parameter: the server converts it to the column's type under
the session's strict ``sql_mode``, so a value that does not fit is refused, never coerced,
on both paths. Escaping follows ``mysql_real_escape_string`` for a session without
``NO_BACKSLASH_ESCAPES`` (:func:`headrace.db.create_engine` sets the session's mode).

A column whose values hold no character that needs escaping (the common case: numbers,
dates, plain text) is quoted with one ``join`` and one ``split`` instead of per value.
"""

from __future__ import annotations

import re
from collections.abc import Iterator, Sequence

__all__ = ["ESCAPES", "quote_column", "row_texts", "statement_slices"]

ESCAPES = str.maketrans(
    {
        "\x00": "\\0",
        "\n": "\\n",
        "\r": "\\r",
        "\x1a": "\\Z",
        "'": "\\'",
        '"': '\\"',
        "\\": "\\\\",
    }
)
_NEEDS_ESCAPE = re.compile("[\x00\n\r\x1a'\"\\\\]")


def quote_column(values: Sequence[str | None]) -> list[str]:
    """Each value as an SQL literal: ``'escaped text'``, or ``NULL`` for None."""
    if not values:
        return []
    if None not in values:
        text: list[str] = values  # type: ignore[assignment]  # no None: all str
        if _NEEDS_ESCAPE.search("".join(text)) is None:
            # No value holds "\n" (it would have matched), so it separates them safely.
            return ("'" + "'\n'".join(text) + "'").split("\n")
    return ["NULL" if v is None else "'" + v.translate(ESCAPES) + "'" for v in values]


def row_texts(columns: Sequence[Sequence[str | None]]) -> list[str]:
    """``'a','b',NULL`` for every row of column-major ``columns`` (all the same length)."""
    quoted = [quote_column(col) for col in columns]
    return list(map(",".join, zip(*quoted, strict=True)))


def statement_slices(
    rows: Sequence[str], lo: int, hi: int, budget: int
) -> Iterator[tuple[int, int]]:
    """Cut ``rows[lo:hi]`` into runs of at most ``budget`` characters of row text (a row
    bigger than the budget goes alone)."""
    start = lo
    size = 0
    for i in range(lo, hi):
        n = len(rows[i]) + 3  # "(" + row + "),"
        if size and size + n > budget:
            yield start, i
            start, size = i, 0
        size += n
    if start < hi:
        yield start, hi
