"""`headrace produce --on-duplicate update` through the CLI (issue 12): a second drop of the
same file with corrections updates those rows in place; counts and checksums match. The same
drop again with `skip` leaves every row and counts it."""

from __future__ import annotations

import datetime as dt
import json
import subprocess
import sys
from pathlib import Path

import pytest
import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncEngine
from support.pipeline import cli_env_for, queued

from headrace.settings import Settings
from headrace.tables import rejected_rows

pytestmark = pytest.mark.slow

HEADRACE = str(Path(sys.executable).with_name("headrace"))
DDL = """
CREATE TABLE stock (
    id INT AUTO_INCREMENT PRIMARY KEY,
    sku VARCHAR(16) NOT NULL,
    price DECIMAL(8, 2) NOT NULL,
    qty INT NULL,
    seen_at DATETIME NOT NULL,
    origin VARCHAR(10) NOT NULL DEFAULT 'csv',
    UNIQUE KEY uq_stock_sku (sku)
)
"""
OPTIONS = ("--delimiter", ";", "--null", "NA", "--on-duplicate", "update")


def _cli(env: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    done = subprocess.run(
        [HEADRACE, *args], env=env, capture_output=True, text=True, timeout=180, check=False
    )
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-3000:]
    return done


def _drop(path: Path, rows: dict[str, tuple[str, str, str]]) -> None:
    lines = ["sku;price;qty;seen_at"] + [f"{k};{p};{q};{t}" for k, (p, q, t) in rows.items()]
    path.write_text("\n".join(lines) + "\n")


async def test_second_drop_updates_rows_in_place(
    tmp_path: Path, settings: Settings, engine: AsyncEngine
) -> None:
    async with engine.begin() as conn:
        await conn.exec_driver_sql(DDL)
    env = cli_env_for(settings, HEADRACE_WORKER__ON_DUPLICATE="error,skip,update")
    first = {
        f"SKU-{i:03d}": (f"{i}.25", str(i) if i % 5 else "NA", f"2026-11-01T{i % 24:02d}:00:00Z")
        for i in range(120)
    }
    _drop(tmp_path / "stock-1.csv", first)
    produced = json.loads(
        _cli(env, "produce", str(tmp_path / "stock-1.csv"), "--table", "stock", *OPTIONS).stdout
    )
    assert (produced["rows_sent"], produced["rows_rejected"]) == (120, 0)
    _cli(env, "worker", "--idle-exit", "2")
    async with engine.connect() as conn:
        ids_before = dict((await conn.exec_driver_sql("SELECT sku, id FROM stock")).all())
    assert len(ids_before) == 120

    # The corrected re-delivery: every row again, 30 changed (one to NULL), 10 new.
    second = dict(first)
    for i in range(0, 120, 4):
        second[f"SKU-{i:03d}"] = (
            f"{i + 1000}.75",
            "NA" if i == 8 else str(i * 2),
            "2026-11-02T08:30:00+01:00",
        )
    for i in range(120, 130):
        second[f"SKU-{i:03d}"] = ("1.00", "1", "2026-11-02 00:00:00")
    _drop(tmp_path / "stock-2.csv", second)
    produced = json.loads(
        _cli(env, "produce", str(tmp_path / "stock-2.csv"), "--table", "stock", *OPTIONS).stdout
    )
    assert produced["run_id"]  # a new run: another file
    assert (produced["rows_sent"], produced["rows_rejected"]) == (130, 0)
    worker = json.loads(_cli(env, "worker", "--idle-exit", "2").stdout)
    assert (worker["batch_failures"], worker["messages_poison"]) == (0, 0)
    assert worker["rows_inserted"] == 130  # inserted or updated
    assert await queued(settings, settings.queue_url or "") == 0

    async with engine.connect() as conn:
        table = {
            sku: (str(price), qty, at, origin, row_id)
            for row_id, sku, price, qty, at, origin in (
                await conn.exec_driver_sql("SELECT id, sku, price, qty, seen_at, origin FROM stock")
            ).all()
        }
        rejects = (
            await conn.execute(sa.select(sa.func.count()).select_from(rejected_rows))
        ).scalar()
    assert rejects == 0
    assert len(table) == 130
    assert all(table[sku][4] == row_id for sku, row_id in ids_before.items())  # in place
    assert table["SKU-008"][:2] == ("1008.75", None)
    assert table["SKU-004"][:4] == (
        "1004.75",
        8,
        dt.datetime(2026, 11, 2, 7, 30),
        "csv",
    )
    assert table["SKU-005"][:2] == ("5.25", None)
    assert table["SKU-001"][:2] == ("1.25", 1)

    # The table is the second drop exactly: same count and checksum (verify, same options).
    verified = _cli(
        env,
        "verify",
        str(tmp_path / "stock-2.csv"),
        "--table",
        "stock",
        "--delimiter",
        ";",
        "--null",
        "NA",
    )
    report = json.loads(verified.stdout)
    assert report["ok"], verified.stderr
    assert (report["target_rows"], report["expected_rows"]) == (130, 130)
    assert report["target_checksum"] == report["expected_checksum"]

    # The same drop again with --on-duplicate skip: a new run whose rows all exist; each is
    # left as it is and counted, none rejected.
    skip = [o if o != "update" else "skip" for o in OPTIONS]
    produced = json.loads(
        _cli(env, "produce", str(tmp_path / "stock-2.csv"), "--table", "stock", *skip).stdout
    )
    assert (produced["rows_sent"], produced["already_complete"]) == (130, False)
    worker = json.loads(_cli(env, "worker", "--idle-exit", "2").stdout)
    assert (worker["rows_skipped"], worker["rows_inserted"], worker["rows_rejected"]) == (130, 0, 0)
    again = json.loads(
        _cli(env, "verify", str(tmp_path / "stock-2.csv"), "--table", "stock", *OPTIONS[:4]).stdout
    )
    assert again["ok"]
    assert again["target_checksum"] == report["target_checksum"]
