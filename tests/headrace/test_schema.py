"""TableSchema: header resolution, typing CSV text against MySQL columns, row checksums."""

from __future__ import annotations

import datetime as dt
import random
import re
from collections.abc import Callable, Sequence
from decimal import Decimal
from typing import Any

import pytest
import sqlalchemy as sa
from hypothesis import given, settings
from hypothesis import strategies as st
from sqlalchemy.dialects import mysql

from cli.datagen import observations
from headrace.errors import InputError, SchemaError
from headrace.schema import ColumnSpec, Reject, TableSchema, row_text

SRC = "drop.csv"


def _things() -> sa.Table:
    return sa.Table(
        "things",
        sa.MetaData(),
        sa.Column("id", mysql.BIGINT(unsigned=True), primary_key=True, autoincrement=True),
        sa.Column("flag", mysql.TINYINT(1), nullable=False),
        sa.Column("tiny", mysql.TINYINT()),
        sa.Column("utiny", mysql.TINYINT(unsigned=True)),
        sa.Column("small", mysql.SMALLINT()),
        sa.Column("usmall", mysql.SMALLINT(unsigned=True)),
        sa.Column("medium", mysql.MEDIUMINT()),
        sa.Column("umedium", mysql.MEDIUMINT(unsigned=True)),
        sa.Column("count", mysql.INTEGER(unsigned=True), nullable=False),
        sa.Column("signed", mysql.INTEGER()),
        sa.Column("big", mysql.BIGINT()),
        sa.Column("ubig", mysql.BIGINT(unsigned=True)),
        sa.Column("price", mysql.DECIMAL(5, 2)),
        sa.Column("whole", mysql.DECIMAL(5, 0)),
        sa.Column("frac", mysql.DECIMAL(2, 2)),
        sa.Column("wide", mysql.DECIMAL(65, 30)),
        sa.Column("ratio", mysql.DOUBLE()),
        sa.Column("at", mysql.DATETIME(), nullable=False),
        sa.Column("ts", mysql.TIMESTAMP()),
        sa.Column("day", mysql.DATE()),
        sa.Column("code", mysql.VARCHAR(5), nullable=False),
        sa.Column("label", mysql.VARCHAR(5)),
        sa.Column("body", mysql.TEXT()),
        sa.Column("color", mysql.ENUM("red", "green", "blue")),
        sa.Column("doubled", mysql.INTEGER(), sa.Computed("`count` * 2")),
        sa.Column(
            "created",
            mysql.DATETIME(),
            nullable=False,
            server_default=sa.text("CURRENT_TIMESTAMP"),
        ),
    )


@pytest.fixture(scope="module")
def things() -> TableSchema:
    return TableSchema.from_table(_things(), [("code",)])


@pytest.fixture(scope="module")
def obs() -> TableSchema:
    return TableSchema.from_table(observations)


def _one(schema: TableSchema, column: str, value: str) -> tuple[str | None, Reject | None]:
    """Validate one value of one column (as line 9); the normalised text or the reject."""
    specs = schema.specs_for([column])
    out = schema.validate(specs, [[value]], [9])
    if out.rejects:
        assert out.rows == []
        assert out.lines == []
        return None, out.rejects[0]
    assert out.lines == [9]
    return out.rows[0][0], None


def _ok(schema: TableSchema, column: str, value: str) -> str | None:
    got, reject = _one(schema, column, value)
    assert reject is None, reject
    return got


def _bad(schema: TableSchema, column: str, value: str) -> str:
    got, reject = _one(schema, column, value)
    assert reject is not None, f"{column}: {value!r} was accepted as {got!r}"
    assert reject.line == 9
    assert reject.raw == row_text([value])
    assert re.match(rf"column 1 '{column}': ", reject.reason), reject.reason
    return reject.reason


# --- reflection -------------------------------------------------------------------------------


def test_column_kinds(things: TableSchema) -> None:
    kinds = {name: spec.kind for name, spec in things.columns.items()}
    assert kinds == {
        "id": "int",
        "flag": "bool",
        "tiny": "int",
        "utiny": "int",
        "small": "int",
        "usmall": "int",
        "medium": "int",
        "umedium": "int",
        "count": "int",
        "signed": "int",
        "big": "int",
        "ubig": "int",
        "price": "decimal",
        "whole": "decimal",
        "frac": "decimal",
        "wide": "decimal",
        "ratio": "float",
        "at": "datetime",
        "ts": "datetime",
        "day": "date",
        "code": "string",
        "label": "string",
        "body": "text",
        "color": "enum",
        "created": "datetime",
    }
    assert "doubled" not in things.columns  # generated: never written
    assert things.unique_keys == [("code",)]
    assert things.name == "things"
    assert things.columns["price"].sql_type == "DECIMAL(5, 2)"
    required = {name for name, spec in things.columns.items() if spec.required}
    assert required == {"flag", "count", "at", "code"}


def test_observations_required_columns(obs: TableSchema) -> None:
    required = {name for name, spec in obs.columns.items() if spec.required}
    assert required == {"observed_at", "bot_id", "sku", "price", "quantity", "in_stock", "title"}
    assert {obs.columns["id"].kind, obs.columns["in_stock"].kind} == {"int", "bool"}


def test_specs_for_refuses_unknown_names(obs: TableSchema) -> None:
    assert [s.name for s in obs.specs_for(["sku", "price"])] == ["sku", "price"]
    with pytest.raises(SchemaError, match="'nope' is not in table 'observations'"):
        obs.specs_for(["sku", "nope"])


# --- resolve_header ---------------------------------------------------------------------------

_OBS_HEADER = ["observed_at", "bot_id", "sku", "price", "quantity", "in_stock", "title", "note"]


def test_header_resolves_in_file_order(obs: TableSchema) -> None:
    header = ["\ufeffTitle", " SKU ", *_OBS_HEADER[:2], *_OBS_HEADER[3:6]]
    specs = obs.resolve_header(header, source=SRC)
    assert [s.name for s in specs] == [
        "title",
        "sku",
        "observed_at",
        "bot_id",
        "price",
        "quantity",
        "in_stock",
    ]


@pytest.mark.parametrize(
    ("position", "name"),
    [
        (3, "nope"),
        (8, "name; DROP TABLE x"),
        (1, "`observations`"),
        (9, "id`, `sku"),
    ],
)
def test_header_unknown_column(obs: TableSchema, position: int, name: str) -> None:
    header = list(_OBS_HEADER)
    header.insert(position - 1, name)
    with pytest.raises(InputError) as err:
        obs.resolve_header(header, source=SRC)
    assert (err.value.source, err.value.line, err.value.column) == (SRC, 1, position)
    assert str(err.value).startswith(f"{SRC}:1:{position}: column {name!r} is not a writable")


def test_header_unknown_column_long_name_is_shortened(obs: TableSchema) -> None:
    with pytest.raises(InputError, match=r"'x{61}\.\.\.' is not a writable") as err:
        obs.resolve_header([*_OBS_HEADER, "x" * 500], source=SRC)
    assert err.value.column == 9
    assert "x" * 62 not in str(err.value)


def test_header_duplicate_is_case_insensitive(obs: TableSchema) -> None:
    with pytest.raises(InputError, match=r"duplicate column 'SKU' .*also column 3") as err:
        obs.resolve_header([*_OBS_HEADER, "SKU"], source=SRC)
    assert (err.value.line, err.value.column) == (1, 9)


@pytest.mark.parametrize("header", [[], [""], ["  ", ""], ["\ufeff"]])
def test_header_empty(obs: TableSchema, header: list[str]) -> None:
    with pytest.raises(InputError, match="header line is empty") as err:
        obs.resolve_header(header, source=SRC)
    assert err.value.line == 1


def test_header_empty_column_name(obs: TableSchema) -> None:
    with pytest.raises(InputError, match="empty column name") as err:
        obs.resolve_header(["sku", " ", "title"], source=SRC)
    assert (err.value.line, err.value.column) == (1, 2)


def test_header_missing_required(obs: TableSchema) -> None:
    with pytest.raises(InputError) as err:
        obs.resolve_header(["sku", "title", "note"], source=SRC)
    assert err.value.line == 1
    assert err.value.column is None
    listed = re.search(
        r"lacks required column\(s\) of table 'observations': (.*) \(NOT NULL", str(err.value)
    )
    assert listed, str(err.value)
    assert listed.group(1).split(", ") == ["observed_at", "bot_id", "price", "quantity", "in_stock"]


def test_header_optional_columns_may_be_missing(things: TableSchema) -> None:
    specs = things.resolve_header(["code", "AT", "count", "flag"], source=SRC)
    assert [s.name for s in specs] == ["code", "at", "count", "flag"]
    # ...and may be given: autoincrement and defaulted columns are writable.
    specs = things.resolve_header(["id", "created", "code", "at", "count", "flag"], source=SRC)
    assert [s.name for s in specs][:2] == ["id", "created"]


def test_header_generated_column_is_not_writable(things: TableSchema) -> None:
    with pytest.raises(InputError, match="'doubled' is not a writable column") as err:
        things.resolve_header(["code", "at", "count", "flag", "doubled"], source=SRC)
    assert err.value.column == 5


# --- validate: integers -----------------------------------------------------------------------

_INT_LIMITS = [
    ("tiny", -128, 127),
    ("utiny", 0, 255),
    ("small", -32768, 32767),
    ("usmall", 0, 65535),
    ("medium", -8388608, 8388607),
    ("umedium", 0, 16777215),
    ("signed", -(2**31), 2**31 - 1),
    ("count", 0, 2**32 - 1),
    ("big", -(2**63), 2**63 - 1),
    ("ubig", 0, 2**64 - 1),
    ("id", 0, 2**64 - 1),
]


@pytest.mark.parametrize(("column", "lo", "hi"), _INT_LIMITS)
def test_int_ranges(things: TableSchema, column: str, lo: int, hi: int) -> None:
    for value in (lo, hi, 0, 1, (lo + hi) // 2):
        assert _ok(things, column, str(value)) == str(value)
    assert _ok(things, column, f"+{hi}") == f"+{hi}"
    for value in (lo - 1, hi + 1, hi * 10, lo - 10**20):
        reason = _bad(things, column, str(value))
        assert reason.endswith(f"is out of range ({lo}..{hi})"), reason
    # Through the column-at-once path: one bad value among many good ones.
    specs = things.specs_for([column])
    rows = [[str(hi)]] * 50 + [[str(hi + 1)]] + [[str(lo)]] * 50
    out = things.validate(specs, rows, list(range(2, 103)))
    assert len(out.rows) == 100
    assert 52 not in out.lines
    assert [(r.line, r.reason.split(":")[0]) for r in out.rejects] == [(52, f"column 1 '{column}'")]


@pytest.mark.parametrize(
    "value",
    [
        "1.0",
        "1e3",
        " 1",
        "1 ",
        "0x10",
        "1_000",
        "--1",
        "one",
        "\u0661\u0662\u0663",
        "\uff11\uff12",
        "²",
    ],
)
def test_int_not_an_integer(things: TableSchema, value: str) -> None:
    assert _bad(things, "signed", value).endswith("is not an integer")


def test_unsigned_negative(things: TableSchema) -> None:
    assert "out of range (0..255)" in _bad(things, "utiny", "-1")
    assert _ok(things, "utiny", "-0") == "-0"


# --- validate: decimals and floats ------------------------------------------------------------


@pytest.mark.parametrize(
    ("column", "value"),
    [
        ("price", "123.45"),
        ("price", "-999.99"),
        ("price", "+0.5"),
        ("price", ".5"),
        ("price", "7"),
        ("price", "12."),
        ("whole", "12345"),
        ("whole", "12."),
        ("whole", "12.000"),
        ("whole", "-1"),
        ("frac", ".99"),
        ("frac", "-0.01"),
        ("frac", "0"),
        ("wide", "12345678901234567890123456789012345.123456789012345678901234567890"),
    ],
)
def test_decimal_fits(things: TableSchema, column: str, value: str) -> None:
    assert _ok(things, column, value) == value


@pytest.mark.parametrize(
    ("column", "value", "why"),
    [
        ("price", "1234", "does not fit DECIMAL(5,2) without rounding"),
        ("price", "1.234", "does not fit DECIMAL(5,2) without rounding"),
        ("price", "0.001", "does not fit DECIMAL(5,2) without rounding"),
        ("whole", "123456", "does not fit DECIMAL(5,0) without rounding"),
        ("whole", "1.5", "does not fit DECIMAL(5,0) without rounding"),
        ("whole", ".5", "does not fit DECIMAL(5,0) without rounding"),
        ("frac", "1", "does not fit DECIMAL(2,2) without rounding"),
        ("frac", "0.123", "does not fit DECIMAL(2,2) without rounding"),
        ("price", "abc", "is not a decimal number"),
        ("price", "1,5", "is not a decimal number"),
        ("price", "NaN", "is not a finite decimal number"),
        ("price", "-Infinity", "is not a finite decimal number"),
        ("price", "\u0661\u0662.\u0665", "does not fit"),
    ],
)
def test_decimal_refused(things: TableSchema, column: str, value: str, why: str) -> None:
    assert why in _bad(things, column, value)


@pytest.mark.parametrize("value", ["1", "-1.5", "1e300", ".5e-3", "+7."])
def test_float_accepted(things: TableSchema, value: str) -> None:
    assert _ok(things, "ratio", value) == value


@pytest.mark.parametrize("value", ["nan", "inf", "1.2.3", "e5", "\u0661"])
def test_float_refused(things: TableSchema, value: str) -> None:
    assert _bad(things, "ratio", value).endswith("is not a number")


# --- validate: dates and times ----------------------------------------------------------------


@pytest.mark.parametrize(
    ("column", "value", "normalised"),
    [
        ("at", "2026-11-23 04:00:00", "2026-11-23 04:00:00"),
        ("at", "2026-11-23T04:00:00", "2026-11-23 04:00:00"),
        ("at", "2026-11-23 04:00", "2026-11-23 04:00"),
        ("at", "2026-11-23", "2026-11-23"),
        ("at", "2024-02-29 23:59:59.999999", "2024-02-29 23:59:59.999999"),
        ("at", "1000-01-01 00:00:00", "1000-01-01 00:00:00"),
        ("at", "9999-12-31 23:59:59", "9999-12-31 23:59:59"),
        ("ts", "1970-01-02 00:00:00", "1970-01-02 00:00:00"),
        ("ts", "2037-12-31 23:59:59", "2037-12-31 23:59:59"),
        ("day", "2024-02-29", "2024-02-29"),
    ],
)
def test_datetime_accepted(things: TableSchema, column: str, value: str, normalised: str) -> None:
    assert _ok(things, column, value) == normalised


@pytest.mark.parametrize(
    ("column", "value", "why"),
    [
        ("day", "2026-02-30", "is not a valid date"),
        ("day", "2023-02-29", "is not a valid date"),
        ("day", "2026-13-01", "is not a valid date"),
        ("day", "2026-11-23 04:00:00", "is not a DATE (expected YYYY-MM-DD)"),
        ("day", "23.11.2026", "is not a DATE"),
        ("day", "2026-1-2", "is not a DATE"),
        ("day", "0999-12-31", "is out of range (years 1000..9999)"),
        ("at", "2026-02-30 00:00:00", "is not a valid datetime"),
        ("at", "2026-11-23 24:00:00", "is not a valid datetime"),
        ("at", "2026-11-23 04:60:00", "is not a valid datetime"),
        ("at", "2026/11/23 04:00:00", "is not a DATETIME (expected YYYY-MM-DD HH:MM:SS)"),
        ("at", "23-11-2026 04:00:00", "is not a DATETIME"),
        ("at", "2026-11-23 4:00:00", "is not a DATETIME"),
        ("at", "2026-11-23T04:00:00Z", "is not a DATETIME"),
        ("at", "2026-11-23 04:00:00+01:00", "is not a DATETIME"),
        ("at", "2026-11-23 04:00:00.1234567", "is not a DATETIME"),
        ("at", "20261123", "is not a DATETIME"),
        ("at", "\uff12\uff10\uff12\uff16-11-23", "is not a DATETIME"),
        ("at", "0999-01-01 00:00:00", "is out of range (years 1000..9999)"),
        ("ts", "1969-12-31 23:59:59", "is out of range (years 1970..2037)"),
        ("ts", "2038-06-01 00:00:00", "is out of range (years 1970..2037)"),
    ],
)
def test_datetime_refused(things: TableSchema, column: str, value: str, why: str) -> None:
    assert why in _bad(things, column, value)


def test_datetime_column_takes_the_fast_path(things: TableSchema) -> None:
    """A clean column of present-day values is checked in C-level calls, not value by value."""
    col = [f"2026-11-{d:02d} 04:00:00" for d in range(1, 29)]
    assert things.columns["at"].fast(col) == col
    days = [f"2026-11-{d:02d}" for d in range(1, 29)]
    assert things.columns["day"].fast(days) == days
    assert things.columns["ts"].fast(col) == col
    # ...and hands out-of-range or odd values to the value-by-value check.
    assert things.columns["at"].fast([*col, "0999-01-01 00:00:00"]) is None
    assert things.columns["ts"].fast([*col, "2038-01-01 00:00:00"]) is None
    assert things.columns["at"].fast([*col, "2026-11-23T04:00:00"]) is None
    assert things.columns["day"].fast([*days, "2026-02-30"]) is None


# --- validate: booleans, strings, enums, empties, NUL -----------------------------------------


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("1", "1"),
        ("0", "0"),
        ("true", "1"),
        ("TRUE", "1"),
        ("False", "0"),
        (" yes ", "1"),
        ("No", "0"),
        ("Y", "1"),
        ("n", "0"),
        ("t", "1"),
        ("F", "0"),
    ],
)
def test_bool_words(things: TableSchema, value: str, expected: str) -> None:
    assert _ok(things, "flag", value) == expected


@pytest.mark.parametrize("value", ["2", "-1", "maybe", "on", "yess", "\u0661"])
def test_bool_refused(things: TableSchema, value: str) -> None:
    assert "is not a boolean" in _bad(things, "flag", value)


def test_bool_column_at_once(obs: TableSchema) -> None:
    specs = obs.specs_for(["in_stock"])
    rows = [["true"], ["false"], ["1"], ["0"], ["YES"], ["nope"]]
    out = obs.validate(specs, rows, [2, 3, 4, 5, 6, 7])
    assert out.rows == [("1",), ("0",), ("1",), ("0",), ("1",)]
    assert [r.line for r in out.rejects] == [7]


def test_varchar_counts_characters(things: TableSchema) -> None:
    for value in ("abcde", "ééééé", "\U0001f600" * 5, "日本語テキ"):
        assert _ok(things, "code", value) == value
    assert _bad(things, "code", "abcdef").endswith("is 6 characters, longer than 5")
    assert _bad(things, "code", "\U0001f600" * 6).endswith("is 6 characters, longer than 5")


def test_text_counts_bytes(things: TableSchema) -> None:
    assert _ok(things, "body", "a" * 65_535) == "a" * 65_535
    assert _ok(things, "body", "é" * 32_767) == "é" * 32_767
    assert _bad(things, "body", "a" * 65_536).endswith("is 65536 bytes, longer than 65535")
    assert _bad(things, "body", "é" * 32_768).endswith("is 65536 bytes, longer than 65535")
    assert _bad(things, "body", "\U0001f600" * 16_384).endswith("is 65536 bytes, longer than 65535")
    # A column-at-once check must not let a long multibyte value through.
    specs = things.specs_for(["body"])
    out = things.validate(specs, [["x"]] * 10 + [["é" * 40_000]], list(range(2, 13)))
    assert [r.line for r in out.rejects] == [12]


def test_enum(things: TableSchema) -> None:
    assert _ok(things, "color", "green") == "green"
    # MySQL matches ENUM values case-insensitively and stores its own spelling.
    assert _ok(things, "color", "RED") == "red"
    assert _bad(things, "color", "purple").endswith("is not one of red, green, blue")
    assert "is not one of" in _bad(things, "color", "red ")


@pytest.mark.parametrize(
    ("column", "expected"),
    [
        ("tiny", None),
        ("label", None),
        ("ts", None),
        ("color", None),
        ("body", None),
        ("code", ""),
        ("ratio", None),
    ],
)
def test_empty_field(things: TableSchema, column: str, expected: str | None) -> None:
    assert _ok(things, column, "") == expected


@pytest.mark.parametrize("column", ["count", "at", "flag"])
def test_empty_field_in_not_null_non_text_column(things: TableSchema, column: str) -> None:
    reason = _bad(things, column, "")
    assert reason == f"column 1 '{column}': '' is empty but column '{column}' is NOT NULL"


@pytest.mark.parametrize(
    ("column", "value"),
    [
        ("code", "ab\x00c"),
        ("body", "\x00"),
        ("signed", "1\x00"),
        ("flag", "1\x00"),
        ("at", "2026-01-01\x00"),
        ("color", "red\x00"),
    ],
)
def test_nul_character(things: TableSchema, column: str, value: str) -> None:
    reason = _bad(things, column, value)
    assert f"contains a NUL character at offset {value.index(chr(0))}" in reason


def test_ragged_rows(obs: TableSchema) -> None:
    specs = obs.resolve_header(_OBS_HEADER, source=SRC)
    good = ["2026-11-23 04:00:00", "7", "SKU-1", "12.50", "3", "true", "Kettle", ""]
    rows = [good, good[:7], [*good, "extra"], good, []]
    out = obs.validate(specs, [list(r) for r in rows], [2, 3, 5, 8, 9])
    assert out.lines == [2, 8]
    assert out.rows[0] == ("2026-11-23 04:00:00", "7", "SKU-1", "12.50", "3", "1", "Kettle", None)
    assert [(r.line, r.reason) for r in out.rejects] == [
        (3, "expected 8 fields, found 7"),
        (5, "expected 8 fields, found 9"),
        (9, "expected 8 fields, found 0"),
    ]
    assert out.rejects[1].raw == row_text([*good, "extra"])


def test_rejects_carry_line_column_and_first_failure(obs: TableSchema) -> None:
    specs = obs.resolve_header(_OBS_HEADER, source=SRC)

    def row(**over: str) -> list[str]:
        base = dict(
            observed_at="2026-11-23 04:00:00",
            bot_id="7",
            sku="SKU-1",
            price="12.50",
            quantity="3",
            in_stock="true",
            title="Kettle",
            note="",
        )
        base.update(over)
        return list(base.values())

    rows = [
        row(),
        row(quantity="40000"),
        row(price="12.345", quantity="x"),  # two faults: the first column is reported
        row(),
        row(sku="S" * 25),
        row(observed_at="2026-02-30 00:00:00"),
        row(in_stock="perhaps"),
        row(title="ü" * 120),
    ]
    lines = [2, 4, 5, 6, 10, 11, 12, 14]
    out = obs.validate(specs, rows, lines)
    assert out.lines == [2, 6, 14]
    reasons = {r.line: r.reason for r in out.rejects}
    assert list(reasons) == [4, 5, 10, 11, 12]
    assert reasons[4] == "column 5 'quantity': '40000' is out of range (-32768..32767)"
    assert reasons[5].startswith("column 4 'price': '12.345' does not fit DECIMAL(10,2)")
    assert (
        reasons[10]
        == "column 3 'sku': 'SSSSSSSSSSSSSSSSSSSSSSSSS' is 25 characters, longer than 24"
    )
    assert reasons[11] == "column 1 'observed_at': '2026-02-30 00:00:00' is not a valid datetime"
    assert reasons[12].startswith("column 6 'in_stock': 'perhaps' is not a boolean")
    for reject, source_row in zip(
        out.rejects, [rows[1], rows[2], rows[4], rows[5], rows[6]], strict=True
    ):
        assert reject.raw == row_text(source_row)


def test_long_bad_value_is_shortened_in_the_reason(things: TableSchema) -> None:
    reason = _bad(things, "signed", "9" * 100)
    assert "'" + "9" * 37 + "...'" in reason
    assert "9" * 38 not in reason


# --- fast path == slow path -------------------------------------------------------------------

_POOLS: dict[str, list[str]] = {
    "flag": ["1", "0", "true", "FALSE", " yes", "no", "maybe", "", "1\x00"],
    "tiny": ["0", "127", "-128", "128", "-129", "+5", "007", "", "x", "\u0661", "99"],
    "utiny": ["0", "255", "256", "-1", "-0", "", "12"],
    "count": ["0", "4294967295", "4294967296", "", "123456789", "-5", "1.0"],
    "big": ["9223372036854775807", "-9223372036854775808", "9223372036854775808", "42", ""],
    "price": ["123.45", "-999.99", "1234", "1.234", ".5", "12.", "", "NaN", "x", "+1"],
    "whole": ["12345", ".5", "12.0", "1.5", "", "0"],
    "frac": ["0", ".99", "1", "-0.01", ""],
    "ratio": ["1", "1e5", "-.5", "nan", "", "1.2.3"],
    "at": [
        "2026-11-23 04:00:00",
        "2026-11-23T04:00:00",
        "2026-02-30 00:00:00",
        "",
        "0999-01-01 00:00:00",
        "9999-12-31 23:59:59",
        "2026-11-23",
        "bad",
    ],
    "ts": ["2026-11-23 04:00:00", "2038-01-01 00:00:00", "1970-01-02 00:00:00", ""],
    "day": ["2026-11-23", "2026-02-30", "2026-11-23 04:00:00", "", "1999-12-31"],
    "code": ["abc", "abcde", "abcdef", "", "ééééé", "a\x00"],
    "label": ["x", "", "toolong"],
    "body": ["text", "", "é" * 20_000, "é" * 40_000, "\x00"],
    "color": ["red", "green", "RED", "purple", ""],
}
_CHECKED = list(_POOLS)


@st.composite
def _chunk(draw: st.DrawFn) -> tuple[list[str], list[list[str]], list[int]]:
    names = draw(st.lists(st.sampled_from(_CHECKED), min_size=1, max_size=6, unique=True))
    n = draw(st.integers(1, 30))
    # Mostly one "good" value per column so that the fast path is taken often.
    typical = {name: draw(st.sampled_from(_POOLS[name])) for name in names}
    rows = []
    for _ in range(n):
        if draw(st.integers(0, 19)) == 0:
            rows.append([typical[name] for name in names][: draw(st.integers(0, len(names)))])
            continue
        rows.append(
            [
                typical[name] if draw(st.booleans()) else draw(st.sampled_from(_POOLS[name]))
                for name in names
            ]
        )
    lines = sorted(draw(st.sets(st.integers(2, 10_000), min_size=n, max_size=n)))
    return names, rows, lines


def _expected_value(spec: ColumnSpec, value: str) -> str | None:
    """The documented rules, value by value, without any column-level shortcut."""
    if value == "":
        if spec.nullable:
            return None
        if spec.kind in ("string", "text"):
            return ""
        raise ValueError("empty")
    if "\x00" in value:
        raise ValueError("NUL")
    return spec.check(value)


@settings(max_examples=200, deadline=None)
@given(case=_chunk())
def test_fast_and_slow_paths_agree(
    things: TableSchema, case: tuple[list[str], list[list[str]], list[int]]
) -> None:
    names, rows, lines = case
    specs = things.specs_for(names)
    whole = things.validate(specs, [list(r) for r in rows], list(lines))

    single_rows: list[list[str | None]] = []
    single_lines: list[int] = []
    single_rejects: list[Reject] = []
    for row, line in zip(rows, lines, strict=True):
        single = things.validate(specs, [list(row)], [line])
        single_rows.extend(list(r) for r in single.rows)
        single_lines.extend(single.lines)
        single_rejects.extend(single.rejects)

    assert [list(r) for r in whole.rows] == single_rows
    assert whole.lines == single_lines
    assert whole.rejects == single_rejects

    # And both equal the value-by-value rules.
    expected_rows, expected_lines, expected_rejects = [], [], []
    for row, line in zip(rows, lines, strict=True):
        if len(row) != len(specs):
            expected_rejects.append(line)
            continue
        try:
            out = [_expected_value(s, v) for s, v in zip(specs, row, strict=True)]
        except ValueError:
            expected_rejects.append(line)
            continue
        expected_rows.append(out)
        expected_lines.append(line)
    assert [list(r) for r in whole.rows] == expected_rows
    assert whole.lines == expected_lines
    assert [r.line for r in whole.rejects] == expected_rejects


# --- row_checksum -----------------------------------------------------------------------------

_NAMES = ["observed_at", "bot_id", "sku", "price", "quantity", "in_stock", "title", "note"]


def _validated(obs: TableSchema, rows: list[list[str]]) -> list[Sequence[str | None]]:
    specs = obs.resolve_header(_NAMES, source=SRC)
    out = obs.validate(specs, rows, list(range(2, 2 + len(rows))))
    assert not out.rejects, out.rejects
    return out.rows


def _sample_rows(n: int) -> list[list[str]]:
    rng = random.Random(5)
    return [
        [
            f"2026-11-{1 + i % 28:02d} {i % 24:02d}:{i % 60:02d}:00",
            str(1 + i % 64),
            f"SKU-{i:06d}",
            f"{rng.randrange(0, 99_999_999) / 100:.2f}",
            str(rng.randrange(-100, 5000)),
            rng.choice(["true", "false", "1", "0"]),
            f"Title {i} ü",
            "" if i % 3 else f"note {i}",
        ]
        for i in range(n)
    ]


def test_checksum_is_order_independent_and_sensitive(obs: TableSchema) -> None:
    rows = _validated(obs, _sample_rows(200))
    count, total = obs.row_checksum(_NAMES, rows)
    assert count == 200
    shuffled = list(rows)
    random.Random(1).shuffle(shuffled)
    assert obs.row_checksum(_NAMES, shuffled) == (count, total)

    dup_count, dup_total = obs.row_checksum(_NAMES, [*rows, rows[17]])
    assert dup_count == 201
    assert dup_total != total
    # A duplicate in place of another row: same count, different sum.
    assert obs.row_checksum(_NAMES, [*rows[:-1], rows[0]])[1] != total

    edits: dict[str, Callable[[Any], str | None]] = {
        "observed_at": lambda v: v[:-1] + ("1" if v[-1] != "1" else "2"),
        "bot_id": lambda v: str(int(v) + 1),
        "sku": lambda v: v + "x",
        "price": lambda v: str(Decimal(v) + Decimal("0.01")),
        "quantity": lambda v: str(int(v) - 1),
        "in_stock": lambda v: "0" if v == "1" else "1",
        "title": lambda v: v.upper(),
        "note": lambda v: "note" if v is None else None,
    }
    for ci, name in enumerate(_NAMES):
        changed = [list(r) for r in rows]
        changed[42][ci] = edits[name](changed[42][ci])
        assert changed[42] != list(rows[42])
        assert obs.row_checksum(_NAMES, changed) != (count, total), name
    # NULL and the empty string differ.
    null_row = [list(rows[1])]
    null_row[0][7] = None
    empty_row = [list(rows[1])]
    empty_row[0][7] = ""
    assert obs.row_checksum(_NAMES, null_row) != obs.row_checksum(_NAMES, empty_row)


def test_checksum_of_database_values_equals_checksum_of_validated_text(
    obs: TableSchema,
) -> None:
    text_rows = [
        ["2026-11-23 04:05:06", "+7", "SKU-1", "12.5", "003", "true", "Kettle", ""],
        ["2026-11-23T00:00:00", "64", "SKU-2", "-0.00", "-5", "no", "Lamp", "note"],
        ["2026-11-23 23:59", "1", "SKU-3", ".75", "0", "Y", "Thermos ü", "x"],
        ["2026-11-24", "2", "SKU-4", "99999999.99", "32767", "0", "Mat", ""],
    ]
    db_rows = [
        (dt.datetime(2026, 11, 23, 4, 5, 6), 7, "SKU-1", Decimal("12.50"), 3, True, "Kettle", None),
        (dt.datetime(2026, 11, 23), 64, "SKU-2", Decimal("0.00"), -5, 0, "Lamp", "note"),
        (dt.datetime(2026, 11, 23, 23, 59), 1, "SKU-3", Decimal("0.75"), 0, 1, "Thermos ü", "x"),
        (dt.datetime(2026, 11, 24), 2, "SKU-4", Decimal("99999999.99"), 32767, False, "Mat", None),
    ]
    validated = _validated(obs, text_rows)
    assert obs.row_checksum(_NAMES, validated) == obs.row_checksum(_NAMES, db_rows)
    for i in range(len(db_rows)):  # row by row, so one mismatch cannot hide behind another
        assert obs.row_checksum(_NAMES, [validated[i]]) == obs.row_checksum(_NAMES, [db_rows[i]])
    off_by_a_cent = [list(r) for r in db_rows]
    off_by_a_cent[0][3] = Decimal("12.51")
    assert obs.row_checksum(_NAMES, off_by_a_cent) != obs.row_checksum(_NAMES, validated)


def test_checksum_canonical_forms_of_other_types(things: TableSchema) -> None:
    names = ["day", "wide", "color", "flag", "ubig"]
    specs = things.specs_for(names)
    wide = "12345678901234567890123456789012345.5"
    out = things.validate(
        specs, [["2026-11-23", wide, "GREEN", "yes", "18446744073709551615"]], [2]
    )
    assert not out.rejects
    db = [(dt.date(2026, 11, 23), Decimal(wide + "0" * 29), "green", 1, 2**64 - 1)]
    assert things.row_checksum(names, out.rows) == things.row_checksum(names, db)
