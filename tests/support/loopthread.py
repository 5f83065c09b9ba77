"""A test server that runs its own asyncio loop in a daemon thread.

The fault proxies keep serving while the test blocks (``subprocess.wait``, a synchronous
server restart) and serve other processes as well as in-process clients. Subclasses write
``_start`` and ``_stop`` as coroutines on that loop; :meth:`_call` runs one from the test.
:func:`reset` is how both proxies drop a connection.
"""

from __future__ import annotations

import asyncio
import contextlib
import socket
import struct
import threading
from collections.abc import Coroutine
from typing import Any, Self, TypeVar

__all__ = ["LoopThread", "reset"]

T = TypeVar("T")


class LoopThread:
    def __init__(self) -> None:
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, daemon=True)

    def start(self) -> Self:
        self._thread.start()
        self._call(self._start())
        return self

    def stop(self) -> None:
        with contextlib.suppress(Exception):
            self._call(self._stop())
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(timeout=5)
        if not self._thread.is_alive():
            self._loop.close()

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def _call(self, coro: Coroutine[Any, Any, T]) -> T:
        """Run ``coro`` on the server's loop and wait (10 s at most) for its result."""
        return asyncio.run_coroutine_threadsafe(coro, self._loop).result(timeout=10)

    async def _start(self) -> object:
        raise NotImplementedError

    async def _stop(self) -> object:
        raise NotImplementedError


def reset(transport: asyncio.BaseTransport) -> None:
    """Close with RST (SO_LINGER 0), not FIN: the peer sees a hard connection loss."""
    sock = transport.get_extra_info("socket")
    if sock is not None:
        with contextlib.suppress(OSError):
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    transport.abort()  # type: ignore[attr-defined]
