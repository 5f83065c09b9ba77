"""Derived figures (per 1M rows, ratios, targets), the terminal tables, JSON and the chart."""

from __future__ import annotations

import json
import math
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.table import Table

__all__ = ["TARGETS", "derive", "finish", "write_chart"]

MILLION = 1_000_000
SQS_OPS = (
    "SendMessageBatch",
    "ReceiveMessage",
    "DeleteMessageBatch",
    "ChangeMessageVisibilityBatch",
    "GetQueueAttributes",
)
DISTURBED_SHARE = 0.10  # foreign CPU above this share of the machine marks a path disturbed
RSS_FLAT_TOLERANCE = 1.10  # "flat": the bigger file's peak RSS within 10% of the smaller's


@dataclass(frozen=True)
class Target:
    key: str
    label: str
    goal: str
    check: Callable[[float], bool]


TARGETS = (
    Target(
        "e2e_vs_load", "end to end (1 worker) ÷ LOAD DATA (1 conn)", "≥ 0.6x", lambda v: v >= 0.6
    ),
    Target("sink2_vs_load", "sink only (2) ÷ LOAD DATA (1 conn)", "≥ 0.9x", lambda v: v >= 0.9),
    Target("sink4_vs_load", "sink only (4) ÷ LOAD DATA (1 conn)", "≥ 1.2x", lambda v: v >= 1.2),
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


def _per_million(value: float, rows: int) -> float:
    return value * MILLION / rows if rows else 0.0


def _sqs_per_million(counts: dict[str, dict[str, float]], rows: int) -> dict[str, dict[str, float]]:
    return {
        op: {k: _per_million(float(v.get(k, 0)), rows) for k in ("requests", "billed_units")}
        for op, v in counts.items()
    }


def derive(results: dict[str, Any]) -> dict[str, Any]:
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
            "producer_cpu_s_per_1m": _per_million(run["producer"]["cpu_s"], rows),
            "producer_rss_mb": run["producer"]["max_rss_mb"],
            "worker_cpu_s": sum(w["cpu_s"] for w in workers),
            "worker_cpu_s_per_1m": _per_million(sum(w["cpu_s"] for w in workers), rows),
            "worker_rss_mb": max(w["max_rss_mb"] for w in workers),
        }
    if e2e:
        resources["producer_rss_mb"] = max(r["producer"]["max_rss_mb"] for r in e2e.values())
        resources["worker_rss_mb"] = max(
            w["max_rss_mb"] for r in e2e.values() for w in r["workers_usage"]
        )
    if big:
        resources["producer_big_rss_mb"] = big["producer"]["max_rss_mb"]
        resources["producer_big_cpu_s_per_1m"] = _per_million(
            big["producer"]["cpu_s"], int(big["rows"])
        )
        resources["producer_big_rows_per_s"] = big["rows_per_s"]
    results["resources"] = resources

    cost: dict[str, Any] = {}
    for n, run in e2e.items():
        per = _sqs_per_million(run["sqs"], rows)
        cost[f"e2e_{n}"] = {
            "per_1m": per,
            "billed_units_per_1m": sum(v["billed_units"] for v in per.values()),
            "requests_per_1m": sum(v["requests"] for v in per.values()),
        }
    if seed:
        per = _sqs_per_million(seed["sqs"], int(seed["rows"]))
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
    results["ratios"] = ratios

    measured: dict[str, float] = dict(ratios)
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
        for t in TARGETS
    ]
    return results


# --- output -----------------------------------------------------------------------------------


def _n(v: float, digits: int = 0) -> str:
    return f"{v:,.{digits}f}"


def _foreign(run: dict[str, Any]) -> float:
    cpu = run.get("cpu_s") or run.get("cpu_s_in_window") or {}
    return float(cpu.get("others", 0.0))


def _paths(results: dict[str, Any]) -> list[tuple[str, dict[str, Any], str]]:
    """(label, run, note) for every measured path, in display order."""
    out: list[tuple[str, dict[str, Any], str]] = []
    meta = results["meta"]
    for n, run in results.get("load_data", {}).items():
        note = (
            f"IGNORE: {run['rows_loaded']:,} rows loaded, {run['warnings']:,} warnings "
            f"(the {meta['bad_rows']:,} out-of-range quantities are clipped to 32767, not "
            "rejected)"
            if n == "1"
            else "the file split in two halves (split not timed)"
        )
        runs = run.get("all_rows_per_s", [])
        if len(runs) > 1:
            note += "; best of " + ", ".join(f"{r:,.0f}" for r in runs)
        out.append((f"LOAD DATA LOCAL INFILE, {n} conn", run, note))
    sink = results.get("sink", {})
    for n, run in sink.items():
        if not isinstance(run, dict):
            continue
        note = (
            f"{run['batches']} batches of ~{sink['batch_rows']:,} rows "
            f"({sink['envelope_rows']:,}-row envelopes), {run['statements']} statements"
        )
        out.append((f"sink only, {n} concurrent", run, note))
    for n, run in results.get("e2e", {}).items():
        b = run["batches"]
        note = (
            f"{run['messages']} messages; producer done at {run['producer_s']:.1f} s; "
            f"{b.get('batches', 0)} flushes of ~{b.get('rows_per_batch', 0):,.0f} rows"
        )
        out.append((f"end to end, {n} worker(s)", run, note))
    seed = results.get("seed")
    if seed:
        note = (
            f"10 rows/message, {seed['handlers']} handlers, pool {seed['pool']}; moto "
            f"{seed['moto_ms_per_request']} CPU-ms/request (moto-bound); consumer CPU-bound "
            f"ceiling {seed['consumer_cpu_bound_rows_per_s']:,.0f} rows/s"
        )
        out.append((f"seed-style ({seed['rows']:,} rows)", seed, note))
    return out


def print_tables(results: dict[str, Any], console: Console) -> None:
    meta = results["meta"]
    load1 = results.get("load_data", {}).get("1", {}).get("rows_per_s")
    t = Table(
        title=f"headrace bench: {meta['rows']:,} rows, {meta['cpus']} CPUs, {meta['mariadb']}",
        title_justify="left",
    )
    for col, justify in (
        ("path", "left"),
        ("rows", "right"),
        ("seconds", "right"),
        ("rows/s", "right"),
        ("x LOAD 1", "right"),
        ("foreign CPU-s", "right"),
        ("note", "left"),
    ):
        t.add_column(col, justify=justify)  # type: ignore[arg-type]
    for label, run, note in _paths(results):
        rel = f"{run['rows_per_s'] / load1:.2f}" if load1 else "-"
        cpu = run.get("cpu_s") or run.get("cpu_s_in_window") or {}
        foreign = f"{cpu['others']:.1f}" if "others" in cpu else "-"
        t.add_row(
            label,
            _n(run["rows"]),
            f"{run['seconds']:.2f}",
            _n(run["rows_per_s"]),
            rel,
            foreign,
            note,
        )
    console.print(t)
    console.print(
        "foreign CPU-s: CPU used by processes outside the benchmark while the path was timed "
        "(non-zero on a shared machine: those figures are disturbed)",
        highlight=False,
    )
    cores = float(meta.get("cpus") or 2)
    disturbed = [
        f"{label} ({extra:.1f} foreign CPU-s in {run['seconds']:.1f} s)"
        for label, run, _ in _paths(results)
        if (extra := _foreign(run)) > DISTURBED_SHARE * cores * float(run["seconds"])
    ]
    if disturbed:
        console.print(
            f"[yellow]disturbed (foreign CPU over {DISTURBED_SHARE:.0%} of the machine):[/yellow] "
            + "; ".join(disturbed),
            highlight=False,
        )

    e2e = results.get("e2e", {})
    if e2e:
        r = Table(title="processes (wait4: user+sys CPU, peak RSS)", title_justify="left")
        for col in ("process", "CPU-s", "CPU-s per 1M rows", "peak RSS MB", "exit"):
            r.add_column(col, justify="left" if col == "process" else "right")
        rows = int(meta["rows"])
        for n, run in e2e.items():
            p = run["producer"]
            r.add_row(
                f"producer (e2e, {n} worker(s))",
                f"{p['cpu_s']:.2f}",
                f"{_per_million(p['cpu_s'], rows):.2f}",
                f"{p['max_rss_mb']:.0f}",
                str(p["exit_code"]),
            )
            for i, w in enumerate(run["workers_usage"]):
                r.add_row(
                    f"worker {i + 1}/{n}",
                    f"{w['cpu_s']:.2f}",
                    f"{_per_million(w['cpu_s'], rows):.2f}",
                    f"{w['max_rss_mb']:.0f}",
                    str(w["exit_code"]),
                )
        big = results.get("producer_big")
        if big:
            p = big["producer"]
            r.add_row(
                f"producer only, {big['rows']:,} rows ({big['multiplier']}x), "
                f"{big['rows_per_s']:,.0f} rows/s",
                f"{p['cpu_s']:.2f}",
                f"{_per_million(p['cpu_s'], int(big['rows'])):.2f}",
                f"{p['max_rss_mb']:.0f}",
                str(p["exit_code"]),
            )
        seed = results.get("seed")
        if seed:
            for role in ("sender", "consumer"):
                u = seed[role]
                r.add_row(
                    f"seed-style {role}",
                    f"{u['cpu_s']:.2f}",
                    f"{_per_million(u['cpu_s'], int(seed['rows'])):.2f}",
                    f"{u['max_rss_mb']:.0f}",
                    str(u["exit_code"]),
                )
        console.print(r)

        w = Table(
            title="CPU-s used while each end-to-end run was timed (others: processes outside the "
            "benchmark; 2 cores = 2 CPU-s per s)",
            title_justify="left",
        )
        w.add_column("run")
        names = [
            "producer",
            "workers",
            "mariadbd",
            "moto",
            "bench",
            "others",
            "total",
            "cores busy",
        ]
        for col in names:
            w.add_column(col, justify="right")
        for n, run in e2e.items():
            cpu = run["cpu_s_in_window"]
            workers = sum(v for k, v in cpu.items() if k.startswith("worker"))
            producer = sum(v for k, v in cpu.items() if k.startswith("producer"))
            others = cpu.get("others", 0.0)
            total = producer + workers + cpu["mariadbd"] + cpu["moto"] + cpu["bench"] + others
            w.add_row(
                f"{n} worker(s), {run['seconds']:.1f} s",
                f"{producer:.1f}",
                f"{workers:.1f}",
                f"{cpu['mariadbd']:.1f}",
                f"{cpu['moto']:.1f}",
                f"{cpu['bench']:.1f}",
                f"{others:.1f}",
                f"{total:.1f}",
                f"{total / run['seconds']:.2f}",
            )
        console.print(w)

    cost = results.get("sqs_cost", {})
    runs = [k for k in cost if k.startswith("e2e_") or k == "seed"]
    if runs:
        c = Table(
            title="SQS per 1M rows: requests / billed 64 KiB units (counted by the moto server)",
            title_justify="left",
        )
        c.add_column("API")
        for k in runs:
            c.add_column(k.replace("e2e_", "e2e ") + (" worker(s)" if k != "seed" else "-style"))
        ops = list(SQS_OPS)
        for k in runs:
            ops += [op for op in cost[k]["per_1m"] if op not in ops]
        for op in ops:
            cells = []
            for k in runs:
                v = cost[k]["per_1m"].get(op)
                cells.append(f"{_n(v['requests'])} / {_n(v['billed_units'])}" if v else "-")
            c.add_row(op, *cells)
        c.add_row(
            "total",
            *(
                f"{_n(cost[k]['requests_per_1m'])} / {_n(cost[k]['billed_units_per_1m'])}"
                for k in runs
            ),
        )
        console.print(c)
        if "hooks_match_server" in cost:
            verdict = "match" if cost["hooks_match_server"] else "DIFFER"
            console.print(
                f"headrace.sqs in-process counters vs moto server counts (seed-style run): "
                f"{verdict}"
            )

    g = Table(title="targets", title_justify="left")
    for col in ("check", "measured", "target", ""):
        g.add_column(col, justify="right" if col in ("measured", "target") else "left")
    for tgt in results.get("targets", []):
        value = tgt["value"]
        if value is None:
            g.add_row(tgt["label"], "not measured", tgt["goal"], "-")
            continue
        shown = f"{value:,.2f}" if value < 100 else f"{value:,.0f}"
        mark = "[green]MET[/green]" if tgt["met"] else "[red]MISSED[/red]"
        g.add_row(tgt["label"], shown, tgt["goal"], mark)
    console.print(g)
    for n, run in e2e.items():
        console.print(f"end to end, {n} worker(s): {run['verify']}", highlight=False)
    if "seed" in results:
        console.print(f"seed-style: {results['seed']['verify']}", highlight=False)
    console.print(
        f"bench wall time: {meta.get('wall_s', 0):.0f} s (generation, set-up and verification "
        "included)"
    )


def write_chart(results: dict[str, Any], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    paths = _paths(results)
    labels = [p[0] for p in paths]
    values = [float(p[1]["rows_per_s"]) for p in paths]
    colors = []
    for label in labels:
        if label.startswith("LOAD"):
            colors.append("#7f7f7f")
        elif label.startswith("sink"):
            colors.append("#1f77b4")
        elif label.startswith("end"):
            colors.append("#2ca02c")
        else:
            colors.append("#d62728")
    fig, ax = plt.subplots(figsize=(10, 0.55 * len(labels) + 1.6))
    y = list(range(len(labels)))[::-1]
    ax.barh(y, values, color=colors)
    ax.set_yticks(y, labels)
    top = max(values) if values else 1.0
    for yi, v in zip(y, values, strict=True):
        ax.text(v + top * 0.01, yi, f"{v:,.0f}", va="center", fontsize=9)
    ax.set_xlim(0, top * 1.18 if math.isfinite(top) else 1)
    ax.set_xlabel("source rows per second (wall time)")
    meta = results["meta"]
    ax.set_title(f"headrace bench: {meta['rows']:,} rows on {meta['cpus']} CPUs")
    ax.grid(axis="x", alpha=0.3)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)


def finish(results: dict[str, Any], results_dir: Path, console: Console) -> None:
    derive(results)
    print_tables(results, console)
    results_dir.mkdir(parents=True, exist_ok=True)
    rows = results["meta"]["rows"]
    json_path = results_dir / f"bench-{rows}.json"
    png_path = results_dir / f"bench-{rows}.png"
    tmp = json_path.with_suffix(".json.tmp")
    tmp.write_text(json.dumps(results, indent=2, sort_keys=False) + "\n")
    tmp.replace(json_path)
    write_chart(results, png_path)
    results["files"] = {"json": str(json_path), "png": str(png_path)}
    console.print(f"results: {json_path}, {png_path}")
