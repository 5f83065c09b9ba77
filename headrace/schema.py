"""The target table as reflected from the database, and how a chunk of CSV rows is typed.

Identifiers used in SQL only ever come from here (the reflected table), never from a CSV
header or a message: a header name is looked up in :class:`TableSchema` and rejected when
absent.

Values travel as text and are checked before they are sent: :meth:`TableSchema.validate`
transposes a chunk of rows and checks each column with the rule that :func:`reflect_table`
picked for the column's type (:mod:`headrace.rules`: C-level column checks, value by value
only in a column that failed). Rows with the wrong number of fields or a bad value become
:class:`Reject` s. The database still runs in strict ``sql_mode`` as the second line of
defence.
"""

from __future__ import annotations

import csv
import io
import zoneinfo
from collections.abc import Sequence
from dataclasses import dataclass, field
from operator import itemgetter
from typing import Any

import sqlalchemy as sa
from sqlalchemy import types as satypes
from sqlalchemy.dialects import mysql
from sqlalchemy.ext.asyncio import AsyncConnection

from headrace.csvformat import CsvFormat
from headrace.errors import SchemaError, TableNotFound
from headrace.rules import (
    BOOL_RULE,
    FLOAT_RULE,
    INT_BITS,
    OTHER_RULE,
    TEXT_BYTES,
    TIME_RULE,
    Check,
    Fast,
    Rule,
    bool_rule,
    bytes_rule,
    chars_rule,
    check_column,
    datetime_rule,
    decimal_comma,
    decimal_rule,
    enum_rule,
    int_rule,
    time_rule,
    with_empties,
    with_nulls,
)
from headrace.tables import INTERNAL_TABLES

__all__ = [
    "ColumnSpec",
    "Layout",
    "Reject",
    "TableSchema",
    "ValidatedChunk",
    "drop_indices",
    "reflect_table",
    "row_text",
]

MAX_RAW_CHARS = 4096


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
    max_chars: int | None = None  # longest valid text (after normalising); None: unbounded
    scale: int | None = None  # digits after the point of a DECIMAL; None for other kinds
    nulls: frozenset[str] = frozenset()  # null markers (CsvFormat.nulls); empty: the default

    @property
    def required(self) -> bool:
        return not (self.nullable or self.has_default)


@dataclass(frozen=True)
class Layout:
    """Which fields of a file's rows are loaded: ``keep`` (indices, in the specs' order) of
    ``width`` fields (a row with another number of fields is rejected)."""

    width: int
    keep: tuple[int, ...]


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

    def typed(self, fmt: CsvFormat) -> TableSchema:
        """This table with the typing rules of a file written as ``fmt`` describes (null
        markers, time zone, date-time layouts, decimal comma, boolean words); itself when
        ``fmt`` spells values the default way."""
        if not fmt.typing_changed:
            return self
        specs: dict[str, ColumnSpec] = {}
        for column in self.table.columns:
            spec = _spec_for(column, fmt)
            if spec is not None:
                specs[spec.name] = spec
        return TableSchema(table=self.table, columns=specs, unique_keys=list(self.unique_keys))

    def resolve_columns(
        self, header: Sequence[str], fmt: CsvFormat, *, source: str
    ) -> tuple[list[ColumnSpec], Layout | None]:
        """:meth:`resolve_header` after ``fmt``'s renames (``--map``) and ignored columns
        (``--ignore-column``); the layout says which fields to keep (None: all of them)."""
        from headrace.errors import InputError

        if not (fmt.rename or fmt.ignore):
            return self.resolve_header(header, source=source), None
        names = [n.strip() for n in header]
        if names and names[0].startswith("\ufeff"):
            names[0] = names[0][1:]
        for option, wanted in (("--map", list(fmt.rename)), ("--ignore-column", fmt.ignore)):
            absent = [w for w in wanted if w not in names]
            if absent:
                raise InputError(
                    f"{option} names {', '.join(map(repr, absent))}, not a column of the file "
                    f"(columns: {', '.join(names)})",
                    source=source,
                    line=1,
                )
        ignored = set(fmt.ignore)
        keep = tuple(i for i, n in enumerate(names) if n not in ignored)
        kept = [fmt.rename.get(names[i], names[i]) for i in keep]
        specs = self.resolve_header(kept, source=source, positions=[i + 1 for i in keep])
        return specs, Layout(len(names), keep)

    @property
    def name(self) -> str:
        return str(self.table.name)

    def resolve_header(
        self, header: Sequence[str], *, source: str, positions: Sequence[int] | None = None
    ) -> list[ColumnSpec]:
        """Map a CSV header onto table columns, refusing anything not in the table (errors
        name the column's position in the file: ``positions``, else its index)."""
        from headrace.errors import InputError

        names = list(header)
        if names and names[0].startswith("\ufeff"):
            names[0] = names[0][1:]
        if not names or all(not n.strip() for n in names):
            raise InputError("the header line is empty", source=source, line=1)
        seen: dict[str, int] = {}
        specs: list[ColumnSpec] = []
        for index, raw in enumerate(names, start=1):
            if positions is not None:
                index = positions[index - 1]  # the file's column number
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
        self,
        specs: Sequence[ColumnSpec],
        rows: list[list[str]],
        lines: list[int],
        layout: Layout | None = None,
    ) -> ValidatedChunk:
        """Check and normalise a chunk of parsed CSV rows; bad rows become rejects.

        With a ``layout``, rows have ``layout.width`` fields of which those at
        ``layout.keep`` are the specs' columns."""
        width = len(specs) if layout is None else layout.width
        rejects: list[Reject] = []
        if rows and not (len(rows[0]) == width and len(set(map(len, rows))) == 1):
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
        # Column by column: one C-level pass over the rows per column (about half the time
        # of zip(*rows) on 4096-row chunks), and ignored columns are never copied.
        keep = range(width) if layout is None else layout.keep
        raw_cols = [list(map(itemgetter(i), rows)) for i in keep]
        bad: dict[int, str] = {}
        columns = [
            check_column(spec, ci, col, 0, bad)
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


def drop_indices(values: Sequence[Any], order: Sequence[int]) -> list[Any]:
    """``values`` without the (sorted) indices in ``order``, copied slice by slice."""
    out: list[Any] = []
    prev = 0
    for index in order:
        out.extend(values[prev:index])
        prev = index + 1
    out.extend(values[prev:])
    return out


def row_text(row: Sequence[str | None]) -> str:
    """A row as one CSV line, cut to a size that fits in rejected_rows and a message."""
    buf = io.StringIO()
    # With "\r\n" as terminator Python 3.11 also quotes fields holding "\r" or "\n".
    csv.writer(buf, lineterminator="\r\n").writerow(["" if v is None else v for v in row])
    text = buf.getvalue()[:-2]
    if len(text) > MAX_RAW_CHARS:
        text = text[:MAX_RAW_CHARS] + f"... [{len(text)} characters, cut]"
    return text


# --- reflection ----------------------------------------------------------------------------


def _type_text(ctype: satypes.TypeEngine[Any]) -> str:
    try:
        return str(ctype.compile(dialect=mysql.dialect()))
    except Exception:  # a type MySQL cannot spell (reflected from SQLite): its class name
        return type(ctype).__name__.upper()


def _spec_for(column: sa.Column[Any], fmt: CsvFormat | None = None) -> ColumnSpec | None:
    """The rules for one reflected column, or None when it cannot be written (generated)."""
    if column.computed is not None:
        return None
    ctype = column.type
    nullable = bool(column.nullable)
    kind, check, fast = _rule_for(ctype)
    if fmt is not None:
        kind, check, fast = _with_format(kind, (check, fast), ctype, fmt)
    text = kind in ("string", "text")
    nulls = frozenset(fmt.nulls) if fmt is not None else frozenset()
    return ColumnSpec(
        name=str(column.name),
        kind=kind,
        sql_type=_type_text(ctype),
        nullable=nullable,
        has_default=_has_default(column),
        check=check,
        fast=(
            with_nulls(fast, nulls, nullable=nullable, text=text)
            if nulls
            else with_empties(fast, nullable=nullable, text=text)
        ),
        max_chars=_max_chars(kind, ctype),
        scale=(ctype.scale or 0) if kind == "decimal" else None,  # type: ignore[attr-defined]
        nulls=nulls,
    )


def _with_format(
    kind: str, rule: Rule, ctype: satypes.TypeEngine[Any], fmt: CsvFormat
) -> tuple[str, Check, Fast]:
    """A column's rule for values spelled as ``fmt`` says (the default rule otherwise)."""
    if kind == "bool" and (fmt.true_words or fmt.false_words):
        rule = bool_rule(fmt.true_words, fmt.false_words)
    elif kind in ("decimal", "float") and fmt.decimal_comma:
        rule = decimal_comma(rule)
    elif kind in ("datetime", "date") and (fmt.timezone or fmt.datetime_formats):
        timestamp = type(ctype).__name__.upper() == "TIMESTAMP"
        lo, hi = (1970, 2037) if timestamp else (1000, 9999)
        zone = zoneinfo.ZoneInfo(fmt.timezone) if fmt.timezone and timestamp else None
        rule = datetime_rule(kind, lo, hi, fsp=_fsp(ctype), zone=zone, formats=fmt.datetime_formats)
    return (kind, *rule)


def _fsp(ctype: satypes.TypeEngine[Any]) -> int:
    """Fractional-second digits a temporal column keeps (MySQL: its fsp, 0 when unset)."""
    if isinstance(ctype, mysql.DATETIME | mysql.TIMESTAMP | mysql.TIME):
        return int(ctype.fsp or 0)
    return 6


def _has_default(column: sa.Column[Any]) -> bool:
    """Whether the database fills the column when an INSERT leaves it out."""
    if column.server_default is not None or column.autoincrement is True:
        return True
    return bool(
        column.primary_key
        and isinstance(column.type, satypes.Integer)
        and column.autoincrement in (True, "auto")
        and len(column.table.primary_key.columns) == 1
    )


def _rule_for(ctype: satypes.TypeEngine[Any]) -> tuple[str, Check, Fast]:
    """The kind of a column type and its check/fast pair (:mod:`headrace.rules`)."""
    type_name = type(ctype).__name__.upper()
    if isinstance(ctype, satypes.Boolean) or (
        type_name == "TINYINT" and getattr(ctype, "display_width", None) == 1
    ):
        return ("bool", *BOOL_RULE)
    if isinstance(ctype, satypes.Integer):
        bits = INT_BITS.get(type_name, 64 if isinstance(ctype, satypes.BigInteger) else 32)
        if isinstance(ctype, satypes.SmallInteger) and type_name not in INT_BITS:
            bits = 16
        return ("int", *int_rule(bits, bool(getattr(ctype, "unsigned", False))))
    if isinstance(ctype, satypes.Numeric) and not isinstance(ctype, satypes.Float):
        return ("decimal", *decimal_rule(ctype.precision or 10, ctype.scale or 0))
    if isinstance(ctype, satypes.Float | satypes.Numeric):
        return ("float", *FLOAT_RULE)
    return _temporal_or_text_rule(ctype, type_name)


def _temporal_or_text_rule(
    ctype: satypes.TypeEngine[Any], type_name: str
) -> tuple[str, Check, Fast]:
    if isinstance(ctype, satypes.DateTime) or type_name in ("DATETIME", "TIMESTAMP"):
        lo, hi = (1970, 2037) if type_name == "TIMESTAMP" else (1000, 9999)
        return ("datetime", *datetime_rule("datetime", lo, hi, fsp=_fsp(ctype)))
    if isinstance(ctype, satypes.Date):
        return ("date", *datetime_rule("date", 1000, 9999))
    if isinstance(ctype, satypes.Time):
        fsp = _fsp(ctype)
        return ("time", *(TIME_RULE if fsp == 6 else time_rule(fsp)))
    if isinstance(ctype, satypes.Enum) or type_name == "ENUM":
        return ("enum", *enum_rule(list(getattr(ctype, "enums", []))))
    if isinstance(ctype, satypes.Text) or type_name in TEXT_BYTES:
        return ("text", *bytes_rule(TEXT_BYTES.get(type_name, 65_535)))
    if isinstance(ctype, satypes.String):
        return ("string", *chars_rule(ctype.length or 2**31))
    return ("other", *OTHER_RULE)


def _max_chars(kind: str, ctype: satypes.TypeEngine[Any]) -> int | None:
    """The longest valid text of a column of this kind (None: unbounded)."""
    return {
        "bool": 1,
        "int": 21,
        "decimal": (getattr(ctype, "precision", None) or 65) + 2,
        "datetime": 26,
        "date": 10,
        "time": 17,
        "enum": max(map(len, getattr(ctype, "enums", None) or [""])),
        "text": TEXT_BYTES.get(type(ctype).__name__.upper(), 65_535),
        "string": getattr(ctype, "length", None),
    }.get(kind)


async def reflect_table(
    conn: AsyncConnection, name: str, *, allowed: Sequence[str] = ()
) -> TableSchema:
    """Reflect ``name`` from the database; refuse internal tables and names outside ``allowed``
    (``*`` in it allows any other table)."""
    if name in INTERNAL_TABLES or name.lower() in INTERNAL_TABLES:
        raise SchemaError(f"table {name!r} is internal to headrace and cannot be a target")
    if allowed and "*" not in allowed and name not in allowed:
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
        raise TableNotFound(f"table {name!r} does not exist in the target database")
    return schema
