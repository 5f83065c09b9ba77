"""Multi-row ``INSERT … VALUES`` text for servers without MariaDB's bulk protocol (MySQL,
Aurora MySQL): values escaped a column at a time, rows joined, statements cut to a size.

Every value is sent as a quoted string literal (``NULL`` for None), exactly as the bulk
protocol sends it as a string parameter: the server converts it to the column's type under
the session's strict ``sql_mode``, so a value that does not fit is refused, never coerced,
on both paths. Escaping follows ``mysql_real_escape_string`` for a session without
``NO_BACKSLASH_ESCAPES`` (:func:`headrace.db.create_engine` sets the session's mode).

The work is done a column or a statement at a time in C (``join``, ``translate``,
``replace``, one regular-expression scan per column), not value by value: a column needs
per-value work only when it holds a character to escape or a NULL. A row's text is its
values joined by ``','`` (the outer quotes come with the statement's ``('`` … ``')``
separators), and a NULL travels as :data:`NULL_MARK` until the statement replaces
``'<mark>'`` with ``NULL``: escaped text never holds a raw NUL, so the mark is unambiguous.
"""

from __future__ import annotations

import bisect
import itertools
import operator
import re
from collections.abc import Iterator, Sequence

__all__ = ["ESCAPES", "NULL_MARK", "RowTexts", "escape_column"]

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
NULL_MARK = "\x00N"
_QUOTED_NULL = f"'{NULL_MARK}'"


def escape_column(values: Sequence[str | None]) -> Sequence[str]:
    """The column's values escaped for a quoted literal, None as :data:`NULL_MARK`."""
    try:
        joined = "".join(values)  # type: ignore[arg-type]  # TypeError: a None among them
    except TypeError:
        joined = None
    if joined is not None:
        text: Sequence[str] = values  # type: ignore[assignment]  # no None: all str
        if _NEEDS_ESCAPE.search(joined) is None:
            return text
        return [v.translate(ESCAPES) for v in text]
    clean = _NEEDS_ESCAPE.search("".join(filter(None, values))) is None
    if clean:
        return [NULL_MARK if v is None else v for v in values]
    return [NULL_MARK if v is None else v.translate(ESCAPES) for v in values]


class RowTexts:
    """A batch's rows as SQL text, cut into statements by index range.

    ``columns`` are column-major values (all the same length); :meth:`values` gives the
    ``VALUES`` list of rows ``lo..hi``, :meth:`slices` cuts a range into runs of at most
    ``budget`` characters.
    """

    def __init__(self, columns: Sequence[Sequence[str | None]]) -> None:
        escaped = [escape_column(col) for col in columns]
        self._rows: list[str] = list(map("','".join, zip(*escaped, strict=True)))
        # key[i] = characters of rows [0, i) with their "('", "')," wrapping: cut points by
        # bisection, no per-row Python.
        lengths = itertools.accumulate(map(len, self._rows), initial=0)
        self._key = list(map(operator.add, lengths, range(0, 5 * len(self._rows) + 1, 5)))

    def __len__(self) -> int:
        return len(self._rows)

    def chars(self, lo: int, hi: int) -> int:
        """Characters of the ``VALUES`` list of rows ``lo..hi`` (NULLs counted as marks)."""
        return int(self._key[hi] - self._key[lo])

    def values(self, lo: int, hi: int) -> str:
        """``('a','b',NULL),(…)`` for rows ``lo..hi``."""
        text = "('" + "'),('".join(self._rows[lo:hi]) + "')"
        return text.replace(_QUOTED_NULL, "NULL")  # a C scan; nothing to do without NULLs

    def slices(self, lo: int, hi: int, budget: int) -> Iterator[tuple[int, int]]:
        """Cut ``lo..hi`` into runs of at most ``budget`` characters (a bigger row alone)."""
        key = self._key
        while lo < hi:
            end = bisect.bisect_right(key, key[lo] + budget, lo + 1, hi + 1) - 1
            end = max(end, lo + 1)
            yield lo, end
            lo = end
