"""Fail-points: named places where tests make a process crash, stall or fail on purpose.

``HEADRACE_FAILPOINT="worker.after_commit:crash"`` (comma-separated for several) arms them;
actions are ``crash`` (SIGKILL of the own process: no cleanup, like a lost task),
``sleep=SECONDS``, ``raise=MESSAGE`` (a RuntimeError) and ``until=PATH`` (wait until the file
exists: a test holds the process at that point until it has seen what it needs). An optional
``@N`` after the action fires only on the N-th hit (``worker.after_commit:crash@3``). The
variable is read once, at the first hit; when it is unset a hit is one dictionary lookup.
A point that fires logs ``failpoint_hit`` first, so a test can wait until the process is there.

Points: ``producer.after_send`` (sent, checkpoint not yet saved), ``worker.before_receive``
(a poller about to receive), ``worker.before_commit`` (rows inserted, transaction open),
``worker.after_commit`` (committed, messages not yet deleted), ``worker.heartbeat`` (before
extending visibility).
"""

from __future__ import annotations

import asyncio
import os
import signal
from dataclasses import dataclass

import structlog

__all__ = ["hit", "hits", "reset"]

ENV = "HEADRACE_FAILPOINT"

log = structlog.get_logger(__name__)


@dataclass
class _Point:
    action: str
    arg: str
    on_hit: int
    hits: int = 0


_points: dict[str, _Point] | None = None


def _parse(spec: str) -> dict[str, _Point]:
    points: dict[str, _Point] = {}
    for item in filter(None, (part.strip() for part in spec.split(","))):
        name, _, action = item.partition(":")
        action, _, nth = action.partition("@")
        verb, _, arg = action.partition("=")
        if verb not in ("crash", "sleep", "raise", "until"):
            raise ValueError(f"{ENV}: unknown action {verb!r} in {item!r}")
        points[name] = _Point(verb, arg, int(nth) if nth else 0)
    return points


def reset(spec: str | None = None) -> None:
    """Re-read the fail-points (tests in the same process); ``spec`` overrides the env."""
    global _points
    _points = _parse(spec if spec is not None else os.environ.get(ENV, ""))


def hits(name: str) -> int:
    """How often an armed point was reached in this process (0 when it is not armed)."""
    point = (_points or {}).get(name)
    return point.hits if point is not None else 0


async def hit(name: str) -> None:
    if _points is None:
        reset()
    assert _points is not None
    point = _points.get(name)
    if point is None:
        return
    point.hits += 1
    if point.on_hit and point.hits != point.on_hit:
        return
    log.warning("failpoint_hit", point=name, action=point.action, hits=point.hits)
    if point.action == "crash":
        os.kill(os.getpid(), signal.SIGKILL)
    elif point.action == "sleep":
        await asyncio.sleep(float(point.arg or 1))
    elif point.action == "until":
        await _until_exists(point.arg)
    else:
        raise RuntimeError(f"failpoint {name}: {point.arg or 'injected failure'}")


async def _until_exists(path: str) -> None:
    """Poll for a file another process creates (no event can cross the process boundary)."""
    while not os.path.exists(path):  # noqa: ASYNC110 - the signal is a file, not an event
        await asyncio.sleep(0.05)
