"""How a process shows its metrics: ``/metrics`` + health endpoints, and Pushgateway pushes.

:func:`serving` runs a small aiohttp server *on the process's own event loop* (so a stuck
loop also stops answering, and a probe notices): ``/metrics`` is the process's registry in
Prometheus' text format, ``/healthz`` answers 200 while the process is alive and its loop
runs, ``/readyz`` 200 or 503 from the caller's readiness check (the worker: the queue
answered its last poll and the database circuit is closed). :func:`probe` is the client
side, for ``headrace health`` (a container HEALTHCHECK without curl).

:func:`pushing` is for processes that end before any scrape (a producer task): it pushes
the registry to a Pushgateway every ``interval_s`` and once more on the way out, grouped by
job and the caller's bounded labels (a table, never a run). The push is blocking HTTP, so it
runs in a thread; a failed push is logged and never fails the run.
"""

from __future__ import annotations

import asyncio
import urllib.error
import urllib.request
from collections.abc import AsyncIterator, Callable, Mapping
from contextlib import asynccontextmanager, suppress

import structlog
from aiohttp import web
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, generate_latest
from prometheus_client.exposition import push_to_gateway

__all__ = ["DEFAULT_PORT", "probe", "pushing", "serving"]

DEFAULT_PORT = 9400
"""The port the deploy assets (Dockerfile HEALTHCHECK, task definitions) use."""

log = structlog.get_logger("headrace.exposition")


def _always() -> bool:
    return True


@asynccontextmanager
async def serving(
    port: int | None,
    registry: CollectorRegistry,
    *,
    ready: Callable[[], bool] = _always,
    host: str = "0.0.0.0",  # noqa: S104 - a container's port is reached from outside it
) -> AsyncIterator[int | None]:
    """Serve the endpoints on ``port`` (0: any free port) while the block runs.

    Yields the bound port, or ``None`` when ``port`` is ``None`` (metrics off).
    """
    if port is None:
        yield None
        return

    async def metrics(_: web.Request) -> web.Response:
        return web.Response(
            body=generate_latest(registry), headers={"Content-Type": CONTENT_TYPE_LATEST}
        )

    async def healthz(_: web.Request) -> web.Response:
        return web.Response(text="ok\n")

    async def readyz(_: web.Request) -> web.Response:
        if ready():
            return web.Response(text="ready\n")
        return web.Response(status=503, text="not ready\n")

    app = web.Application()
    app.router.add_get("/metrics", metrics)
    app.router.add_get("/healthz", healthz)
    app.router.add_get("/readyz", readyz)
    runner = web.AppRunner(app, access_log=None, handle_signals=False)
    await runner.setup()
    try:
        site = web.TCPSite(runner, host, port, reuse_address=True)
        await site.start()
        bound = int(runner.addresses[0][1])
        log.info("metrics_serving", port=bound)
        yield bound
    finally:
        await runner.cleanup()


def probe(port: int, path: str = "/healthz", *, timeout_s: float = 5.0) -> bool:
    """Whether ``http://127.0.0.1:port{path}`` answers 200 within ``timeout_s``."""
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}{path}", timeout=timeout_s) as resp:
            return bool(resp.status == 200)
    except (OSError, urllib.error.URLError):  # refused, timed out, or a 503
        return False


@asynccontextmanager
async def pushing(
    url: str | None,
    registry: CollectorRegistry,
    *,
    job: str,
    grouping: Mapping[str, str],
    interval_s: float,
) -> AsyncIterator[None]:
    """Push ``registry`` to the Pushgateway at ``url`` while the block runs, and at its end."""
    if url is None:
        yield
        return
    gateway: str = url

    async def push() -> None:
        try:
            await asyncio.to_thread(
                push_to_gateway,
                gateway,
                job=job,
                registry=registry,
                grouping_key=dict(grouping),
                timeout=10,
            )
        except OSError as exc:  # urllib's errors (refused, HTTP 4xx/5xx) are OSErrors
            log.warning("metrics_push_failed", gateway=gateway, error=str(exc)[:300])

    async def every_interval() -> None:
        while True:
            await asyncio.sleep(interval_s)
            await push()

    task = asyncio.create_task(every_interval(), name="metrics-push")
    try:
        yield
    finally:
        task.cancel()
        with suppress(asyncio.CancelledError):
            await task
        await push()  # the final counts, also after a failed run
