"""S3 sources against moto's server: identity, plain and gzip bodies, errors, cuts resumed.

Scenario 4 ("S3 stream cut mid-object") runs end to end at the bottom: a TCP proxy in front
of moto cuts the producer's GET mid-body, the producer resumes with a ranged GET, a worker
drains the queue and the invariant is checked against the object.
"""

from __future__ import annotations

import csv
import gzip
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import pytest
from sqlalchemy.ext.asyncio import AsyncEngine
from structlog.testing import capture_logs
from support.pipeline import assert_invariant, count, drain_queue, produce_cli
from support.tcpproxy import TcpProxy

from cli.datagen import generate_csv, observations
from headrace.aws import s3_client
from headrace.errors import InputError
from headrace.retry import Backoff
from headrace.schema import Reject
from headrace.settings import Settings
from producer.reader import open_reader, read_chunks
from producer.sources import Source, open_location
from producer.sources.s3 import S3Source, open_s3_source

FAST = Backoff(base_s=0.01, cap_s=0.05, attempts=3)


@pytest.fixture(autouse=True)
def _restore_csv_field_limit() -> Iterator[None]:
    """CsvReader sets the process-wide csv field limit; leave it as it was."""
    before = csv.field_size_limit()
    yield
    csv.field_size_limit(before)


@pytest.fixture
def s3_settings(moto_endpoint: str) -> Settings:
    return Settings(s3_endpoint_url=moto_endpoint, producer={"chunk_rows": 1000})


@pytest.fixture
async def bucket(s3_settings: Settings) -> str:
    name = f"headrace-{uuid.uuid4().hex[:12]}"
    async with s3_client(s3_settings) as client:
        await client.create_bucket(Bucket=name)
    return name


@pytest.fixture
def proxy(moto_endpoint: str) -> Iterator[TcpProxy]:
    url = urlsplit(moto_endpoint)
    assert url.hostname is not None
    assert url.port is not None
    with TcpProxy(url.hostname, url.port) as p:
        yield p


def _via(settings: Settings, proxy: TcpProxy, **aws: Any) -> Settings:
    """``settings`` with S3 requests going through ``proxy`` (SQS and the rest unchanged)."""
    update: dict[str, Any] = {"s3_endpoint_url": f"http://127.0.0.1:{proxy.port}"}
    if aws:
        update["aws"] = settings.aws.model_copy(update=aws)
    return settings.model_copy(update=update)


async def _put(settings: Settings, bucket: str, key: str, body: bytes) -> str:
    async with s3_client(settings) as client:
        resp = await client.put_object(Bucket=bucket, Key=key, Body=body)
    return resp["ETag"]


Read = tuple[list[list[str]], list[int], list[Reject], int]


async def _read_source(settings: Settings, source: Source) -> Read:
    rows: list[list[str]] = []
    lines: list[int] = []
    rejects: list[Reject] = []
    reader = await open_reader(source, settings.producer)
    try:
        rows.append(reader.header)
        async for chunk in read_chunks(reader, threaded=source.threaded):
            rows.extend(chunk.rows)
            lines.extend(chunk.lines)
            rejects.extend(chunk.rejects)
    finally:
        reader.close()
    return rows, lines, rejects, reader.rows_read


async def _read(settings: Settings, location: str) -> Read:
    async with open_location(settings, location) as source:
        return await _read_source(settings, source)


@pytest.fixture
def data_file(tmp_path: Path, request: pytest.FixtureRequest) -> Path:
    """A generated CSV (plain or gzip, by the test's ``gz`` parameter), ~1.9 MB of text."""
    gz = request.node.callspec.params["gz"]
    return generate_csv(tmp_path / ("d.csv.gz" if gz else "d.csv"), 20_000, seed=41).path


# A few hostile lines too: an undecodable byte and a multi-line field survive S3 unchanged.
_EXTRA = b'2026-11-22 00:00:00,1,SKU-\xff,1.00,1,true,"multi\nline",\n'


@pytest.mark.parametrize("gz", [False, True], ids=["plain", "gzip"])
async def test_object_reads_like_the_local_file(
    gz: bool, data_file: Path, s3_settings: Settings, bucket: str
) -> None:
    body = data_file.read_bytes()
    if gz:
        body += gzip.compress(_EXTRA)  # a second gzip member, as `cat a.gz b.gz` makes
    else:
        body += _EXTRA
    data_file.write_bytes(body)
    etag = await _put(s3_settings, bucket, "drop/d.csv", body)
    location = f"s3://{bucket}/drop/d.csv"

    async with open_location(s3_settings, location) as source:
        assert isinstance(source, S3Source)
        assert (source.uri, source.size) == (location, len(body))
        assert source.version == etag.strip('"')
        got = await _read_source(s3_settings, source)
    want = await _read(s3_settings, str(data_file))
    assert got == want
    assert got[3] == 20_001
    assert [r.line for r in got[2]] == [20_002]  # the undecodable byte, with its line


async def test_empty_object_has_no_header(s3_settings: Settings, bucket: str) -> None:
    await _put(s3_settings, bucket, "empty.csv", b"")
    with pytest.raises(InputError, match="no header line"):
        await _read(s3_settings, f"s3://{bucket}/empty.csv")


async def test_missing_object_or_bad_uri_is_an_input_error(
    s3_settings: Settings, bucket: str
) -> None:
    location = f"s3://{bucket}/missing.csv"
    with pytest.raises(InputError, match="no such object") as err:
        await _read(s3_settings, location)
    assert err.value.source == location
    with pytest.raises(InputError, match="expected s3://bucket/key"):
        await _read(s3_settings, f"s3://{bucket}")


async def test_object_replaced_after_head_is_refused(s3_settings: Settings, bucket: str) -> None:
    await _put(s3_settings, bucket, "r.csv", b"a,b\n1,2\n")
    async with open_location(s3_settings, f"s3://{bucket}/r.csv") as source:
        await _put(s3_settings, bucket, "r.csv", b"a,b\n3,4\n")
        with pytest.raises(InputError, match="replaced while being read"):
            await _read_source(s3_settings, source)


@pytest.mark.parametrize("versioned", [False, True], ids=["etag", "version-id"])
async def test_object_replaced_mid_read_never_mixes_versions(
    versioned: bool, s3_settings: Settings, bucket: str, proxy: TcpProxy
) -> None:
    """Unversioned: If-Match fails the resumed GET. Versioned: the pinned version is read on."""
    if versioned:
        async with s3_client(s3_settings) as client:
            await client.put_bucket_versioning(
                Bucket=bucket, VersioningConfiguration={"Status": "Enabled"}
            )
    # Far larger than what can sit in socket and aiohttp buffers, so the cut below is
    # certainly mid-body and the rest has to come from a new GET.
    row = b"1," + b"x" * 98 + b"\n"
    body = b"a,b\n" + row * 200_000
    await _put(s3_settings, bucket, "r.csv", body)
    settings = _via(s3_settings, proxy)
    rows: list[list[str]] = []
    async with open_s3_source(settings, f"s3://{bucket}/r.csv", backoff=FAST) as source:
        assert (source.version_id is not None) == versioned
        reader = await open_reader(source, settings.producer)
        try:
            chunks = read_chunks(reader, threaded=True)
            rows.extend((await anext(chunks)).rows)
            # Nothing more flows while the new version is written (a 20 MB PUT under load
            # takes long enough for the rest of the old body to arrive otherwise), then the
            # connection is cut: what the client holds is far less than the body.
            with proxy.stalled():
                await _put(s3_settings, bucket, "r.csv", body.replace(b"x", b"y"))
                assert proxy.cut() >= 1
            with capture_logs() as logs:
                if versioned:
                    async for chunk in chunks:
                        rows.extend(chunk.rows)
                else:
                    with pytest.raises(InputError, match="replaced while being read") as err:
                        async for _ in chunks:
                            pass
                    assert err.value.source == f"s3://{bucket}/r.csv"
        finally:
            reader.close()
    # At least one resume: the cut also drops the pool's idle connections, and whether the
    # resumed GET happens to pick one of those (and resumes once more) is up to the pool.
    # What must hold is that no byte of the new version was used.
    assert [e["event"] for e in logs if e["event"] == "s3_resume"][:1] == ["s3_resume"]
    if versioned:
        assert rows == [["1", "x" * 98]] * 200_000


@pytest.mark.parametrize("gz", [False, True], ids=["plain", "gzip"])
async def test_cut_mid_object_is_resumed_where_it_stopped(
    gz: bool, data_file: Path, s3_settings: Settings, bucket: str, proxy: TcpProxy
) -> None:
    body = data_file.read_bytes()
    await _put(s3_settings, bucket, "c.csv", body)
    proxy.cut_after(len(body) // 2)
    with capture_logs() as logs:
        got = await _read(_via(s3_settings, proxy), f"s3://{bucket}/c.csv")
    assert proxy.cuts == 1
    resumes = [e for e in logs if e["event"] == "s3_resume"]
    assert len(resumes) == 1
    assert 0 < resumes[0]["offset"] <= len(body) // 2
    assert got == await _read(s3_settings, str(data_file))


async def test_resume_gives_up_after_the_backoff_attempts(
    tmp_path: Path, s3_settings: Settings, bucket: str, proxy: TcpProxy
) -> None:
    body = generate_csv(tmp_path / "g.csv", 20_000, seed=43).path.read_bytes()
    await _put(s3_settings, bucket, "g.csv", body)
    proxy.cut_after(len(body) // 2)
    settings = _via(s3_settings, proxy, max_attempts=1)  # no botocore retries underneath
    async with open_s3_source(settings, f"s3://{bucket}/g.csv", backoff=FAST) as source:
        reader = await open_reader(source, settings.producer)
        try:
            proxy.refuse()  # the cut connection cannot be replaced
            with capture_logs() as logs, pytest.raises(InputError, match="after 3 attempts"):
                async for _ in read_chunks(reader, threaded=True):
                    pass
        finally:
            reader.close()
    assert len([e for e in logs if e["event"] == "s3_resume"]) == 2


async def test_reading_on_the_event_loop_is_refused(s3_settings: Settings, bucket: str) -> None:
    await _put(s3_settings, bucket, "l.csv", b"a\n1\n")
    async with open_location(s3_settings, f"s3://{bucket}/l.csv") as source:
        with pytest.raises(RuntimeError, match="worker thread"):
            source.open(max_ratio=200, max_bytes=1 << 30)


# --- scenario 4, end to end ------------------------------------------------------------------


@pytest.fixture
async def uploaded(
    tmp_path: Path, settings: Settings, request: pytest.FixtureRequest
) -> tuple[str, int]:
    """30,000 generated rows (plain or gzip) in a fresh bucket: ``(location, object size)``."""
    gz = request.node.callspec.params["gz"]
    path = generate_csv(tmp_path / ("s4.csv.gz" if gz else "s4.csv"), 30_000, seed=44).path
    name = f"headrace-{uuid.uuid4().hex[:12]}"
    async with s3_client(settings) as client:
        await client.create_bucket(Bucket=name)
        await client.put_object(Bucket=name, Key="drops/s4.csv", Body=path.read_bytes())
    return f"s3://{name}/drops/s4.csv", path.stat().st_size


@pytest.mark.slow
@pytest.mark.parametrize("gz", [False, True], ids=["plain", "gzip"])
async def test_scenario_04_s3_stream_cut_mid_object(
    gz: bool,
    uploaded: tuple[str, int],
    tmp_path: Path,
    settings: Settings,
    engine: AsyncEngine,
    cli_env: dict[str, str],
    proxy: TcpProxy,
) -> None:
    """Scenario 4: the GET is cut mid-body; the producer resumes it and every row lands once."""
    location, size = uploaded
    proxy.cut_after(size // 2)
    env = {**cli_env, "HEADRACE_S3_ENDPOINT_URL": f"http://127.0.0.1:{proxy.port}"}
    log = tmp_path / "producer.log"
    report = produce_cli(env, location, timeout_s=120, log_path=log)
    assert proxy.cuts == 1
    assert '"s3_resume"' in log.read_text()
    assert report["source"] == location
    assert report["rows_read"] == 30_000
    drain_queue(cli_env, tmp_path / "worker.log")
    assert await count(engine, observations) == report["rows_sent"]
    await assert_invariant(settings, engine, location)
