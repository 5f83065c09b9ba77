"""`headrace runs` and `headrace rejected list|export|replay` on a real run: producer and
worker processes, MariaDB, moto SQS; rows refused by the producer (a SMALLINT out of range)
and by the database (duplicates of the table's natural key)."""

from __future__ import annotations

import csv
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

import pytest
import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncEngine
from support.pipeline import count, drain_queue, headrace, headrace_json, produce_cli

from cli.datagen import HEADER, generate_csv, observations
from cli.ops.rejected import reason_group
from headrace.tables import rejected_rows

pytestmark = pytest.mark.slow

ROWS = 3_000
DUPLICATES = 5


@dataclass
class LoadedRun:
    run_id: str
    path: Path
    total_messages: int
    bad_lines: dict[int, list[str]]  # source line -> fields, refused by the producer
    duplicate_lines: dict[int, list[str]]  # refused by the database


def _source(tmp_path: Path) -> tuple[Path, dict[int, list[str]], list[tuple[int, int]]]:
    """3,000 generated rows (1% out of range) and 5 of them repeated at the end: the bad
    rows by line, and the (first, repeated) lines of each repeated row."""
    data = generate_csv(tmp_path / "drop.csv", ROWS, seed=11, bad_ratio=0.01)
    with data.path.open(newline="") as fh:
        rows = list(csv.reader(fh))[1:]
    bad = {i + 2: r for i, r in enumerate(rows) if int(r[4]) > 32767}
    assert len(bad) == data.bad_rows > 0
    good = [i + 2 for i, r in enumerate(rows) if int(r[4]) <= 32767][:DUPLICATES]
    with data.path.open("a", newline="") as fh:
        csv.writer(fh, lineterminator="\n").writerows(rows[line - 2] for line in good)
    return data.path, bad, [(line, ROWS + 2 + i) for i, line in enumerate(good)]


@pytest.fixture
async def loaded(tmp_path: Path, cli_env: dict[str, str], engine: AsyncEngine) -> LoadedRun:
    path, bad, pairs = _source(tmp_path)
    small = {**cli_env, "HEADRACE_PRODUCER__MAX_MESSAGE_BYTES": "32768"}
    report = produce_cli(small, path)
    assert report["total_messages"] >= 3
    drain_queue(cli_env, tmp_path / "worker.log")
    # Of each repeated row, the copy whose message was applied second is the duplicate: the
    # queue does not keep the order of messages, so that may be either line of the pair.
    refused = {
        line
        for line, (_, reason) in (await _rejected(engine, report["run_id"])).items()
        if "Duplicate entry" in reason
    }
    with path.open(newline="") as fh:
        rows = list(csv.reader(fh))
    duplicates: dict[int, list[str]] = {}
    for first, repeated in pairs:
        (line,) = refused & {first, repeated}  # exactly one of the two
        duplicates[line] = rows[line - 1]
    assert len(refused) == DUPLICATES
    return LoadedRun(report["run_id"], path, report["total_messages"], bad, duplicates)


def _typed(row: list[str]) -> list[str]:
    """A row as the typing rules normalise it (the boolean ``in_stock`` as 1/0)."""
    return [*row[:5], {"true": "1", "false": "0"}[row[5]], *row[6:]]


async def _rejected(engine: AsyncEngine, run_id: str) -> dict[int, tuple[str, str]]:
    c = rejected_rows.c
    async with engine.connect() as conn:
        rows = await conn.execute(
            sa.select(c.line, c.raw, c.reason).where(c.run_id == run_id).order_by(c.line)
        )
        return {int(line): (str(raw), str(reason)) for line, raw, reason in rows}


async def test_runs_report_what_the_database_holds(
    tmp_path: Path, cli_env: dict[str, str], engine: AsyncEngine
) -> None:
    path, bad, _ = _source(tmp_path)
    small = {**cli_env, "HEADRACE_PRODUCER__MAX_MESSAGE_BYTES": "32768"}
    report = produce_cli(small, path)
    run_id, total = report["run_id"], report["total_messages"]

    # Sent, nothing applied yet: incomplete, every message missing, exit 1.
    pending = headrace_json(cli_env, "runs", "show", run_id[:10], code=1)
    assert pending["run_id"] == run_id
    assert pending["complete"] is False
    assert pending["messages_applied"] == 0
    assert pending["missing"] == [[0, total - 1]]
    assert pending["columns"] == HEADER
    assert pending["options"]["budget_bytes"] == 32768

    drain_queue(cli_env, tmp_path / "worker.log")
    (run,) = headrace_json(cli_env, "runs", "--since", "1d")
    inserted = await count(engine)
    in_rejected = len(await _rejected(engine, run_id))
    assert run["run_id"] == run_id
    assert run["complete"] is True
    assert run["missing"] == []
    assert run["messages_applied"] == run["messages_sent"] == total
    assert run["rows_read"] == ROWS + DUPLICATES
    assert run["rows_rejected_producer"] == len(bad)
    assert run["rows_sent"] == ROWS + DUPLICATES - len(bad)
    assert run["rows_inserted"] == inserted == ROWS - len(bad)
    assert run["rows_duplicate"] == DUPLICATES
    assert run["rows_rejected"] == in_rejected == len(bad) + DUPLICATES
    assert headrace_json(cli_env, "runs", "--table", "elsewhere") == []

    wide = {**cli_env, "COLUMNS": "200"}  # tables of a fixed width, whatever the caller's
    shown = headrace(wide, "runs", "show", run_id)
    assert shown.returncode == 0, shown.stderr
    assert run_id in shown.stdout
    assert "complete" in shown.stdout
    listed = headrace(wide, "runs")
    assert listed.returncode == 0, listed.stderr
    assert run_id[:12] in listed.stdout
    assert f"{total}/{total}" in listed.stdout

    unknown = headrace(cli_env, "runs", "show", "f" * 32)
    assert unknown.returncode == 2
    assert "no run with an id starting" in unknown.stderr


async def test_rejected_list_groups_by_reason(
    loaded: LoadedRun, cli_env: dict[str, str], engine: AsyncEngine
) -> None:
    groups = headrace_json(cli_env, "rejected", "list", "--run", loaded.run_id)
    stored = await _rejected(engine, loaded.run_id)
    assert sum(g["count"] for g in groups) == len(stored)
    by_cause = Counter(reason_group(r) for _, r in stored.values())
    assert sorted((g["reason"], g["count"]) for g in groups) == sorted(by_cause.items())
    assert len(groups) == 2  # out of range, duplicate key: the values quoted are left out
    (dup,) = headrace_json(
        cli_env, "rejected", "list", "--reason-like", "%Duplicate entry%", "--table", "observations"
    )
    assert (dup["count"], dup["stage"]) == (len(loaded.duplicate_lines), "worker")
    assert dup["first_line"] == min(loaded.duplicate_lines)
    human = headrace({**cli_env, "COLUMNS": "200"}, "rejected", "list")
    assert human.returncode == 0, human.stderr
    assert f"{len(stored)} rejected rows" in human.stdout


async def test_export_fix_and_produce_loads_exactly_the_fixed_rows(
    loaded: LoadedRun, tmp_path: Path, cli_env: dict[str, str], engine: AsyncEngine
) -> None:
    exported = headrace(cli_env, "rejected", "export", "--run", loaded.run_id, "--format", "csv")
    assert exported.returncode == 0, exported.stderr
    rows = list(csv.reader(exported.stdout.splitlines()))
    assert rows[0] == HEADER
    # The producer's rejects as in the source; the database's as the worker had them, typed.
    typed = {line: _typed(r) for line, r in loaded.duplicate_lines.items()}
    expected = {**loaded.bad_lines, **typed}
    assert rows[1:] == [expected[line] for line in sorted(expected)]

    # The fix: quantities into SMALLINT's range; the duplicates are dropped (already loaded).
    duplicates = {tuple(r) for r in typed.values()}
    fixed = [[*r[:4], "7", *r[5:]] for r in rows[1:] if tuple(r) not in duplicates]
    fix = tmp_path / "fix.csv"
    with fix.open("w", newline="") as fh:
        csv.writer(fh, lineterminator="\n").writerows([HEADER, *fixed])

    before = await count(engine)
    report = produce_cli(cli_env, fix)
    assert report["rows_rejected"] == 0
    drain_queue(cli_env, tmp_path / "worker2.log")
    assert await count(engine) == before + len(loaded.bad_lines)
    o = observations.c
    async with engine.connect() as conn:
        got = await conn.execute(
            sa.select(o.sku, o.quantity).where(o.sku.in_([r[2] for r in fixed]))
        )
        assert sorted(got) == sorted((r[2], 7) for r in fixed)
    run = headrace_json(cli_env, "runs", "show", report["run_id"])
    assert (run["rows_inserted"], run["rows_rejected"]) == (len(fixed), 0)


async def test_replay_removes_exactly_the_rows_it_inserted(
    loaded: LoadedRun, cli_env: dict[str, str], engine: AsyncEngine
) -> None:
    before = await count(engine)
    # Still too big for SMALLINT: nothing inserted, the reasons stay, exit 1.
    same = headrace_json(cli_env, "rejected", "replay", "--run", loaded.run_id, code=1)
    assert (same["inserted"], same["still_rejected"]) == (0, len(loaded.bad_lines) + DUPLICATES)
    assert await count(engine) == before

    async with engine.begin() as conn:  # the fix: a wider column
        await conn.exec_driver_sql("ALTER TABLE observations MODIFY quantity INT NOT NULL")
    result = headrace_json(cli_env, "rejected", "replay", "--run", loaded.run_id, code=1)
    assert result["inserted"] == len(loaded.bad_lines)
    assert result["still_rejected"] == DUPLICATES
    (reason,) = result["reasons"]
    assert "Duplicate entry" in reason

    assert await count(engine) == before + len(loaded.bad_lines)
    left = await _rejected(engine, loaded.run_id)
    assert sorted(left) == sorted(loaded.duplicate_lines)
    o = observations.c
    async with engine.connect() as conn:
        got = await conn.execute(
            sa.select(o.sku, o.quantity).where(o.sku.in_([r[2] for r in loaded.bad_lines.values()]))
        )
        assert sorted(got) == sorted((r[2], int(r[4])) for r in loaded.bad_lines.values())

    again = headrace_json(cli_env, "rejected", "replay", "--run", loaded.run_id, code=1)
    assert (again["inserted"], again["still_rejected"]) == (0, DUPLICATES)
    assert await count(engine) == before + len(loaded.bad_lines)
    run = headrace_json(cli_env, "runs", "show", loaded.run_id)
    assert run["rows_replayed"] == len(loaded.bad_lines)
    assert run["rows_rejected"] == DUPLICATES


async def test_replay_types_rows_the_way_the_run_read_its_file(
    tmp_path: Path, cli_env: dict[str, str], engine: AsyncEngine
) -> None:
    """A run read with options (`;`, decimal comma, NA): the producer's rejects are typed
    again with them, the worker's (values already typed) as they are."""
    async with engine.begin() as conn:
        await conn.exec_driver_sql(
            "CREATE TABLE readings (id INT AUTO_INCREMENT PRIMARY KEY,"
            " station VARCHAR(20) NOT NULL UNIQUE, level TINYINT NULL, price DECIMAL(8,2) NULL)"
        )
    path = tmp_path / "readings.csv"
    path.write_text(
        "station;level;price\n"
        "a;1;1,50\n"
        "b;NA;2,25\n"
        "c;300;3,75\n"  # TINYINT out of range: refused by the producer
        "d;NA;1.234,56\n"
        "a;5;9,99\n"  # station repeated: refused by the database
    )
    env = {**cli_env, "HEADRACE_WORKER__TABLES": "*"}
    options = ("--delimiter", ";", "--decimal-comma", "--null", "NA")
    report = produce_cli(env, path, "--table", "readings", *options)
    drain_queue(env, tmp_path / "worker.log")
    assert sorted(await _rejected(engine, report["run_id"])) == [4, 6]

    async with engine.begin() as conn:  # the fixes: a wider column, stations may repeat
        await conn.exec_driver_sql("ALTER TABLE readings MODIFY level SMALLINT NULL")
        await conn.exec_driver_sql("ALTER TABLE readings DROP INDEX station")
    result = headrace_json(env, "rejected", "replay", "--run", report["run_id"])
    assert (result["inserted"], result["still_rejected"]) == (2, 0)
    assert await _rejected(engine, report["run_id"]) == {}
    async with engine.connect() as conn:
        got = await conn.exec_driver_sql(
            "SELECT station, level, CAST(price AS CHAR) FROM readings ORDER BY station, level"
        )
        assert [tuple(r) for r in got] == [
            ("a", 1, "1.50"),
            ("a", 5, "9.99"),
            ("b", None, "2.25"),
            ("c", 300, "3.75"),
            ("d", None, "1234.56"),
        ]


async def test_replay_writes_rows_the_way_the_run_wrote_them(
    tmp_path: Path, cli_env: dict[str, str], engine: AsyncEngine
) -> None:
    """A run with --on-duplicate update whose updates a CHECK constraint refused: once the
    constraint is gone, replay updates those rows in place (a plain INSERT would be refused
    again, as a duplicate of the row the update was for)."""
    async with engine.begin() as conn:
        await conn.exec_driver_sql(
            "CREATE TABLE prices (id INT AUTO_INCREMENT PRIMARY KEY,"
            " sku VARCHAR(20) NOT NULL UNIQUE, price DECIMAL(8,2) NOT NULL)"
        )
    env = {
        **cli_env,
        "HEADRACE_WORKER__TABLES": "*",
        "HEADRACE_WORKER__ON_DUPLICATE": "error,skip,update",
    }
    first = tmp_path / "monday.csv"
    first.write_text("sku,price\na,1.00\nb,2.00\nc,3.00\n")
    produce_cli(env, first, "--table", "prices")
    drain_queue(env, tmp_path / "monday.log")
    async with engine.begin() as conn:  # prices may not pass 100 any more
        await conn.exec_driver_sql("ALTER TABLE prices ADD CONSTRAINT cap CHECK (price < 100)")
    second = tmp_path / "tuesday.csv"
    second.write_text("sku,price\na,1.50\nb,250.00\nc,300.00\n")
    report = produce_cli(env, second, "--table", "prices", "--on-duplicate", "update")
    drain_queue(env, tmp_path / "tuesday.log")
    refused = await _rejected(engine, report["run_id"])
    assert sorted(refused) == [3, 4]
    assert all("cap" in reason for _, reason in refused.values())

    async with engine.begin() as conn:  # the fix: the cap was wrong
        await conn.exec_driver_sql("ALTER TABLE prices DROP CONSTRAINT cap")
    result = headrace_json(env, "rejected", "replay", "--run", report["run_id"])
    assert (result["inserted"], result["still_rejected"]) == (2, 0)
    assert await _rejected(engine, report["run_id"]) == {}
    async with engine.connect() as conn:
        got = await conn.exec_driver_sql("SELECT sku, CAST(price AS CHAR) FROM prices ORDER BY sku")
        assert [tuple(r) for r in got] == [("a", "1.50"), ("b", "250.00"), ("c", "300.00")]
