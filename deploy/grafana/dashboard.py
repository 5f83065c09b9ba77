"""The headrace Grafana dashboard as code: ``make dashboard`` regenerates the JSON.

``python -m deploy.grafana.dashboard`` writes ``headrace.json`` next to this file (or the
path given as the first argument, ``-`` for stdout). The JSON is committed; a test fails
when it differs from what this module generates, so edit this file and regenerate rather
than editing the JSON.

Two datasources, both chosen by template variables so the JSON imports into any Grafana:
``$datasource`` (Prometheus: the worker's ``/metrics`` and the producer's pushed metrics)
and ``$mysql`` (the target database, for ``ingest_runs`` and ``rejected_rows``).

Queue gauges come from every worker (each calls GetQueueAttributes), so they are combined
with ``max``, never ``sum``.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any, Final, Self

from grafana_foundation_sdk.builders import bargauge, stat, table, timeseries
from grafana_foundation_sdk.builders import common as common_builders
from grafana_foundation_sdk.builders import dashboard as dash
from grafana_foundation_sdk.builders import prometheus as prom
from grafana_foundation_sdk.cog import builder as cogbuilder
from grafana_foundation_sdk.cog import variants as cogvariants
from grafana_foundation_sdk.cog.encoder import JSONEncoder
from grafana_foundation_sdk.models import dashboard as model
from grafana_foundation_sdk.models.common import BigValueColorMode, BigValueGraphMode

__all__ = ["OUTPUT", "RECENT_RUNS_SQL", "REJECT_REASONS_SQL", "build", "render"]

OUTPUT: Final = Path(__file__).with_name("headrace.json")
UID: Final = "headrace"

PROMETHEUS: Final = model.DataSourceRef(type_val="prometheus", uid="${datasource}")
MYSQL: Final = model.DataSourceRef(type_val="mysql", uid="${mysql}")

WORKER: Final = 'job="headrace-worker"'
RATE: Final = "$__rate_interval"

# One row per producer run in the dashboard's time range, newest first. "sent" is what the
# producer put into messages; inserted/rejected are the worker's ledger totals (rejected
# includes the producer's rejects, which travel in the messages). A run is complete once the
# producer has sent its last message and the ledger holds every message of it.
RECENT_RUNS_SQL: Final = """\
SELECT r.run_id,
       r.table_name,
       r.source,
       r.status,
       r.started_at,
       r.finished_at,
       r.rows_read - r.rows_rejected AS rows_sent,
       COALESCE(l.rows_inserted, 0) AS rows_inserted,
       COALESCE(l.rows_rejected, 0) AS rows_rejected,
       r.messages_sent,
       r.total_messages,
       COALESCE(l.messages_applied, 0) AS messages_applied,
       CASE WHEN r.status = 'sent' AND COALESCE(l.messages_applied, 0) >= r.total_messages
            THEN 'yes' ELSE 'no' END AS complete
FROM ingest_runs AS r
LEFT JOIN (
    SELECT run_id,
           COUNT(*) AS messages_applied,
           SUM(rows_inserted) AS rows_inserted,
           SUM(rows_rejected) AS rows_rejected
    FROM ingest_ledger
    GROUP BY run_id
) AS l ON l.run_id = r.run_id
WHERE $__timeFilter(r.started_at)
ORDER BY r.started_at DESC, r.run_id
LIMIT 50"""

# The commonest reasons in the time range. A reason names the column and quotes the bad
# value, so identical reasons are identical problems.
REJECT_REASONS_SQL: Final = """\
SELECT table_name,
       stage,
       reason,
       COUNT(*) AS rejected,
       MAX(created_at) AS last_seen
FROM rejected_rows
WHERE $__timeFilter(created_at)
GROUP BY table_name, stage, reason
ORDER BY rejected DESC, reason
LIMIT 20"""


class SQLQuery(cogvariants.Dataquery):
    """A raw-SQL target for Grafana's MySQL datasource (the SDK has no builder for it)."""

    def __init__(self, raw_sql: str, ref_id: str = "A", fmt: str = "table") -> None:
        self.raw_sql = raw_sql
        self.ref_id = ref_id
        self.format = fmt

    def to_json(self) -> dict[str, object]:
        return {
            "datasource": MYSQL.to_json(),
            "editorMode": "code",
            "format": self.format,
            "rawQuery": True,
            "rawSql": self.raw_sql,
            "refId": self.ref_id,
        }


class SQL(cogbuilder.Builder[SQLQuery]):
    def __init__(self, raw_sql: str) -> None:
        self._internal = SQLQuery(raw_sql)

    def build(self) -> SQLQuery:
        return self._internal

    def ref_id(self, ref_id: str) -> Self:
        self._internal.ref_id = ref_id
        return self


def _q(expr: str, legend: str = "__auto", ref: str = "A") -> prom.Dataquery:
    return prom.Dataquery().expr(expr).legend_format(legend).ref_id(ref).range()


def _quantiles(metric: str, by: str = "") -> list[prom.Dataquery]:
    group = f"le{', ' + by if by else ''}"
    return [
        _q(
            f"histogram_quantile({q}, sum by ({group}) (rate({metric}_bucket[{RATE}])))",
            f"p{int(q * 100)}",
            ref,
        )
        for q, ref in ((0.5, "A"), (0.99, "B"))
    ]


def _series(
    title: str, unit: str, targets: list[prom.Dataquery], description: str, width: int = 8
) -> timeseries.Panel:
    panel = (
        timeseries.Panel()
        .title(title)
        .description(description)
        .datasource(PROMETHEUS)
        .unit(unit)
        .min(0)
        .span(width)
        .height(8)
    )
    for target in targets:
        panel.with_target(target)
    return panel


def _thresholds(*steps: tuple[float | None, str]) -> dash.ThresholdsConfig:
    return (
        dash.ThresholdsConfig()
        .mode(model.ThresholdsMode.ABSOLUTE)
        .steps([model.Threshold(value=v, color=c) for v, c in steps])
    )


def _last() -> common_builders.ReduceDataOptions:
    return common_builders.ReduceDataOptions().calcs(["lastNotNull"]).values(False)


def _stat(
    title: str, expr: str, description: str, thresholds: dash.ThresholdsConfig, unit: str = "none"
) -> stat.Panel:
    return (
        stat.Panel()
        .title(title)
        .description(description)
        .datasource(PROMETHEUS)
        .with_target(_q(expr, title).instant())
        .unit(unit)
        .thresholds(thresholds)
        .reduce_options(_last())
        .color_mode(BigValueColorMode.BACKGROUND)
        .graph_mode(BigValueGraphMode.NONE)
        .span(6)
        .height(5)
    )


def _variables() -> list[dash.DatasourceVariable]:
    return [
        dash.DatasourceVariable("datasource").label("Prometheus").type("prometheus"),
        dash.DatasourceVariable("mysql").label("MySQL").type("mysql"),
    ]


def _overview() -> list[cogbuilder.Builder[model.Panel]]:
    main = f'max by (state) (headrace_queue_messages{{{WORKER}, queue="main"}})'
    return [
        _stat(
            "Workers up",
            f"sum(up{{{WORKER}}})",
            "Worker targets Prometheus scrapes successfully. 0 with a backlog fires "
            "HeadraceNoWorkerUp.",
            _thresholds((None, "red"), (1, "green")),
        ),
        _stat(
            "Workers with the circuit open",
            f"sum(headrace_circuit_open{{{WORKER}}})",
            "Workers whose database circuit breaker is open (they stopped receiving).",
            _thresholds((None, "green"), (1, "red")),
        ),
        _stat(
            "Dead-letter queue",
            f'max(headrace_queue_messages{{{WORKER}, queue="dlq", state="visible"}})',
            "Messages waiting in the DLQ (poison messages). Anything above 0 needs a look.",
            _thresholds((None, "green"), (1, "orange")),
        ),
        _stat(
            "Estimated time to drain",
            f"sum({main})"
            f' / (sum(rate(headrace_messages_total{{{WORKER}, outcome!="released"}}[5m])) > 0)',
            "Messages in the main queue (visible + in flight + delayed) divided by the rate "
            "at which workers finish messages over the last 5 minutes. Empty while nothing "
            "is being processed.",
            _thresholds((None, "green"), (3600, "orange"), (4 * 3600, "red")),
            unit="s",
        ),
    ]


def _throughput() -> list[cogbuilder.Builder[model.Panel]]:
    return [
        _series(
            "Rows/s inserted and rejected",
            "rows/s",
            [
                _q(
                    "sum by (table, outcome) (rate(headrace_rows_total"
                    f'{{{WORKER}, outcome=~"inserted|rejected"}}[{RATE}]))',
                    "{{table}} {{outcome}}",
                )
            ],
            "Rows the workers committed to the target table, and rows they put into "
            "rejected_rows (producer and database rejects).",
        ),
        _series(
            "Backlog",
            "short",
            [
                _q(
                    "max by (queue, state) "
                    f'(headrace_queue_messages{{{WORKER}, state=~"visible|in_flight"}})',
                    "{{queue}} {{state}}",
                )
            ],
            "ApproximateNumberOfMessages (visible) and ...NotVisible (in flight) of the main "
            "queue and the DLQ, from GetQueueAttributes every 15 s.",
        ),
        _series(
            "Messages by outcome",
            "msg/s",
            [
                _q(
                    f"sum by (outcome) (rate(headrace_messages_total{{{WORKER}}}[{RATE}]))",
                    "{{outcome}}",
                )
            ],
            "applied: committed; duplicate: already in the ledger; poison: undecodable; "
            "released: given back to the queue (shutdown, circuit open).",
        ),
    ]


def _latency() -> list[cogbuilder.Builder[model.Panel]]:
    return [
        _series(
            "Message age at receive",
            "s",
            _quantiles("headrace_message_age_at_receive_seconds"),
            "Now minus SentTimestamp when a worker receives a message: how long messages "
            "wait in the queue. Grows when workers fall behind.",
        ),
        _series(
            "End-to-end latency",
            "s",
            _quantiles("headrace_message_latency_seconds"),
            "SentTimestamp to commit of the message's rows.",
        ),
        _series(
            "Oldest in-flight message",
            "s",
            [
                _q(
                    f"max(headrace_inflight_oldest_message_age_seconds{{{WORKER}}})",
                    "oldest",
                )
            ],
            "Age of the oldest message a worker holds (received, not yet deleted).",
        ),
    ]


def _batches() -> list[cogbuilder.Builder[model.Panel]]:
    return [
        _series(
            "Batch size",
            "short",
            [
                *_quantiles("headrace_batch_rows"),
                _q(
                    f"sum(rate(headrace_batch_rows_sum{{{WORKER}}}[{RATE}]))"
                    f" / sum(rate(headrace_batch_rows_count{{{WORKER}}}[{RATE}]))",
                    "mean",
                    "C",
                ),
            ],
            "Rows per flush (one transaction of bulk inserts, ledger and rejects).",
        ),
        _series(
            "Flush time",
            "s",
            _quantiles("headrace_batch_seconds"),
            "Wall time of one flush, retries included.",
        ),
        _series(
            "In flight",
            "short",
            [
                _q(f"sum(headrace_inflight_messages{{{WORKER}}})", "messages"),
                _q(f"sum(headrace_inflight_rows{{{WORKER}}})", "rows", "B"),
                _q(f"sum(headrace_db_pool_connections_in_use{{{WORKER}}})", "db connections", "C"),
            ],
            "Messages and rows held by all workers, and database connections in use.",
        ),
    ]


def _health() -> list[cogbuilder.Builder[model.Panel]]:
    return [
        _series(
            "Circuit state",
            "short",
            [_q(f"max by (instance) (headrace_circuit_open{{{WORKER}}})", "{{instance}}")],
            "1 while a worker's database circuit breaker is open.",
        ).max(1),
        _series(
            "Database retries by reason",
            "ops",
            [
                _q(
                    f"sum by (reason) (rate(headrace_db_retries_total{{{WORKER}}}[{RATE}]))",
                    "{{reason}}",
                )
            ],
            "Retried database errors: deadlock, lock_wait, too_many_connections, read_only "
            "(failover), disconnect, timeout, other.",
        ),
        _series(
            "Heartbeats",
            "ops",
            [
                _q(f"sum(rate(headrace_heartbeat_calls_total{{{WORKER}}}[{RATE}]))", "calls"),
                _q(
                    f"sum(rate(headrace_heartbeat_failures_total{{{WORKER}}}[{RATE}]))",
                    "failures",
                    "B",
                ),
            ],
            "ChangeMessageVisibility calls that keep in-flight messages invisible. A failure "
            "risks a redelivery (the ledger drops the duplicate).",
        ),
    ]


def _per_million_rows(metric: str) -> prom.Dataquery:
    return _q(
        f"1e6 * sum by (operation) (rate({metric}[{RATE}]))"
        f' / on() group_left() (sum(rate(headrace_rows_total{{{WORKER}, outcome="inserted"}}'
        f"[{RATE}])) > 0)",
        "{{operation}}",
    )


def _cost() -> list[cogbuilder.Builder[model.Panel]]:
    return [
        _series(
            "SQS requests per 1M rows",
            "short",
            [_per_million_rows("headrace_sqs_requests_total")],
            "Producer and worker SQS requests per million inserted rows, by operation.",
            width=12,
        ),
        _series(
            "SQS billed units per 1M rows",
            "short",
            [_per_million_rows("headrace_sqs_billed_units_total")],
            "Billed 64 KiB request units per million inserted rows, by operation: the SQS "
            "cost of the pipeline.",
            width=12,
        ),
    ]


def _producer() -> list[cogbuilder.Builder[model.Panel]]:
    return [
        bargauge.Panel()
        .title("Producer progress")
        .description("Source bytes read / source size, per table (last push of each run).")
        .datasource(PROMETHEUS)
        .with_target(_q("max by (table) (headrace_producer_progress_ratio)", "{{table}}").instant())
        .reduce_options(_last())
        .unit("percentunit")
        .min(0)
        .max(1)
        .span(8)
        .height(8),
        _series(
            "Producer rows/s",
            "rows/s",
            [
                _q(
                    f"sum by (table, outcome) (rate(headrace_producer_rows_total[{RATE}]))",
                    "{{table}} {{outcome}}",
                ),
                _q(
                    f"sum by (table) (rate(headrace_producer_send_retries_total[{RATE}]))",
                    "{{table}} send retries",
                    "B",
                ),
            ],
            "Rows the producer sent in messages or rejected while reading, and SendMessage "
            "retries.",
        ),
        _series(
            "Since the last producer run",
            "s",
            [
                _q(
                    "time() - max by (table) (headrace_producer_last_run_timestamp_seconds)",
                    "{{table}}",
                )
            ],
            "Seconds since each table's producer last pushed the end of a run.",
        ),
    ]


def _database() -> list[cogbuilder.Builder[model.Panel]]:
    return [
        table.Panel()
        .title("Recent runs")
        .description(
            "ingest_runs joined with the ledger: rows sent by the producer, inserted and "
            "rejected by the workers, and whether every message of the run is applied."
        )
        .datasource(MYSQL)
        .with_target(SQL(RECENT_RUNS_SQL))
        .span(24)
        .height(9),
        table.Panel()
        .title("Top reject reasons")
        .description("rejected_rows grouped by table, stage (producer/worker) and reason.")
        .datasource(MYSQL)
        .with_target(SQL(REJECT_REASONS_SQL))
        .span(24)
        .height(9),
    ]


def build() -> dash.Dashboard:
    board = (
        dash.Dashboard("headrace")
        .uid(UID)
        .description("CSV -> SQS -> MySQL: throughput, backlog, latency, health, cost, runs.")
        .tags(["headrace"])
        .refresh("30s")
        .time("now-6h", "now")
        .timezone("browser")
        .tooltip(model.DashboardCursorSync.CROSSHAIR)
    )
    for variable in _variables():
        board.with_variable(variable)
    sections = (
        ("Overview", _overview),
        ("Throughput and backlog", _throughput),
        ("Latency", _latency),
        ("Batches", _batches),
        ("Worker health", _health),
        ("SQS cost", _cost),
        ("Producer", _producer),
        ("Runs and rejects (MySQL)", _database),
    )
    for title, panels in sections:
        board.with_row(dash.Row(title))
        for panel in panels():
            board.with_panel(panel)
    return board


def render() -> str:
    """The dashboard as the committed JSON text (sorted keys, stable panel ids)."""
    data: dict[str, Any] = json.loads(json.dumps(build().build(), cls=JSONEncoder))
    for index, panel in enumerate(data["panels"], start=1):
        panel["id"] = index
    return json.dumps(data, indent=2, sort_keys=True, ensure_ascii=False) + "\n"


def main(argv: list[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else argv
    text = render()
    if args and args[0] == "-":
        sys.stdout.write(text)
        return 0
    out = Path(args[0]) if args else OUTPUT
    out.write_text(text, encoding="utf-8")
    print(f"wrote {out}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
