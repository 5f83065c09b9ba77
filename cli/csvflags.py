"""The flags that say how a CSV file is written, shared by `headrace produce` and `verify`.

Each flag is also a setting (``HEADRACE_PRODUCER__CSV__*``, ``HEADRACE_PRODUCER__ON_DUPLICATE``);
a flag given on the command line wins over the setting.
"""

from __future__ import annotations

import argparse
from typing import Any

from pydantic import ValidationError

from headrace.csvformat import CsvFormat
from headrace.errors import ConfigError
from headrace.settings import Settings

__all__ = ["add_format_flags", "apply_format_flags"]


def add_format_flags(parser: argparse.ArgumentParser, *, writing: bool) -> None:
    """The reading flags (and with ``writing``, ``--on-duplicate``) on ``parser``."""
    g = parser.add_argument_group("how the file is written (each also a setting)")
    g.add_argument("--delimiter", help="field separator: , ; | or tab (default ,)")
    g.add_argument("--quote", help='quote character (default ")')
    g.add_argument("--escape", help="escape character inside fields, e.g. \\ (default: none)")
    g.add_argument(
        "--no-doublequote",
        dest="doublequote",
        action="store_const",
        const=False,
        help='a doubled quote "" is not a quote (with --escape)',
    )
    g.add_argument(
        "--encoding",
        choices=("utf-8", "latin-1", "cp1252", "utf-16"),
        help="default utf-8 (strict); utf-16 needs a byte-order mark",
    )
    g.add_argument("--skip-lines", type=int, metavar="N", help="lines before the header")
    g.add_argument(
        "--no-header",
        dest="header",
        action="store_const",
        const=False,
        help="the file has no header line: name its columns with --columns",
    )
    g.add_argument("--columns", metavar="A,B,C", help="column names of a file without header")
    g.add_argument(
        "--map",
        action="append",
        metavar="CSV_NAME=COLUMN",
        help="load the file's column CSV_NAME into COLUMN (repeatable)",
    )
    g.add_argument(
        "--ignore-column",
        action="append",
        metavar="NAME",
        help="leave out the file's column NAME (repeatable; default: unknown columns stop)",
    )
    g.add_argument(
        "--null",
        action="append",
        metavar="MARKER",
        help="a field spelling NULL: NA, NULL, \\N, '' for empty (repeatable)",
    )
    g.add_argument("--timezone", help="IANA zone of naive values for TIMESTAMP columns")
    g.add_argument(
        "--datetime-format",
        action="append",
        metavar="LAYOUT",
        help="strptime layout tried after ISO 8601, e.g. %%d.%%m.%%Y (repeatable)",
    )
    g.add_argument(
        "--decimal-comma",
        action="store_const",
        const=True,
        help="numbers written 1.234,56 (DECIMAL, FLOAT, DOUBLE)",
    )
    g.add_argument("--true", action="append", metavar="WORD", help="another word for true")
    g.add_argument("--false", action="append", metavar="WORD", help="another word for false")
    if writing:
        parser.add_argument(
            "--on-duplicate",
            choices=("error", "skip", "update"),
            help="a row whose unique key exists: error (rejected; default), skip, update",
        )


def _overrides(args: argparse.Namespace) -> dict[str, Any]:
    given: dict[str, Any] = {
        "delimiter": args.delimiter,
        "quote": args.quote,
        "escape": args.escape,
        "doublequote": args.doublequote,
        "encoding": args.encoding,
        "skip_lines": args.skip_lines,
        "header": args.header,
        "columns": [c.strip() for c in args.columns.split(",")] if args.columns else None,
        "ignore": args.ignore_column,
        "nulls": args.null,
        "timezone": args.timezone,
        "datetime_formats": args.datetime_format,
        "decimal_comma": args.decimal_comma,
        "true_words": args.true,
        "false_words": args.false,
    }
    if args.map:
        pairs = [m.partition("=") for m in args.map]
        bad = [m for m, (_, eq, target) in zip(args.map, pairs, strict=True) if not (eq and target)]
        if bad:
            raise ConfigError(f"--map wants CSV_NAME=COLUMN, not {bad[0]!r}")
        given["rename"] = {name.strip(): target.strip() for name, _, target in pairs}
    return {k: v for k, v in given.items() if v is not None}


def apply_format_flags(settings: Settings, args: argparse.Namespace) -> Settings:
    """``settings`` with the flags given on the command line in ``producer``."""
    changed = _overrides(args)
    producer_update: dict[str, Any] = {}
    if changed:
        try:
            fmt = CsvFormat.model_validate(
                {**settings.producer.csv.model_dump(exclude_defaults=True), **changed}
            )
        except ValidationError as exc:
            reasons = "; ".join(
                f"{'.'.join(map(str, e['loc'])) or 'options'}: {e['msg']}" for e in exc.errors()
            )
            raise ConfigError(f"invalid CSV options: {reasons}") from None
        producer_update["csv"] = fmt
    if getattr(args, "on_duplicate", None) is not None:
        producer_update["on_duplicate"] = args.on_duplicate
    if not producer_update:
        return settings
    return settings.model_copy(
        update={"producer": settings.producer.model_copy(update=producer_update)}
    )
