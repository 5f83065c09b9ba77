"""ECS task scale-in protection: on while this worker holds un-committed work, off when idle.

ECS injects ``ECS_AGENT_URI`` into every container; ``PUT $ECS_AGENT_URI/task-protection/v1/state``
with ``{"ProtectionEnabled": true, "ExpiresInMinutes": N}`` keeps service auto scaling and
deployments from stopping the task for N minutes, ``{"ProtectionEnabled": false}`` lifts it.
The agent answers ``{"protection": {...}}`` or ``{"failure": {...}}`` / ``{"error": {...}}``.

:class:`TaskProtection` follows the in-flight registry: protection goes on as soon as a
message is held (the sinks wait, briefly, for that call to finish before writing), is renewed
at half its lifetime while work continues, and goes off once nothing has been held for
``idle_s`` — so it does not flap between batches. The agent is a convenience, not a
dependency: a failed or slow call is logged and retried with backoff, never raised; an
expired protection only means the task can be scaled in, and SIGTERM still drains.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Awaitable
from typing import Any

import aiohttp
import orjson
import structlog

from headrace.metrics import WorkerMetrics
from headrace.retry import Backoff
from worker.inflight import InFlight

__all__ = ["TaskProtection"]

log = structlog.get_logger("worker.protection")

PATH = "/task-protection/v1/state"
MAX_ANSWER_BYTES = 64 * 1024  # the agent answers a few hundred bytes


class AgentError(Exception):
    """The ECS agent refused or failed a protection request."""


class TaskProtection:
    def __init__(
        self,
        agent_uri: str,
        inflight: InFlight,
        *,
        metrics: WorkerMetrics | None = None,
        expires_min: int,
        idle_s: float,
        timeout_s: float = 5.0,
        renew_s: float | None = None,
        backoff: Backoff | None = None,
    ) -> None:
        self._url = agent_uri.rstrip("/") + PATH
        self._inflight = inflight
        self._metrics = metrics or WorkerMetrics()
        self._expires_min = expires_min
        self._renew_s = renew_s if renew_s is not None else expires_min * 60 / 2
        self._idle_s = idle_s
        self._timeout_s = timeout_s
        self._backoff = backoff or Backoff(base_s=1.0, cap_s=30.0)
        self._session: aiohttp.ClientSession | None = None
        self._settled = asyncio.Condition()
        # What the agent was last told successfully; None until it has been told anything
        # (a restarted container may find protection left on by its predecessor).
        self.enabled: bool | None = None
        self._renew_at = 0.0
        self._retry_at = 0.0
        self._failures_in_row = 0

    @property
    def enables(self) -> int:
        """Successful calls turning protection on (the first and every renewal)."""
        return int(self._metrics.value("headrace_protection_changes_total", state="on"))

    @property
    def disables(self) -> int:
        return int(self._metrics.value("headrace_protection_changes_total", state="off"))

    @property
    def failures(self) -> int:
        return int(self._metrics.value("headrace_protection_failures_total"))

    # --- the loop ----------------------------------------------------------------------------

    async def run(self) -> None:
        """Follow the in-flight registry until cancelled."""
        started = time.monotonic()  # idleness counts from here at the earliest
        while True:
            now = time.monotonic()
            empty_since = self._inflight.empty_since
            if empty_since is None:  # work is held
                needed = self.enabled is not True or now >= self._renew_at
                if needed and now >= self._retry_at:
                    await self._put(enable=True)
                    continue
                wake = self._retry_at if needed else self._renew_at
                await _until(self._inflight.wait_empty(), wake)
            elif self.enabled is not False:  # idle, protection on (or unknown)
                due = max(max(empty_since, started) + self._idle_s, self._retry_at)
                if now >= due:
                    await self._put(enable=False)
                    continue
                await _until(self._inflight.wait_held(), due)
            else:
                await self._inflight.wait_held()

    async def settled(self) -> None:
        """Return once protection is on, or the call turning it on has finished or failed.

        The sinks call this before writing a batch, so a task holding work is protected
        before it commits. Bounded by the call timeout, and immediate while the agent is
        failing: an unreachable agent must not slow the worker down.
        """
        if self.enabled or self._failures_in_row:
            return
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(self._timeout_s + 1.0), self._settled:
                await self._settled.wait_for(lambda: bool(self.enabled or self._failures_in_row))

    async def close(self) -> None:
        """Turn protection off (one short attempt, unless the agent already has it off)."""
        try:
            if self.enabled is not False:
                await self._put(enable=False, timeout_s=min(2.0, self._timeout_s))
        finally:
            if self._session is not None:
                await self._session.close()
                self._session = None

    # --- one call ----------------------------------------------------------------------------

    async def _put(self, *, enable: bool, timeout_s: float | None = None) -> None:
        body: dict[str, Any] = {"ProtectionEnabled": enable}
        if enable:
            body["ExpiresInMinutes"] = self._expires_min
        started = time.monotonic()
        try:
            expires = await self._request(body, timeout_s or self._timeout_s)
        except Exception as exc:  # the agent must never take the worker down
            self._metrics.protection_failures.inc()
            self._failures_in_row += 1
            delay = max(self._backoff.base_s, self._backoff.delay(self._failures_in_row))
            self._retry_at = time.monotonic() + delay
            log.warning(
                "task_protection_failed",
                enable=enable,
                failures_in_row=self._failures_in_row,
                retry_in_s=round(delay, 2),
                error=repr(exc)[:300],
            )
        else:
            self._failures_in_row = 0
            self._retry_at = 0.0
            if enable:
                if self.enabled is not True:
                    log.info("task_protection_on", expires_min=self._expires_min, until=expires)
                self._metrics.protection_changes.labels("on").inc()
                self._renew_at = started + self._renew_s
            else:
                log.info("task_protection_off")
                self._metrics.protection_changes.labels("off").inc()
            self.enabled = enable
        async with self._settled:
            self._settled.notify_all()

    async def _request(self, body: dict[str, Any], timeout_s: float) -> object:
        if self._session is None:
            self._session = aiohttp.ClientSession()
        async with self._session.put(
            self._url,
            data=orjson.dumps(body),
            headers={"Content-Type": "application/json"},
            timeout=aiohttp.ClientTimeout(total=timeout_s),
            allow_redirects=False,  # a 3xx is an error, not somewhere else to send the task's state
        ) as resp:
            raw = await resp.content.read(MAX_ANSWER_BYTES + 1)
        if len(raw) > MAX_ANSWER_BYTES:
            raise AgentError(f"HTTP {resp.status}: answer longer than {MAX_ANSWER_BYTES} bytes")
        try:
            answer = orjson.loads(raw) if raw else {}
        except orjson.JSONDecodeError:
            answer = {}
        if not isinstance(answer, dict):
            answer = {}
        if resp.status >= 300 or "protection" not in answer:
            detail = (
                answer.get("failure") or answer.get("error") or raw[:200].decode(errors="replace")
            )
            raise AgentError(f"HTTP {resp.status}: {detail}")
        protection = answer["protection"]
        return protection.get("ExpirationDate") if isinstance(protection, dict) else None


async def _until(waiting: Awaitable[None], when: float) -> None:
    """Await ``waiting`` until the monotonic time ``when`` at the latest."""
    with contextlib.suppress(TimeoutError):
        async with asyncio.timeout(max(0.0, when - time.monotonic())):
            await waiting
