"""The benchmark's two tables and their CSVs.

``observations`` (:mod:`cli.datagen`): mixed types, ~93 bytes a row, a natural key in random
order (slow for any loader, ``LOAD DATA`` included). ``trips``: shaped like a public data set
loaded into a plain table: an append-only AUTO_INCREMENT primary key the CSV does not carry,
one secondary index, narrow mostly small-integer columns — where the loader is fast and the
pipeline's own overhead shows.
"""

from __future__ import annotations

import random
from dataclasses import dataclass
from pathlib import Path

import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncEngine

from cli.datagen import generate_csv, observations

__all__ = ["Dataset", "section_name", "trips", "write_trips_csv"]

trips_metadata = sa.MetaData()
trips = sa.Table(
    "trips",
    trips_metadata,
    sa.Column("id", sa.BigInteger, primary_key=True, autoincrement=True),
    sa.Column("station_id", sa.SmallInteger, nullable=False),
    sa.Column("end_station_id", sa.SmallInteger, nullable=False),
    sa.Column("hour", sa.SmallInteger, nullable=False),
    sa.Column("weekday", sa.SmallInteger, nullable=False),
    sa.Column("duration_s", sa.Integer, nullable=False),
    sa.Column("member", sa.SmallInteger, nullable=False),
    sa.Column("bikes", sa.SmallInteger, nullable=True),
    sa.Index("ix_trips_station_hour", "station_id", "hour"),
)
TRIPS_HEADER = ("station_id", "end_station_id", "hour", "weekday", "duration_s", "member", "bikes")

OBSERVATIONS_LOAD = (
    "(observed_at, bot_id, sku, price, quantity, @in_stock, title, @note) "
    "SET in_stock = IF(@in_stock = 'true', 1, 0), note = NULLIF(@note, '')"
)
TRIPS_LOAD = "(station_id, end_station_id, hour, weekday, duration_s, member, @bikes) " + (
    "SET bikes = NULLIF(@bikes, '')"
)


def section_name(stage: str, protocol: str) -> str:
    """``sink`` / ``e2e`` for the bulk protocol (the historical keys), ``sink_text`` etc."""
    return stage if protocol == "bulk" else f"{stage}_{protocol}"


@dataclass(frozen=True)
class Dataset:
    """A table, its CSV and how ``LOAD DATA`` maps the CSV's fields onto it."""

    key: str  # "" for observations (the results' historical sections), else a prefix
    table: sa.Table
    csv_path: Path
    bad_rows: int
    load_columns: str

    @property
    def name(self) -> str:
        return self.table.name

    def section(self, name: str) -> str:
        """The results key of a section (``sink_text``; ``trips.sink_text`` on trips)."""
        return f"{self.key}.{name}" if self.key else name


def write_trips_csv(path: Path, rows: int, *, seed: int = 5, bad_ratio: float = 0.001) -> int:
    """``rows`` trips (plus header); every ``1/bad_ratio``-th has an hour of 40,000, beyond
    SMALLINT (the producer rejects it). Returns how many bad rows were written."""
    rng = random.Random(seed)
    bad_every = int(1 / bad_ratio) if bad_ratio > 0 else 0
    bad = 0
    with path.open("w", encoding="utf-8", newline="") as fh:
        fh.write(",".join(TRIPS_HEADER) + "\n")
        lines: list[str] = []
        rand = rng.randrange
        for i in range(rows):
            hour = rand(24)
            if bad_every and i % bad_every == bad_every // 2:
                hour = 40_000
                bad += 1
            bikes = "" if i % 50 == 0 else str(rand(40))
            lines.append(
                f"{rand(1, 900)},{rand(1, 900)},{hour},{rand(7)},{rand(60, 7200)},"
                f"{rand(2)},{bikes}\n"
            )
            if len(lines) >= 10_000:
                fh.writelines(lines)
                lines.clear()
        fh.writelines(lines)
    return bad


def observations_dataset(path: Path, rows: int, bad_ratio: float) -> Dataset:
    generated = generate_csv(path, rows, bad_ratio=bad_ratio)
    return Dataset("", observations, path, generated.bad_rows, OBSERVATIONS_LOAD)


def trips_dataset(path: Path, rows: int, bad_ratio: float) -> Dataset:
    bad = write_trips_csv(path, rows, bad_ratio=bad_ratio)
    return Dataset("trips", trips, path, bad, TRIPS_LOAD)


async def create_trips_table(engine: AsyncEngine) -> None:
    async with engine.begin() as conn:
        await conn.run_sync(trips_metadata.create_all)
