"""A fake ECS container agent: the task scale-in protection endpoint on 127.0.0.1.

Records every ``PUT …/task-protection/v1/state`` (body, monotonic time, what ``probe``
returned at that moment — e.g. the number of committed messages) and answers like the
agent: ``{"protection": {...}}``, or an error queued with :meth:`FakeEcsAgent.fail_next`.
"""

from __future__ import annotations

import asyncio
import socket
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any, Literal

import orjson
from aiohttp import web

__all__ = ["AgentCall", "Failure", "FakeEcsAgent", "unreachable_uri"]

Failure = Literal["500", "failure", "hang", "garbage", "redirect", "huge"]
HUGE_BODY_BYTES = 4 * 1024 * 1024
TASK_ARN = "arn:aws:ecs:us-east-1:123456789012:task/headrace/0123456789abcdef"


@dataclass(frozen=True)
class AgentCall:
    at: float  # time.monotonic() when the request arrived
    body: dict[str, Any]
    status: int
    probe: object  # what the probe returned when the request arrived
    failure: Failure | None = None  # the error the agent was told to answer with

    @property
    def enabled(self) -> bool:
        return bool(self.body.get("ProtectionEnabled"))

    @property
    def ok(self) -> bool:
        return self.status == 200 and self.failure is None


class FakeEcsAgent:
    def __init__(self, probe: Callable[[], Awaitable[object]] | None = None) -> None:
        self.calls: list[AgentCall] = []
        self._probe = probe
        self._failures: list[Failure] = []
        self.fail_always: Failure | None = None
        self._runner: web.AppRunner | None = None
        self.uri = ""
        self.redirected = 0  # requests that followed a "redirect" answer

    def fail_next(self, *failures: Failure) -> None:
        self._failures.extend(failures)

    async def start(self) -> str:
        app = web.Application()
        app.router.add_put("/api/{task}/task-protection/v1/state", self._put)
        app.router.add_put("/redirected", self._redirected)
        self._runner = web.AppRunner(app, shutdown_timeout=0.5)
        await self._runner.setup()
        site = web.TCPSite(self._runner, "127.0.0.1", 0)
        await site.start()
        host, port = self._runner.addresses[0][:2]
        self.uri = f"http://{host}:{port}/api/0123456789abcdef-1234567890"
        return self.uri

    async def stop(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None

    @property
    def ok_calls(self) -> list[AgentCall]:
        return [c for c in self.calls if c.ok]

    async def wait_for(
        self, predicate: Callable[[list[AgentCall]], bool], *, timeout_s: float = 30
    ) -> None:
        """Poll (with a deadline) until ``predicate(calls)`` holds."""
        deadline = time.monotonic() + timeout_s
        while not predicate(self.calls):
            if time.monotonic() > deadline:
                raise AssertionError(f"agent never saw the expected calls: {self.calls}")
            await asyncio.sleep(0.02)

    async def _put(self, request: web.Request) -> web.Response:
        at = time.monotonic()
        probe = await self._probe() if self._probe is not None else None
        raw = await request.read()
        try:
            body = orjson.loads(raw)
        except orjson.JSONDecodeError:
            body = {"unparsable": raw.decode("utf-8", "replace")}
        failure = self._failures.pop(0) if self._failures else self.fail_always
        status, answer = self._answer(body, failure)
        if failure == "hang":
            await asyncio.sleep(30)
        self.calls.append(AgentCall(at, body, status, probe, failure))
        if failure == "garbage":
            return web.Response(status=status, text="<html>not json</html>")
        if failure == "redirect":
            raise web.HTTPTemporaryRedirect("/redirected")
        if failure == "huge":  # a valid answer, padded far beyond what an agent sends
            _, valid = self._answer(body, None)
            padded = {**valid, "padding": "x" * HUGE_BODY_BYTES}
            return web.json_response(padded, dumps=lambda o: orjson.dumps(o).decode())
        return web.json_response(answer, status=status, dumps=lambda o: orjson.dumps(o).decode())

    async def _redirected(self, request: web.Request) -> web.Response:
        self.redirected += 1
        _, answer = self._answer(orjson.loads(await request.read()), None)
        return web.json_response(answer, dumps=lambda o: orjson.dumps(o).decode())

    @staticmethod
    def _answer(body: dict[str, Any], failure: Failure | None) -> tuple[int, dict[str, Any]]:
        if failure == "500":
            return 500, {"error": {"Code": "ServerException", "Message": "agent exploded"}}
        if failure == "failure":
            return 200, {"failure": {"Arn": TASK_ARN, "Reason": "TASK_NOT_VALID"}}
        if failure in ("garbage", "huge"):
            return 200, {}
        if failure == "redirect":
            return 307, {}
        if not isinstance(body.get("ProtectionEnabled"), bool):
            return 400, {"error": {"Code": "InvalidParameterException", "Message": "bad body"}}
        enabled = body["ProtectionEnabled"]
        protection: dict[str, Any] = {"ProtectionEnabled": enabled, "TaskArn": TASK_ARN}
        if enabled:
            minutes = int(body.get("ExpiresInMinutes", 120))
            protection["ExpirationDate"] = time.strftime(
                "%Y-%m-%dT%H:%M:%SZ", time.gmtime(time.time() + 60 * minutes)
            )
        return 200, {"protection": protection}


def unreachable_uri() -> str:
    """An agent URI on a local port nothing listens on (bound, then closed)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    return f"http://127.0.0.1:{port}/api/nobody-home"
