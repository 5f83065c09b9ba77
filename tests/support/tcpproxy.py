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
* :meth:`TcpProxy.cut_after` cuts the first connection that has carried N bytes towards the
  client (a download dying mid-object).
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Iterator
from dataclasses import dataclass

from support.loopthread import LoopThread, reset

__all__ = ["TcpProxy"]


class TcpProxy(LoopThread):
    def __init__(self, host: str, port: int) -> None:
        super().__init__()
        self._target = (host, port)
        self._server: asyncio.Server | None = None
        self._writers: set[asyncio.StreamWriter] = set()
        self._flowing: asyncio.Event | None = None
        self._refusing = False
        self._arm: _Arm | None = None
        self.port = 0
        self.connections = 0
        self.refused = 0  # connections refused by refuse()
        self.bytes_down = 0  # server → client
        self.cuts = 0  # connections cut by cut_after
        self._handlers: set[asyncio.Task[None]] = set()

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
        """Cut the first connection to carry ``nbytes`` towards the client, once.

        Every connection accepted from now on counts its own bytes until one of them reaches
        ``nbytes`` (a client may open several, e.g. one for a HEAD and another for the GET);
        connections accepted after that cut are left alone. :attr:`cuts` counts the cuts.
        """
        self._arm = _Arm(nbytes)

    # --- internals ---------------------------------------------------------------------------

    @property
    def _flow(self) -> asyncio.Event:
        assert self._flowing is not None
        return self._flowing

    async def _start(self) -> int:
        self._flowing = asyncio.Event()
        self._flowing.set()
        self._server = await asyncio.start_server(self._track, "127.0.0.1", 0)
        self.port = self._server.sockets[0].getsockname()[1]
        return self.port

    async def _stop(self) -> int:
        if self._server is not None:
            self._server.close()
        n = await self._cut()
        handlers, self._handlers = list(self._handlers), set()
        for task in handlers:
            task.cancel()
        await asyncio.gather(*handlers, return_exceptions=True)
        return n

    async def _cut(self) -> int:
        writers, self._writers = list(self._writers), set()
        for w in writers:
            reset(w.transport)
        return len(writers) // 2

    async def _track(self, client_r: asyncio.StreamReader, client_w: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        assert task is not None
        self._handlers.add(task)
        try:
            await self._handle(client_r, client_w)
        except asyncio.CancelledError:
            pass  # only stop() cancels; asyncio's stream callback must not see it
        finally:
            self._handlers.discard(task)

    async def _handle(self, client_r: asyncio.StreamReader, client_w: asyncio.StreamWriter) -> None:
        if self._refusing:
            self.refused += 1
            reset(client_w.transport)
            return
        try:
            server_r, server_w = await asyncio.open_connection(*self._target)
        except OSError:
            reset(client_w.transport)
            return
        self.connections += 1
        arm = self._arm
        self._writers.update((client_w, server_w))
        pipes = {
            asyncio.ensure_future(self._pipe(client_r, server_w, None, downstream=False)),
            asyncio.ensure_future(self._pipe(server_r, client_w, arm, downstream=True)),
        }
        try:
            # A direction that ends cleanly (EOF) leaves the other one running (half-close);
            # one that fails (a cut) tears the whole connection down at once: waiting for
            # the other direction would leave the client hanging until its read timeout.
            while pipes:
                done, pipes = await asyncio.wait(pipes, return_when=asyncio.FIRST_COMPLETED)
                if any(not t.cancelled() and t.exception() is not None for t in done):
                    break
        finally:
            for t in pipes:
                t.cancel()
            await asyncio.gather(*pipes, return_exceptions=True)
            for w in (client_w, server_w):
                self._writers.discard(w)
                reset(w.transport)

    async def _pipe(
        self,
        reader: asyncio.StreamReader,
        writer: asyncio.StreamWriter,
        arm: _Arm | None,
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
            if arm is not None and not arm.fired and sent + len(data) >= arm.nbytes:
                arm.fired = True
                if self._arm is arm:
                    self._arm = None
                head = data[: max(0, arm.nbytes - sent)]
                writer.write(head)
                await writer.drain()
                self.bytes_down += len(head)
                self.cuts += 1
                raise ConnectionResetError("cut_after")
            writer.write(data)
            await writer.drain()
            sent += len(data)
            if downstream:
                self.bytes_down += len(data)
        with contextlib.suppress(OSError):
            writer.write_eof()


@dataclass
class _Arm:
    """A pending :meth:`TcpProxy.cut_after`, shared by the connections it watches."""

    nbytes: int
    fired: bool = False
