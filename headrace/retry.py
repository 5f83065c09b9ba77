"""The one retry policy: capped exponential backoff with full jitter.

Every retry in headrace (database transactions, SQS entries that came back ``Failed``,
circuit probes) draws its delays from :class:`Backoff`; botocore's own retries run in its
"standard" mode underneath (see :mod:`headrace.sqs`).
"""

from __future__ import annotations

import asyncio
import random
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import TypeVar

import structlog

__all__ = ["Backoff", "retry"]

T = TypeVar("T")
log = structlog.get_logger("headrace.retry")


@dataclass(frozen=True)
class Backoff:
    base_s: float = 0.1
    cap_s: float = 10.0
    attempts: int = 8

    def delay(self, attempt: int) -> float:
        """Delay before retry number ``attempt`` (1-based): uniform in [0, min(cap, base*2^n)]."""
        return random.uniform(0, min(self.cap_s, self.base_s * (2 ** (attempt - 1))))


async def retry(
    fn: Callable[[], Awaitable[T]],
    *,
    should_retry: Callable[[BaseException], bool],
    backoff: Backoff,
    what: str,
) -> T:
    """Run ``fn`` until it succeeds, it raises something not retryable, or attempts run out."""
    attempt = 0
    while True:
        attempt += 1
        try:
            return await fn()
        except Exception as exc:
            if attempt >= backoff.attempts or not should_retry(exc):
                raise
            delay = backoff.delay(attempt)
            log.warning(
                "retrying",
                what=what,
                attempt=attempt,
                delay_s=round(delay, 3),
                error=repr(exc)[:300],
            )
            await asyncio.sleep(delay)
