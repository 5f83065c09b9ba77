"""The parts a worker's loops share, built once per run by :class:`worker.app.Worker`."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass

from headrace.metrics import WorkerMetrics
from headrace.settings import WorkerSettings
from worker.acker import Acker
from worker.buffer import Batch, Buffer
from worker.circuit import Circuit
from worker.inflight import InFlight
from worker.payloads import Payloads
from worker.tables import Tables

__all__ = ["Parts"]


@dataclass(frozen=True)
class Parts:
    settings: WorkerSettings
    metrics: WorkerMetrics
    inflight: InFlight  # messages held, and the backpressure bound
    buffer: Buffer  # messages waiting to fill a batch
    batches: asyncio.Queue[Batch]  # full batches waiting for a sink
    tables: Tables  # the target tables, reflected
    circuit: Circuit  # whether the database takes work
    acker: Acker  # delete after commit, release otherwise
    stopping: asyncio.Event  # set once shutdown begins
    signing_key: bytes | None  # messages must carry a valid signature under it
    payloads: Payloads | None = None  # Extended Client payloads in S3
