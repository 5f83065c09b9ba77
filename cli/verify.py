"""Source-versus-target verification: the invariant, measured.

Every source row must be in the target exactly once or in ``rejected_rows`` with a reason.
This reads the source the way the producer does (same parser, same typing), and compares:

* the rows the producer's typing accepts, minus those in ``rejected_rows`` for another
  reason (the database refused them, ``stage='worker'``, or no message could carry them),
  against the whole target table, as a count and an order-independent checksum (the sum of
  64-bit BLAKE2b hashes of each row's canonical text, :mod:`cli.checksum`; a missing or
  doubled row changes it);
* the lines the producer rejects plus those the database refused against ``rejected_rows``
  for this source (no line missing, none twice).

The target table is assumed to hold this source's rows only (demo, tests, benchmark).

When the count or checksum differ, a second pass finds the rows by key: source rows missing
from the target (with their line), rows in the target more often than in the source
(duplicated) and rows the source does not have at all (unexpected).
"""

from __future__ import annotations

from collections import Counter
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncEngine

from cli.checksum import row_checksum, row_digests
from headrace.schema import ColumnSpec, TableSchema, reflect_table
from headrace.settings import Settings
from headrace.tables import rejected_rows

if TYPE_CHECKING:
    from producer.sources import Source

__all__ = ["RowRef", "VerifyReport", "verify_source"]

MAX_LISTED = 100


@dataclass
class RowRef:
    """A row found by the key-level diff: its key values, source line and copies in the target."""

    key: dict[str, str]
    line: int | None = None
    copies: int = 0


@dataclass
class VerifyReport:
    source_rows: int = 0
    expected_rows: int = 0
    expected_checksum: int = 0
    target_rows: int = 0
    target_checksum: int = 0
    expected_rejects: int = 0
    rejected_rows: int = 0
    missing_reject_lines: list[int] = field(default_factory=list)
    unexpected_reject_lines: list[int] = field(default_factory=list)
    duplicate_reject_lines: list[int] = field(default_factory=list)
    missing_rows: list[RowRef] = field(default_factory=list)
    duplicated_rows: list[RowRef] = field(default_factory=list)
    unexpected_rows: list[RowRef] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return (
            self.target_rows == self.expected_rows
            and self.target_checksum == self.expected_checksum
            and not self.missing_reject_lines
            and not self.unexpected_reject_lines
            and not self.duplicate_reject_lines
            and not self.missing_rows
            and not self.duplicated_rows
            and not self.unexpected_rows
            and self.target_rows + self.rejected_rows == self.source_rows
        )

    def line(self) -> str:
        verdict = "OK" if self.ok else "MISMATCH"
        return (
            f"verify {verdict}: source {self.source_rows} rows = target {self.target_rows} "
            f"+ rejected {self.rejected_rows}; checksum target {self.target_checksum:016x} "
            f"{'==' if self.target_checksum == self.expected_checksum else '!='} "
            f"source {self.expected_checksum:016x}"
        )


async def verify_source(
    settings: Settings, engine: AsyncEngine, location: str, table: str
) -> VerifyReport:
    """Compare the source at ``location`` (a path or ``s3://bucket/key``) with ``table``."""
    from producer.sources import open_location

    async with open_location(settings, location) as source:
        return await _verify(settings, engine, source, table)


async def _verify(
    settings: Settings, engine: AsyncEngine, source: Source, table: str
) -> VerifyReport:
    report = VerifyReport()
    async with engine.connect() as conn:
        schema = await reflect_table(conn, table)
        source_uri = source.uri
        refused = Counter[int]()
        result = await conn.execute(
            sa.select(rejected_rows.c.line).where(rejected_rows.c.source == source_uri)
        )
        for (line,) in result:
            refused[int(line)] += 1

    pass_ = _SourcePass(settings, source, schema, set(refused))
    count = 0
    total = 0
    async for _lines, rows in pass_.kept():
        n, s = row_checksum(pass_.specs, rows)
        count += n
        total = (total + s) & 0xFFFFFFFFFFFFFFFF
    report.source_rows = pass_.rows_read
    report.expected_rows = count
    report.expected_checksum = total
    report.expected_rejects = len(pass_.producer_rejects | set(refused))
    report.rejected_rows = sum(refused.values())
    report.missing_reject_lines = sorted(pass_.producer_rejects - set(refused))[:MAX_LISTED]
    report.unexpected_reject_lines = sorted(pass_.unseen_refused)[:MAX_LISTED]
    report.duplicate_reject_lines = sorted(line for line, n in refused.items() if n > 1)[
        :MAX_LISTED
    ]

    tcount = 0
    ttotal = 0
    async for part in _target_rows(engine, schema, pass_.names):
        n, s = row_checksum(pass_.specs, part)
        tcount += n
        ttotal = (ttotal + s) & 0xFFFFFFFFFFFFFFFF
    report.target_rows = tcount
    report.target_checksum = ttotal
    if (tcount, ttotal) != (count, total):
        await _diff_rows(engine, schema, pass_, report)
    return report


class _SourcePass:
    """Reads the source as the producer does; yields the rows the target should hold."""

    def __init__(
        self, settings: Settings, source: Source, schema: TableSchema, refused: set[int]
    ) -> None:
        self._settings = settings
        self._source = source
        self._schema = schema
        # Lines in rejected_rows: besides the typing rejects found here, rows the database
        # refused (stage 'worker') and rows no message could carry (the packer's). They are
        # not expected in the target; one in rejected_rows that is no source line at all is.
        self._refused = refused
        self.unseen_refused = set(refused)
        self.specs: list[ColumnSpec] = []
        self.names: list[str] = []
        self.producer_rejects: set[int] = set()
        self.rows_read = 0

    async def kept(self) -> AsyncIterator[tuple[list[int], list[Sequence[Any]]]]:
        from producer.reader import open_reader, read_chunks

        source = self._source
        fmt = self._settings.producer.csv
        schema = self._schema.typed(fmt)
        reader = await open_reader(source, self._settings.producer)
        try:
            self.specs, layout = schema.resolve_columns(reader.header, fmt, source=source.uri)
            self.names = [s.name for s in self.specs]
            async for chunk in read_chunks(reader, threaded=source.threaded):
                valid = schema.validate(self.specs, chunk.rows, chunk.lines, layout)
                self.producer_rejects.update(r.line for r in chunk.rejects)
                self.producer_rejects.update(r.line for r in valid.rejects)
                self.unseen_refused.difference_update(r.line for r in chunk.rejects)
                self.unseen_refused.difference_update(r.line for r in valid.rejects)
                if self._refused:
                    self.unseen_refused.difference_update(valid.lines)
                kept = [
                    (line, row)
                    for row, line in zip(valid.rows, valid.lines, strict=True)
                    if line not in self._refused
                ]
                yield [line for line, _ in kept], [row for _, row in kept]
        finally:
            reader.close()
        self.rows_read = reader.rows_read


async def _target_rows(
    engine: AsyncEngine, schema: TableSchema, names: Sequence[str]
) -> AsyncIterator[Sequence[Sequence[Any]]]:
    cols = [schema.table.c[n] for n in names]
    sql = sa.text(str(sa.select(*cols).compile(dialect=engine.dialect)))
    async with engine.connect() as conn:
        rows = await conn.stream(sql)
        async for part in rows.partitions(10_000):
            yield part


def _key_of(schema: TableSchema, names: Sequence[str], row: Sequence[Any]) -> dict[str, str]:
    """The row's unique-key values (all its values if the table has no unique key)."""
    key = next((k for k in schema.unique_keys if set(k) <= set(names)), tuple(names))
    return {n: str(row[names.index(n)]) for n in key}


async def _diff_rows(
    engine: AsyncEngine, schema: TableSchema, pass_: _SourcePass, report: VerifyReport
) -> None:
    """Find the rows behind a count/checksum mismatch: missing, duplicated, unexpected."""
    names = pass_.names
    specs = pass_.specs
    in_target = Counter[int]()
    async for part in _target_rows(engine, schema, names):
        in_target.update(row_digests(specs, part))
    in_source = Counter[int]()
    async for lines, rows in pass_.kept():
        for line, row, digest in zip(lines, rows, row_digests(specs, rows), strict=True):
            in_source[digest] += 1
            if in_target[digest] > 0:
                in_target[digest] -= 1
            elif len(report.missing_rows) < MAX_LISTED:
                report.missing_rows.append(RowRef(_key_of(schema, names, row), line=line))
    extra = +in_target  # target rows left over once every source row took its match
    if not extra:
        return
    async for part in _target_rows(engine, schema, names):
        for row, digest in zip(part, row_digests(specs, part), strict=True):
            copies = extra.pop(digest, 0)
            if not copies:
                continue
            ref = RowRef(_key_of(schema, names, row), copies=copies + in_source[digest])
            listed = report.duplicated_rows if in_source[digest] else report.unexpected_rows
            if len(listed) < MAX_LISTED:
                listed.append(ref)
