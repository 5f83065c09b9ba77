"""The Grafana dashboard: generated from code, committed current, and its SQL runs on MariaDB."""

from __future__ import annotations

import datetime as dt
import json
import re
from typing import Any

import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncEngine

from deploy.grafana import dashboard
from headrace.tables import ingest_ledger, ingest_runs, rejected_rows

# The dashboard's time range in the SQL tests; Grafana's $__timeFilter(col) expands to
# `col BETWEEN FROM_UNIXTIME(a) AND FROM_UNIXTIME(b)`, here literal datetimes (no time zone).
NOW = dt.datetime(2026, 11, 20, 12, 0, 0)
RANGE_FROM = NOW - dt.timedelta(hours=6)
_TIME_FILTER = re.compile(r"\$__timeFilter\(([\w.]+)\)")


def _concrete(sql: str) -> str:
    """The panel's SQL with Grafana's macros replaced by the test's time range."""
    out = _TIME_FILTER.sub(rf"\1 BETWEEN '{RANGE_FROM:%Y-%m-%d %H:%M:%S}' AND '{NOW}'", sql)
    assert "$__" not in out, f"unhandled Grafana macro in {out}"
    return out


def _committed() -> dict[str, Any]:
    data: dict[str, Any] = json.loads(dashboard.OUTPUT.read_text(encoding="utf-8"))
    return data


def _panels(data: dict[str, Any]) -> list[dict[str, Any]]:
    return [p for p in data["panels"] if p["type"] != "row"]


def test_committed_json_is_what_the_generator_writes() -> None:
    assert dashboard.OUTPUT.read_text(encoding="utf-8") == dashboard.render(), (
        "deploy/grafana/headrace.json is stale: run `make dashboard` and commit the result"
    )


def test_dashboard_targets_a_current_grafana_and_uses_datasource_variables() -> None:
    data = _committed()
    assert data["schemaVersion"] >= 41
    variables = {v["name"]: v for v in data["templating"]["list"]}
    assert variables["datasource"]["type"] == variables["mysql"]["type"] == "datasource"
    assert variables["datasource"]["query"] == "prometheus"
    assert variables["mysql"]["query"] == "mysql"
    for panel in _panels(data):
        uid = panel["datasource"]["uid"]
        assert uid in {"${datasource}", "${mysql}"}, panel["title"]
        assert panel["targets"], panel["title"]
    ids = [p["id"] for p in data["panels"]]
    assert len(ids) == len(set(ids))


def test_dashboard_has_the_promised_panels() -> None:
    titles = {p["title"] for p in _panels(_committed())}
    assert {
        "Rows/s inserted and rejected",
        "Backlog",
        "Message age at receive",
        "End-to-end latency",
        "Estimated time to drain",
        "Batch size",
        "Flush time",
        "Workers up",
        "Circuit state",
        "Database retries by reason",
        "Heartbeats",
        "SQS requests per 1M rows",
        "SQS billed units per 1M rows",
        "Producer progress",
        "Producer rows/s",
        "Recent runs",
        "Top reject reasons",
    } <= titles


def test_mysql_panels_are_the_generator_sql() -> None:
    sql = {
        p["title"]: p["targets"][0]["rawSql"]
        for p in _panels(_committed())
        if p["datasource"]["uid"] == "${mysql}"
    }
    assert sql == {
        "Recent runs": dashboard.RECENT_RUNS_SQL,
        "Top reject reasons": dashboard.REJECT_REASONS_SQL,
    }


def _run(run_id: str, started: dt.datetime, **values: Any) -> dict[str, Any]:
    row = {
        "run_id": run_id,
        "source": f"s3://bucket/{run_id}.csv",
        "source_version": "v1",
        "source_bytes": 1000,
        "table_name": "observations",
        "status": "sent",
        "messages_sent": 0,
        "total_messages": None,
        "rows_read": 0,
        "rows_rejected": 0,
        "started_at": started,
        "updated_at": started,
        "finished_at": None,
    }
    row.update(values)
    return row


def _ledger(run_id: str, seq: int, inserted: int, rejected: int) -> dict[str, Any]:
    return {
        "run_id": run_id,
        "seq": seq,
        "table_name": "observations",
        "rows_inserted": inserted,
        "rows_rejected": rejected,
    }


async def _query(engine: AsyncEngine, sql: str) -> list[dict[str, Any]]:
    async with engine.connect() as conn:
        result = await conn.execute(sa.text(_concrete(sql)))
        return [dict(row._mapping) for row in result]


async def test_recent_runs_sql_on_mariadb(engine: AsyncEngine) -> None:
    hour = dt.timedelta(hours=1)
    async with engine.begin() as conn:
        await conn.execute(
            ingest_runs.insert(),
            [
                # Finished sending, every message applied: complete.
                _run(
                    "done",
                    NOW - 3 * hour,
                    messages_sent=2,
                    total_messages=2,
                    rows_read=10,
                    rows_rejected=2,
                    finished_at=NOW - 2 * hour,
                ),
                # Finished sending, one message still in the queue.
                _run("behind", NOW - 2 * hour, messages_sent=3, total_messages=3, rows_read=30),
                # Still sending, no message applied yet.
                _run("sending", NOW - hour, status="sending", messages_sent=1, rows_read=7),
                # Outside the dashboard's time range.
                _run("old", NOW - 48 * hour, messages_sent=1, total_messages=1, rows_read=1),
            ],
        )
        await conn.execute(
            ingest_ledger.insert(),
            [
                _ledger("done", 0, 5, 1),
                _ledger("done", 1, 3, 1),
                _ledger("behind", 0, 10, 0),
                _ledger("behind", 1, 9, 1),
                _ledger("old", 0, 1, 0),
            ],
        )

    rows = await _query(engine, dashboard.RECENT_RUNS_SQL)

    got = [
        (
            r["run_id"],
            r["status"],
            int(r["rows_sent"]),
            int(r["rows_inserted"]),
            int(r["rows_rejected"]),
            int(r["messages_applied"]),
            r["complete"],
        )
        for r in rows
    ]
    assert got == [
        ("sending", "sending", 7, 0, 0, 0, "no"),
        ("behind", "sent", 30, 19, 1, 2, "no"),
        ("done", "sent", 8, 8, 2, 2, "yes"),
    ]


async def test_top_reject_reasons_sql_on_mariadb(engine: AsyncEngine) -> None:
    def reject(line: int, reason: str, at: dt.datetime, stage: str = "producer") -> dict[str, Any]:
        return {
            "run_id": "r1",
            "source": "s3://bucket/r1.csv",
            "line": line,
            "table_name": "observations",
            "stage": stage,
            "reason": reason,
            "raw": f"raw line {line}",
            "created_at": at,
        }

    bad_price = "column 4 'price': 'abc' is not a decimal number"
    refused = "database refused the row: (1062, 'Duplicate entry')"
    minute = dt.timedelta(minutes=1)
    async with engine.begin() as conn:
        await conn.execute(
            rejected_rows.insert(),
            [
                reject(1, bad_price, NOW - 30 * minute),
                reject(2, bad_price, NOW - 20 * minute),
                reject(3, bad_price, NOW - 10 * minute),
                reject(4, refused, NOW - 5 * minute, stage="worker"),
                reject(5, "expected 7 fields, found 6", NOW - 40 * minute),
                reject(6, "expected 7 fields, found 6", NOW - 35 * minute),
                # Outside the time range: not counted.
                reject(7, refused, NOW - dt.timedelta(days=2), stage="worker"),
                reject(8, refused, NOW - dt.timedelta(days=2), stage="worker"),
                reject(9, refused, NOW - dt.timedelta(days=2), stage="worker"),
            ],
        )

    rows = await _query(engine, dashboard.REJECT_REASONS_SQL)

    got = [(r["stage"], r["reason"], int(r["rejected"]), r["last_seen"]) for r in rows]
    assert got == [
        ("producer", bad_price, 3, NOW - 10 * minute),
        ("producer", "expected 7 fields, found 6", 2, NOW - 35 * minute),
        ("worker", refused, 1, NOW - 5 * minute),
    ]
