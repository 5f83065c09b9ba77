"""Source-versus-target verification: the invariant, measured.

Every source row must be in the target exactly once or in ``rejected_rows`` with a reason.
This reads the source the way the producer does (same parser, same typing), and compares:

* the rows the producer accepts, minus those the database refused (``stage='worker'``),
  against the whole target table, as a count and an order-independent checksum (the sum of
  64-bit BLAKE2b hashes of each row's canonical text; a missing or doubled row changes it);
* the lines the producer rejects plus those the database refused against ``rejected_rows``
  for this source (no line missing, none twice).

The target table is assumed to hold this source's rows only (demo, tests, benchmark).
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field

import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncEngine

from headrace.schema import reflect_table
from headrace.settings import Settings
from headrace.tables import rejected_rows

__all__ = ["VerifyReport", "verify_source"]


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

    @property
    def ok(self) -> bool:
        return (
            self.target_rows == self.expected_rows
            and self.target_checksum == self.expected_checksum
            and not self.missing_reject_lines
            and not self.unexpected_reject_lines
            and not self.duplicate_reject_lines
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
    from producer.reader import CsvReader
    from producer.source import open_source

    source = open_source(location)
    p = settings.producer
    report = VerifyReport()
    async with engine.connect() as conn:
        schema = await reflect_table(conn, table)
        refused = Counter[int]()
        reject_stage: dict[int, str] = {}
        result = await conn.execute(
            sa.select(rejected_rows.c.line, rejected_rows.c.stage).where(
                rejected_rows.c.source == source.uri
            )
        )
        for line, stage in result:
            refused[int(line)] += 1
            reject_stage[int(line)] = str(stage)
    worker_refused = {line for line, stage in reject_stage.items() if stage == "worker"}

    stream = source.open(max_ratio=p.max_gzip_ratio, max_bytes=p.max_decompressed_bytes)
    reader = CsvReader(
        stream, source=source.uri, chunk_rows=p.chunk_rows, max_field_bytes=p.max_field_bytes
    )
    producer_rejects: set[int] = set()
    count = 0
    total = 0
    try:
        specs = schema.resolve_header(reader.header, source=source.uri)
        names = [s.name for s in specs]
        for chunk in reader.chunks():
            valid = schema.validate(specs, chunk.rows, chunk.lines)
            producer_rejects.update(r.line for r in chunk.rejects)
            producer_rejects.update(r.line for r in valid.rejects)
            kept = [
                row
                for row, line in zip(valid.rows, valid.lines, strict=True)
                if line not in worker_refused
            ]
            n, s = schema.row_checksum(names, kept)
            count += n
            total = (total + s) & 0xFFFFFFFFFFFFFFFF
    finally:
        reader.close()
    report.source_rows = reader.rows_read
    report.expected_rows = count
    report.expected_checksum = total
    expected_lines = producer_rejects | worker_refused
    report.expected_rejects = len(expected_lines)
    report.rejected_rows = sum(refused.values())
    report.missing_reject_lines = sorted(producer_rejects - set(refused))[:100]
    report.unexpected_reject_lines = sorted(set(refused) - expected_lines)[:100]
    report.duplicate_reject_lines = sorted(line for line, n in refused.items() if n > 1)[:100]

    cols = [schema.table.c[n] for n in names]
    sql = sa.text(str(sa.select(*cols).compile(dialect=engine.dialect)))
    async with engine.connect() as conn:
        rows = await conn.stream(sql)
        tcount = 0
        ttotal = 0
        async for part in rows.partitions(10_000):
            n, s = schema.row_checksum(names, part)
            tcount += n
            ttotal = (ttotal + s) & 0xFFFFFFFFFFFFFFFF
    report.target_rows = tcount
    report.target_checksum = ttotal
    return report
