"""Row checksums: order-independent, sensitive to every column, equal for text and DB values."""

from __future__ import annotations

import datetime as dt
import random
from collections.abc import Callable, Sequence
from decimal import Decimal
from typing import Any

from cli.checksum import row_checksum
from headrace.schema import TableSchema

SRC = "drop.csv"
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
    specs = obs.specs_for(_NAMES)
    rows = _validated(obs, _sample_rows(200))
    count, total = row_checksum(specs, rows)
    assert count == 200
    shuffled = list(rows)
    random.Random(1).shuffle(shuffled)
    assert row_checksum(specs, shuffled) == (count, total)

    dup_count, dup_total = row_checksum(specs, [*rows, rows[17]])
    assert dup_count == 201
    assert dup_total != total
    # A duplicate in place of another row: same count, different sum.
    assert row_checksum(specs, [*rows[:-1], rows[0]])[1] != total

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
        assert row_checksum(specs, changed) != (count, total), name
    # NULL and the empty string differ.
    null_row = [list(rows[1])]
    null_row[0][7] = None
    empty_row = [list(rows[1])]
    empty_row[0][7] = ""
    assert row_checksum(specs, null_row) != row_checksum(specs, empty_row)


def test_checksum_of_database_values_equals_checksum_of_validated_text(
    obs: TableSchema,
) -> None:
    specs = obs.specs_for(_NAMES)
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
    assert row_checksum(specs, validated) == row_checksum(specs, db_rows)
    for i in range(len(db_rows)):  # row by row, so one mismatch cannot hide behind another
        assert row_checksum(specs, [validated[i]]) == row_checksum(specs, [db_rows[i]])
    off_by_a_cent = [list(r) for r in db_rows]
    off_by_a_cent[0][3] = Decimal("12.51")
    assert row_checksum(specs, off_by_a_cent) != row_checksum(specs, validated)


def test_checksum_canonical_forms_of_other_types(things: TableSchema) -> None:
    names = ["day", "wide", "color", "flag", "ubig"]
    specs = things.specs_for(names)
    wide = "12345678901234567890123456789012345.5"
    out = things.validate(
        specs, [["2026-11-23", wide, "GREEN", "yes", "18446744073709551615"]], [2]
    )
    assert not out.rejects
    db = [(dt.date(2026, 11, 23), Decimal(wide + "0" * 29), "green", 1, 2**64 - 1)]
    assert row_checksum(specs, out.rows) == row_checksum(specs, db)
