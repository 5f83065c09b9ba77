"""The worker: long-polls SQS and bulk-inserts rows into the database exactly once."""

from worker.app import Worker, WorkerStats, run_worker

__all__ = ["Worker", "WorkerStats", "run_worker"]
