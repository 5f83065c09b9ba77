"""The measured paths of a run, in display order, for the tables and the chart."""

from __future__ import annotations

from typing import Any

from bench.report.derive import section

__all__ = ["foreign_cpu_s", "measured_paths", "window_cpu_s"]


def window_cpu_s(run: dict[str, Any]) -> dict[str, float]:
    """CPU seconds per process while ``run`` was timed ({} if not measured)."""
    cpu: dict[str, float] = run.get("cpu_s") or run.get("cpu_s_in_window") or {}
    return cpu


def foreign_cpu_s(run: dict[str, Any]) -> float:
    """CPU seconds of processes outside the benchmark while ``run`` was timed."""
    return float(window_cpu_s(run).get("others", 0.0))


def measured_paths(results: dict[str, Any]) -> list[tuple[str, dict[str, Any], str]]:
    """(label, run, note) for every measured path, in display order: each table's LOAD DATA,
    sink and end-to-end runs (bulk protocol, then text), then the seed-style baseline."""
    out: list[tuple[str, dict[str, Any], str]] = []
    tables = results["meta"].get("tables") or {"observations": {"key": ""}}
    protocols = results["meta"].get("protocols") or ["bulk"]
    for table, info in tables.items():
        prefix = str(info["key"])
        shown = f"{table}: " if prefix else ""
        bad = int(info.get("bad_rows", results["meta"]["bad_rows"]))
        out.extend(_load_paths(results.get(section(prefix, "load_data"), {}), shown, bad))
        for protocol in protocols:
            out.extend(_sink_paths(results.get(section(prefix, "sink", protocol), {}), shown))
        for protocol in protocols:
            out.extend(_e2e_paths(results.get(section(prefix, "e2e", protocol), {}), shown))
    seed = results.get("seed")
    if seed:
        note = (
            f"10 rows/message, {seed['handlers']} handlers, pool {seed['pool']}; moto "
            f"{seed['moto_ms_per_request']} CPU-ms/request (moto-bound); consumer CPU-bound "
            f"ceiling {seed['consumer_cpu_bound_rows_per_s']:,.0f} rows/s"
        )
        out.append((f"seed-style ({seed['rows']:,} rows)", seed, note))
    return out


def _load_paths(load: dict[str, Any], shown: str, bad: int) -> list[tuple[str, Any, str]]:
    out = []
    for n, run in load.items():
        note = (
            f"IGNORE: {run['rows_loaded']:,} rows loaded, {run['warnings']:,} warnings "
            f"(the {bad:,} out-of-range values are clipped, not rejected)"
            if n == "1"
            else "the file split in two halves (split not timed)"
        )
        runs = run.get("all_rows_per_s", [])
        if len(runs) > 1:
            note += "; best of " + ", ".join(f"{r:,.0f}" for r in runs)
        out.append((f"{shown}LOAD DATA LOCAL INFILE, {n} conn", run, note))
    return out


def _sink_paths(sink: dict[str, Any], shown: str) -> list[tuple[str, Any, str]]:
    out = []
    for n, run in sink.items():
        if not isinstance(run, dict):
            continue
        note = (
            f"{run['batches']} batches of ~{sink['batch_rows']:,} rows "
            f"({sink['envelope_rows']:,}-row envelopes), {run['statements']} statements"
        )
        protocol = run.get("protocol", "bulk")
        if n in ("update", "skip"):
            note += f"; {run['vs_plain_1']:.2f}x plain inserts with 1 sink"
            label = f"{shown}sink only ({protocol}), 1, --on-duplicate {n} (every key exists)"
            out.append((label, run, note))
            continue
        out.append((f"{shown}sink only ({protocol}), {n} concurrent", run, note))
    return out


def _e2e_paths(e2e: dict[str, Any], shown: str) -> list[tuple[str, Any, str]]:
    out = []
    for n, run in e2e.items():
        b = run["batches"]
        note = (
            f"{run['messages']} messages; producer done at {run['producer_s']:.1f} s; "
            f"{b.get('batches', 0)} flushes of ~{b.get('rows_per_batch', 0):,.0f} rows"
        )
        protocol = run.get("protocol", "bulk")
        out.append((f"{shown}end to end ({protocol}), {n} worker(s)", run, note))
    return out
