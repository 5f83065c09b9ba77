"""The terminal tables: paths, processes, CPU in the end-to-end window, SQS cost, targets."""

from __future__ import annotations

from typing import Any

from rich.console import Console
from rich.table import Table

from bench.report.derive import per_million
from bench.report.paths import foreign_cpu_s, measured_paths, window_cpu_s

__all__ = ["print_tables"]

SQS_OPS = (
    "SendMessageBatch",
    "ReceiveMessage",
    "DeleteMessageBatch",
    "ChangeMessageVisibilityBatch",
    "GetQueueAttributes",
)
DISTURBED_SHARE = 0.10  # foreign CPU above this share of the machine marks a path disturbed


def _n(v: float, digits: int = 0) -> str:
    return f"{v:,.{digits}f}"


def print_tables(results: dict[str, Any], console: Console) -> None:
    """Everything a run prints at the end, in this order."""
    _print_paths(results, console)
    if results.get("e2e"):
        _print_processes(results, console)
        _print_e2e_cpu(results, console)
    _print_sqs(results, console)
    _print_targets(results, console)
    for n, run in results.get("e2e", {}).items():
        console.print(f"end to end, {n} worker(s): {run['verify']}", highlight=False)
    if "seed" in results:
        console.print(f"seed-style: {results['seed']['verify']}", highlight=False)
    console.print(
        f"bench wall time: {results['meta'].get('wall_s', 0):.0f} s (generation, set-up and "
        "verification included)"
    )


def _print_paths(results: dict[str, Any], console: Console) -> None:
    """rows/s of every path, against LOAD DATA with 1 connection, and which were disturbed."""
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
    for label, run, note in measured_paths(results):
        rel = f"{run['rows_per_s'] / load1:.2f}" if load1 else "-"
        cpu = window_cpu_s(run)
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
        for label, run, _ in measured_paths(results)
        if (extra := foreign_cpu_s(run)) > DISTURBED_SHARE * cores * float(run["seconds"])
    ]
    if disturbed:
        console.print(
            f"[yellow]disturbed (foreign CPU over {DISTURBED_SHARE:.0%} of the machine):[/yellow] "
            + "; ".join(disturbed),
            highlight=False,
        )


def _usage_row(label: str, usage: dict[str, Any], rows: int) -> tuple[str, ...]:
    """A process's cells: CPU-s, CPU-s per 1M of ``rows``, peak RSS, exit code."""
    return (
        label,
        f"{usage['cpu_s']:.2f}",
        f"{per_million(usage['cpu_s'], rows):.2f}",
        f"{usage['max_rss_mb']:.0f}",
        str(usage["exit_code"]),
    )


def _print_processes(results: dict[str, Any], console: Console) -> None:
    """CPU and peak RSS of every producer, worker and seed-style process."""
    r = Table(title="processes (wait4: user+sys CPU, peak RSS)", title_justify="left")
    for col in ("process", "CPU-s", "CPU-s per 1M rows", "peak RSS MB", "exit"):
        r.add_column(col, justify="left" if col == "process" else "right")
    rows = int(results["meta"]["rows"])
    for n, run in results["e2e"].items():
        r.add_row(*_usage_row(f"producer (e2e, {n} worker(s))", run["producer"], rows))
        for i, w in enumerate(run["workers_usage"]):
            r.add_row(*_usage_row(f"worker {i + 1}/{n}", w, rows))
    big = results.get("producer_big")
    if big:
        label = (
            f"producer only, {big['rows']:,} rows ({big['multiplier']}x), "
            f"{big['rows_per_s']:,.0f} rows/s"
        )
        r.add_row(*_usage_row(label, big["producer"], int(big["rows"])))
    for run in results.get("producer_options", {}).values():
        label = f"producer only, {run['label']} ({run['cpu_vs_default']:.2f}x default CPU)"
        r.add_row(*_usage_row(label, run["producer"], int(run["rows"])))
    seed = results.get("seed")
    if seed:
        for role in ("sender", "consumer"):
            r.add_row(*_usage_row(f"seed-style {role}", seed[role], int(seed["rows"])))
    console.print(r)


def _print_e2e_cpu(results: dict[str, Any], console: Console) -> None:
    """Where the CPU went while each end-to-end run was timed."""
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
    for n, run in results["e2e"].items():
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


def _print_sqs(results: dict[str, Any], console: Console) -> None:
    """SQS requests and billed units per 1M rows, by API; the in-process counters' verdict."""
    cost = results.get("sqs_cost", {})
    runs = [k for k in cost if k.startswith("e2e_") or k == "seed"]
    if not runs:
        return
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
        *(f"{_n(cost[k]['requests_per_1m'])} / {_n(cost[k]['billed_units_per_1m'])}" for k in runs),
    )
    console.print(c)
    if "hooks_match_server" in cost:
        verdict = "match" if cost["hooks_match_server"] else "DIFFER"
        console.print(
            f"headrace.sqs in-process counters vs moto server counts (seed-style run): {verdict}"
        )


def _print_targets(results: dict[str, Any], console: Console) -> None:
    """Every target with its measured value: MET, MISSED or not measured."""
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
