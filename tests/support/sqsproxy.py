"""An HTTP proxy between headrace and moto that injects the faults SQS shows in production.

botocore speaks SQS's JSON protocol: every call is ``POST /`` with ``X-Amz-Target:
AmazonSQS.<Operation>`` and a JSON body, errors come back as ``{"__type": ..., "message": ...}``
plus an ``x-amzn-query-error: <Code>;<Sender|Receiver>`` header whose code botocore reports
(SQS is ``awsQueryCompatible``). The proxy counts requests per operation and, when told to,
answers some of them itself:

* :meth:`SqsProxy.throttle`: HTTP 400 ``RequestThrottled`` (in botocore's standard-mode
  throttling list, so retried with backoff and a retry quota);
* :meth:`SqsProxy.error`: a 5xx, optionally after forwarding (the call took effect, the
  answer was lost: a retried send is a duplicate);
* :meth:`SqsProxy.fail_entries`: a batch call forwards only some entries and reports the
  others in ``Failed`` (``SenderFault`` as asked);
* :meth:`SqsProxy.stale_receipts`: receipt handles behave as on AWS, where only the latest
  receive's handle is valid (moto accepts every handle a message ever had): deletes and
  visibility changes with an older one fail with ``ReceiptHandleIsInvalid``;
* :meth:`SqsProxy.down`: unreachable, either refusing connections (listener closed, open
  connections reset) or answering 503 to everything;
* :meth:`SqsProxy.answer`: an operation the upstream lacks (moto has no
  ``StartMessageMoveTask``) answered by a function of the request, as SQS would.

Faults are deterministic: a rule fires on every ``every``-th matching request after the first
``skip``, at most ``times`` times. Rules are checked in the order they were added and the
first one due answers (later rules do not see that request). The proxy runs its own event
loop in a thread, so it serves subprocesses and keeps serving while the test blocks.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import random
import threading
import uuid
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any, Literal

import aiohttp
from aiohttp import web

from support.loopthread import LoopThread, reset

__all__ = ["Rule", "SqsProxy"]

Outage = Literal["refuse", "503"]

JSON_TYPE = "application/x-amz-json-1.0"
BATCH_OPS = frozenset({"SendMessageBatch", "DeleteMessageBatch", "ChangeMessageVisibilityBatch"})
_RECEIPT_OPS = {
    "DeleteMessage",
    "DeleteMessageBatch",
    "ChangeMessageVisibility",
    "ChangeMessageVisibilityBatch",
}
_HOP_HEADERS = {
    "host",
    "connection",
    "keep-alive",
    "content-length",
    "transfer-encoding",
    "content-encoding",
    "accept-encoding",
    "date",
    "server",
}
_PORT_RANGE = (20000, 32000)  # below the ephemeral range: the port can be bound again


@dataclass(kw_only=True)
class Rule:
    """One fault; ``seen`` and ``fired`` say how often it matched and answered."""

    kind: Literal["throttle", "status", "entries"]
    ops: frozenset[str]
    every: int = 1
    skip: int = 0
    times: int | None = None
    status: int = 400
    code: str = "RequestThrottled"
    sender_fault: bool = True
    forward: bool = False
    entry_every: int = 1
    seen: int = 0
    fired: int = 0

    def due(self, op: str) -> bool:
        if op not in self.ops:
            return False
        self.seen += 1
        n = self.seen - self.skip
        return n > 0 and n % self.every == 0 and (self.times is None or self.fired < self.times)


class SqsProxy(LoopThread):
    def __init__(self, upstream: str) -> None:
        super().__init__()
        self.upstream = upstream.rstrip("/")
        self.requests: Counter[str] = Counter()
        self.injected: Counter[str] = Counter()
        self.failed_entries: Counter[str] = Counter()
        self.partial: Counter[str] = Counter()
        self.port = 0
        self._lock = threading.Lock()
        self._rules: list[Rule] = []
        self._outage: Outage | None = None
        self._stale = False
        self._answers: dict[str, Callable[[dict[str, Any]], dict[str, Any]]] = {}
        self.answered: list[tuple[str, dict[str, Any]]] = []  # (operation, request) answered
        self._latest: dict[str, str] = {}  # message id -> receipt handle of its last receive
        self._handles: dict[str, str] = {}  # receipt handle -> message id
        self._web: web.Server | None = None
        self._listener: asyncio.Server | None = None
        self._session: aiohttp.ClientSession | None = None

    @property
    def endpoint_url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    # --- faults ------------------------------------------------------------------------------

    def throttle(
        self,
        *ops: str,
        every: int = 1,
        skip: int = 0,
        times: int | None = None,
        code: str = "RequestThrottled",
    ) -> Rule:
        return self._add(
            Rule(
                kind="throttle", ops=frozenset(ops), every=every, skip=skip, times=times, code=code
            )
        )

    def error(
        self,
        status: int,
        *ops: str,
        every: int = 1,
        skip: int = 0,
        times: int | None = None,
        forward: bool = False,
    ) -> Rule:
        """A 5xx; with ``forward`` the request reaches moto first (the answer is lost)."""
        return self._add(
            Rule(
                kind="status",
                ops=frozenset(ops),
                every=every,
                skip=skip,
                times=times,
                status=status,
                code="ServiceUnavailable" if status == 503 else "InternalError",
                sender_fault=False,
                forward=forward,
            )
        )

    def fail_entries(
        self,
        *ops: str,
        every: int = 1,
        skip: int = 0,
        times: int | None = None,
        entry_every: int = 1,
        code: str = "InternalError",
        sender_fault: bool = False,
    ) -> Rule:
        """Fail entries ``0, entry_every, 2*entry_every, ...`` of matching batch calls."""
        if not set(ops) <= BATCH_OPS:
            raise ValueError(f"not batch operations: {sorted(set(ops) - BATCH_OPS)}")
        return self._add(
            Rule(
                kind="entries",
                ops=frozenset(ops),
                every=every,
                skip=skip,
                times=times,
                status=200,
                code=code,
                sender_fault=sender_fault,
                entry_every=entry_every,
            )
        )

    def answer(self, op: str, fn: Callable[[dict[str, Any]], dict[str, Any]]) -> None:
        """Answer every ``op`` request with ``fn(request JSON)`` instead of forwarding it."""
        with self._lock:
            self._answers[op] = fn

    def stale_receipts(self, on: bool = True) -> None:
        self._stale = on

    def clear(self) -> None:
        with self._lock:
            self._rules.clear()

    @contextlib.contextmanager
    def down(self, mode: Outage = "refuse") -> Iterator[None]:
        """SQS unreachable for the duration of the block."""
        self._outage = mode
        if mode == "refuse":
            self._call(self._close_listener())
        try:
            yield
        finally:
            if mode == "refuse":
                self._call(self._open_listener())
            self._outage = None

    def count(self, counter: Counter[str], op: str | None = None) -> int:
        """One operation's count of ``counter`` (one of this proxy's), or the total."""
        with self._lock:
            return counter[op] if op is not None else counter.total()

    # --- internals ---------------------------------------------------------------------------

    def _add(self, rule: Rule) -> Rule:
        with self._lock:
            self._rules.append(rule)
        return rule

    async def _start(self) -> None:
        timeout = aiohttp.ClientTimeout(total=None, sock_connect=5, sock_read=90)
        self._session = aiohttp.ClientSession(timeout=timeout, auto_decompress=True)
        self._web = web.Server(self._handle)
        rng = random.SystemRandom()
        for _ in range(200):
            self.port = rng.randrange(*_PORT_RANGE)
            with contextlib.suppress(OSError):
                await self._open_listener()
                return
        raise RuntimeError(f"no free port in {_PORT_RANGE}")

    async def _stop(self) -> None:
        await self._close_listener()
        if self._web is not None:
            await self._web.shutdown(timeout=1)
        if self._session is not None:
            await self._session.close()

    async def _open_listener(self) -> None:
        assert self._web is not None
        self._listener = await self._loop.create_server(
            self._web, "127.0.0.1", self.port, reuse_address=True
        )

    async def _close_listener(self) -> None:
        if self._listener is not None:
            self._listener.close()
            self._listener = None
        if self._web is not None:
            for handler in self._web.connections:
                if handler.transport is not None:
                    reset(handler.transport)

    async def _handle(self, request: web.BaseRequest) -> web.StreamResponse:
        body = await request.content.read()
        op = request.headers.get("X-Amz-Target", "").rpartition(".")[2] or "?"
        with self._lock:
            self.requests[op] += 1
            if self._outage == "503":
                self.injected[op] += 1
                return _error(503, "ServiceUnavailable", "injected outage", sender=False)
            rule = next((r for r in self._rules if r.due(op)), None)
            if rule is not None:
                rule.fired += 1
            answer = self._answers.get(op)
        if rule is None and answer is not None:
            doc = json.loads(body or b"{}")
            with self._lock:
                self.answered.append((op, doc))
            return web.Response(body=json.dumps(answer(doc)).encode(), content_type=JSON_TYPE)
        if rule is None:
            if self._stale and op in _RECEIPT_OPS:
                return await self._receipts(request, op, body)
            return await self._forward(request, op, body)
        self._note(self.injected, op)
        if rule.kind == "throttle":
            return _error(400, rule.code, "Rate exceeded", sender=True)
        if rule.kind == "status":
            if rule.forward:
                await self._forward(request, op, body)
            return _error(rule.status, rule.code, "injected server error", sender=False)
        doc = json.loads(body)
        entries: list[dict[str, Any]] = doc.get("Entries", [])
        failed = [e for i, e in enumerate(entries) if i % rule.entry_every == 0]
        kept = [e for i, e in enumerate(entries) if i % rule.entry_every != 0]
        self._note(self.failed_entries, op, len(failed))
        if kept:
            self._note(self.partial, op)
        return await self._batch(request, op, doc, kept, failed, rule.code, rule.sender_fault)

    async def _receipts(self, request: web.BaseRequest, op: str, body: bytes) -> web.Response:
        doc = json.loads(body)
        if op in BATCH_OPS:
            entries: list[dict[str, Any]] = doc.get("Entries", [])
            stale = [e for e in entries if self._is_stale(e.get("ReceiptHandle", ""))]
            if not stale:
                return await self._forward(request, op, body)
            self._note(self.injected, op)
            self._note(self.failed_entries, op, len(stale))
            kept = [e for e in entries if e not in stale]
            return await self._batch(
                request, op, doc, kept, stale, "ReceiptHandleIsInvalid", sender_fault=True
            )
        if not self._is_stale(doc.get("ReceiptHandle", "")):
            return await self._forward(request, op, body)
        self._note(self.injected, op)
        return _error(400, "ReceiptHandleIsInvalid", "stale receipt handle", sender=True)

    def _is_stale(self, handle: str) -> bool:
        with self._lock:
            message_id = self._handles.get(handle)
            return message_id is not None and self._latest.get(message_id) != handle

    async def _batch(
        self,
        request: web.BaseRequest,
        op: str,
        doc: dict[str, Any],
        kept: list[dict[str, Any]],
        failed: list[dict[str, Any]],
        code: str,
        sender_fault: bool,
    ) -> web.Response:
        result: dict[str, Any] = {"Successful": [], "Failed": []}
        if kept:
            upstream = await self._forward(request, op, json.dumps({**doc, "Entries": kept}))
            if upstream.status != 200:
                return upstream
            assert isinstance(upstream.body, bytes)
            result = json.loads(upstream.body)
            result.setdefault("Successful", [])
            result.setdefault("Failed", [])
        result["Failed"] += [
            {"Id": e["Id"], "SenderFault": sender_fault, "Code": code, "Message": "injected"}
            for e in failed
        ]
        return web.Response(body=json.dumps(result).encode(), content_type=JSON_TYPE)

    async def _forward(self, request: web.BaseRequest, op: str, body: bytes | str) -> web.Response:
        assert self._session is not None
        headers = {k: v for k, v in request.headers.items() if k.lower() not in _HOP_HEADERS}
        async with self._session.request(
            request.method, self.upstream + request.path_qs, data=body, headers=headers
        ) as resp:
            payload = await resp.read()
            out = {k: v for k, v in resp.headers.items() if k.lower() not in _HOP_HEADERS}
        if op == "ReceiveMessage" and resp.status == 200:
            self._remember(payload)
        return web.Response(status=resp.status, body=payload, headers=out)

    def _remember(self, payload: bytes) -> None:
        messages = json.loads(payload or b"{}").get("Messages", [])
        with self._lock:
            for m in messages:
                self._latest[m["MessageId"]] = m["ReceiptHandle"]
                self._handles[m["ReceiptHandle"]] = m["MessageId"]

    def _note(self, counter: Counter[str], op: str, n: int = 1) -> None:
        with self._lock:
            counter[op] += n


def _error(status: int, code: str, message: str, *, sender: bool) -> web.Response:
    return web.Response(
        status=status,
        body=json.dumps({"__type": f"com.amazonaws.sqs#{code}", "message": message}).encode(),
        headers={
            "Content-Type": JSON_TYPE,
            "x-amzn-query-error": f"{code};{'Sender' if sender else 'Receiver'}",
            "x-amzn-RequestId": str(uuid.uuid4()),
        },
    )
