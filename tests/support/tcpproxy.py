"""A small TCP proxy for fault tests: cut, stall, refuse or re-point connections.

It runs its own asyncio loop in a thread, so it keeps forwarding while the test blocks (for
example in ``subprocess.wait``) and serves processes as well as in-process clients.

* :meth:`TcpProxy.cut` closes every open connection at once (both sides see a reset, as when
  a NAT entry or a network path dies mid-transaction);
* :meth:`TcpProxy.stall` stops moving bytes while keeping connections open (a frozen peer);
  :meth:`TcpProxy.resume` lets them flow again;
* :meth:`TcpProxy.refuse` closes new connections as soon as they are accepted;
* :meth:`TcpProxy.retarget` sends new connections to another server (a failover behind a
  DNS name), optionally cutting the existing ones;
* :meth:`TcpProxy.cut_after` cuts the next connection once it has carried N bytes towards
  the client (a download dying mid-object).
"""

from __future__ import annotations

import asyncio
import contextlib
import socket
import struct
import threading
from collections.abc import Iterator

__all__ = ["TcpProxy"]


class TcpProxy:
    def __init__(self, host: str, port: int) -> None:
        self._target = (host, port)
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, daemon=True)
        self._server: asyncio.Server | None = None
        self._writers: set[asyncio.StreamWriter] = set()
        self._flowing: asyncio.Event | None = None
        self._refusing = False
        self._cut_after: int | None = None
        self.port = 0
        self.connections = 0
        self.bytes_down = 0  # server → client

    # --- lifecycle ---------------------------------------------------------------------------

    def start(self) -> TcpProxy:
        self._thread.start()
        self._call(self._start())
        return self

    def stop(self) -> None:
        with contextlib.suppress(Exception):
            self._call(self._stop())
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(timeout=5)

    def __enter__(self) -> TcpProxy:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    @property
    def address(self) -> tuple[str, int]:
        return ("127.0.0.1", self.port)

    # --- faults ------------------------------------------------------------------------------

    def cut(self) -> int:
        """Reset every open connection; returns how many were cut."""
        return self._call(self._cut())

    def stall(self) -> None:
        self._loop.call_soon_threadsafe(self._flow.clear)

    def resume(self) -> None:
        self._loop.call_soon_threadsafe(self._flow.set)

    @contextlib.contextmanager
    def stalled(self) -> Iterator[None]:
        self.stall()
        try:
            yield
        finally:
            self.resume()

    def refuse(self, on: bool = True) -> None:
        self._refusing = on

    def retarget(self, host: str, port: int, *, cut: bool = True) -> None:
        self._target = (host, port)
        if cut:
            self.cut()

    def cut_after(self, nbytes: int) -> None:
        """Cut the next connection after it has sent ``nbytes`` towards the client."""
        self._cut_after = nbytes

    # --- internals ---------------------------------------------------------------------------

    @property
    def _flow(self) -> asyncio.Event:
        assert self._flowing is not None
        return self._flowing

    def _call(self, coro: object) -> int:
        future = asyncio.run_coroutine_threadsafe(coro, self._loop)  # type: ignore[arg-type]
        return future.result(timeout=10)  # type: ignore[no-any-return]

    async def _start(self) -> int:
        self._flowing = asyncio.Event()
        self._flowing.set()
        self._server = await asyncio.start_server(self._handle, "127.0.0.1", 0)
        self.port = self._server.sockets[0].getsockname()[1]
        return self.port

    async def _stop(self) -> int:
        n = await self._cut()
        if self._server is not None:
            self._server.close()
        return n

    async def _cut(self) -> int:
        writers, self._writers = list(self._writers), set()
        for w in writers:
            _reset(w)
        return len(writers) // 2

    async def _handle(self, client_r: asyncio.StreamReader, client_w: asyncio.StreamWriter) -> None:
        if self._refusing:
            _reset(client_w)
            return
        try:
            server_r, server_w = await asyncio.open_connection(*self._target)
        except OSError:
            _reset(client_w)
            return
        self.connections += 1
        limit, self._cut_after = self._cut_after, None
        self._writers.update((client_w, server_w))
        await asyncio.gather(
            self._pipe(client_r, server_w, None, downstream=False),
            self._pipe(server_r, client_w, limit, downstream=True),
            return_exceptions=True,
        )
        for w in (client_w, server_w):
            self._writers.discard(w)
            _reset(w)

    async def _pipe(
        self,
        reader: asyncio.StreamReader,
        writer: asyncio.StreamWriter,
        limit: int | None,
        *,
        downstream: bool,
    ) -> None:
        sent = 0
        while True:
            data = await reader.read(65536)
            if not data:
                break
            await self._flow.wait()
            if writer.is_closing():
                break
            if limit is not None and sent + len(data) >= limit:
                writer.write(data[: max(0, limit - sent)])
                await writer.drain()
                raise ConnectionResetError("cut_after")
            writer.write(data)
            await writer.drain()
            sent += len(data)
            if downstream:
                self.bytes_down += len(data)
        with contextlib.suppress(OSError):
            writer.write_eof()


def _reset(writer: asyncio.StreamWriter) -> None:
    """Close with RST (SO_LINGER 0), not FIN: the peer sees a hard connection loss."""
    sock = writer.get_extra_info("socket")
    if sock is not None:
        with contextlib.suppress(OSError):
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    writer.transport.abort()
