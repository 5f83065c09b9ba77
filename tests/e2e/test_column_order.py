"""A CSV's columns in any order, and any subset that covers the required ones, load the same.

The upstream chooses the header's order; the table's order must not matter. Issue 9: a file
whose header listed the table's columns in another order was sent, then failed every batch
and ended in the DLQ.
"""

from __future__ import annotations

import csv
import io
import subprocess
import sys
from collections.abc import Sequence
from pathlib import Path

import pytest
import sqlalchemy as sa
from hypothesis import HealthCheck, given
from hypothesis import settings as hsettings
from hypothesis import strategies as st
from sqlalchemy.ext.asyncio import AsyncEngine
from support.pipeline import cli_env_for, queued

from cli.verify import verify_source
from headrace.db import create_engine
from headrace.settings import Settings
from headrace.tables import ingest_ledger, ingest_runs, rejected_rows
from producer.app import produce
from worker.app import Worker

pytestmark = pytest.mark.slow

HEADRACE = str(Path(sys.executable).with_name("headrace"))


def _cli(env: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [HEADRACE, *args], env=env, capture_output=True, text=True, timeout=180, check=False
    )


async def test_header_in_another_order_loads_through_the_cli(
    tmp_path: Path, settings: Settings, engine: AsyncEngine
) -> None:
    """The issue's own run: `name,id,score` into t(id, name, score) loads all 3 rows."""
    async with engine.begin() as conn:
        await conn.exec_driver_sql(
            "CREATE TABLE t (id INT PRIMARY KEY, name VARCHAR(20) NOT NULL, score INT NULL)"
        )
    source = tmp_path / "f.csv"
    source.write_text("name,id,score\nalice,1,10\nbob,2,\ncarol,3,30\n")
    env = cli_env_for(settings)

    produced = _cli(env, "produce", str(source), "--table", "t")
    assert produced.returncode == 0, produced.stderr[-3000:]
    worker = _cli(env, "worker", "--idle-exit", "2")
    assert worker.returncode == 0, worker.stderr[-3000:]
    assert "batch_failed" not in worker.stderr

    async with engine.connect() as conn:
        rows = (await conn.exec_driver_sql("SELECT id, name, score FROM t ORDER BY id")).all()
        rejects = (
            await conn.execute(sa.select(sa.func.count()).select_from(rejected_rows))
        ).scalar()
    assert [tuple(r) for r in rows] == [(1, "alice", 10), (2, "bob", None), (3, "carol", 30)]
    assert rejects == 0
    assert await queued(settings, settings.queue_url or "") == 0

    verified = _cli(env, "verify", str(source), "--table", "t")
    assert verified.returncode == 0, verified.stdout + verified.stderr
    assert "verify OK: source 3 rows = target 3 + rejected 0" in verified.stderr


# --- the property: any order, any subset covering the required columns -----------------------

TABLE_DDL = """
CREATE TABLE things (
    id INT AUTO_INCREMENT PRIMARY KEY,
    code VARCHAR(16) NOT NULL,
    qty SMALLINT NOT NULL,
    price DECIMAL(8, 2) NULL,
    seen_at DATETIME NULL,
    note TEXT NULL,
    flag TINYINT(1) NOT NULL DEFAULT 0,
    UNIQUE KEY uq_things_code (code)
)
"""
OPTIONAL = ("price", "seen_at", "note", "flag")
REQUIRED = ("code", "qty")
# Values already in the form the database gives back, so the expected table is the source.
SOURCE_ROWS: list[dict[str, str]] = [
    {
        "code": f"C{i:03d}",
        "qty": str(i * 7 - 40),
        "price": "" if i % 5 == 0 else f"{i}.{i % 100:02d}",
        "seen_at": "" if i % 4 == 0 else f"2026-11-{1 + i % 28:02d} 0{i % 10}:1{i % 6}:00",
        "note": "" if i % 3 == 0 else f'note "{i}", with a comma',
        "flag": str(i % 2),
    }
    for i in range(30)
]
# A value typing refuses (producer-stage reject) and a duplicate key the database refuses
# (worker-stage reject, found by bisection): their raw text must keep the file's order.
BAD_TYPE = {**SOURCE_ROWS[3], "code": "BADQTY", "qty": "lots"}
DUPLICATE = {**SOURCE_ROWS[5], "qty": "1"}
ALL_ROWS = [*SOURCE_ROWS[:10], BAD_TYPE, *SOURCE_ROWS[10:20], DUPLICATE, *SOURCE_ROWS[20:]]


@pytest.fixture
async def things(settings: Settings) -> Settings:
    """The `things` table, and settings whose worker exits once the queue is idle."""
    engine = create_engine(settings)
    try:
        async with engine.begin() as conn:
            await conn.exec_driver_sql(TABLE_DDL)
    finally:
        await engine.dispose()
    worker = settings.worker.model_copy(update={"idle_exit_s": 0.5, "flush_age_s": 0.1})
    return settings.model_copy(update={"worker": worker})


def _write(path: Path, columns: Sequence[str]) -> None:
    with path.open("w", newline="") as f:
        out = csv.writer(f)
        out.writerow(columns)
        for row in ALL_ROWS:
            out.writerow([row[c] for c in columns])


async def _reset(engine: AsyncEngine) -> None:
    async with engine.begin() as conn:
        for table in ("things", ingest_ledger.name, rejected_rows.name, ingest_runs.name):
            await conn.exec_driver_sql(f"DELETE FROM {table}")


def _expected(columns: Sequence[str]) -> list[tuple[str | None, ...]]:
    """The table after loading ``columns`` of the source: defaults for the others."""
    defaults = {"price": None, "seen_at": None, "note": None, "flag": "0"}
    rows = []
    for row in SOURCE_ROWS:
        values = []
        for name in (*REQUIRED, *OPTIONAL):
            if name not in columns:
                values.append(defaults[name])
            elif row[name] == "":
                values.append(None)  # every optional column here is nullable or has a default
            else:
                values.append(row[name])
        rows.append(tuple(values))
    return sorted(rows, key=lambda r: str(r[0]))


@st.composite
def headers(draw: st.DrawFn) -> list[str]:
    optional = draw(st.lists(st.sampled_from(OPTIONAL), unique=True))
    return draw(st.permutations([*REQUIRED, *optional]))


@given(columns=headers())
@hsettings(
    max_examples=12,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture],
)
async def test_any_order_and_subset_loads_identically(
    tmp_path: Path, things: Settings, columns: list[str]
) -> None:
    settings = things
    engine = create_engine(settings)
    try:
        await _reset(engine)
        source = tmp_path / "things.csv"
        _write(source, columns)
        report = await produce(settings, str(source), "things")
        assert report.rows_read == len(ALL_ROWS)
        assert report.rows_rejected == 1  # BADQTY, refused by typing before it is sent
        stats = await Worker(settings).run()
        assert stats.batch_failures == 0
        assert stats.messages_poison == 0
        assert stats.messages_applied == report.total_messages

        select_cols = ", ".join((*REQUIRED, *OPTIONAL))
        async with engine.connect() as conn:
            got = (
                await conn.exec_driver_sql(
                    f"SELECT {select_cols} FROM things ORDER BY code"  # fixed names: not input
                )
            ).all()
            rejects = (
                await conn.execute(
                    sa.select(
                        rejected_rows.c.line, rejected_rows.c.stage, rejected_rows.c.raw
                    ).order_by(rejected_rows.c.line)
                )
            ).all()
        as_text = [tuple(None if v is None else str(v) for v in row) for row in got]
        assert as_text == _expected(columns)

        def raw(row: dict[str, str]) -> str:  # the row as the file has it
            buf = io.StringIO()
            csv.writer(buf, lineterminator="\n").writerow([row[c] for c in columns])
            return buf.getvalue()[:-1]

        # Line 1 is the header, so ALL_ROWS[k] is on line k + 2.
        assert [tuple(r) for r in rejects] == [
            (12, "producer", raw(BAD_TYPE)),
            (23, "worker", raw(DUPLICATE)),
        ]
        verified = await verify_source(settings, engine, str(source), "things")
        assert verified.ok, verified.line()
    finally:
        await engine.dispose()
