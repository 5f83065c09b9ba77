"""Everything a process counts, in one place: Prometheus metrics in the process's own registry.

One owner per process: the worker builds a :class:`WorkerMetrics`, the producer a
:class:`ProducerMetrics`, and hands it to the parts that count (the SQS client's event hooks,
the sink's retry hook, the heartbeat, the sender, …). Nothing else keeps a count. The demo,
the benchmark and the tests read counts from the owner (:meth:`Metrics.value`,
:meth:`Metrics.snapshot`, or the ``stats()`` views); ``/metrics`` serves the same registry and
the producer pushes it (:mod:`headrace.exposition`).

Why metrics first and views second: a count kept once cannot disagree with what Prometheus
sees, and the registry is per instance (not the global default), so two workers in one test
process never share a counter.

Conventions: ``headrace_`` prefix, base units (``_seconds``, ``_bytes``), counters end in
``_total``, labels bounded (a table from the allow-list, an operation, an outcome; never a
run id, message id or path).
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from dataclasses import dataclass, fields
from typing import NamedTuple

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram
from prometheus_client.metrics import MetricWrapperBase

from headrace import __version__

__all__ = [
    "DB_RETRY_REASONS",
    "MESSAGE_OUTCOMES",
    "MetricInfo",
    "Metrics",
    "ProducerMetrics",
    "ProducerStats",
    "WorkerMetrics",
    "WorkerStats",
]

#: ``headrace_db_retries_total{reason}``: every value :func:`headrace.db.error_reason` gives.
DB_RETRY_REASONS = (
    "deadlock",
    "lock_wait",
    "too_many_connections",
    "read_only",
    "timeout",
    "disconnect",
    "other",
)
MESSAGE_OUTCOMES = ("applied", "duplicate", "poison", "released")
QUEUE_STATES = ("visible", "in_flight", "delayed")
#: The GetQueueAttributes names behind :data:`QUEUE_STATES`, in the same order.
QUEUE_ATTRIBUTES = (
    "ApproximateNumberOfMessages",
    "ApproximateNumberOfMessagesNotVisible",
    "ApproximateNumberOfMessagesDelayed",
)
# Queue lag spans sub-second (keeping up) to days (retention is 4 days by default); 900 s is
# the alert's threshold.
AGE_BUCKETS_S = (
    0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300, 600, 900, 1800, 3600, 7200, 21600,
    86400,
)  # fmt: skip
BATCH_SECONDS_BUCKETS = (0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120)
BATCH_ROWS_BUCKETS = (1, 10, 100, 500, 1000, 2500, 5000, 10_000, 20_000, 50_000, 100_000)


class MetricInfo(NamedTuple):
    """One metric as the README's table shows it."""

    name: str
    type: str
    labels: tuple[str, ...]
    help: str


class Metrics:
    """What both kinds of process count: SQS requests and billed units, build info."""

    role = "headrace"

    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        self.registry = registry or CollectorRegistry()
        r = self.registry
        self.sqs_requests = Counter(
            "headrace_sqs_requests_total",
            "SQS API requests sent (HTTP attempts, retries included), by operation.",
            ["operation"],
            registry=r,
        )
        self.sqs_billed_units = Counter(
            "headrace_sqs_billed_units_total",
            "SQS billed request units (one per started 64 KiB of payload, at least one).",
            ["operation"],
            registry=r,
        )
        self.build_info = Gauge(
            "headrace_build_info",
            "Always 1: the version and role.",
            ["version", "role"],
            registry=r,
        )
        self.build_info.labels(__version__, self.role).set(1)

    def catalog(self) -> Iterator[MetricInfo]:
        """Every metric this process defines (``scripts/metrics_table.py`` renders them)."""
        for metric in vars(self).values():
            if isinstance(metric, MetricWrapperBase):
                name = metric._name + ("_total" if metric._type == "counter" else "")
                yield MetricInfo(
                    name, str(metric._type), tuple(metric._labelnames), metric._documentation
                )

    def value(self, name: str, **labels: str) -> float:
        """The current value of one sample (0 when it has not been counted yet)."""
        found = self.registry.get_sample_value(name, labels)
        return 0.0 if found is None else found

    def total(self, name: str, **labels: str) -> float:
        """The sum of a metric's samples whose labels include ``labels``."""
        total = 0.0
        for family in self.registry.collect():
            for sample in family.samples:
                if sample.name == name and labels.items() <= sample.labels.items():
                    total += sample.value
        return total

    def sqs_counts(self) -> dict[str, dict[str, float]]:
        """``{operation: {"requests": n, "billed_units": u}}`` so far."""
        out: dict[str, dict[str, float]] = {}
        for key, name in (
            ("requests", "headrace_sqs_requests_total"),
            ("billed_units", "headrace_sqs_billed_units_total"),
        ):
            for family in self.registry.collect():
                for sample in family.samples:
                    if sample.name == name:
                        op = sample.labels["operation"]
                        out.setdefault(op, {"requests": 0.0, "billed_units": 0.0})[key] = (
                            sample.value
                        )
        return out

    def snapshot(self) -> dict[str, float]:
        """Every sample as ``name{label="value",…}`` → value (reports and tests)."""
        out: dict[str, float] = {}
        for family in self.registry.collect():
            for sample in family.samples:
                if sample.name.endswith("_created"):
                    continue
                labels = ",".join(f'{k}="{v}"' for k, v in sorted(sample.labels.items()))
                out[f"{sample.name}{{{labels}}}" if labels else sample.name] = sample.value
        return out


@dataclass(frozen=True)
class WorkerStats:
    """A worker's counts at one moment: a view of :class:`WorkerMetrics`."""

    receives: int
    receive_failures: int
    messages_received: int
    messages_applied: int
    messages_duplicate: int
    messages_poison: int
    messages_released: int
    rows_inserted: int
    rows_rejected: int
    rows_skipped: int
    batches: int
    batch_failures: int
    circuit_opened: int
    schema_drifts: int
    db_retries: int
    task_failures: int
    deletes: int
    heartbeat_calls: int
    heartbeat_failures: int
    visibility_extensions: int
    protection_enabled: int
    protection_disabled: int
    protection_failures: int
    inflight_peak_messages: int
    inflight_peak_rows: int

    def as_dict(self) -> dict[str, int]:
        return {f.name: getattr(self, f.name) for f in fields(self)}


class WorkerMetrics(Metrics):
    role = "worker"

    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        super().__init__(registry)
        r = self.registry
        self.receives = Counter(
            "headrace_receives_total", "ReceiveMessage calls that answered.", registry=r
        )
        self.receive_failures = Counter(
            "headrace_receive_failures_total",
            "ReceiveMessage calls that failed even after botocore's retries.",
            registry=r,
        )
        self.messages_received = Counter(
            "headrace_messages_received_total", "Messages received.", registry=r
        )
        self.messages = Counter(
            "headrace_messages_total",
            "Messages finished, by outcome: applied (rows committed), duplicate (already in "
            "the ledger), poison (left for the DLQ), released (handed back unapplied).",
            ["outcome"],
            registry=r,
        )
        self.rows = Counter(
            "headrace_rows_total",
            "Rows finished, by table and outcome: inserted (with --on-duplicate update: "
            "inserted or updated), rejected (to rejected_rows, producer and database rejects "
            "alike), skipped (--on-duplicate skip: the key existed), duplicate (in a message "
            "already applied).",
            ["table", "outcome"],
            registry=r,
        )
        self.batches = Counter(
            "headrace_batches_total",
            "Flushes, by outcome: committed or failed (retried message by message; alone: poison).",
            ["outcome"],
            registry=r,
        )
        self.deletes = Counter(
            "headrace_deletes_total", "Messages deleted after their commit.", registry=r
        )
        self.circuit_opened = Counter(
            "headrace_circuit_opened_total",
            "Times receiving stopped for the database (cause: database or schema drift).",
            ["cause"],
            registry=r,
        )
        self.circuit_open = Gauge(
            "headrace_circuit_open", "1 while receiving is stopped for the database.", registry=r
        )
        self.db_retries = Counter(
            "headrace_db_retries_total",
            "Database transactions retried, by reason.",
            ["reason"],
            registry=r,
        )
        self.task_failures = Counter(
            "headrace_task_failures_total", "Worker loops that died of an error.", registry=r
        )
        self.heartbeat_calls = Counter(
            "headrace_heartbeat_calls_total",
            "Visibility extensions the heartbeat asked of SQS (one per in-flight message due).",
            registry=r,
        )
        self.heartbeat_failures = Counter(
            "headrace_heartbeat_failures_total",
            "Visibility extensions SQS refused or that failed with their call.",
            registry=r,
        )
        self.protection_changes = Counter(
            "headrace_protection_changes_total",
            "ECS task scale-in protection turned on or off.",
            ["state"],
            registry=r,
        )
        self.protection_failures = Counter(
            "headrace_protection_failures_total",
            "Calls to the ECS agent's task-protection endpoint that failed.",
            registry=r,
        )
        self.inflight_messages = Gauge(
            "headrace_inflight_messages", "Messages this worker holds.", registry=r
        )
        self.inflight_rows = Gauge("headrace_inflight_rows", "Rows this worker holds.", registry=r)
        self.inflight_peak_messages = Gauge(
            "headrace_inflight_peak_messages", "Most messages held at once.", registry=r
        )
        self.inflight_peak_rows = Gauge(
            "headrace_inflight_peak_rows", "Most rows held at once.", registry=r
        )
        self.inflight_oldest_age = Gauge(
            "headrace_inflight_oldest_message_age_seconds",
            "Now minus SentTimestamp of the oldest message this worker holds (0: none).",
            registry=r,
        )
        self.queue_messages = Gauge(
            "headrace_queue_messages",
            "Messages in the main queue and its DLQ by state (GetQueueAttributes, polled every "
            "metrics.queue_poll_s by every worker: combine workers with max, not sum).",
            ["queue", "state"],
            registry=r,
        )
        self.queue_reachable = Gauge(
            "headrace_queue_reachable",
            "1 when the last poll of the queue's attributes answered (readiness).",
            registry=r,
        )
        self.message_age_at_receive = Histogram(
            "headrace_message_age_at_receive_seconds",
            "Now minus SentTimestamp when a message is received: the queue lag.",
            buckets=AGE_BUCKETS_S,
            registry=r,
        )
        self.message_latency = Histogram(
            "headrace_message_latency_seconds",
            "SentTimestamp to the commit of the message's rows (applied or duplicate).",
            buckets=AGE_BUCKETS_S,
            registry=r,
        )
        self.batch_seconds = Histogram(
            "headrace_batch_seconds",
            "Time of one committed flush: transaction, commit and delete.",
            buckets=BATCH_SECONDS_BUCKETS,
            registry=r,
        )
        self.batch_rows = Histogram(
            "headrace_batch_rows",
            "Rows in one committed flush (inserted, rejected and duplicate).",
            buckets=BATCH_ROWS_BUCKETS,
            registry=r,
        )
        self.db_pool_in_use = Gauge(
            "headrace_db_pool_connections_in_use",
            "Database connections checked out of the pool.",
            registry=r,
        )
        # Bounded label values exist from the start, so rates are 0 rather than absent.
        for outcome in MESSAGE_OUTCOMES:
            self.messages.labels(outcome)
        for reason in DB_RETRY_REASONS:
            self.db_retries.labels(reason)
        for outcome in ("committed", "failed"):
            self.batches.labels(outcome)

    def received(self, sent_at: float | None, now: float | None = None) -> None:
        """A message was received; ``sent_at`` is its SentTimestamp (epoch seconds)."""
        self.messages_received.inc()
        if sent_at is not None:
            now = time.time() if now is None else now
            self.message_age_at_receive.observe(max(0.0, now - sent_at))

    def flushed(self, *, seconds: float, rows: int, sent_at: list[float | None]) -> None:
        """A batch committed (and its messages were deleted): its time, size and latencies."""
        now = time.time()
        self.batch_seconds.observe(seconds)
        self.batch_rows.observe(rows)
        for sent in sent_at:
            if sent is not None:
                self.message_latency.observe(max(0.0, now - sent))

    def queue_depth(self, queue: str, attributes: dict[str, str]) -> None:
        """Set ``headrace_queue_messages{queue}`` from GetQueueAttributes' answer."""
        for state, name in zip(QUEUE_STATES, QUEUE_ATTRIBUTES, strict=True):
            self.queue_messages.labels(queue, state).set(int(attributes.get(name, "0")))

    def stats(self) -> WorkerStats:
        v, t = self.value, self.total
        return WorkerStats(
            receives=int(v("headrace_receives_total")),
            receive_failures=int(v("headrace_receive_failures_total")),
            messages_received=int(v("headrace_messages_received_total")),
            messages_applied=int(v("headrace_messages_total", outcome="applied")),
            messages_duplicate=int(v("headrace_messages_total", outcome="duplicate")),
            messages_poison=int(v("headrace_messages_total", outcome="poison")),
            messages_released=int(v("headrace_messages_total", outcome="released")),
            rows_inserted=int(t("headrace_rows_total", outcome="inserted")),
            rows_rejected=int(t("headrace_rows_total", outcome="rejected")),
            rows_skipped=int(t("headrace_rows_total", outcome="skipped")),
            batches=int(v("headrace_batches_total", outcome="committed")),
            batch_failures=int(v("headrace_batches_total", outcome="failed")),
            circuit_opened=int(t("headrace_circuit_opened_total")),
            schema_drifts=int(v("headrace_circuit_opened_total", cause="schema")),
            db_retries=int(t("headrace_db_retries_total")),
            task_failures=int(v("headrace_task_failures_total")),
            deletes=int(v("headrace_deletes_total")),
            heartbeat_calls=int(v("headrace_heartbeat_calls_total")),
            heartbeat_failures=int(v("headrace_heartbeat_failures_total")),
            visibility_extensions=int(
                v("headrace_heartbeat_calls_total") - v("headrace_heartbeat_failures_total")
            ),
            protection_enabled=int(v("headrace_protection_changes_total", state="on")),
            protection_disabled=int(v("headrace_protection_changes_total", state="off")),
            protection_failures=int(v("headrace_protection_failures_total")),
            inflight_peak_messages=int(v("headrace_inflight_peak_messages")),
            inflight_peak_rows=int(v("headrace_inflight_peak_rows")),
        )


@dataclass(frozen=True)
class ProducerStats:
    """A producer's counts at one moment: a view of :class:`ProducerMetrics`."""

    rows_read: int
    rows_sent: int
    rows_rejected: int
    messages_sent: int
    messages_skipped: int
    bytes_sent: int
    send_retries: int
    s3_resumes: int
    send_requests: int


class ProducerMetrics(Metrics):
    role = "producer"

    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        super().__init__(registry)
        r = self.registry
        self.rows = Counter(
            "headrace_producer_rows_total",
            "Source rows, by table and outcome: read, sent (in a confirmed message), "
            "rejected (travel as rejects to rejected_rows).",
            ["table", "outcome"],
            registry=r,
        )
        self.messages = Counter(
            "headrace_producer_messages_total",
            "Messages confirmed sent by SQS.",
            ["table"],
            registry=r,
        )
        self.messages_skipped = Counter(
            "headrace_producer_messages_skipped_total",
            "Messages a resumed run did not send again (an earlier attempt had).",
            ["table"],
            registry=r,
        )
        self.bytes = Counter(
            "headrace_producer_bytes_total",
            "Bytes, by stage: read (source bytes consumed, compressed as stored), sent "
            "(message bodies and attributes as SQS counts them).",
            ["table", "stage"],
            registry=r,
        )
        self.send_retries = Counter(
            "headrace_producer_send_retries_total",
            "SendMessageBatch calls made again (failed entries or a failed call).",
            ["table"],
            registry=r,
        )
        self.s3_resumes = Counter(
            "headrace_producer_s3_resumes_total",
            "Ranged GETs that resumed an S3 body after a cut.",
            registry=r,
        )
        self.progress = Gauge(
            "headrace_producer_progress_ratio",
            "Source bytes read / source size of the current run (1 once it is sent).",
            ["table"],
            registry=r,
        )
        self.last_run = Gauge(
            "headrace_producer_last_run_timestamp_seconds",
            "When the last run for the table finished sending (or found it already sent).",
            ["table"],
            registry=r,
        )

    def stats(self, table: str) -> ProducerStats:
        v = self.value
        return ProducerStats(
            rows_read=int(v("headrace_producer_rows_total", table=table, outcome="read")),
            rows_sent=int(v("headrace_producer_rows_total", table=table, outcome="sent")),
            rows_rejected=int(v("headrace_producer_rows_total", table=table, outcome="rejected")),
            messages_sent=int(v("headrace_producer_messages_total", table=table)),
            messages_skipped=int(v("headrace_producer_messages_skipped_total", table=table)),
            bytes_sent=int(v("headrace_producer_bytes_total", table=table, stage="sent")),
            send_retries=int(v("headrace_producer_send_retries_total", table=table)),
            s3_resumes=int(v("headrace_producer_s3_resumes_total")),
            send_requests=int(v("headrace_sqs_requests_total", operation="SendMessageBatch")),
        )
