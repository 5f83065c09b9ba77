"""The invariant checker finds missing, duplicated and unexpected rows by key."""

from __future__ import annotations

from pathlib import Path

import pytest
from sqlalchemy.ext.asyncio import AsyncEngine

from cli.verify import verify_source
from headrace.settings import Settings

ROWS = [(i, f"name-{i % 7}") for i in range(1, 301)]


@pytest.fixture
async def plain(tmp_path: Path, engine: AsyncEngine) -> Path:
    """A table without a unique key (so the target can hold a row twice) and its source."""
    async with engine.begin() as conn:
        await conn.exec_driver_sql("CREATE TABLE plain (n INT NOT NULL, name VARCHAR(20))")
        await conn.exec_driver_sql(
            "INSERT INTO plain (n, name) VALUES (%s, %s)", [(n, s) for n, s in ROWS]
        )
    path = tmp_path / "plain.csv"
    path.write_text("n,name\n" + "".join(f"{n},{s}\n" for n, s in ROWS))
    return path


async def _sql(engine: AsyncEngine, sql: str) -> None:
    async with engine.begin() as conn:
        await conn.exec_driver_sql(sql)


async def test_a_complete_target_verifies(
    plain: Path, settings: Settings, engine: AsyncEngine
) -> None:
    report = await verify_source(settings, engine, str(plain), "plain")
    assert report.ok, report.line()
    assert (report.source_rows, report.target_rows) == (300, 300)
    assert report.missing_rows == report.duplicated_rows == report.unexpected_rows == []


async def test_a_missing_row_is_named_with_its_line(
    plain: Path, settings: Settings, engine: AsyncEngine
) -> None:
    await _sql(engine, "DELETE FROM plain WHERE n = 42")
    report = await verify_source(settings, engine, str(plain), "plain")
    assert not report.ok
    assert [(r.line, r.key) for r in report.missing_rows] == [(43, {"n": "42", "name": "name-0"})]
    assert report.duplicated_rows == report.unexpected_rows == []


async def test_a_doubled_row_and_a_foreign_row_are_named(
    plain: Path, settings: Settings, engine: AsyncEngine
) -> None:
    await _sql(engine, "INSERT INTO plain (n, name) VALUES (7, 'name-0'), (7, 'name-0')")
    await _sql(engine, "INSERT INTO plain (n, name) VALUES (9999, 'stranger')")
    report = await verify_source(settings, engine, str(plain), "plain")
    assert not report.ok
    assert [(r.key, r.copies) for r in report.duplicated_rows] == [
        ({"n": "7", "name": "name-0"}, 3)
    ]
    assert [r.key for r in report.unexpected_rows] == [{"n": "9999", "name": "stranger"}]
    assert not report.missing_rows


async def test_the_unique_key_names_a_row_of_the_example_table(
    tmp_path: Path, settings: Settings, engine: AsyncEngine
) -> None:
    from cli.datagen import generate_csv, observations

    data = generate_csv(tmp_path / "o.csv", 50, seed=3, bad_ratio=0)
    report = await verify_source(settings, engine, str(data.path), "observations")
    assert len(report.missing_rows) == 50
    first = report.missing_rows[0]
    assert first.line == 2
    assert set(first.key) == {
        c.name for c in observations.c if c.name in ("bot_id", "sku", "observed_at")
    }


async def test_a_row_in_rejected_rows_instead_of_the_target_is_accounted_for(
    plain: Path, settings: Settings, engine: AsyncEngine
) -> None:
    """E.g. a row no message could carry: rejected with a reason, not in the target."""
    await _sql(engine, "DELETE FROM plain WHERE n = 42")
    await _reject(engine, plain, 43)
    report = await verify_source(settings, engine, str(plain), "plain")
    assert report.ok, report
    await _reject(engine, plain, 9999)  # no such line in the source
    report = await verify_source(settings, engine, str(plain), "plain")
    assert report.unexpected_reject_lines == [9999]
    assert not report.ok


async def _reject(engine: AsyncEngine, source: Path, line: int) -> None:
    from headrace.tables import rejected_rows

    async with engine.begin() as conn:
        await conn.execute(
            rejected_rows.insert().values(
                run_id="r" * 32,
                source=str(source.resolve()),
                line=line,
                table_name="plain",
                stage="producer",
                reason="row is too large for a message",
                raw="",
            )
        )
