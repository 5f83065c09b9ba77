"""The one retry policy: capped exponential backoff with full jitter.

Every retry in headrace draws its delays from a :class:`Backoff` and takes its failed-attempt
step through :meth:`Backoff.pause` (log the attempt, sleep its delay): database transactions,
SQS calls and the entries that came back ``Failed``, resumed S3 reads, failed receives,
circuit probes. :func:`retry` is the loop for a single call that either succeeds or raises;
loops that live longer (a poller, a probe) call :meth:`Backoff.pause` themselves. Whether a
failure is worth another try is the error's own business (``HeadraceError.transient``, set
where botocore's and SQLAlchemy's errors are converted). botocore's own retries run in its
"standard" mode underneath (see :mod:`headrace.aws`).
"""

from __future__ import annotations

import asyncio
import random
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any, TypeVar

import structlog

__all__ = ["Backoff", "is_transient_error", "retry"]

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

    def exhausted(self, attempt: int) -> bool:
        """Whether ``attempt`` failed attempts use up the budget."""
        return attempt >= self.attempts

    async def pause(self, attempt: int, event: str, *, logger: Any = None, **fields: Any) -> float:
        """After failed attempt number ``attempt``: log ``event`` with the delay, then sleep it."""
        delay = self.delay(attempt)
        (logger or log).warning(event, attempt=attempt, delay_s=round(delay, 3), **fields)
        await asyncio.sleep(delay)
        return delay


def is_transient_error(exc: BaseException) -> bool:
    """headrace's own answer: a :class:`~headrace.errors.HeadraceError` marked transient."""
    return bool(getattr(exc, "transient", False))


async def retry(
    fn: Callable[[], Awaitable[T]],
    *,
    backoff: Backoff,
    what: str,
    should_retry: Callable[[BaseException], bool] = is_transient_error,
    logger: Any = None,
) -> T:
    """Run ``fn`` until it succeeds, it raises something not retryable, or attempts run out."""
    attempt = 0
    while True:
        attempt += 1
        try:
            return await fn()
        except Exception as exc:
            if backoff.exhausted(attempt) or not should_retry(exc):
                raise
            await backoff.pause(
                attempt, "retrying", logger=logger, what=what, error=repr(exc)[:300]
            )
