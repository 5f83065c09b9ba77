"""The example dataset: the ``observations`` table and realistic CSV for it.

The demo, the tests and the benchmark load it; real deployments never see it (the production
migration creates only headrace's own tables; :func:`create_example_table` creates this one).

A price-watching bot's daily drop: ~100 bytes a row of mixed types, a natural key
(bot_id, sku, observed_at) in random order, ~30% empty notes (NULL), and a share of rows that
must be rejected (a quantity out of SMALLINT range), so the rejected path is visible.
Deterministic for a given seed.
"""

from __future__ import annotations

import csv
import datetime as dt
import gzip
import random
from dataclasses import dataclass
from pathlib import Path
from typing import TextIO

from sqlalchemy import (
    Boolean,
    Column,
    DateTime,
    Index,
    Integer,
    MetaData,
    Numeric,
    SmallInteger,
    String,
    Table,
    Text,
    UniqueConstraint,
)
from sqlalchemy.ext.asyncio import AsyncEngine

from headrace.tables import BIGINT_PK, NAMING_CONVENTION

__all__ = ["HEADER", "GeneratedFile", "create_example_table", "generate_csv", "observations"]

example_metadata = MetaData(naming_convention=NAMING_CONVENTION)

# A price-watching bot's daily observations (~100 bytes a row), with a natural key.
observations = Table(
    "observations",
    example_metadata,
    Column("id", BIGINT_PK, primary_key=True, autoincrement=True),
    Column("observed_at", DateTime, nullable=False),
    Column("bot_id", Integer, nullable=False),
    Column("sku", String(24), nullable=False),
    Column("price", Numeric(10, 2), nullable=False),
    Column("quantity", SmallInteger, nullable=False),
    Column("in_stock", Boolean(create_constraint=False), nullable=False),
    Column("title", String(120), nullable=False),
    Column("note", Text, nullable=True),
    UniqueConstraint("bot_id", "sku", "observed_at"),
    Index(None, "observed_at"),
    mysql_engine="InnoDB",
    mysql_charset="utf8mb4",
)


async def create_example_table(engine: AsyncEngine) -> None:
    """Create ``observations`` unless it exists (the demo's, the tests' and the benchmark's)."""
    async with engine.begin() as conn:
        await conn.run_sync(example_metadata.create_all)


HEADER = ["observed_at", "bot_id", "sku", "price", "quantity", "in_stock", "title", "note"]

_ADJECTIVES = [
    "Compact",
    "Wireless",
    "Stainless",
    "Organic",
    "Portable",
    "Ergonomic",
    "Vintage",
    "Smart",
    "Heavy-duty",
    "Foldable",
    "Waterproof",
    "Rechargeable",
    "Classic",
    "Premium",
    "Slim",
    "Quiet",
]
_NOUNS = [
    "coffee grinder",
    "desk lamp",
    "backpack",
    "water bottle",
    "headphones",
    "chef knife",
    "yoga mat",
    "kettle",
    "phone stand",
    "keyboard",
    "rain jacket",
    "thermos",
    "blender",
    "air purifier",
    "bike light",
    "notebook set",
    "wall clock",
    "garden hose",
]
_BRANDS = ["Acme", "Nordlys", "Kestrel", "Tamarind", "Orbis", "Vela", "Halcyon", "Brightwater"]
_NOTES = [
    "price drop since yesterday",
    "limited offer",
    "seller changed",
    "ships in 3-5 days",
    "bundle with case",
    "refurbished",
    "back in stock",
    "coupon applied at checkout",
]


@dataclass(frozen=True)
class GeneratedFile:
    path: Path
    rows: int
    bad_rows: int


def _coprime_step(n: int, rng: random.Random) -> int:
    from math import gcd

    while True:
        step = rng.randrange(n // 3 + 1, max(n // 3 + 2, n)) | 1
        if gcd(step, n) == 1:
            return step


def generate_csv(
    path: Path,
    rows: int,
    *,
    seed: int = 7,
    bad_ratio: float = 0.001,
    day: dt.date = dt.date(2026, 11, 22),
) -> GeneratedFile:
    """Write ``rows`` data rows (plus header) to ``path`` (gzip when it ends in .gz)."""
    rng = random.Random(seed)
    path.parent.mkdir(parents=True, exist_ok=True)
    step = _coprime_step(max(rows, 2), rng)
    start = dt.datetime.combine(day, dt.time())
    titles = [f"{b} {a} {n}" for b in _BRANDS for a in _ADJECTIVES for n in _NOUNS]
    bad_every = int(1 / bad_ratio) if bad_ratio > 0 else 0
    bad = 0
    opener = gzip.open if path.suffix == ".gz" else open
    with opener(path, "wt", encoding="utf-8", newline="") as fh:
        out: TextIO = fh
        writer = csv.writer(out, lineterminator="\n")
        writer.writerow(HEADER)
        batch: list[list[str]] = []
        for i in range(rows):
            key = (i * step) % rows if rows > 1 else 0  # a permutation: keys in random order
            bot_id = 1 + key % 64
            observed = start + dt.timedelta(seconds=(key * 37) % 86_400)
            quantity = rng.randrange(0, 5000)
            if bad_every and i % bad_every == bad_every // 2:
                quantity = rng.randrange(40_000, 99_999)  # out of SMALLINT range: rejected
                bad += 1
            title = titles[rng.randrange(len(titles))]
            note = "" if rng.random() < 0.7 else _NOTES[rng.randrange(len(_NOTES))]
            batch.append(
                [
                    observed.strftime("%Y-%m-%d %H:%M:%S"),
                    str(bot_id),
                    f"SKU-{key:010d}",
                    f"{rng.randrange(50, 999_999) / 100:.2f}",
                    str(quantity),
                    "true" if rng.random() < 0.8 else "false",
                    title + (f", pack of {rng.randrange(2, 12)}" if rng.random() < 0.3 else ""),
                    note,
                ]
            )
            if len(batch) >= 10_000:
                writer.writerows(batch)
                batch.clear()
        writer.writerows(batch)
    return GeneratedFile(path, rows, bad)
