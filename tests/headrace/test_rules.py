"""Typing CSV text against MySQL columns: the rule for each kind, fast path == slow path.

The rules (:mod:`headrace.rules`) are exercised through :meth:`TableSchema.validate`, the way
the producer uses them.
"""

from __future__ import annotations

import re

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from headrace.schema import ColumnSpec, Reject, TableSchema, row_text


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
        # Issue 12: a zero fraction fits DATETIME (fsp 0); offsets are converted to UTC.
        ("at", "2024-02-29 23:59:59.000", "2024-02-29 23:59:59"),
        ("at", "2026-11-23T04:00:00Z", "2026-11-23 04:00:00"),
        ("at", "2026-11-23 04:00:00+01:00", "2026-11-23 03:00:00"),
        ("at", "2026-11-23T23:30:00-02:00", "2026-11-24 01:30:00"),
        ("at", "2026-11-23T04:00:00+0530", "2026-11-22 22:30:00"),
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
        ("at", "2026-11-23 04:00:00.1234567", "has 7 fractional digits; the column keeps 0"),
        ("at", "2024-02-29 23:59:59.999999", "has 6 fractional digits; the column keeps 0"),
        ("at", "2026-11-23 04:00:00+24:00", "has an invalid UTC offset"),
        ("at", "2026-11-23 04:00:00 +01:00", "is not a DATETIME"),
        ("at", "2026-11-23 04:00:00z", "is not a DATETIME"),
        ("at", "9999-12-31T23:00:00-02:00", "is out of range (years 1000..9999)"),
        ("day", "2026-11-23T00:00:00Z", "is not a DATE"),
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
