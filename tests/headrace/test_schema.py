"""TableSchema: reflection, header resolution, validating chunks (ragged rows, rejects)."""

from __future__ import annotations

import re

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


def test_decimal_columns_carry_their_scale(things: TableSchema) -> None:
    scales = {name: spec.scale for name, spec in things.columns.items() if spec.scale is not None}
    assert scales == {"price": 2, "whole": 0, "frac": 2, "wide": 30}


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
