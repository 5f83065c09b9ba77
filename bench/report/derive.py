"""Derived figures: per 1M rows, resources, SQS cost, ratios, and the targets MET or MISSED."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

__all__ = ["MILLION", "TARGETS", "Target", "derive", "path_targets", "per_million", "section"]

MILLION = 1_000_000
RSS_FLAT_TOLERANCE = 1.10  # "flat": the bigger file's peak RSS within 10% of the smaller's


@dataclass(frozen=True)
class Target:
    key: str
    label: str
    goal: str
    check: Callable[[float], bool]


TARGETS = (
    # Sink (2) and end to end (1) against LOAD DATA: per table and protocol, path_targets().
    Target(
        "sink4_vs_load",
        "observations, bulk protocol: sink (4) ÷ LOAD DATA (1)",
        "≥ 1.2x",
        lambda v: v >= 1.2,
    ),
    Target("e2e_vs_seed", "end to end (1 worker) ÷ seed-style", "≥ 20x", lambda v: v >= 20),
    Target(
        "e2e_vs_seed_ceiling",
        "end to end (1 worker) ÷ seed-style consumer's CPU-bound ceiling (conservative)",
        "≥ 20x",
        lambda v: v >= 20,
    ),
    Target("producer_cpu", "producer CPU-s per 1M rows", "≤ 4", lambda v: v <= 4),
    Target("worker_cpu", "worker CPU-s per 1M rows (1 worker)", "≤ 6", lambda v: v <= 6),
    Target("producer_rss", "producer peak RSS, MB", "≤ 150", lambda v: v <= 150),
    Target(
        "producer_rss_growth",
        "producer peak RSS, bigger file ÷ BENCH_ROWS file",
        f"≤ {RSS_FLAT_TOLERANCE:.2f} (flat)",
        lambda v: v <= RSS_FLAT_TOLERANCE,
    ),
    Target("worker_rss", "worker peak RSS, MB (any worker)", "≤ 300", lambda v: v <= 300),
    Target("sqs_units", "SQS billed units per 1M rows (1 worker)", "≤ 5,000", lambda v: v <= 5000),
)


def per_million(value: float, rows: int) -> float:
    return value * MILLION / rows if rows else 0.0


def _sqsper_million(counts: dict[str, dict[str, float]], rows: int) -> dict[str, dict[str, float]]:
    return {
        op: {k: per_million(float(v.get(k, 0)), rows) for k in ("requests", "billed_units")}
        for op, v in counts.items()
    }


def derive(results: dict[str, Any]) -> dict[str, Any]:  # noqa: C901, PLR0915 - a block per section
    """Add ``resources``, ``sqs_cost``, ``ratios`` and ``targets`` to the raw results."""
    rows = int(results["meta"]["rows"])
    load = results.get("load_data", {})
    sink = results.get("sink", {})
    e2e = results.get("e2e", {})
    seed = results.get("seed", {})
    big = results.get("producer_big")

    resources: dict[str, Any] = {}
    for n, run in e2e.items():
        workers = run["workers_usage"]
        resources[f"e2e_{n}"] = {
            "producer_cpu_s": run["producer"]["cpu_s"],
            "producer_cpu_s_per_1m": per_million(run["producer"]["cpu_s"], rows),
            "producer_rss_mb": run["producer"]["max_rss_mb"],
            "worker_cpu_s": sum(w["cpu_s"] for w in workers),
            "worker_cpu_s_per_1m": per_million(sum(w["cpu_s"] for w in workers), rows),
            "worker_rss_mb": max(w["max_rss_mb"] for w in workers),
        }
    if e2e:
        resources["producer_rss_mb"] = max(r["producer"]["max_rss_mb"] for r in e2e.values())
        resources["worker_rss_mb"] = max(
            w["max_rss_mb"] for r in e2e.values() for w in r["workers_usage"]
        )
    if big:
        resources["producer_big_rss_mb"] = big["producer"]["max_rss_mb"]
        resources["producer_big_cpu_s_per_1m"] = per_million(
            big["producer"]["cpu_s"], int(big["rows"])
        )
        resources["producer_big_rows_per_s"] = big["rows_per_s"]
    results["resources"] = resources

    cost: dict[str, Any] = {}
    for n, run in e2e.items():
        per = _sqsper_million(run["sqs"], rows)
        cost[f"e2e_{n}"] = {
            "per_1m": per,
            "billed_units_per_1m": sum(v["billed_units"] for v in per.values()),
            "requests_per_1m": sum(v["requests"] for v in per.values()),
        }
    if seed:
        per = _sqsper_million(seed["sqs"], int(seed["rows"]))
        cost["seed"] = {
            "per_1m": per,
            "billed_units_per_1m": sum(v["billed_units"] for v in per.values()),
            "requests_per_1m": sum(v["requests"] for v in per.values()),
        }
        server = {op: (v["requests"], v["billed_units"]) for op, v in seed["sqs"].items()}
        hooks = {
            op: (int(v["requests"]), int(v["billed_units"])) for op, v in seed["sqs_hooks"].items()
        }
        cost["hooks_match_server"] = server == hooks
        cost["hooks_vs_server"] = {"server": seed["sqs"], "hooks": seed["sqs_hooks"]}
    results["sqs_cost"] = cost

    def rate(section: dict[str, Any], key: str) -> float | None:
        run = section.get(key)
        return float(run["rows_per_s"]) if run else None

    load1 = rate(load, "1")
    ratios: dict[str, float] = {}

    def ratio(name: str, num: float | None, den: float | None) -> None:
        if num is not None and den:
            ratios[name] = num / den

    ratio("e2e_vs_load", rate(e2e, "1"), load1)
    ratio("e2e2_vs_load", rate(e2e, "2"), load1)
    ratio("sink1_vs_load", rate(sink, "1"), load1)
    ratio("sink2_vs_load", rate(sink, "2"), load1)
    ratio("sink4_vs_load", rate(sink, "4"), load1)
    ratio("load2_vs_load", rate(load, "2"), load1)
    ratio("e2e_vs_seed", rate(e2e, "1"), float(seed["rows_per_s"]) if seed else None)
    ratio(
        "e2e_vs_seed_ceiling",
        rate(e2e, "1"),
        float(seed["consumer_cpu_bound_rows_per_s"]) if seed else None,
    )
    _path_ratios(results, ratios)
    results["ratios"] = ratios

    measured: dict[str, float] = dict(ratios)
    latency = results.get("latency")
    if latency and latency.get("p99_s") is not None:
        measured["latency_p99"] = float(latency["p99_s"])
    if "e2e_1" in resources:
        measured["producer_cpu"] = resources["e2e_1"]["producer_cpu_s_per_1m"]
        measured["worker_cpu"] = resources["e2e_1"]["worker_cpu_s_per_1m"]
    if "producer_rss_mb" in resources:
        measured["producer_rss"] = resources["producer_rss_mb"]
        measured["worker_rss"] = resources["worker_rss_mb"]
    if big and "producer_rss_mb" in resources:
        measured["producer_rss"] = max(resources["producer_rss_mb"], big["producer"]["max_rss_mb"])
        measured["producer_rss_growth"] = (
            big["producer"]["max_rss_mb"] / resources["e2e_1"]["producer_rss_mb"]
        )
    if "e2e_1" in cost:
        measured["sqs_units"] = cost["e2e_1"]["billed_units_per_1m"]
    results["targets"] = [
        {
            "key": t.key,
            "label": t.label,
            "goal": t.goal,
            "value": measured.get(t.key),
            "met": None if t.key not in measured else bool(t.check(measured[t.key])),
        }
        for t in (*TARGETS, *path_targets(results))
    ]
    return results


def _tables(results: dict[str, Any]) -> list[tuple[str, str]]:
    """(table, results key prefix) of every table measured; observations first."""
    tables = results["meta"].get("tables") or {"observations": {"key": ""}}
    return [(name, str(t["key"])) for name, t in tables.items()]


def _protocols(results: dict[str, Any]) -> list[str]:
    return list(results["meta"].get("protocols") or ["bulk"])


def section(prefix: str, stage: str, protocol: str = "bulk") -> str:
    """The results key of a stage's runs (see :func:`bench.datasets.section_name`)."""
    name = stage if protocol == "bulk" else f"{stage}_{protocol}"
    return f"{prefix}.{name}" if prefix else name


def _path_ratios(results: dict[str, Any], ratios: dict[str, float]) -> None:
    """``<table>.<path>_vs_load``: every sink and end-to-end run of every table and
    protocol against that table's LOAD DATA with 1 connection."""
    for _, prefix in _tables(results):
        load = results.get(section(prefix, "load_data"), {}).get("1")
        if not load:
            continue
        for protocol in _protocols(results):
            for stage, counts in (("sink", ("1", "2", "4")), ("e2e", ("1", "2"))):
                runs = results.get(section(prefix, stage, protocol), {})
                for n in counts:
                    if isinstance(runs.get(n), dict):
                        key = f"{section(prefix, stage, protocol)}{n}_vs_load"
                        ratios[key] = float(runs[n]["rows_per_s"]) / float(load["rows_per_s"])


def path_targets(results: dict[str, Any]) -> list[Target]:
    """Issue 16's targets, on every table and protocol measured: the sink with 2
    connections ≥ 0.9x and end to end with 1 worker ≥ 0.6x of LOAD DATA (1 connection);
    the 1-row latency p99 ≤ 2 s."""
    out: list[Target] = []
    for table, prefix in _tables(results):
        for protocol in _protocols(results):
            what = f"{table}, {protocol} protocol"
            sink = section(prefix, "sink", protocol)
            e2e = section(prefix, "e2e", protocol)
            out.append(
                Target(f"{sink}2_vs_load", f"{what}: sink (2) ÷ LOAD DATA (1)", "≥ 0.9x", _ge(0.9))
            )
            out.append(
                Target(
                    f"{e2e}1_vs_load", f"{what}: end to end (1) ÷ LOAD DATA (1)", "≥ 0.6x", _ge(0.6)
                )
            )
    out.append(
        Target(
            "latency_p99",
            "1-row file: producer's send → committed, p99 seconds (idle worker)",
            "≤ 2 s",
            lambda v: v <= 2.0,
        )
    )
    return out


def _ge(bound: float) -> Callable[[float], bool]:
    return lambda v: v >= bound
