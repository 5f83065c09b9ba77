"""The in-flight registry's backpressure: concurrent pollers share the room, not double it."""

from __future__ import annotations

import asyncio
import time

import pytest

from headrace.envelope import Envelope
from worker.inflight import InFlight, Message


def _message(i: int, rows: int) -> Message:
    data = [[f"S{i}-{n}"] for n in range(rows)]
    env = Envelope.from_rows("0" * 32, i, "observations", ("sku",), "t.csv", data, range(rows))
    return Message(f"m{i}", f"r{i}", env, receive_count=1, deadline=time.monotonic() + 60)


async def _taught(inflight: InFlight, rows: int) -> InFlight:
    """Let it learn the size of a message (a running average), then empty it again."""
    for i in range(80):
        inflight.add(_message(i, rows))
    await inflight.remove(inflight.snapshot())
    return inflight


async def test_concurrent_receives_share_the_row_room() -> None:
    inflight = await _taught(InFlight(max_messages=100, max_rows=1050), rows=100)
    assert inflight.room() == 10
    rooms: list[int] = []

    async def poller() -> None:  # stays alive, like a poller inside a long poll
        rooms.append(await inflight.wait_for_room())
        await asyncio.Event().wait()

    pollers = [asyncio.create_task(poller()) for _ in range(2)]
    try:
        while len(rooms) < 2:
            await asyncio.wait(pollers, timeout=0.01)
    finally:
        for task in pollers:
            task.cancel()
        await asyncio.gather(*pollers, return_exceptions=True)
    # Without reservations both would get 10 and could hold 2,000 rows together.
    assert rooms == [10, 1]  # the second may take one more message, as before


async def test_held_plus_reserved_stays_within_the_message_bound() -> None:
    inflight = await _taught(InFlight(max_messages=10, max_rows=1_000_000), rows=1)
    rooms: list[int] = []
    received, next_round, reserved_again = asyncio.Event(), asyncio.Event(), asyncio.Event()

    async def poller_a() -> None:  # a live poller: its reservation counts
        rooms.append(await inflight.wait_for_room())
        for i in range(3):  # its receive returned 3 messages
            inflight.add(_message(100 + i, 1))
        received.set()
        await next_round.wait()
        rooms.append(await inflight.wait_for_room())
        reserved_again.set()
        await asyncio.Event().wait()  # stays alive, like a poller inside a long poll

    a = asyncio.create_task(poller_a())
    try:
        await asyncio.wait_for(received.wait(), 5)
        assert rooms == [10]
        b = asyncio.create_task(inflight.wait_for_room())
        with pytest.raises(TimeoutError):  # 3 held + 7 reserved: no room for b
            await asyncio.wait_for(asyncio.shield(b), 0.1)
        next_round.set()
        await asyncio.wait_for(reserved_again.wait(), 5)
        assert rooms == [10, 7]  # its unused 7 again, not 7 more
        assert not b.done()
        await inflight.remove(inflight.snapshot())  # the 3 were applied
        assert await asyncio.wait_for(b, 5) == 3
    finally:
        a.cancel()
        await asyncio.gather(a, return_exceptions=True)
