"""How a CSV file is written: its dialect, encoding and layout, and how its text spells values.

One :class:`CsvFormat` describes a file. The reader (:mod:`producer.reader`) uses the dialect,
encoding, skipped lines and header; :meth:`headrace.schema.TableSchema.typed` uses the value
spellings (null markers, time zone, date-time layouts, decimal comma, boolean words). It is
``producer.csv`` in the settings, and ``headrace produce``/``headrace verify`` set it from
their flags. The defaults are today's file: RFC 4180 with a header, strict UTF-8.

With null markers given, a field equal to a marker is NULL (rejected in a NOT NULL column),
and an empty field that is not itself a marker is the empty string in a text column and
rejected in any other: a file that spells NULL explicitly means something else by nothing.
"""

from __future__ import annotations

import zoneinfo
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

__all__ = ["DELIMITERS", "ENCODINGS", "CsvFormat", "OnDuplicate"]

Encoding = Literal["utf-8", "latin-1", "cp1252", "utf-16"]
ENCODINGS: tuple[str, ...] = ("utf-8", "latin-1", "cp1252", "utf-16")
DELIMITERS = {"tab": "\t", "\\t": "\t"}
"""Spellings of a tab on a command line."""
OnDuplicate = Literal["error", "skip", "update"]


class CsvFormat(BaseModel):
    """A CSV file's dialect, layout and value spellings (all optional; defaults: RFC 4180)."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    delimiter: str = Field(",", description="Field separator: one character (tab: `tab`).")
    quote: str = Field('"', description="Quote character.")
    escape: str | None = Field(
        None, description="Escape character inside fields (besides doubled quotes), e.g. `\\`."
    )
    doublequote: bool = Field(True, description='A doubled quote ("") inside quotes is a quote.')
    encoding: Encoding = Field(
        "utf-8", description="utf-8 (strict), latin-1, cp1252 or utf-16 (byte-order mark needed)."
    )
    skip_lines: int = Field(0, ge=0, le=1000, description="Lines skipped before the header.")
    header: bool = Field(True, description="The first line names the columns (else `columns`).")
    columns: list[str] = Field(
        default_factory=list, description="Column names of a file without a header line."
    )
    rename: dict[str, str] = Field(
        default_factory=dict, description="CSV column name -> table column (`--map a=b`)."
    )
    ignore: list[str] = Field(
        default_factory=list, description="CSV columns left out (the table does not have them)."
    )
    nulls: list[str] = Field(
        default_factory=list,
        description='Null markers (`NA`, `NULL`, `\\N`, `""` for empty); set: an empty field '
        "is '' in text columns and an error elsewhere unless it is a marker.",
    )
    timezone: str | None = Field(
        None, description="Zone of naive TIMESTAMP values (IANA name); unset: UTC."
    )
    datetime_formats: list[str] = Field(
        default_factory=list,
        description="strptime layouts tried after ISO 8601, e.g. `%d.%m.%Y`, `%m/%d/%Y`.",
    )
    decimal_comma: bool = Field(
        False, description="DECIMAL/FLOAT written `1.234,56` (dot groups thousands)."
    )
    true_words: list[str] = Field(default_factory=list, description="More spellings of true.")
    false_words: list[str] = Field(default_factory=list, description="More spellings of false.")

    @field_validator("delimiter", mode="before")
    @classmethod
    def _tab(cls, value: object) -> object:
        return DELIMITERS.get(value, value) if isinstance(value, str) else value

    @field_validator("delimiter", "quote", "escape")
    @classmethod
    def _one_char(cls, value: str | None) -> str | None:
        if value is not None and (len(value) != 1 or value in "\r\n"):
            raise ValueError(f"must be one character other than a line break, not {value!r}")
        return value

    @field_validator("timezone")
    @classmethod
    def _known_zone(cls, value: str | None) -> str | None:
        if value is not None:
            try:
                zoneinfo.ZoneInfo(value)
            except (zoneinfo.ZoneInfoNotFoundError, ValueError):
                raise ValueError(f"unknown time zone {value!r} (an IANA name)") from None
        return value

    @field_validator("datetime_formats")
    @classmethod
    def _formats(cls, value: list[str]) -> list[str]:
        for fmt in value:
            if "%" not in fmt:
                raise ValueError(f"{fmt!r} is not a strptime layout (e.g. %d.%m.%Y)")
        return value

    @model_validator(mode="after")
    def _consistent(self) -> CsvFormat:
        chars = [self.delimiter, self.quote, *([self.escape] if self.escape else [])]
        if len(set(chars)) != len(chars):
            raise ValueError("delimiter, quote and escape must be different characters")
        if not self.header and not self.columns:
            raise ValueError("a file without a header needs its column names (columns)")
        if self.header and self.columns:
            raise ValueError("columns names the columns of a file without a header only")
        words = [w.strip().lower() for w in (*self.true_words, *self.false_words)]
        if "" in words or len(set(words)) != len(words):
            raise ValueError("true and false words must be non-empty and all different")
        if set(map(str.lower, self.true_words)) & set(map(str.lower, self.false_words)):
            raise ValueError("a word cannot mean both true and false")
        return self

    @property
    def typing_changed(self) -> bool:
        """Whether values are spelled otherwise than by default (the typing rules change)."""
        return bool(
            self.nulls
            or self.timezone
            or self.datetime_formats
            or self.decimal_comma
            or self.true_words
            or self.false_words
        )

    def fingerprint(self) -> str:
        """The options that differ from the defaults, as stable text ('' for none): part of
        the run id, so a changed option is a new run."""
        changed = self.model_dump(mode="json", exclude_defaults=True)
        return "" if not changed else repr(sorted(changed.items()))
