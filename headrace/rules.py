"""Typing rules: how CSV text is checked and normalised for each kind of MySQL column.

A rule is a pair: ``check`` takes one value and returns its normalised text (or raises
``ValueError`` with the reason); ``fast`` takes a whole column and answers in a few C-level
calls (``map``, ``max``, ``"".join``, one compiled regex per value) — the column, normalised,
when every value in it is valid, or None when any value might not be.

:func:`check_column` runs ``fast`` first. Only a column that fails is narrowed down: it is
re-checked in blocks, recursively, and only the failing smallest blocks are checked value by
value with ``check``, which says which rows are bad and why. A chunk without bad values
therefore costs one C-level pass per column; a chunk with a few costs about one more.

Both paths share the empty-field rule (:func:`with_empties` on the fast path, in
:func:`check_column`'s value-by-value path otherwise): an empty field is NULL when the column
is nullable; otherwise it is the empty string for text columns and an error for every other
type. A NUL character is an error in every column. With null markers (``--null``,
:class:`headrace.csvformat.CsvFormat`; :func:`with_nulls` on the fast path): a marker is NULL
in a nullable column and an error in a NOT NULL one, and an empty field that is no marker is
the empty string in text columns and an error in any other.

Rules whose values are rewritten (offsets to UTC, layouts, decimal commas, boolean words)
have a :func:`mapped` fast path: their check over the column, in one ``map``.

Nothing here knows SQLAlchemy: :mod:`headrace.schema` picks a rule for each reflected column.
"""

from __future__ import annotations

import datetime as dt
import re
from collections.abc import Callable, Sequence
from decimal import Decimal, InvalidOperation
from typing import Protocol

__all__ = [
    "BOOL_RULE",
    "BOOL_WORDS",
    "FLOAT_RULE",
    "INT_BITS",
    "OTHER_RULE",
    "TEXT_BYTES",
    "TIME_RULE",
    "Check",
    "Column",
    "Fast",
    "Rule",
    "bool_rule",
    "bytes_rule",
    "chars_rule",
    "check_column",
    "datetime_rule",
    "decimal_comma",
    "decimal_rule",
    "enum_rule",
    "int_rule",
    "mapped",
    "time_rule",
    "with_empties",
    "with_nulls",
]

Check = Callable[[str], str | None]
"""Value check: returns the normalised text, or raises ``ValueError`` with the reason."""
Fast = Callable[[Sequence[str]], Sequence[str | None] | None]
"""Column check in C-level calls: the (normalised) column when every value is valid and none
is empty, else None, and the column is checked value by value."""
Rule = tuple[Check, Fast]

# re.ASCII: \d must not match other scripts' digits (int("١٢") works, MySQL refuses it).
_INT_RE = re.compile(r"[+-]?\d+", re.ASCII)
# Calendar-exact forms for the fast path: every month/day pair that exists in any year (only
# 02-29 then needs a leap-year check) and times within 00:00:00..23:59:59.
_MONTH_DAY = (
    r"(?:(?:0[1-9]|1[0-2])-(?:0[1-9]|1\d|2[0-8])|(?:0[13-9]|1[0-2])-(?:29|30)"
    r"|(?:0[13578]|1[02])-31|02-29)"
)
_STRICT_DATE_RE = re.compile(rf"\d{{4}}-{_MONTH_DAY}", re.ASCII)
_FLOAT_RE = re.compile(r"[+-]?(?:\d+\.?\d*|\.\d+)(?:[eE][+-]?\d+)?", re.ASCII)
BOOL_WORDS = {
    "1": "1",
    "0": "0",
    "true": "1",
    "false": "0",
    "t": "1",
    "f": "0",
    "yes": "1",
    "no": "0",
    "y": "1",
    "n": "0",
}
"""Accepted boolean spellings (stripped, lower case) and the ``1``/``0`` they become."""
INT_BITS = {
    "TINYINT": 8,
    "SMALLINT": 16,
    "MEDIUMINT": 24,
    "INTEGER": 32,
    "INT": 32,
    "BIGINT": 64,
}
"""Width in bits of each MySQL integer type."""
TEXT_BYTES = {"TINYTEXT": 255, "TEXT": 65_535, "MEDIUMTEXT": 16_777_215, "LONGTEXT": 4_294_967_295}
"""Longest value in bytes of each MySQL text type."""


class Column(Protocol):
    """What :func:`check_column` needs of a column (:class:`headrace.schema.ColumnSpec`)."""

    @property
    def name(self) -> str: ...
    @property
    def kind(self) -> str: ...
    @property
    def nullable(self) -> bool: ...
    @property
    def check(self) -> Check: ...
    @property
    def fast(self) -> Fast: ...
    @property
    def nulls(self) -> frozenset[str]: ...


# --- checking a column ---------------------------------------------------------------------

_SMALLEST_BLOCK = 16


def check_column(
    spec: Column, ci: int, col: Sequence[str], base: int, bad: dict[int, str]
) -> Sequence[str | None]:
    """Check a column with the C-level fast path; narrow down to the bad values when it fails.

    A failing column is re-checked in 16 blocks, recursively, and only failing blocks of
    ``_SMALLEST_BLOCK`` values are checked value by value: a chunk with a few bad values costs
    about one more pass of fast checks. Reasons go to ``bad`` (row index -> first reason).
    """
    fast = spec.fast(col)
    if fast is not None:
        return fast
    if len(col) > _SMALLEST_BLOCK:
        size = max(_SMALLEST_BLOCK, -(-len(col) // 16))
        out_blocks: list[str | None] = []
        for start in range(0, len(col), size):
            block = col[start : start + size]
            out_blocks.extend(check_column(spec, ci, block, base + start, bad))
        return out_blocks
    out: list[str | None] = []
    for ri, value in enumerate(col, start=base):
        try:
            out.append(_check_value(spec, value))
        except ValueError as exc:
            out.append(None)
            shown = value if len(value) <= 40 else value[:37] + "..."
            bad.setdefault(ri, f"column {ci + 1} {spec.name!r}: {shown!r} {exc}")
    return out


def _check_value(spec: Column, value: str) -> str | None:
    if spec.nulls and (value == "" or value in spec.nulls):
        return _marker_value(spec, value)
    if value == "":
        if spec.nullable:
            return None
        if spec.kind in ("string", "text"):
            return ""
        raise ValueError(f"is empty but column {spec.name!r} is NOT NULL")
    if "\x00" in value:
        raise ValueError(f"contains a NUL character at offset {value.index(chr(0))}")
    return spec.check(value)


def _marker_value(spec: Column, value: str) -> str | None:
    """A null marker, or an empty field when markers are given (module docstring)."""
    if value in spec.nulls:
        if spec.nullable:
            return None
        raise ValueError(f"is a null marker but column {spec.name!r} is NOT NULL")
    if spec.kind in ("string", "text"):
        return ""
    shown = ", ".join(repr(m) for m in sorted(spec.nulls))
    raise ValueError(f"is empty and not a null marker ({shown})")


def with_nulls(fast: Fast, nulls: frozenset[str], *, nullable: bool, text: bool) -> Fast:
    """The fast path with null markers: a marker is NULL (nullable columns), an empty field
    that is no marker the empty string (text columns); the rest goes to ``fast`` or, when it
    fails, value by value."""

    def wrapped(col: Sequence[str]) -> Sequence[str | None] | None:
        marked = not nulls.isdisjoint(col)
        empty = "" in col
        if not (marked or empty):
            return fast(col)
        if (marked and not nullable) or (empty and not text and "" not in nulls):
            return None  # the value-by-value path says which row and why
        present = [v for v in col if v and v not in nulls]
        checked = fast(present) if present else present
        if checked is None:
            return None
        values = iter(checked)
        return [None if v in nulls else (next(values) if v else "") for v in col]

    return wrapped


def mapped(check: Check) -> Fast:
    """A fast path that is ``check`` over the column (rules whose values are rewritten)."""

    def fast(col: Sequence[str]) -> Sequence[str | None] | None:
        if not col or "" in col:
            return None
        try:
            return list(map(check, col))
        except ValueError:
            return None

    return fast


def with_empties(fast: Fast, *, nullable: bool, text: bool) -> Fast:
    """The fast path with the empty-field rule: NULL when nullable, '' for NOT NULL text."""

    def wrapped(col: Sequence[str]) -> Sequence[str | None] | None:
        if "" not in col:
            return fast(col)
        if not (nullable or text):
            return None  # the value-by-value path says which row and why
        present = [v for v in col if v]
        checked = fast(present) if present else present
        if checked is None:
            return None
        if not nullable:
            return col  # text keeps its empty strings; text is never rewritten
        if checked is present:  # nothing was rewritten: only the empties change
            return [v or None for v in col]
        values = iter(checked)
        return [next(values) if v else None for v in col]

    return wrapped


# --- per-type rules ------------------------------------------------------------------------


def _clean(col: Sequence[str]) -> bool:
    """No empty value and no NUL anywhere in the column (one C-level join)."""
    return bool(col) and "" not in col and "\x00" not in "".join(col)


def int_rule(bits: int, unsigned: bool) -> Rule:
    lo, hi = (0, 2**bits - 1) if unsigned else (-(2 ** (bits - 1)), 2 ** (bits - 1) - 1)
    safe_digits = len(str(hi)) - 1
    match = _INT_RE.fullmatch

    def check(v: str) -> str:
        if not match(v):
            raise ValueError("is not an integer")
        n = int(v)
        if not lo <= n <= hi:
            raise ValueError(f"is out of range ({lo}..{hi})")
        return v

    def fast(col: Sequence[str]) -> Sequence[str] | None:
        if not col or "" in col or max(map(len, col)) > safe_digits:
            return None
        joined = "".join(col)
        if joined.isascii() and joined.isdigit():  # plain digits: one C call for the chunk
            return col
        if not all(map(match, col)):
            return None
        if lo == 0 and "-" in "".join(col):
            return None
        return col

    return check, fast


def decimal_rule(precision: int, scale: int) -> Rule:
    whole = precision - scale
    if whole == 0:
        pattern = re.compile(rf"[+-]?(?:0?\.\d{{1,{scale}}}|0\.?)", re.ASCII)
    else:
        frac = rf"(?:\.\d{{0,{scale}}})?" if scale else r"(?:\.0*)?"
        bare = rf"\.\d{{1,{scale}}}" if scale else r"\.0+"
        pattern = re.compile(rf"[+-]?(?:\d{{1,{whole}}}{frac}|{bare})", re.ASCII)
    match = pattern.fullmatch

    def check(v: str) -> str:
        if match(v):
            return v
        try:
            d = Decimal(v)
        except InvalidOperation:
            raise ValueError("is not a decimal number") from None
        if not d.is_finite():
            raise ValueError("is not a finite decimal number")
        if "e" in v.lower():
            raise ValueError("is not a decimal number (an exponent is for FLOAT/DOUBLE only)")
        raise ValueError(f"does not fit DECIMAL({precision},{scale}) without rounding")

    def fast(col: Sequence[str]) -> Sequence[str] | None:
        return col if col and all(map(match, col)) else None

    return check, fast


def _pattern_rule(pattern: re.Pattern[str], reason: str) -> Rule:
    """Values that match ``pattern`` whole pass unchanged; others fail with ``reason``."""
    match = pattern.fullmatch

    def check(v: str) -> str:
        if not match(v):
            raise ValueError(reason)
        return v

    def fast(col: Sequence[str]) -> Sequence[str] | None:
        return col if col and all(map(match, col)) else None

    return check, fast


FLOAT_RULE = _pattern_rule(_FLOAT_RE, "is not a number")


def _strict_datetime_re(fsp: int) -> re.Pattern[str]:
    frac = rf"(?:\.\d{{1,{fsp}}})?" if fsp else ""
    return re.compile(
        rf"\d{{4}}-{_MONTH_DAY}(?: (?:[01]\d|2[0-3]):[0-5]\d(?::[0-5]\d{frac})?)?", re.ASCII
    )


def datetime_rule(
    kind: str,
    lo_year: int,
    hi_year: int,
    *,
    fsp: int = 6,
    zone: dt.tzinfo | None = None,
    formats: Sequence[str] = (),
) -> Rule:
    """DATETIME/TIMESTAMP (``kind`` "datetime") or DATE ("date") within the given years.

    ISO 8601 with ``T`` or a space, at most ``fsp`` fractional digits that are not zeros (the
    column's precision: more would be rounded), and for date-times a ``Z`` or ``±hh:mm``
    offset: such a value is converted to UTC. ``zone`` is the zone of naive values (TIMESTAMP
    columns with ``--timezone``), converted to UTC too. ``formats`` are strptime layouts
    tried when a value is not ISO 8601.
    """
    parse = dt.date.fromisoformat if kind == "date" else dt.datetime.fromisoformat
    lo_text, hi_text = f"{lo_year:04d}", f"{hi_year:04d}"
    spec = _Temporal(kind, lo_year, hi_year, fsp, zone, tuple(formats))

    def check(v: str) -> str:
        return spec.check(v)

    if zone is not None:
        return check, mapped(check)
    strict = _STRICT_DATE_RE if kind == "date" else _strict_datetime_re(fsp)

    def fast(col: Sequence[str]) -> Sequence[str] | None:
        # One C-level regex a value ("T" separators fail it and are rewritten on the slow path).
        if not col or not all(map(strict.fullmatch, col)):
            return None
        if min(col) < lo_text or max(col)[:4] > hi_text:
            return None
        if "-02-29" in "".join(col):  # the one date that needs the year
            try:
                for _ in map(parse, col):
                    pass
            except ValueError:
                return None
        return col

    if formats:  # ISO columns stay on the regex; others are checked (and rewritten) in a map
        slow = mapped(check)
        return check, lambda col: fast(col) or slow(col)
    return check, fast


_ISO_RE = re.compile(
    r"(\d{4})-(\d{2})-(\d{2})"
    r"(?:[ T](\d{2}):(\d{2})(?::(\d{2})(?:\.(\d+))?)?(Z|[+-]\d{2}(?::?\d{2})?)?)?",
    re.ASCII,
)


class _Temporal:
    """The value-by-value check of :func:`datetime_rule`."""

    def __init__(
        self,
        kind: str,
        lo_year: int,
        hi_year: int,
        fsp: int,
        zone: dt.tzinfo | None,
        formats: tuple[str, ...],
    ) -> None:
        self.kind, self.lo_year, self.hi_year, self.fsp = kind, lo_year, hi_year, fsp
        self.zone, self.formats = zone, formats
        layouts = ", ".join(formats)
        base = "YYYY-MM-DD" if kind == "date" else "YYYY-MM-DD HH:MM:SS"
        self.expected = f"{base}, {layouts}" if layouts else base
        self._out_of_range = f"is out of range (years {lo_year}..{hi_year})"

    def check(self, v: str) -> str:
        m = _ISO_RE.fullmatch(v)
        if m is not None and (self.kind == "datetime" or m.group(4) is None):
            value, exact = self._from_iso(m)
        else:
            value, exact = self._from_formats(v), False
        if value.tzinfo is None and self.zone is not None:
            value, exact = _localize(value, self.zone), False
        if value.tzinfo is not None:
            try:
                value = value.astimezone(dt.UTC).replace(tzinfo=None)
            except OverflowError:
                raise ValueError(self._out_of_range) from None
        if not self.lo_year <= value.year <= self.hi_year:
            raise ValueError(self._out_of_range)
        if self.kind == "date":
            return v if exact else value.date().isoformat()
        if exact:
            return v.replace("T", " ")
        text = value.isoformat(sep=" ", timespec="seconds")
        if value.microsecond:
            text += f".{value.microsecond:06d}".rstrip("0")
        return text

    def _from_iso(self, m: re.Match[str]) -> tuple[dt.datetime, bool]:
        year, month, day, hour, minute, second, frac, offset = m.groups()
        micro = 0
        if frac:
            if len(frac) > self.fsp and frac[self.fsp :].strip("0"):
                raise ValueError(
                    f"has {len(frac)} fractional digits; the column keeps {self.fsp} "
                    "(it would be rounded)"
                )
            micro = int(frac[:6].ljust(6, "0"))
        zone = _offset(offset) if offset else None
        try:
            value = dt.datetime(
                int(year),
                int(month),
                int(day),
                int(hour or 0),
                int(minute or 0),
                int(second or 0),
                micro,
                tzinfo=zone,
            )
        except ValueError:
            raise ValueError(f"is not a valid {self.kind}") from None
        return value, not offset and (not frac or len(frac) <= self.fsp)

    def _from_formats(self, v: str) -> dt.datetime:
        for layout in self.formats:
            if v != v.strip():
                break
            try:
                value = dt.datetime.strptime(v, layout)
            except ValueError:
                continue
            if value.microsecond % 10 ** (6 - self.fsp):
                raise ValueError(f"has more fractional digits than the column keeps ({self.fsp})")
            if self.kind == "date" and value.time() != dt.time():
                raise ValueError("has a time of day but the column is a DATE")
            return value
        raise ValueError(f"is not a {self.kind.upper()} (expected {self.expected})")


def _offset(text: str) -> dt.timezone:
    if text == "Z":
        return dt.UTC
    digits = text[1:].replace(":", "")
    hours, minutes = int(digits[:2]), int(digits[2:] or 0)
    if hours > 23 or minutes > 59:
        raise ValueError(f"has an invalid UTC offset {text}")
    delta = dt.timedelta(hours=hours, minutes=minutes)
    return dt.timezone(-delta if text[0] == "-" else delta)


def _localize(value: dt.datetime, zone: dt.tzinfo) -> dt.datetime:
    """``value`` as a time in ``zone``; refused when a daylight-saving change skips or
    repeats it (no single instant)."""
    early, late = value.replace(tzinfo=zone, fold=0), value.replace(tzinfo=zone, fold=1)
    if early.utcoffset() != late.utcoffset():
        raise ValueError(f"is skipped or repeated in {zone} (a daylight-saving change)")
    return early


def time_rule(fsp: int = 6) -> Rule:
    """TIME: [-]H:MM[:SS[.f]] within ±838:59:59, at most ``fsp`` fractional digits."""
    frac = rf"(?:\.\d{{1,{fsp}}})?" if fsp else ""
    hours = r"(?:8[0-2]\d|83[0-8]|[0-7]?\d{1,2})"
    return _pattern_rule(
        re.compile(rf"-?{hours}:[0-5]\d(?::[0-5]\d{frac})?", re.ASCII),
        f"is not a TIME (expected HH:MM:SS, at most 838 hours, {fsp} fractional digits)",
    )


TIME_RULE = time_rule()


def _bool_check(v: str) -> str:
    out = BOOL_WORDS.get(v.strip().lower())
    if out is None:
        raise ValueError("is not a boolean (1/0, true/false, yes/no)")
    return out


def _bool_fast(col: Sequence[str]) -> Sequence[str] | None:
    mapped = list(map(BOOL_WORDS.get, col))
    return None if not col or None in mapped else mapped  # type: ignore[return-value]


BOOL_RULE: Rule = (_bool_check, _bool_fast)


def bool_rule(true_words: Sequence[str], false_words: Sequence[str]) -> Rule:
    """Booleans with more words (``--true``/``--false``) besides :data:`BOOL_WORDS`."""
    words = dict(BOOL_WORDS)
    words.update({w.strip().lower(): "1" for w in true_words})
    words.update({w.strip().lower(): "0" for w in false_words})
    shown = "/".join(sorted(words))

    def check(v: str) -> str:
        out = words.get(v.strip().lower())
        if out is None:
            raise ValueError(f"is not a boolean ({shown})")
        return out

    slow = mapped(check)

    def fast(col: Sequence[str]) -> Sequence[str | None] | None:
        exact = list(map(words.get, col))  # the words as given, in one C-level map
        return slow(col) if not col or None in exact else exact

    return check, fast


_COMMA_RE = re.compile(r"([+-]?)(\d{1,3}(?:\.\d{3})+|\d*)(?:,(\d+))?([eE][+-]?\d+)?", re.ASCII)


def decimal_comma(rule: Rule) -> Rule:
    """``rule`` for numbers written ``1.234,56``: a comma before the fraction, dots only
    between groups of three digits; the value is rewritten ``1234.56`` and then checked."""
    inner = rule[0]

    def check(v: str) -> str | None:
        m = _COMMA_RE.fullmatch(v)
        if m is None or not (m.group(2) or m.group(3)):
            raise ValueError("is not a number written with a decimal comma (1.234,56)")
        sign, whole, frac, exp = m.groups()
        return inner(f"{sign}{whole.replace('.', '')}{'.' + frac if frac else ''}{exp or ''}")

    return check, mapped(check)


def chars_rule(limit: int) -> Rule:
    """CHAR/VARCHAR: at most ``limit`` characters."""

    def check(v: str) -> str:
        if len(v) > limit:
            raise ValueError(f"is {len(v)} characters, longer than {limit}")
        return v

    def fast(col: Sequence[str]) -> Sequence[str] | None:
        return col if _clean(col) and max(map(len, col)) <= limit else None

    return check, fast


def bytes_rule(limit: int) -> Rule:
    """TEXT types: at most ``limit`` bytes in UTF-8."""

    def check(v: str) -> str:
        size = len(v.encode("utf-8", "surrogatepass"))
        if size > limit:
            raise ValueError(f"is {size} bytes, longer than {limit}")
        return v

    def fast(col: Sequence[str]) -> Sequence[str] | None:
        return col if _clean(col) and max(map(len, col)) * 4 <= limit else None

    return check, fast


def enum_rule(values: Sequence[str]) -> Rule:
    allowed = {v.lower(): v for v in values}

    def check(v: str) -> str:
        if v.lower() not in allowed:
            raise ValueError(f"is not one of {', '.join(values)}")
        return allowed[v.lower()]  # the stored spelling (MySQL matches ENUM case-insensitively)

    def fast(col: Sequence[str]) -> Sequence[str] | None:
        return col if col and all(v in values for v in col) else None

    return check, fast


def _identity(v: str) -> str:
    return v


def _other_fast(col: Sequence[str]) -> Sequence[str] | None:
    return col if _clean(col) else None


OTHER_RULE: Rule = (_identity, _other_fast)
"""Any other type: passed through as is; the database decides."""
