"""The claim check: with producer.claim_check_bucket a row bigger than any message travels in
S3 behind an Extended Client pointer and is loaded; without it, it is rejected (scenario 6)."""

from __future__ import annotations

import os
import uuid
from pathlib import Path

import pytest
import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncEngine
from support.pipeline import (
    assert_invariant,
    count,
    drain_queue,
    produce_cli,
    rejected,
    worker_report,
)

from cli.datagen import HEADER, observations
from headrace.aws import s3_client
from headrace.settings import Settings

pytestmark = pytest.mark.slow


def _line(i: int, note: str = "") -> str:
    return f"2026-11-22 10:{i // 60 % 60:02d}:{i % 60:02d},7,SKU-{i},12.50,3,true,Lamp {i},{note}"


async def test_a_row_bigger_than_a_message_is_sent_through_s3(
    tmp_path: Path, settings: Settings, engine: AsyncEngine, cli_env: dict[str, str]
) -> None:
    bucket = f"claims-{uuid.uuid4().hex[:12]}"
    async with s3_client(settings) as s3:
        await s3.create_bucket(Bucket=bucket)
    big = os.urandom(20_000).hex()  # 40,000 characters, incompressible: over 16 KiB
    lines = [_line(i, big if i == 100 else "") for i in range(300)]
    source = tmp_path / "big.csv"
    source.write_text(",".join(HEADER) + "\n" + "\n".join(lines) + "\n")
    env = {
        **cli_env,
        "HEADRACE_PRODUCER__MAX_MESSAGE_BYTES": "16384",
        "HEADRACE_PRODUCER__CLAIM_CHECK_BUCKET": bucket,
    }
    report = produce_cli(env, source)
    assert (report["rows_sent"], report["rows_rejected"]) == (300, 0)
    drain_queue(cli_env, tmp_path / "worker.log")
    assert worker_report(tmp_path / "worker.log")["messages_applied"] == report["total_messages"]
    assert await count(engine) == 300
    assert await rejected(engine) == []
    o = observations.c
    async with engine.connect() as conn:
        note = (await conn.execute(sa.select(o.note).where(o.sku == "SKU-100"))).scalar_one()
    assert note == big
    await assert_invariant(settings, engine, source)
    async with s3_client(settings) as s3:
        listed = await s3.list_objects_v2(Bucket=bucket, Prefix="headrace-claims/")
    (claim,) = [o["Key"] for o in listed.get("Contents", [])]
    assert claim.startswith(f"headrace-claims/{report['run_id']}/")
