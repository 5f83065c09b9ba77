"""TableSchema: reflection, header resolution, validating chunks, row checksums."""

from __future__ import annotations

import datetime as dt
import random
import re
from collections.abc import Callable, Sequence
from decimal import Decimal
from typing import Any

import pytest

from headrace.errors import InputError, SchemaError
from headrace.schema import TableSchema, row_text

SRC = "drop.csv"


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


# --- validate: ragged rows, rejects -----------------------------------------------------------


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
