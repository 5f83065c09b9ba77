"""Typing with a CsvFormat (issue 12): null markers, time zones, date-time layouts, decimal
comma, boolean words, column maps; and the options' own validation.

Each value either comes out as the exact text the database will store, or is rejected with
its reason; the fast (whole-column) path and the value-by-value path agree.
"""

from __future__ import annotations

import datetime as dt
import zoneinfo

import pytest
import sqlalchemy as sa
from hypothesis import given, settings
from hypothesis import strategies as st
from pydantic import ValidationError
from sqlalchemy.dialects import mysql

from headrace.csvformat import CsvFormat
from headrace.errors import InputError
from headrace.schema import TableSchema


def _table() -> sa.Table:
    return sa.Table(
        "m",
        sa.MetaData(),
        sa.Column("id", mysql.BIGINT(unsigned=True), primary_key=True, autoincrement=True),
        sa.Column("n", mysql.INTEGER()),
        sa.Column("req", mysql.INTEGER(), nullable=False),
        sa.Column("name", mysql.VARCHAR(10)),
        sa.Column("code", mysql.VARCHAR(10), nullable=False),
        sa.Column("amount", mysql.DECIMAL(10, 2)),
        sa.Column("ratio", mysql.DOUBLE()),
        sa.Column("at", mysql.DATETIME(fsp=3)),
        sa.Column("ts", mysql.TIMESTAMP()),
        sa.Column("day", mysql.DATE()),
        sa.Column("flag", mysql.TINYINT(display_width=1)),
        sa.Column("dur", mysql.TIME(fsp=2)),
    )


BASE = TableSchema.from_table(_table(), [("code",)])


def _typed(**options: object) -> TableSchema:
    return BASE.typed(CsvFormat.model_validate(options))


def _column(schema: TableSchema, column: str, values: list[str]) -> list[str | Exception | None]:
    """Each value's outcome, checked both as one column (fast path) and one by one."""
    specs = schema.specs_for([column])
    whole = schema.validate(specs, [[v] for v in values], list(range(1, len(values) + 1)))
    by_line: dict[int, str | Exception | None] = {
        line: row[0] for line, row in zip(whole.lines, whole.rows, strict=True)
    }
    by_line.update({r.line: ValueError(r.reason) for r in whole.rejects})
    out = [by_line[i] for i in range(1, len(values) + 1)]
    for i, value in enumerate(values):  # one at a time: the same outcome
        alone = schema.validate(specs, [[value]], [1])
        got = alone.rows[0][0] if alone.lines else ValueError(alone.rejects[0].reason)
        assert type(got) is type(out[i]), (value, got, out[i])
        assert str(got) == str(out[i]), (value, got, out[i])
    return out


def _one(schema: TableSchema, column: str, value: str) -> str | None:
    got = _column(schema, column, [value])[0]
    assert not isinstance(got, Exception), got
    return got


def _why(schema: TableSchema, column: str, value: str) -> str:
    got = _column(schema, column, [value])[0]
    assert isinstance(got, Exception), f"{value!r} was accepted as {got!r}"
    return str(got)


# --- null markers ----------------------------------------------------------------------------


def test_a_marker_is_null_in_a_nullable_column_and_refused_in_a_not_null_one() -> None:
    s = _typed(nulls=["NA", "\\N"])
    assert _column(s, "n", ["1", "NA", "\\N", "3"]) == ["1", None, None, "3"]
    assert _one(s, "name", "NA") is None
    assert "is a null marker but column 'req' is NOT NULL" in _why(s, "req", "NA")
    assert "is a null marker but column 'code' is NOT NULL" in _why(s, "code", "\\N")


def test_with_markers_an_empty_field_is_empty_text_and_refused_elsewhere() -> None:
    s = _typed(nulls=["NA"])
    assert _column(s, "name", ["", "x", "NA"]) == ["", "x", None]
    assert _one(s, "code", "") == ""
    assert "is empty and not a null marker ('NA')" in _why(s, "n", "")
    assert "is empty and not a null marker" in _why(s, "at", "")


def test_the_empty_marker_makes_empty_fields_null() -> None:
    s = _typed(nulls=["NA", ""])
    assert _column(s, "name", ["", "x", "NA"]) == [None, "x", None]
    assert _column(s, "n", ["", "7"]) == [None, "7"]
    assert "is a null marker but column 'code' is NOT NULL" in _why(s, "code", "")


def test_without_markers_na_is_a_value() -> None:
    assert _one(BASE, "name", "NA") == "NA"
    assert "is not an integer" in _why(BASE, "n", "NA")


def test_markers_in_a_large_column_take_the_fast_path_and_agree() -> None:
    s = _typed(nulls=["NA"])
    values = [str(i) if i % 7 else "NA" for i in range(200)] + ["oops"]
    got = _column(s, "n", values)
    assert got[:200] == [v if v != "NA" else None for v in values[:200]]
    assert isinstance(got[200], Exception)


# --- date-times ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("column", "value", "stored"),
    [
        ("at", "2013-01-01T05:00:00Z", "2013-01-01 05:00:00"),
        ("at", "2013-01-01T05:00:00.120Z", "2013-01-01 05:00:00.12"),
        ("at", "2013-01-01 05:00:00.123", "2013-01-01 05:00:00.123"),
        ("at", "2013-01-01 05:00:00.123000", "2013-01-01 05:00:00.123"),
        ("at", "2013-01-01T00:30:00+01:00", "2012-12-31 23:30:00"),
        ("at", "2013-01-01T05:00:00+01", "2013-01-01 04:00:00"),
        ("ts", "2013-01-01T05:00:00-05:00", "2013-01-01 10:00:00"),
        ("day", "2013-01-01", "2013-01-01"),
    ],
)
def test_iso_8601_by_default(column: str, value: str, stored: str) -> None:
    assert _one(BASE, column, value) == stored


@pytest.mark.parametrize(
    ("column", "value", "why"),
    [
        ("at", "2013-01-01 05:00:00.1234", "has 4 fractional digits; the column keeps 3"),
        ("ts", "2013-01-01 05:00:00.5", "has 1 fractional digits; the column keeps 0"),
        ("ts", "1970-01-01T00:30:00+01:00", "is out of range (years 1970..2037)"),
        ("at", "2013-01-01T05:00:00+1:00", "is not a DATETIME"),
    ],
)
def test_iso_8601_refused(column: str, value: str, why: str) -> None:
    assert why in _why(BASE, column, value)


def test_timezone_converts_naive_timestamps_only() -> None:
    s = _typed(timezone="Europe/Berlin")
    assert _one(s, "ts", "2026-07-01 12:00:00") == "2026-07-01 10:00:00"
    assert _one(s, "ts", "2026-01-01 00:30:00") == "2025-12-31 23:30:00"
    assert _one(s, "ts", "2026-07-01T12:00:00Z") == "2026-07-01 12:00:00"  # has its own
    assert _one(s, "at", "2026-07-01 12:00:00") == "2026-07-01 12:00:00"  # DATETIME: naive
    assert "skipped or repeated in Europe/Berlin" in _why(s, "ts", "2026-03-29 02:30:00")
    assert "skipped or repeated in Europe/Berlin" in _why(s, "ts", "2026-10-25 02:30:00")


def test_datetime_formats_are_applied_exactly() -> None:
    s = _typed(datetime_formats=["%d.%m.%Y", "%d/%m/%Y %H:%M"])
    assert _one(s, "day", "23.11.2026") == "2026-11-23"
    assert _one(s, "day", "2026-11-23") == "2026-11-23"  # ISO still works
    assert _one(s, "at", "23/11/2026 04:05") == "2026-11-23 04:05:00"
    assert _one(s, "at", "23.11.2026") == "2026-11-23 00:00:00"
    assert "is not a DATE (expected YYYY-MM-DD, %d.%m.%Y" in _why(s, "day", "31.02.2026")
    assert "is not a DATETIME" in _why(s, "at", "23/11/2026 04:05:06")
    assert "is not a DATE" in _why(s, "day", " 23.11.2026")
    assert "has a time of day but the column is a DATE" in _why(s, "day", "23/11/2026 04:05")


def test_format_with_offset_and_fraction() -> None:
    s = _typed(datetime_formats=["%m/%d/%Y %H:%M:%S.%f%z"])
    assert _one(s, "at", "11/23/2026 04:05:06.250+0100") == "2026-11-23 03:05:06.25"
    assert "more fractional digits than the column keeps (3)" in _why(
        s, "at", "11/23/2026 04:05:06.2501+0100"
    )


_OFFSETS = st.integers(-14 * 60, 14 * 60).map(lambda m: dt.timedelta(minutes=m))


def _offset_text(delta: dt.timedelta) -> str:
    minutes = int(delta.total_seconds() // 60)
    sign = "-" if minutes < 0 else "+"
    return f"{sign}{abs(minutes) // 60:02d}:{abs(minutes) % 60:02d}"


@given(
    moment=st.datetimes(min_value=dt.datetime(1000, 1, 2), max_value=dt.datetime(9999, 12, 30)),
    offset=_OFFSETS,
    digits=st.integers(0, 6),
)
@settings(max_examples=300, deadline=None)
def test_an_offset_value_is_its_utc_instant_or_refused(
    moment: dt.datetime, offset: dt.timedelta, digits: int
) -> None:
    """A DATETIME(3) value with an offset: exactly the UTC instant, or refused (too precise)."""
    frac = f"{moment.microsecond:06d}"[:digits]
    text = moment.strftime("%Y-%m-%dT%H:%M:%S") + (f".{frac}" if digits else "")
    text += _offset_text(offset)
    got = _column(BASE, "at", [text])[0]
    if digits > 3 and frac[3:].strip("0"):
        assert isinstance(got, Exception)
        assert f"has {digits} fractional digits; the column keeps 3" in str(got)
        return
    assert not isinstance(got, Exception), (text, got)
    micro = int(frac.ljust(6, "0")) if digits else 0
    utc = moment.replace(microsecond=micro) - offset
    assert got is not None
    assert dt.datetime.fromisoformat(got) == utc


@given(moment=st.datetimes(min_value=dt.datetime(1971, 1, 1), max_value=dt.datetime(2037, 1, 1)))
@settings(max_examples=200, deadline=None)
def test_a_naive_timestamp_in_a_zone_is_its_instant_or_refused(moment: dt.datetime) -> None:
    zone = zoneinfo.ZoneInfo("America/New_York")
    s = _typed(timezone="America/New_York")
    text = moment.strftime("%Y-%m-%d %H:%M:%S")
    got = _column(s, "ts", [text])[0]
    local = moment.replace(microsecond=0)
    early, late = local.replace(tzinfo=zone, fold=0), local.replace(tzinfo=zone, fold=1)
    if early.utcoffset() != late.utcoffset():
        assert isinstance(got, Exception)
        assert "daylight-saving" in str(got)
        return
    assert got == early.astimezone(dt.UTC).strftime("%Y-%m-%d %H:%M:%S")


# --- numbers and booleans --------------------------------------------------------------------


def test_decimal_comma() -> None:
    s = _typed(decimal_comma=True)
    got = _column(s, "amount", ["1.234,56", "-0,5", "12", ",25", "1.234.567,8", "+3,10"])
    assert got == ["1234.56", "-0.5", "12", ".25", "1234567.8", "+3.10"]
    assert "decimal comma" in _why(s, "amount", "1,234.56")
    assert "decimal comma" in _why(s, "amount", "1.23,4")
    assert "decimal comma" in _why(s, "amount", "1.5")
    assert "does not fit DECIMAL(10,2)" in _why(s, "amount", "1,234")
    assert _one(s, "ratio", "1,5e3") == "1.5e3"
    assert "is not a decimal number" in _why(s, "amount", "1e3")


def test_exponents_only_for_floating_point() -> None:
    assert _one(BASE, "ratio", "1e3") == "1e3"
    assert _one(BASE, "ratio", "-2.5E-7") == "-2.5E-7"
    assert "is not a decimal number" in _why(BASE, "amount", "1e3")
    assert "is not a number" in _why(BASE, "ratio", "NaN")


def test_more_boolean_words() -> None:
    s = _typed(true_words=["ja", "X"], false_words=["nein", "-"])
    assert _column(s, "flag", ["ja", "x", "Nein", "-", "true", "0"]) == [
        "1",
        "1",
        "0",
        "0",
        "1",
        "0",
    ]
    assert "is not a boolean" in _why(s, "flag", "vielleicht")
    assert "is not a boolean" in _why(BASE, "flag", "ja")


def test_time_keeps_its_precision_and_range() -> None:
    assert _column(BASE, "dur", ["12:30:00.12", "-838:59:59", "00:05"]) == [
        "12:30:00.12",
        "-838:59:59",
        "00:05",
    ]
    for bad in ("12:30:00.123", "839:00:00", "12:75:00", "12:30:61"):
        assert "is not a TIME" in _why(BASE, "dur", bad)


# --- columns: map, ignore, layout ------------------------------------------------------------


def test_map_and_ignore_columns() -> None:
    fmt = CsvFormat(rename={"Code": "code", "Anzahl": "req"}, ignore=["extra", "notes"])
    specs, layout = BASE.resolve_columns(["extra", "Code", "notes", "Anzahl"], fmt, source="f")
    assert [s.name for s in specs] == ["code", "req"]
    assert layout is not None
    assert (layout.width, layout.keep) == (4, (1, 3))
    out = BASE.validate(
        specs, [["x", "A", "y", "1"], ["x", "B", "2"], ["", "C", "", "zz"]], [2, 3, 4], layout
    )
    assert out.rows == [("A", "1")]
    assert [(r.line, r.reason.split(":")[0]) for r in out.rejects] == [
        (3, "expected 4 fields, found 3"),
        (4, "column 2 'req'"),
    ]


def test_unknown_columns_still_stop_the_run_and_name_their_position() -> None:
    fmt = CsvFormat(ignore=["extra"])
    with pytest.raises(InputError, match="'bogus' is not a writable column") as err:
        BASE.resolve_columns(["extra", "code", "bogus", "req"], fmt, source="f.csv")
    assert str(err.value).startswith("f.csv:1:3:")
    with pytest.raises(InputError, match="--ignore-column names 'nope', not a column"):
        BASE.resolve_columns(["code", "req"], CsvFormat(ignore=["nope"]), source="f.csv")
    with pytest.raises(InputError, match="--map names 'Nope', not a column"):
        BASE.resolve_columns(["code", "req"], CsvFormat(rename={"Nope": "n"}), source="f.csv")


# --- the options themselves ------------------------------------------------------------------


@pytest.mark.parametrize(
    ("options", "why"),
    [
        ({"delimiter": ";;"}, "must be one character"),
        ({"delimiter": "\n"}, "must be one character"),
        ({"delimiter": '"'}, "must be different characters"),
        ({"header": False}, "needs its column names"),
        ({"columns": ["a"]}, "file without a header only"),
        ({"timezone": "Mars/Olympus"}, "unknown time zone"),
        ({"datetime_formats": ["dd.mm.yyyy"]}, "is not a strptime layout"),
        ({"true_words": ["ja"], "false_words": ["JA"]}, "all different"),
        ({"encoding": "ebcdic"}, "encoding"),
        ({"skip_lines": -1}, "skip_lines"),
    ],
)
def test_invalid_options(options: dict[str, object], why: str) -> None:
    with pytest.raises(ValidationError, match=why):
        CsvFormat.model_validate(options)


def test_fingerprint_names_only_what_changed() -> None:
    assert CsvFormat().fingerprint() == ""
    assert CsvFormat(delimiter=",").fingerprint() == ""
    a = CsvFormat(delimiter="tab", nulls=["NA"]).fingerprint()
    assert a
    assert a == CsvFormat(nulls=["NA"], delimiter="\t").fingerprint()
    assert a != CsvFormat(delimiter="tab", nulls=["NULL"]).fingerprint()


def test_default_format_keeps_the_default_rules() -> None:
    assert BASE.typed(CsvFormat()) is BASE
    assert BASE.typed(CsvFormat(delimiter=";", encoding="cp1252")) is BASE
