"""A moto server in its own process that counts SQS requests and billed units, server side.

``python -m bench.motoserver [--port N]`` prints ``PORT <n>`` on stdout once it listens on
127.0.0.1, then serves moto's usual endpoints plus two of its own:

* ``GET /__bench__/counts``: ``{operation: {"requests": n, "billed_units": u, "bytes": b}}``;
* ``GET /__bench__/last-send``: ``{"unix_ns": t}``, when the last SendMessage(Batch) arrived;
* ``POST /__bench__/reset``: set every count back to zero.

Why count here: the SQS bill is the server's view. Every HTTP request that reaches the
server is counted, retries included, whichever process sent it (producer, workers, the
benchmark's own set-up), without touching the programs measured. The payload of a request is
what SQS bills by: message bodies plus message attributes (name, data type, value) sent by
SendMessage/SendMessageBatch or returned by ReceiveMessage; every started 64 KiB is a unit,
at least one per request (:func:`headrace.sqs.billed_units`, the same rule as the in-process
counters of :mod:`headrace.sqs`).

Running moto in a separate process keeps it off the measured processes' GIL.
"""

from __future__ import annotations

import argparse
import io
import logging
import sys
import threading
import time
from collections.abc import Callable, Iterable, Iterator
from typing import Any

import orjson

from headrace.sqs import billed_units

__all__ = ["CountingMiddleware", "main"]

StartResponse = Callable[..., Any]
WsgiApp = Callable[[dict[str, Any], StartResponse], Iterable[bytes]]

_SEND_OPS = frozenset({"SendMessage", "SendMessageBatch"})
_PREFIX = "/__bench__/"


def _text_bytes(text: object) -> int:
    return len(text.encode("utf-8", "surrogatepass")) if isinstance(text, str) else 0


def _message_bytes(message: dict[str, Any], body_key: str) -> int:
    size = _text_bytes(message.get(body_key))
    attributes = message.get("MessageAttributes") or {}
    if isinstance(attributes, dict):
        for name, attr in attributes.items():
            size += _text_bytes(name)
            if isinstance(attr, dict):
                size += _text_bytes(attr.get("DataType"))
                size += _text_bytes(attr.get("StringValue"))
                binary = attr.get("BinaryValue")
                if isinstance(binary, str):  # base64 on the wire
                    size += len(binary) * 3 // 4
    return size


def _json_object(body: bytes) -> dict[str, Any] | None:
    """The request or response body as a JSON object, or None (the count is then 0)."""
    try:
        doc = orjson.loads(body)
    except orjson.JSONDecodeError:
        return None
    return doc if isinstance(doc, dict) else None


def _send_payload(op: str, body: bytes) -> int:
    doc = _json_object(body)
    if doc is None:
        return 0
    if op == "SendMessage":
        return _message_bytes(doc, "MessageBody")
    entries = doc.get("Entries") or []
    return sum(_message_bytes(e, "MessageBody") for e in entries if isinstance(e, dict))


def _receive_payload(body: bytes) -> int:
    doc = _json_object(body)
    if doc is None:
        return 0
    messages = doc.get("Messages") or []
    return sum(_message_bytes(m, "Body") for m in messages if isinstance(m, dict))


class CountingMiddleware:
    """WSGI middleware in front of moto's app: counts SQS requests by operation."""

    def __init__(self, app: WsgiApp) -> None:
        self._app = app
        self._lock = threading.Lock()
        self._counts: dict[str, dict[str, int]] = {}
        self._last_send_ns = 0

    def _add(self, op: str, payload: int) -> None:
        with self._lock:
            entry = self._counts.setdefault(op, {"requests": 0, "billed_units": 0, "bytes": 0})
            entry["requests"] += 1
            entry["billed_units"] += billed_units(payload)
            entry["bytes"] += payload
            if op in _SEND_OPS:
                # When the last send arrived (the latency stage measures from it).
                self._last_send_ns = time.time_ns()

    def snapshot(self) -> dict[str, dict[str, int]]:
        with self._lock:
            return {op: dict(v) for op, v in self._counts.items()}

    def __call__(self, environ: dict[str, Any], start_response: StartResponse) -> Iterable[bytes]:
        path = str(environ.get("PATH_INFO", ""))
        if path.startswith(_PREFIX):
            return self._control(path[len(_PREFIX) :], environ, start_response)
        length = int(environ.get("CONTENT_LENGTH") or 0)
        body = environ["wsgi.input"].read(length) if length > 0 else b""
        environ["wsgi.input"] = io.BytesIO(body)
        op = self._operation(environ)
        if op is None:  # not an SQS call (moto's own API, S3, ...)
            return self._app(environ, start_response)
        if op in _SEND_OPS:
            self._add(op, _send_payload(op, body))
            return self._app(environ, start_response)
        if op != "ReceiveMessage":
            self._add(op, 0)
            return self._app(environ, start_response)
        response = self._app(environ, start_response)
        try:
            data = b"".join(response)
        finally:
            close = getattr(response, "close", None)
            if close is not None:
                close()
        self._add(op, _receive_payload(data))
        return [data]

    @staticmethod
    def _operation(environ: dict[str, Any]) -> str | None:
        """The SQS operation of a JSON-protocol request (botocore's only SQS protocol)."""
        target = str(environ.get("HTTP_X_AMZ_TARGET", ""))
        if target.startswith("AmazonSQS."):
            return target.split(".", 1)[1]
        return None

    def _control(
        self, command: str, environ: dict[str, Any], start_response: StartResponse
    ) -> Iterator[bytes]:
        if command == "counts":
            payload = orjson.dumps(self.snapshot())
        elif command == "last-send":
            with self._lock:
                payload = orjson.dumps({"unix_ns": self._last_send_ns})
        elif command == "reset" and environ.get("REQUEST_METHOD") == "POST":
            with self._lock:
                self._counts.clear()
            payload = b"{}"
        else:
            start_response("404 Not Found", [("Content-Type", "text/plain")])
            return iter([b"unknown bench command"])
        start_response(
            "200 OK", [("Content-Type", "application/json"), ("Content-Length", str(len(payload)))]
        )
        return iter([payload])


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=0, help="0: a free port (printed)")
    args = parser.parse_args(argv)

    logging.getLogger("werkzeug").setLevel(logging.WARNING)  # one line per request otherwise
    from moto.moto_server.werkzeug_app import (
        DomainDispatcherApplication,
        MotoRequestHandler,
        create_backend_app,
    )
    from werkzeug.serving import make_server

    app = CountingMiddleware(DomainDispatcherApplication(create_backend_app))
    server = make_server(
        args.host, args.port, app, threaded=True, request_handler=MotoRequestHandler
    )
    sys.stdout.write(f"PORT {server.server_port}\n")
    sys.stdout.flush()
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        pass
    finally:
        server.server_close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
