"""Hostile files through the real producer (and worker): scenarios 6 and 28-34.

Three outcomes, decided per case (README, "Hostile input"):

* **refused before anything is sent** — the header does not fit the table (28, 29) or is not
  UTF-8 (30): exit 2, the error names ``file:line:column``, the queue stays empty;
* **the row goes to rejected_rows** — a bad byte, NUL, ragged row, a value out of range or a
  row too big for any message (6, 30, 31, 32, 34): the reason names the column, every other
  row is loaded, and the invariant holds;
* **the stream cannot go on** — a gzip bomb (33), or one field past ``max_field_bytes``
  (the parser's memory cap): exit 2 naming ``file:line``; what was sent before that line is
  applied exactly once and nothing after it.
"""

from __future__ import annotations

import gzip
import os
import zlib
from pathlib import Path

import pytest
import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncEngine
from support.pipeline import (
    BOTH_INSERT_PATHS,
    assert_invariant,
    count,
    drain_queue,
    produce_cli,
    queued,
    rejected,
    run_producer,
)

from cli.datagen import HEADER, observations
from headrace.settings import Settings
from testbed.moto import QueuePair

# Every scenario on both ways the sink sends rows (bulk protocol, and the INSERT text Aurora gets).
# Only the tests whose outcome goes through the sink's insert run on both insert paths.
pytestmark = pytest.mark.slow


def _row(i: int, **values: str) -> str:
    row = {
        "observed_at": f"2026-11-22 10:{i // 60 % 60:02d}:{i % 60:02d}",
        "bot_id": "7",
        "sku": f"SKU-{i}",
        "price": "12.50",
        "quantity": "3",
        "in_stock": "true",
        "title": f"Lamp {i}",
        "note": "",
    }
    row.update(values)
    return ",".join(row[c] for c in HEADER)


def _csv(path: Path, rows: list[str], header: str = ",".join(HEADER)) -> Path:
    path.write_bytes((header + "\n" + "\n".join(rows) + "\n").encode("utf-8", "surrogateescape"))
    return path


def _refused(env: dict[str, str], source: Path) -> str:
    """Run the producer, expect exit 2; returns its stderr."""
    proc = run_producer(env, source, timeout_s=120)
    assert proc.returncode == 2, f"exit {proc.returncode}: {proc.stderr[-2000:]}"
    return proc.stderr


async def _nothing_sent(settings: Settings, engine: AsyncEngine, queue: QueuePair) -> None:
    assert await queued(settings, queue.queue_url) == 0
    assert await count(engine) == 0


async def _header_refused(
    header: str,
    where: str,
    what: str,
    tmp_path: Path,
    settings: Settings,
    engine: AsyncEngine,
    queue: QueuePair,
    env: dict[str, str],
) -> None:
    """A file with this header is refused at ``file{where}`` saying ``what``; nothing sent."""
    source = _csv(tmp_path / "h.csv", [_row(i) for i in range(50)], header=header)
    err = _refused(env, source)
    assert f"{source.resolve()}{where}" in err
    assert what in err
    await _nothing_sent(settings, engine, queue)


async def _load(
    env: dict[str, str], source: Path, tmp_path: Path, settings: Settings, engine: AsyncEngine
) -> list[tuple[int, str, str]]:
    """Produce and drain; the invariant holds; returns rejected_rows (line, stage, reason)."""
    produce_cli(env, source, timeout_s=120)
    drain_queue(env, tmp_path / "worker.log")
    await assert_invariant(settings, engine, source)
    return await rejected(engine)


# --- refused before sending ------------------------------------------------------------------


@pytest.mark.parametrize(
    ("header", "where", "what"),
    [
        (",".join([*HEADER, "evil"]), ":1:9:", "column 'evil' is not a writable column"),
        (
            ",".join(HEADER[:7]) + ',"note`; DROP TABLE observations; --"',
            ":1:8:",
            "is not a writable column",
        ),
    ],
    ids=["unknown-column", "sql-in-header"],
)
async def test_scenario_28_header_naming_a_column_not_in_the_table(
    header: str,
    where: str,
    what: str,
    tmp_path: Path,
    settings: Settings,
    engine: AsyncEngine,
    queue: QueuePair,
    cli_env: dict[str, str],
) -> None:
    await _header_refused(header, where, what, tmp_path, settings, engine, queue, cli_env)
    async with engine.connect() as conn:  # the table is still there, untouched
        assert await conn.run_sync(lambda c: sa.inspect(c).has_table("observations"))


@pytest.mark.parametrize(
    ("header", "where", "what"),
    [
        (",".join([*HEADER[:7], "SKU"]), ":1:8:", "duplicate column 'SKU'"),
        (",".join([*HEADER[:4], "", *HEADER[4:]]), ":1:5:", "empty column name"),
        ("\ufeff\ufeff" + ",".join(HEADER), ":1:1:", "is not a writable column"),
    ],
    ids=["duplicate", "empty", "double-bom"],
)
async def test_scenario_29_duplicate_empty_or_bom_headers_are_refused(
    header: str,
    where: str,
    what: str,
    tmp_path: Path,
    settings: Settings,
    engine: AsyncEngine,
    queue: QueuePair,
    cli_env: dict[str, str],
) -> None:
    await _header_refused(header, where, what, tmp_path, settings, engine, queue, cli_env)


async def test_scenario_29_one_bom_before_the_header_is_accepted(
    tmp_path: Path, settings: Settings, engine: AsyncEngine, cli_env: dict[str, str]
) -> None:
    source = _csv(tmp_path / "bom.csv", [_row(i) for i in range(50)], "\ufeff" + ",".join(HEADER))
    assert await _load(cli_env, source, tmp_path, settings, engine) == []
    assert await count(engine) == 50


# --- rejected row by row ---------------------------------------------------------------------


async def test_scenario_30_invalid_utf8_and_nul_bytes(
    tmp_path: Path,
    settings: Settings,
    engine: AsyncEngine,
    queue: QueuePair,
    cli_env: dict[str, str],
) -> None:
    rows = [_row(i) for i in range(200)]
    rows[10] = _row(10, title="caf\udce9 au lait")  # a Latin-1 byte in a UTF-8 file
    rows[20] = _row(20, note="nul\x00inside")
    got = await _load(cli_env, _csv(tmp_path / "u.csv", rows), tmp_path, settings, engine)
    assert [(line, stage) for line, stage, _ in got] == [(12, "producer"), (22, "producer")]
    assert "column 7: invalid UTF-8 byte 0xe9" in got[0][2]
    assert "note" in got[1][2]
    assert "NUL" in got[1][2]
    assert await count(engine) == 198

    bad_header = _csv(
        tmp_path / "uh.csv", rows[:5], header=",".join(HEADER[:6]) + ",t\udcffitle,note"
    )
    err = _refused(cli_env, bad_header)
    assert f"{bad_header.resolve()}:1:7:" in err
    assert "not valid UTF-8" in err


async def test_scenario_31_ragged_rows(
    tmp_path: Path, settings: Settings, engine: AsyncEngine, cli_env: dict[str, str]
) -> None:
    rows = [_row(i) for i in range(100)]
    rows[3] = _row(3) + ",extra"
    rows[4] = ",".join(_row(4).split(",")[:5])
    rows[5] = ""  # a blank line is not a row
    got = await _load(cli_env, _csv(tmp_path / "r.csv", rows), tmp_path, settings, engine)
    assert [(line, stage) for line, stage, _ in got] == [(5, "producer"), (6, "producer")]
    assert "expected 8 fields, found 9" in got[0][2]
    assert "expected 8 fields, found 5" in got[1][2]
    assert await count(engine) == 97


@BOTH_INSERT_PATHS
async def test_scenario_34_values_out_of_range_are_rejected_not_coerced(
    tmp_path: Path, settings: Settings, engine: AsyncEngine, cli_env: dict[str, str]
) -> None:
    rows = [_row(i) for i in range(100)]
    bad = {
        2: {"quantity": "70000"},  # SMALLINT
        3: {"price": "123456789.00"},  # DECIMAL(10,2)
        4: {"observed_at": "2026-02-30 10:00:00"},  # no such day
        5: {"sku": "S" * 25},  # VARCHAR(24)
        6: {"in_stock": "maybe"},  # BOOLEAN
        7: {"bot_id": "1.5"},  # INTEGER
    }
    for i, values in bad.items():
        rows[i] = _row(i, **values)
    got = await _load(cli_env, _csv(tmp_path / "o.csv", rows), tmp_path, settings, engine)
    assert [line for line, _, _ in got] == [i + 2 for i in bad]
    for (_, _, reason), values in zip(got, bad.values(), strict=True):
        assert next(iter(values)) in reason
    assert await count(engine) == 94
    async with engine.connect() as conn:  # nothing clipped or rounded on the way
        assert (await conn.execute(sa.select(sa.func.max(observations.c.quantity)))).scalar() == 3


async def test_scenario_06_row_bigger_than_the_message_limit_is_rejected(
    tmp_path: Path, settings: Settings, engine: AsyncEngine, cli_env: dict[str, str]
) -> None:
    env = {**cli_env, "HEADRACE_PRODUCER__MAX_MESSAGE_BYTES": "16384"}
    rows = [_row(i) for i in range(300)]
    rows[100] = _row(100, note=os.urandom(20_000).hex())  # 40,000 characters, incompressible
    got = await _load(env, _csv(tmp_path / "big.csv", rows), tmp_path, settings, engine)
    assert [(line, stage) for line, stage, _ in got] == [(102, "producer")]
    assert "a message carries at most" in got[0][2]
    assert await count(engine) == 299


async def test_scenario_32_a_10_mb_field(
    tmp_path: Path, settings: Settings, engine: AsyncEngine, cli_env: dict[str, str]
) -> None:
    rows = [_row(i) for i in range(300)]
    rows[150] = _row(150, note='"' + "x" * 10_000_000 + '"')
    got = await _load(cli_env, _csv(tmp_path / "ten.csv", rows), tmp_path, settings, engine)
    assert [(line, stage) for line, stage, _ in got] == [(152, "producer")]
    assert "note" in got[0][2]
    assert await count(engine) == 299


# --- the stream cannot go on -----------------------------------------------------------------


async def test_scenario_32_a_field_past_the_parser_limit_stops_at_its_line(
    tmp_path: Path,
    settings: Settings,
    engine: AsyncEngine,
    cli_env: dict[str, str],
) -> None:
    env = {
        **cli_env,
        "HEADRACE_PRODUCER__MAX_FIELD_BYTES": "1048576",
        "HEADRACE_PRODUCER__MAX_MESSAGE_BYTES": "16384",
        "HEADRACE_PRODUCER__CHUNK_ROWS": "100",
    }
    rows = [_row(i) for i in range(3_000)]
    rows[2_000] = _row(2_000, note="y" * 2_000_000)
    source = _csv(tmp_path / "huge.csv", rows)
    err = _refused(env, source)
    assert f"{source.resolve()}:2002:" in err
    assert "field larger than field limit" in err
    drain_queue(cli_env, tmp_path / "worker.log")
    # What was sent is applied once: a prefix of the file, nothing from the line on.
    async with engine.connect() as conn:
        skus = (await conn.execute(sa.select(observations.c.sku))).scalars().all()
    numbers = sorted(int(s.removeprefix("SKU-")) for s in skus)
    assert numbers == list(range(len(numbers)))
    assert 0 < len(numbers) < 2_000


async def test_scenario_33_gzip_bomb_is_refused(
    tmp_path: Path,
    settings: Settings,
    engine: AsyncEngine,
    queue: QueuePair,
    cli_env: dict[str, str],
) -> None:
    head = (",".join(HEADER) + "\n" + "\n".join(_row(i) for i in range(50)) + "\n").encode()
    path = tmp_path / "bomb.csv.gz"
    block = b"\n" * (1 << 20)  # blank lines: nothing for the parser to refuse first
    co = zlib.compressobj(9, zlib.DEFLATED, 31)  # gzip container
    with path.open("wb") as fh:
        fh.write(co.compress(head))
        for _ in range(1024):  # 1 GiB inflated from about 1 MB
            fh.write(co.compress(block))
        fh.write(co.flush())
    assert path.stat().st_size < 2 << 20
    with gzip.open(path) as inflated:
        assert inflated.read(len(head)) == head
    err = _refused(cli_env, path)
    assert f"{path.resolve()}:" in err
    assert "compression ratio passed 200:1" in err
    await _nothing_sent(settings, engine, queue)  # the 50 rows were still being packed
