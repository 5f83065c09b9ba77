"""`headrace produce`/`verify` flags for the CSV format (issue 12): flags win over settings."""

from __future__ import annotations

import pytest

from cli.csvflags import apply_format_flags
from cli.main import _parser
from headrace.errors import ConfigError
from headrace.settings import Settings


def _apply(*argv: str, settings: Settings | None = None) -> Settings:
    args = _parser().parse_args(argv)
    return apply_format_flags(settings or Settings(), args)


def test_every_flag_reaches_the_settings() -> None:
    s = _apply(
        "produce", "f.csv", "--table", "t",
        "--delimiter", ";", "--quote", "'", "--escape", "\\", "--no-doublequote",
        "--encoding", "utf-16", "--skip-lines", "2", "--no-header", "--columns", "a, b",
        "--map", "a=x", "--map", "b=y", "--ignore-column", "c", "--null", "NA", "--null", "",
        "--timezone", "Europe/Paris", "--datetime-format", "%d.%m.%Y", "--decimal-comma",
        "--true", "ja", "--false", "nein", "--on-duplicate", "skip",
    )  # fmt: skip
    fmt = s.producer.csv
    assert (fmt.delimiter, fmt.quote, fmt.escape, fmt.doublequote) == (";", "'", "\\", False)
    assert (fmt.encoding, fmt.skip_lines, fmt.header, fmt.columns) == (
        "utf-16",
        2,
        False,
        ["a", "b"],
    )
    assert (fmt.rename, fmt.ignore, fmt.nulls) == ({"a": "x", "b": "y"}, ["c"], ["NA", ""])
    assert (fmt.timezone, fmt.datetime_formats, fmt.decimal_comma) == (
        "Europe/Paris",
        ["%d.%m.%Y"],
        True,
    )
    assert (fmt.true_words, fmt.false_words) == (["ja"], ["nein"])
    assert s.producer.on_duplicate == "skip"


def test_no_flags_keep_the_settings_object() -> None:
    settings = Settings(producer={"csv": {"delimiter": "|"}})  # type: ignore[arg-type]
    assert _apply("verify", "f.csv", "--table", "t", settings=settings) is settings


def test_flags_win_and_the_rest_of_the_setting_stays() -> None:
    settings = Settings(producer={"csv": {"delimiter": "|", "nulls": ["NULL"]}})  # type: ignore[arg-type]
    fmt = _apply("verify", "f.csv", "--table", "t", "--null", "NA", settings=settings).producer.csv
    assert (fmt.delimiter, fmt.nulls) == ("|", ["NA"])


@pytest.mark.parametrize(
    ("argv", "why"),
    [
        (("--map", "a"), "--map wants CSV_NAME=COLUMN"),
        (("--map", "a="), "--map wants CSV_NAME=COLUMN"),
        (("--no-header",), "invalid CSV options: .*needs its column names"),
        (("--delimiter", "::"), "invalid CSV options: delimiter: .*one character"),
    ],
)
def test_bad_flags_are_config_errors(argv: tuple[str, ...], why: str) -> None:
    with pytest.raises(ConfigError, match=why):
        _apply("produce", "f.csv", "--table", "t", *argv)


def test_verify_has_no_on_duplicate() -> None:
    with pytest.raises(SystemExit):
        _parser().parse_args(["verify", "f.csv", "--table", "t", "--on-duplicate", "skip"])
