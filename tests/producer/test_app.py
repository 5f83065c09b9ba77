"""The producer's own database calls (reflection, checkpoint) ride out an unreachable database."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path

import pytest
from pydantic import SecretStr
from sqlalchemy.ext.asyncio import AsyncEngine
from support.tcpproxy import TcpProxy

from cli.datagen import generate_csv
from headrace.errors import InputError
from headrace.settings import Settings
from producer.app import produce
from testbed.mariadb import MariaDBServer

pytestmark = pytest.mark.slow


async def test_database_calls_are_retried_while_the_database_refuses(
    tmp_path: Path, settings: Settings, engine: AsyncEngine, mariadb: MariaDBServer
) -> None:
    """Connections refused at start: the producer keeps trying (the shared backoff) and
    sends the file once the database answers, instead of failing the run."""
    data = generate_csv(tmp_path / "drop.csv", 1_000, seed=5)
    with TcpProxy(mariadb.host, mariadb.port) as proxy:
        assert settings.database_url is not None
        url = settings.database_url.get_secret_value()
        proxied = settings.model_copy(
            update={"database_url": SecretStr(url.replace(f":{mariadb.port}/", f":{proxy.port}/"))}
        )
        proxy.refuse()
        run = asyncio.create_task(produce(proxied, str(data.path), "observations"))
        deadline = time.monotonic() + 60
        while proxy.refused < 3:  # refused, and tried again, twice
            assert not run.done(), run.exception()
            assert time.monotonic() < deadline, "the producer did not try again"
            await asyncio.sleep(0.05)
        proxy.refuse(False)
        report = await asyncio.wait_for(run, 120)
    assert report.rows_read == 1_000
    assert report.messages_sent == report.total_messages > 0


async def test_a_run_stops_past_max_rejects_per_file(tmp_path: Path, settings: Settings) -> None:
    """producer.max_rejects_per_file: more rejected rows than that stop the run (exit 2)."""
    data = generate_csv(tmp_path / "bad.csv", 2_000, seed=6, bad_ratio=0.05)
    assert data.bad_rows > 3
    capped = settings.model_copy(
        update={"producer": settings.producer.model_copy(update={"max_rejects_per_file": 3})}
    )
    with pytest.raises(InputError, match="more than 3 rows rejected"):
        await produce(capped, str(data.path), "observations")
    uncapped = await produce(settings, str(data.path), "observations")
    assert uncapped.rows_rejected == data.bad_rows
