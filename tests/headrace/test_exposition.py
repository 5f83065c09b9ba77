"""headrace.exposition without any server of headrace's: the endpoints, the probe, pushes."""

from __future__ import annotations

import asyncio
import urllib.request
from concurrent.futures import ThreadPoolExecutor

from prometheus_client import CollectorRegistry, Counter
from structlog.testing import capture_logs

from headrace.exposition import probe, pushing, serving


async def test_endpoints_answer_from_the_loop_and_follow_readiness() -> None:
    registry = CollectorRegistry()
    Counter("headrace_things_total", "Things.", registry=registry).inc(3)
    ready = [False]
    async with serving(0, registry, ready=lambda: ready[0]) as port:
        assert port is not None
        # The probe is blocking HTTP: off the loop, which must keep serving meanwhile.
        assert await asyncio.to_thread(probe, port, "/healthz")
        assert not await asyncio.to_thread(probe, port, "/readyz")  # 503
        ready[0] = True
        assert await asyncio.to_thread(probe, port, "/readyz")
        assert await asyncio.to_thread(probe, port, "/nothing-here") is False  # 404
        text = await asyncio.to_thread(_get, port, "/metrics")
        assert "headrace_things_total 3.0" in text
    assert not await asyncio.to_thread(probe, port, "/healthz")  # closed


def _get(port: int, path: str) -> str:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}{path}", timeout=5) as resp:
        return str(resp.read().decode())


async def test_no_port_serves_nothing() -> None:
    async with serving(None, CollectorRegistry()) as port:
        assert port is None


async def test_a_blocked_loop_fails_the_probe() -> None:
    async with serving(0, CollectorRegistry()) as port:
        assert port is not None
        with ThreadPoolExecutor(1) as pool:
            # Waiting for the probe's answer *on the loop* blocks the loop, as a stuck
            # process would: the probe can only time out.
            assert pool.submit(probe, port, "/healthz", timeout_s=0.5).result() is False
        assert await asyncio.to_thread(probe, port, "/healthz")  # unblocked: answers again


async def test_a_failed_push_is_logged_not_raised() -> None:
    with capture_logs() as logs:
        async with pushing(
            "http://127.0.0.1:9",  # discard port: refused
            CollectorRegistry(),
            job="headrace-producer",
            grouping={"table": "t"},
            interval_s=60,
        ):
            pass
    assert [e["event"] for e in logs] == ["metrics_push_failed"]


async def test_no_gateway_pushes_nothing() -> None:
    with capture_logs() as logs:
        async with pushing(None, CollectorRegistry(), job="j", grouping={}, interval_s=0.01):
            await asyncio.sleep(0.05)  # several intervals: still nothing is pushed
    assert logs == []
