"""Multi-row INSERT text (no server): escaping, NULLs, statement cutting."""

from __future__ import annotations

import itertools

import pytest

from worker.sqltext import ESCAPES, NULL_MARK, RowTexts, escape_column


def test_clean_columns_come_back_as_they_are() -> None:
    col = ["1", "22", "abc", "2026-11-22 10:00:00"]
    assert escape_column(col) is col


@pytest.mark.parametrize(
    ("value", "escaped"),
    [
        ("it's", "it\\'s"),
        ('say "hi"', 'say \\"hi\\"'),
        ("a\\b", "a\\\\b"),
        ("nul\x00", "nul\\0"),
        ("\n\r\x1a", "\\n\\r\\Z"),
    ],
)
def test_characters_mysql_escapes_are_escaped(value: str, escaped: str) -> None:
    assert escape_column(["plain", value]) == ["plain", escaped]
    assert escape_column([None, value]) == [NULL_MARK, escaped]
    assert value.translate(ESCAPES) == escaped


def test_values_wrap_rows_and_render_nulls_unquoted() -> None:
    texts = RowTexts([["1", "2", None], ["a'b", None, "\x00N"]])
    # A value that looks like the NULL mark is escaped, so it stays a string.
    assert texts.values(0, 3) == "('1','a\\'b'),('2',NULL),(NULL,'\\0N')"
    assert texts.values(1, 2) == "('2',NULL)"


def test_integer_columns_of_plain_digits_go_unquoted() -> None:
    texts = RowTexts([["1", "22"], ["a", None], ["007", "8"]], integer=[True, False, True])
    assert texts.values(0, 2) == "(1,'a',007),(22,NULL,8)"
    assert RowTexts([["5"]], integer=[True]).values(0, 1) == "(5)"
    # Digits in a text column stay a string ('007' is not 7 there).
    assert RowTexts([["007"], ["1"]], integer=[False, True]).values(0, 1) == "('007',1)"


@pytest.mark.parametrize(
    "odd", ["-1", "+1", " 1", "1 ", "", None, "1e3", "0x1F", "1-2", "١٢", "1)", "1,2"]
)
def test_anything_but_plain_digits_keeps_an_integer_column_quoted(odd: str | None) -> None:
    """An unquoted value can only ever be a number: one odd value quotes the whole column."""
    texts = RowTexts([["1", odd], ["x", "y"]], integer=[True, False])
    shown = "NULL" if odd is None else "'" + odd.translate(ESCAPES) + "'"
    assert texts.values(0, 2) == f"('1','x'),({shown},'y')"


@pytest.mark.parametrize("integer", [[False, False], [True, False], [False, True], [True, True]])
def test_slices_stay_within_the_budget_and_cover_every_row(integer: list[bool]) -> None:
    rows = 100
    texts = RowTexts([[str(i) * (1 + i % 7) for i in range(rows)], ["9"] * rows], integer)
    budget = 60
    got = list(texts.slices(5, rows, budget))
    assert got[0][0] == 5
    assert got[-1][1] == rows
    assert all(a[1] == b[0] for a, b in itertools.pairwise(got))
    for lo, hi in got:
        assert texts.chars(lo, hi) == len(texts.values(lo, hi)) + 1  # + the next row's comma
        assert texts.chars(lo, hi) <= budget or hi - lo == 1
        # A longer run would not have fitted.
        if hi < rows:
            assert texts.chars(lo, hi + 1) > budget


def test_a_row_bigger_than_the_budget_goes_alone() -> None:
    texts = RowTexts([["a" * 50, "b", "c" * 50]])
    assert list(texts.slices(0, 3, 20)) == [(0, 1), (1, 2), (2, 3)]
