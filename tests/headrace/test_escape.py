"""Column-at-a-time escaping (shared by INSERT text and LOAD DATA)."""

from __future__ import annotations

import re

from headrace.escape import escape_column

NEEDS = re.compile("[|]")
TABLE = str.maketrans({"|": "\\|"})


def test_a_clean_column_is_the_same_object() -> None:
    col = ["a", "b"]
    assert escape_column(col, needs=NEEDS, table=TABLE, null="~") is col


def test_values_are_escaped_and_none_becomes_the_null_text() -> None:
    assert escape_column(["a|b", "c"], needs=NEEDS, table=TABLE, null="~") == ["a\\|b", "c"]
    assert escape_column([None, "c"], needs=NEEDS, table=TABLE, null="~") == ["~", "c"]
    assert escape_column([None, "a|"], needs=NEEDS, table=TABLE, null="~") == ["~", "a\\|"]
