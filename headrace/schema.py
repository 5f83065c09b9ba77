"""The target table as reflected from the database, and how CSV text is typed against it.

Identifiers used in SQL only ever come from here (the reflected table), never from a CSV
header or a message: a header name is looked up in :class:`TableSchema` and rejected when
absent.

Values travel as text and are checked here, column by column, before they are sent: a chunk of
rows is transposed and each column is checked with C-level ``map``/``max`` calls, falling back
to value-by-value checks only in a column that failed (to find the rows and say why). The
database still runs in strict ``sql_mode`` as the second line of defence.

Empty fields: an empty field is NULL when the column is nullable; otherwise it is the empty
string for text columns and an error for every other type.
"""

from __future__ import annotations

import csv
import datetime as dt
import decimal
import hashlib
import io
import re
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from decimal import Decimal, InvalidOperation
from typing import Any

import sqlalchemy as sa
from sqlalchemy import types as satypes
from sqlalchemy.dialects import mysql
from sqlalchemy.ext.asyncio import AsyncConnection

from headrace.errors import SchemaError
from headrace.tables import INTERNAL_TABLES

__all__ = [
    "ColumnSpec",
    "Reject",
    "TableSchema",
    "ValidatedChunk",
    "drop_indices",
    "reflect_table",
    "row_text",
]

MAX_RAW_CHARS = 4096

# re.ASCII: \d must not match other scripts' digits (int("١٢") works, MySQL refuses it).
_INT_RE = re.compile(r"[+-]?\d+", re.ASCII)
_DATETIME_RE = re.compile(
    r"\d{4}-\d{2}-\d{2}(?:[ T]\d{2}:\d{2}(?::\d{2}(?:\.\d{1,6})?)?)?", re.ASCII
)
_DATE_RE = re.compile(r"\d{4}-\d{2}-\d{2}", re.ASCII)
# Calendar-exact forms for the fast path: every month/day pair that exists in any year (only
# 02-29 then needs a leap-year check) and times within 00:00:00..23:59:59.
_MONTH_DAY = (
    r"(?:(?:0[1-9]|1[0-2])-(?:0[1-9]|1\d|2[0-8])|(?:0[13-9]|1[0-2])-(?:29|30)"
    r"|(?:0[13578]|1[02])-31|02-29)"
)
_STRICT_DATE_RE = re.compile(rf"\d{{4}}-{_MONTH_DAY}", re.ASCII)
_STRICT_DATETIME_RE = re.compile(
    rf"\d{{4}}-{_MONTH_DAY}(?: (?:[01]\d|2[0-3]):[0-5]\d(?::[0-5]\d(?:\.\d{{1,6}})?)?)?",
    re.ASCII,
)
_TIME_RE = re.compile(r"-?\d{1,3}:\d{2}(?::\d{2}(?:\.\d{1,6})?)?", re.ASCII)
_FLOAT_RE = re.compile(r"[+-]?(?:\d+\.?\d*|\.\d+)(?:[eE][+-]?\d+)?", re.ASCII)
_BOOL_WORDS = {
    "1": "1",
    "0": "0",
    "true": "1",
    "false": "0",
    "t": "1",
    "f": "0",
    "yes": "1",
    "no": "0",
    "y": "1",
    "n": "0",
}
_INT_RANGES = {
    "TINYINT": 8,
    "SMALLINT": 16,
    "MEDIUMINT": 24,
    "INTEGER": 32,
    "INT": 32,
    "BIGINT": 64,
}
_TEXT_BYTES = {"TINYTEXT": 255, "TEXT": 65_535, "MEDIUMTEXT": 16_777_215, "LONGTEXT": 4_294_967_295}

Check = Callable[[str], str | None]
"""Value check: returns the normalised text, or raises ``ValueError`` with the reason."""
Fast = Callable[[Sequence[str]], Sequence[str | None] | None]
"""Column check in C-level calls: the (normalised) column when every value is valid and none
is empty, else None, and the column is checked value by value."""


@dataclass(frozen=True)
class Reject:
    """A source row that will not be inserted, and why."""

    line: int
    raw: str
    reason: str


@dataclass
class ValidatedChunk:
    columns: list[Sequence[str | None]]  # column-major: one sequence per column
    lines: list[int]
    rejects: list[Reject]

    @property
    def rows(self) -> list[tuple[str | None, ...]]:
        return list(zip(*self.columns, strict=True)) if self.lines else []


@dataclass(frozen=True)
class ColumnSpec:
    """One writable column of the target table and the rules for its text."""

    name: str
    kind: str  # int, decimal, float, bool, datetime, date, time, string, text, enum, other
    sql_type: str
    nullable: bool
    has_default: bool
    check: Check
    fast: Fast
    canon: Callable[[Any], str]
    max_chars: int | None = None  # longest valid text (after normalising); None: unbounded

    @property
    def required(self) -> bool:
        return not (self.nullable or self.has_default)


@dataclass
class TableSchema:
    """A reflected target table: the allow-list for every identifier headrace puts in SQL."""

    table: sa.Table
    columns: dict[str, ColumnSpec]
    unique_keys: list[tuple[str, ...]] = field(default_factory=list)

    @classmethod
    def from_table(
        cls, table: sa.Table, unique_keys: Sequence[tuple[str, ...]] = ()
    ) -> TableSchema:
        specs: dict[str, ColumnSpec] = {}
        for column in table.columns:
            spec = _spec_for(column)
            if spec is not None:
                specs[spec.name] = spec
        return cls(table=table, columns=specs, unique_keys=list(unique_keys))

    @property
    def name(self) -> str:
        return str(self.table.name)

    def resolve_header(self, header: Sequence[str], *, source: str) -> list[ColumnSpec]:
        """Map a CSV header onto table columns, refusing anything not in the table."""
        from headrace.errors import InputError

        names = list(header)
        if names and names[0].startswith("\ufeff"):
            names[0] = names[0][1:]
        if not names or all(not n.strip() for n in names):
            raise InputError("the header line is empty", source=source, line=1)
        seen: dict[str, int] = {}
        specs: list[ColumnSpec] = []
        for index, raw in enumerate(names, start=1):
            name = raw.strip()
            if not name:
                raise InputError(
                    "empty column name in the header", source=source, line=1, column=index
                )
            key = name.lower()
            if key in seen:
                raise InputError(
                    f"duplicate column {name!r} in the header (also column {seen[key]})",
                    source=source,
                    line=1,
                    column=index,
                )
            seen[key] = index
            spec = self._lookup(key)
            if spec is None:
                shown = name if len(name) <= 64 else name[:61] + "..."
                raise InputError(
                    f"column {shown!r} is not a writable column of table {self.name!r} "
                    f"(columns: {', '.join(self.columns)})",
                    source=source,
                    line=1,
                    column=index,
                )
            specs.append(spec)
        chosen = {s.name for s in specs}
        missing = [s.name for s in self.columns.values() if s.required and s.name not in chosen]
        if missing:
            raise InputError(
                f"the header lacks required column(s) of table {self.name!r}: "
                f"{', '.join(missing)} (NOT NULL without a default)",
                source=source,
                line=1,
            )
        return specs

    def _lookup(self, key: str) -> ColumnSpec | None:
        for name, spec in self.columns.items():
            if name.lower() == key:
                return spec
        return None

    def specs_for(self, names: Sequence[str]) -> list[ColumnSpec]:
        """Specs for column names from a message; raises SchemaError for any unknown name."""
        try:
            return [self.columns[n] for n in names]
        except KeyError as exc:
            raise SchemaError(f"column {exc.args[0]!r} is not in table {self.name!r}") from None

    def validate(
        self, specs: Sequence[ColumnSpec], rows: list[list[str]], lines: list[int]
    ) -> ValidatedChunk:
        """Check and normalise a chunk of parsed CSV rows; bad rows become rejects."""
        width = len(specs)
        rejects: list[Reject] = []
        if any(len(r) != width for r in rows):
            keep_rows: list[list[str]] = []
            keep_lines: list[int] = []
            for row, line in zip(rows, lines, strict=True):
                if len(row) == width:
                    keep_rows.append(row)
                    keep_lines.append(line)
                else:
                    rejects.append(
                        Reject(line, row_text(row), f"expected {width} fields, found {len(row)}")
                    )
            rows, lines = keep_rows, keep_lines
        if not rows:
            return ValidatedChunk([[] for _ in specs], [], rejects)
        raw_cols: list[tuple[str, ...]] = list(zip(*rows, strict=True))
        bad: dict[int, str] = {}
        columns = [
            _check_column(spec, ci, col, 0, bad)
            for ci, (spec, col) in enumerate(zip(specs, raw_cols, strict=True))
        ]
        if bad:
            order = sorted(bad)
            for ri in order:
                rejects.append(Reject(lines[ri], row_text(rows[ri]), bad[ri]))
            columns = [drop_indices(col, order) for col in columns]
            lines = drop_indices(lines, order)
        rejects.sort(key=lambda r: r.line)
        return ValidatedChunk(columns, list(lines), rejects)

    def row_digests(self, names: Sequence[str], rows: Iterable[Sequence[Any]]) -> Iterator[int]:
        """A 64-bit BLAKE2b digest of each row's canonical text (per column type)."""
        canons = [self.columns[n].canon for n in names]
        for row in rows:
            text = "\x1f".join(c(v) for c, v in zip(canons, row, strict=True))
            digest = hashlib.blake2b(text.encode("utf-8", "surrogatepass"), digest_size=8).digest()
            yield int.from_bytes(digest, "big")

    def row_checksum(self, names: Sequence[str], rows: Iterable[Sequence[Any]]) -> tuple[int, int]:
        """Order-independent (count, checksum) of rows: the count and sum of their digests."""
        count = 0
        total = 0
        for digest in self.row_digests(names, rows):
            total = (total + digest) & 0xFFFFFFFFFFFFFFFF
            count += 1
        return count, total


_SMALLEST_BLOCK = 16


def _check_column(
    spec: ColumnSpec, ci: int, col: Sequence[str], base: int, bad: dict[int, str]
) -> Sequence[str | None]:
    """Check a column with the C-level fast path; narrow down to the bad values when it fails.

    A failing column is re-checked in 16 blocks, recursively, and only failing blocks of
    ``_SMALLEST_BLOCK`` values are checked value by value: a chunk with a few bad values costs
    about one more pass of fast checks. Reasons go to ``bad`` (row index -> first reason).
    """
    fast = spec.fast(col)
    if fast is not None:
        return fast
    if len(col) > _SMALLEST_BLOCK:
        size = max(_SMALLEST_BLOCK, -(-len(col) // 16))
        out_blocks: list[str | None] = []
        for start in range(0, len(col), size):
            block = col[start : start + size]
            out_blocks.extend(_check_column(spec, ci, block, base + start, bad))
        return out_blocks
    out: list[str | None] = []
    for ri, value in enumerate(col, start=base):
        try:
            out.append(_check_value(spec, value))
        except ValueError as exc:
            out.append(None)
            shown = value if len(value) <= 40 else value[:37] + "..."
            bad.setdefault(ri, f"column {ci + 1} {spec.name!r}: {shown!r} {exc}")
    return out


def drop_indices(values: Sequence[Any], order: Sequence[int]) -> list[Any]:
    """``values`` without the (sorted) indices in ``order``, copied slice by slice."""
    out: list[Any] = []
    prev = 0
    for index in order:
        out.extend(values[prev:index])
        prev = index + 1
    out.extend(values[prev:])
    return out


def _check_value(spec: ColumnSpec, value: str) -> str | None:
    if value == "":
        if spec.nullable:
            return None
        if spec.kind in ("string", "text"):
            return ""
        raise ValueError(f"is empty but column {spec.name!r} is NOT NULL")
    if "\x00" in value:
        raise ValueError(f"contains a NUL character at offset {value.index(chr(0))}")
    return spec.check(value)


def row_text(row: Sequence[str | None]) -> str:
    """A row as one CSV line, cut to a size that fits in rejected_rows and a message."""
    buf = io.StringIO()
    # With "\r\n" as terminator Python 3.11 also quotes fields holding "\r" or "\n".
    csv.writer(buf, lineterminator="\r\n").writerow(["" if v is None else v for v in row])
    text = buf.getvalue()[:-2]
    if len(text) > MAX_RAW_CHARS:
        text = text[:MAX_RAW_CHARS] + f"... [{len(text)} characters, cut]"
    return text


# --- per-type rules ------------------------------------------------------------------------


def _clean(col: Sequence[str]) -> bool:
    """No empty value and no NUL anywhere in the column (one C-level join)."""
    return bool(col) and "" not in col and "\x00" not in "".join(col)


def _int_rule(bits: int, unsigned: bool) -> tuple[Check, Fast]:
    lo, hi = (0, 2**bits - 1) if unsigned else (-(2 ** (bits - 1)), 2 ** (bits - 1) - 1)
    safe_digits = len(str(hi)) - 1
    match = _INT_RE.fullmatch

    def check(v: str) -> str:
        if not match(v):
            raise ValueError("is not an integer")
        n = int(v)
        if not lo <= n <= hi:
            raise ValueError(f"is out of range ({lo}..{hi})")
        return v

    def fast(col: Sequence[str]) -> Sequence[str] | None:
        if not col or "" in col or max(map(len, col)) > safe_digits:
            return None
        joined = "".join(col)
        if joined.isascii() and joined.isdigit():  # plain digits: one C call for the chunk
            return col
        if not all(map(match, col)):
            return None
        if lo == 0 and "-" in "".join(col):
            return None
        return col

    return check, fast


def _decimal_rule(precision: int, scale: int) -> tuple[Check, Fast]:
    whole = precision - scale
    if whole == 0:
        pattern = re.compile(rf"[+-]?(?:0?\.\d{{1,{scale}}}|0\.?)", re.ASCII)
    else:
        frac = rf"(?:\.\d{{0,{scale}}})?" if scale else r"(?:\.0*)?"
        bare = rf"\.\d{{1,{scale}}}" if scale else r"\.0+"
        pattern = re.compile(rf"[+-]?(?:\d{{1,{whole}}}{frac}|{bare})", re.ASCII)
    match = pattern.fullmatch

    def check(v: str) -> str:
        if match(v):
            return v
        try:
            d = Decimal(v)
        except InvalidOperation:
            raise ValueError("is not a decimal number") from None
        if not d.is_finite():
            raise ValueError("is not a finite decimal number")
        raise ValueError(f"does not fit DECIMAL({precision},{scale}) without rounding")

    def fast(col: Sequence[str]) -> Sequence[str] | None:
        return col if col and all(map(match, col)) else None

    return check, fast


def _float_check(v: str) -> str:
    if not _FLOAT_RE.fullmatch(v):
        raise ValueError("is not a number")
    return v


def _float_fast(col: Sequence[str]) -> Sequence[str] | None:
    return col if col and all(map(_FLOAT_RE.fullmatch, col)) else None


def _datetime_rule(kind: str, lo_year: int, hi_year: int) -> tuple[Check, Fast]:
    pattern = _DATE_RE if kind == "date" else _DATETIME_RE
    parse = dt.date.fromisoformat if kind == "date" else dt.datetime.fromisoformat
    expected = "YYYY-MM-DD" if kind == "date" else "YYYY-MM-DD HH:MM:SS"
    lo_text, hi_text = f"{lo_year:04d}", f"{hi_year:04d}"

    def check(v: str) -> str:
        if not pattern.fullmatch(v):
            raise ValueError(f"is not a {kind.upper()} (expected {expected})")
        try:
            value = parse(v)
        except ValueError:
            raise ValueError(f"is not a valid {kind}") from None
        if not lo_year <= value.year <= hi_year:
            raise ValueError(f"is out of range (years {lo_year}..{hi_year})")
        return v if kind == "date" else v.replace("T", " ")

    strict = _STRICT_DATE_RE if kind == "date" else _STRICT_DATETIME_RE

    def fast(col: Sequence[str]) -> Sequence[str] | None:
        # One C-level regex a value ("T" separators fail it and are rewritten on the slow path).
        if not col or not all(map(strict.fullmatch, col)):
            return None
        if min(col) < lo_text or max(col)[:4] > hi_text:
            return None
        if "-02-29" in "".join(col):  # the one date that needs the year
            try:
                for _ in map(parse, col):
                    pass
            except ValueError:
                return None
        return col

    return check, fast


def _time_check(v: str) -> str:
    if not _TIME_RE.fullmatch(v):
        raise ValueError("is not a TIME (expected HH:MM:SS)")
    return v


def _time_fast(col: Sequence[str]) -> Sequence[str] | None:
    return col if col and all(map(_TIME_RE.fullmatch, col)) else None


def _bool_check(v: str) -> str:
    out = _BOOL_WORDS.get(v.strip().lower())
    if out is None:
        raise ValueError("is not a boolean (1/0, true/false, yes/no)")
    return out


def _bool_fast(col: Sequence[str]) -> Sequence[str] | None:
    mapped = list(map(_BOOL_WORDS.get, col))
    return None if not col or None in mapped else mapped  # type: ignore[return-value]


def _chars_rule(limit: int) -> tuple[Check, Fast]:
    def check(v: str) -> str:
        if len(v) > limit:
            raise ValueError(f"is {len(v)} characters, longer than {limit}")
        return v

    def fast(col: Sequence[str]) -> Sequence[str] | None:
        return col if _clean(col) and max(map(len, col)) <= limit else None

    return check, fast


def _bytes_rule(limit: int) -> tuple[Check, Fast]:
    def check(v: str) -> str:
        size = len(v.encode("utf-8", "surrogatepass"))
        if size > limit:
            raise ValueError(f"is {size} bytes, longer than {limit}")
        return v

    def fast(col: Sequence[str]) -> Sequence[str] | None:
        return col if _clean(col) and max(map(len, col)) * 4 <= limit else None

    return check, fast


def _enum_rule(values: Sequence[str]) -> tuple[Check, Fast]:
    allowed = {v.lower(): v for v in values}

    def check(v: str) -> str:
        if v.lower() not in allowed:
            raise ValueError(f"is not one of {', '.join(values)}")
        return allowed[v.lower()]  # the stored spelling (MySQL matches ENUM case-insensitively)

    def fast(col: Sequence[str]) -> Sequence[str] | None:
        return col if col and all(v in values for v in col) else None

    return check, fast


def _identity(v: str) -> str:
    return v


def _other_fast(col: Sequence[str]) -> Sequence[str] | None:
    return col if _clean(col) else None


# --- canonical forms for checksums ---------------------------------------------------------


def _canon_null(fn: Callable[[Any], str]) -> Callable[[Any], str]:
    def canon(v: Any) -> str:
        return "\\N" if v is None else fn(v)

    return canon


def _canon_int(v: Any) -> str:
    return str(int(v))


_DECIMAL_CONTEXT = decimal.Context(prec=80)  # DECIMAL(65, 30) needs more than the default 28


def _canon_decimal(scale: int) -> Callable[[Any], str]:
    quantum = Decimal(1).scaleb(-scale)

    def canon(v: Any) -> str:
        d = Decimal(str(v)).quantize(quantum, context=_DECIMAL_CONTEXT)
        return str(d.copy_abs() if d.is_zero() else d)  # the database has no -0

    return canon


def _canon_float(v: Any) -> str:
    return repr(float(v))


def _canon_bool(v: Any) -> str:
    if isinstance(v, str):
        return _BOOL_WORDS.get(v.strip().lower(), v)
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


# --- reflection ----------------------------------------------------------------------------


def _type_text(ctype: satypes.TypeEngine[Any]) -> str:
    try:
        return str(ctype.compile(dialect=mysql.dialect()))
    except Exception:  # a type MySQL cannot spell (reflected from SQLite): its class name
        return type(ctype).__name__.upper()


def _spec_for(column: sa.Column[Any]) -> ColumnSpec | None:
    """The rules for one reflected column, or None when it cannot be written (generated)."""
    if column.computed is not None:
        return None
    ctype = column.type
    type_name = type(ctype).__name__.upper()
    nullable = bool(column.nullable)
    has_default = column.server_default is not None or column.autoincrement is True
    if (
        column.primary_key
        and isinstance(ctype, satypes.Integer)
        and column.autoincrement in (True, "auto")
        and len(column.table.primary_key.columns) == 1
    ):
        has_default = True
    common: dict[str, Any] = {
        "name": str(column.name),
        "sql_type": _type_text(ctype),
        "nullable": nullable,
        "has_default": has_default,
    }
    display_width = getattr(ctype, "display_width", None)
    rule: tuple[str, Check, Fast, Callable[[Any], str]]
    if isinstance(ctype, satypes.Boolean) or (type_name == "TINYINT" and display_width == 1):
        rule = ("bool", _bool_check, _bool_fast, _canon_bool)
    elif isinstance(ctype, satypes.Integer):
        bits = _INT_RANGES.get(type_name, 64 if isinstance(ctype, satypes.BigInteger) else 32)
        if isinstance(ctype, satypes.SmallInteger) and type_name not in _INT_RANGES:
            bits = 16
        rule = ("int", *_int_rule(bits, bool(getattr(ctype, "unsigned", False))), _canon_int)
    elif isinstance(ctype, satypes.Numeric) and not isinstance(ctype, satypes.Float):
        scale = ctype.scale or 0
        rule = ("decimal", *_decimal_rule(ctype.precision or 10, scale), _canon_decimal(scale))
    elif isinstance(ctype, satypes.Float | satypes.Numeric):
        rule = ("float", _float_check, _float_fast, _canon_float)
    elif isinstance(ctype, satypes.DateTime) or type_name in ("DATETIME", "TIMESTAMP"):
        lo, hi = (1970, 2037) if type_name == "TIMESTAMP" else (1000, 9999)
        rule = ("datetime", *_datetime_rule("datetime", lo, hi), _canon_datetime)
    elif isinstance(ctype, satypes.Date):
        rule = ("date", *_datetime_rule("date", 1000, 9999), _canon_date)
    elif isinstance(ctype, satypes.Time):
        rule = ("time", _time_check, _time_fast, _canon_str)
    elif isinstance(ctype, satypes.Enum) or type_name == "ENUM":
        rule = ("enum", *_enum_rule(list(getattr(ctype, "enums", []))), _canon_str)
    elif isinstance(ctype, satypes.Text) or type_name in _TEXT_BYTES:
        rule = ("text", *_bytes_rule(_TEXT_BYTES.get(type_name, 65_535)), _canon_str)
    elif isinstance(ctype, satypes.String):
        rule = ("string", *_chars_rule(ctype.length or 2**31), _canon_str)
    else:
        rule = ("other", _identity, _other_fast, _canon_str)
    kind, check, fast, canon = rule
    fast = _with_empties(fast, nullable=nullable, text=kind in ("string", "text"))
    max_chars = {
        "bool": 1,
        "int": 21,
        "decimal": (getattr(ctype, "precision", None) or 65) + 2,
        "datetime": 26,
        "date": 10,
        "time": 17,
        "enum": max(map(len, getattr(ctype, "enums", None) or [""])),
        "text": _TEXT_BYTES.get(type_name, 65_535),
        "string": getattr(ctype, "length", None),
    }.get(kind)
    return ColumnSpec(
        kind=kind, check=check, fast=fast, canon=_canon_null(canon), max_chars=max_chars, **common
    )


def _with_empties(fast: Fast, *, nullable: bool, text: bool) -> Fast:
    """The fast path with the empty-field rule: NULL when nullable, '' for NOT NULL text."""

    def wrapped(col: Sequence[str]) -> Sequence[str | None] | None:
        if "" not in col:
            return fast(col)
        if not (nullable or text):
            return None  # the value-by-value path says which row and why
        present = [v for v in col if v]
        checked = fast(present) if present else present
        if checked is None:
            return None
        if not nullable:
            return col  # text keeps its empty strings; text is never rewritten
        if checked is present:  # nothing was rewritten: only the empties change
            return [v or None for v in col]
        values = iter(checked)
        return [next(values) if v else None for v in col]

    return wrapped


async def reflect_table(
    conn: AsyncConnection, name: str, *, allowed: Sequence[str] = ()
) -> TableSchema:
    """Reflect ``name`` from the database; refuse internal tables and names outside ``allowed``."""
    if name in INTERNAL_TABLES or name.lower() in INTERNAL_TABLES:
        raise SchemaError(f"table {name!r} is internal to headrace and cannot be a target")
    if allowed and name not in allowed:
        raise SchemaError(f"table {name!r} is not in the allowed tables ({', '.join(allowed)})")

    def _reflect(sync_conn: sa.Connection) -> TableSchema | None:
        inspector = sa.inspect(sync_conn)
        if not inspector.has_table(name):
            return None
        table = sa.Table(name, sa.MetaData(), autoload_with=sync_conn)
        uniques: list[tuple[str, ...]] = []
        for uc in inspector.get_unique_constraints(name):
            uniques.append(tuple(str(c) for c in uc["column_names"]))
        for ix in inspector.get_indexes(name):
            if ix.get("unique"):
                key = tuple(str(c) for c in ix["column_names"] if c is not None)
                if key not in uniques:
                    uniques.append(key)
        return TableSchema.from_table(table, uniques)

    schema = await conn.run_sync(_reflect)
    if schema is None:
        raise SchemaError(f"table {name!r} does not exist in the target database")
    return schema
