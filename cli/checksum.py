"""Row checksums for verification: one canonical text per value, whatever side it came from.

The source side has the text the producer's typing accepted (``"+7"``, ``"12.5"``, ``"yes"``,
``"2026-11-23T00:00"``); the target side has what the database driver returns (``7``,
``Decimal("12.50")``, ``1``, ``datetime``). :func:`canonical` maps both to the same text per
column kind; :func:`row_digests` hashes each row's canonical text (64-bit BLAKE2b) and
:func:`row_checksum` sums the digests, so the (count, checksum) of a set of rows does not
depend on their order but changes when a row is missing, doubled or different.

A row's text is its values, each prefixed with its length (``-`` for NULL), so no value can
pass for another split differently (a ``\\x1f`` inside a value, or a text ``\\N`` for NULL).
Both sides are canonical per kind: DATETIME/DATE as ISO text (typing refuses fractions the
column would round), TIME as signed microseconds, FLOAT (single precision) as the column
stores it to 6 significant digits (all the text protocol returns) and DOUBLE by ``repr``,
without a negative zero (the database stores 0).
"""

from __future__ import annotations

import datetime as dt
import decimal
import hashlib
import re
import struct
from collections.abc import Callable, Iterable, Iterator, Sequence
from decimal import Decimal
from typing import Any

from headrace.rules import BOOL_WORDS
from headrace.schema import ColumnSpec

__all__ = ["canonical", "row_checksum", "row_digests"]

Canon = Callable[[Any], str]


def row_digests(specs: Sequence[ColumnSpec], rows: Iterable[Sequence[Any]]) -> Iterator[int]:
    """A 64-bit BLAKE2b digest of each row's canonical text (per column type)."""
    canons = [_value_canon(spec) for spec in specs]
    for row in rows:
        text = "".join(
            "-" if v is None else _framed(c(v)) for c, v in zip(canons, row, strict=True)
        )
        digest = hashlib.blake2b(text.encode("utf-8", "surrogatepass"), digest_size=8).digest()
        yield int.from_bytes(digest, "big")


def row_checksum(specs: Sequence[ColumnSpec], rows: Iterable[Sequence[Any]]) -> tuple[int, int]:
    """Order-independent (count, checksum) of rows: the count and sum of their digests."""
    count = 0
    total = 0
    for digest in row_digests(specs, rows):
        total = (total + digest) & 0xFFFFFFFFFFFFFFFF
        count += 1
    return count, total


def _framed(text: str) -> str:
    return f"{len(text)}:{text}"


def _value_canon(spec: ColumnSpec) -> Canon:
    """The canonical text of a (non-NULL) value of ``spec``'s column."""
    if spec.kind == "decimal":
        return _canon_decimal(spec.scale or 0)
    if spec.kind == "float" and _single_precision(spec.sql_type):
        return _canon_float32
    return _CANONS.get(spec.kind, _canon_str)


def _single_precision(sql_type: str) -> bool:
    """FLOAT, FLOAT(p) with p <= 24 (MySQL stores FLOAT(25..53) as DOUBLE)."""
    m = re.fullmatch(r"FLOAT(?:\((\d+)\))?.*", sql_type)
    return m is not None and (m.group(1) is None or int(m.group(1)) <= 24)


def canonical(spec: ColumnSpec) -> Canon:
    """The canonical text of a value of ``spec``'s column; ``\\N`` for NULL."""
    fn = _value_canon(spec)

    def canon(v: Any) -> str:
        return "\\N" if v is None else fn(v)

    return canon


def _canon_int(v: Any) -> str:
    return str(int(v))


_DECIMAL_CONTEXT = decimal.Context(prec=80)  # DECIMAL(65, 30) needs more than the default 28


def _canon_decimal(scale: int) -> Canon:
    quantum = Decimal(1).scaleb(-scale)

    def canon(v: Any) -> str:
        d = Decimal(str(v)).quantize(quantum, context=_DECIMAL_CONTEXT)
        return str(d.copy_abs() if d.is_zero() else d)  # the database has no -0

    return canon


def _canon_float(v: Any) -> str:
    return repr(float(v) + 0.0)  # + 0.0: -0.0 becomes 0.0


def _canon_float32(v: Any) -> str:
    """A FLOAT (single precision) as MariaDB's text protocol shows it: the stored value to 6
    significant digits (the binary protocol gives the stored value widened to a double)."""
    (single,) = struct.unpack("<f", struct.pack("<f", float(v)))
    return f"{single + 0.0:.6g}"


_TIME_TEXT = re.compile(r"(-?)(\d+):(\d{2})(?::(\d{2})(?:\.(\d{1,6}))?)?")


def _canon_time(v: Any) -> str:
    """TIME as signed microseconds: text ``-1:02:03.5`` and ``timedelta`` alike."""
    if isinstance(v, dt.timedelta):
        return str((v.days * 86_400 + v.seconds) * 1_000_000 + v.microseconds)
    m = _TIME_TEXT.fullmatch(str(v))
    if m is None:
        return str(v)
    sign, hours, minutes, seconds, frac = m.groups()
    micros = (int(hours) * 3600 + int(minutes) * 60 + int(seconds or 0)) * 1_000_000
    micros += int((frac or "").ljust(6, "0"))
    return str(-micros if sign else micros)


def _canon_bool(v: Any) -> str:
    if isinstance(v, str):
        return BOOL_WORDS.get(v.strip().lower(), v)
    return "1" if v else "0"


def _canon_datetime(v: Any) -> str:
    if isinstance(v, str):
        v = dt.datetime.fromisoformat(v)
    return str(v.isoformat(sep=" "))


def _canon_date(v: Any) -> str:
    if isinstance(v, str):
        v = dt.date.fromisoformat(v)
    return str(v.isoformat())


def _canon_str(v: Any) -> str:
    return v.decode("utf-8", "surrogateescape") if isinstance(v, bytes) else str(v)


_CANONS: dict[str, Canon] = {
    "int": _canon_int,
    "float": _canon_float,
    "bool": _canon_bool,
    "datetime": _canon_datetime,
    "date": _canon_date,
    "time": _canon_time,
}
"""The canonical form of each kind but decimal (by scale); the others' text is the value."""
