"""The benchmark harness, end to end on tiny inputs, so that it cannot rot.

Runs ``python -m bench`` as `make bench` does (its own mariadbd and moto server process), with
3,000 rows a table (both tables, both insert paths), a 300-row seed-style baseline (10
handlers instead of 100), 3 latency runs, no bigger-file producer run and a short worker
flush age and long poll, and checks that every section of the results JSON holds positive
numbers, that each run used the path it names and that verification passed.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

ROOT = Path(__file__).resolve().parents[2]

pytestmark = [pytest.mark.slow, pytest.mark.timeout(600)]


def _positive(value: Any) -> bool:
    return isinstance(value, int | float) and value > 0


def _check_duplicate_modes(sink: dict[str, Any], bad: int) -> None:
    """--on-duplicate over the rows just loaded: every row updated, or every row skipped."""
    update, skip = sink["update"], sink["skip"]
    assert (update["inserted"], update["skipped"]) == (3000 - bad, 0)
    assert (skip["inserted"], skip["skipped"]) == (0, 3000 - bad)
    assert update["rejected"] == skip["rejected"] == bad
    assert _positive(update["vs_plain_1"])
    assert _positive(skip["vs_plain_1"])


def _check_seed(seed: dict[str, Any]) -> None:
    assert _positive(seed["rows_per_s"])
    assert seed["rows_in_table"] == 300
    assert seed["verify_ok"]


def _check_producer_options(runs: dict[str, Any], bad: int) -> None:
    """The same rows written three ways, each read with its options: the same rows sent."""
    assert set(runs) == {"default", "r_style", "european"}
    for run in runs.values():
        assert (run["rows_sent"], run["rows_rejected"]) == (3000 - bad, bad)
        assert _positive(run["producer"]["cpu_s"])
        assert _positive(run["cpu_vs_default"])


def test_bench_runs_end_to_end_on_tiny_inputs(tmp_path: Path) -> None:
    results_dir = tmp_path / "results"
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "bench",
            "--rows",
            "3000",
            "--seed-rows",
            "300",
            "--skip-rss",
            "--results-dir",
            str(results_dir),
            "--work-dir",
            str(tmp_path / "work"),
            "--seed-handlers",
            "10",
            "--seed-pool",
            "5",
            "--latency-runs",
            "3",
        ],
        cwd=ROOT,
        # Short flush age and long poll: a SIGTERM'd worker lets its long poll finish.
        env={
            **os.environ,
            "HEADRACE_WORKER__FLUSH_AGE_S": "0.2",
            "HEADRACE_WORKER__WAIT_TIME_S": "1",
        },
        capture_output=True,
        text=True,
        timeout=540,
        check=False,
    )
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-5000:]
    assert (results_dir / "bench-3000.png").stat().st_size > 0
    results = json.loads((results_dir / "bench-3000.json").read_text())

    for n in ("1", "2"):
        run = results["load_data"][n]
        assert _positive(run["rows_per_s"])
        assert run["rows_loaded"] == 3000
    tables = results["meta"]["tables"]
    assert set(tables) == {"observations", "trips"}
    for prefix in ("", "trips."):
        bad = tables["trips" if prefix else "observations"]["bad_rows"]
        assert results[f"{prefix}load_data"]["1"]["rows_loaded"] == 3000
        for protocol in ("bulk", "text"):
            suffix = "" if protocol == "bulk" else "_text"
            for n in ("1", "2", "4"):
                run = results[f"{prefix}sink{suffix}"][n]
                assert run["protocol"] == protocol
                assert _positive(run["rows_per_s"])
                assert run["inserted"] == 3000 - bad
            if not prefix:
                _check_duplicate_modes(results[f"sink{suffix}"], bad)
            for n in ("1", "2"):
                run = results[f"{prefix}e2e{suffix}"][n]
                assert run["protocol"] == protocol
                assert run["verify_ok"], run["verify"]
    _check_producer_options(results["producer_options"], tables["observations"]["bad_rows"])
    latency = results["latency"]
    assert latency["runs"] == 3
    assert 0 < latency["p50_s"] <= latency["p99_s"] <= latency["max_s"]
    for n in ("1", "2"):
        run = results["e2e"][n]
        assert _positive(run["rows_per_s"])
        assert run["verify_ok"], run["verify"]
        assert run["verify"].startswith("verify OK")
        assert all(
            _positive(u["cpu_s"]) and _positive(u["max_rss_mb"]) for u in run["workers_usage"]
        )
        assert _positive(run["producer"]["cpu_s"])
        assert _positive(run["producer"]["max_rss_mb"])
        assert {"SendMessageBatch", "ReceiveMessage", "DeleteMessageBatch"} <= set(run["sqs"])
    _check_seed(results["seed"])

    res = results["resources"]
    for key in ("producer_cpu_s_per_1m", "worker_cpu_s_per_1m", "producer_rss_mb", "worker_rss_mb"):
        assert _positive(res["e2e_1"][key]), key
    cost = results["sqs_cost"]
    assert _positive(cost["e2e_1"]["billed_units_per_1m"])
    assert _positive(cost["seed"]["billed_units_per_1m"])
    # The in-process counters of headrace.sqs agree with what the moto server received.
    assert cost["hooks_match_server"], cost["hooks_vs_server"]
    for key in ("e2e_vs_load", "sink2_vs_load", "sink4_vs_load", "e2e_vs_seed"):
        assert _positive(results["ratios"][key]), key
    targets = {t["key"]: t for t in results["targets"]}
    assert targets["producer_rss_growth"]["value"] is None  # skipped with --skip-rss
    assert all(t["met"] in (True, False) for k, t in targets.items() if k != "producer_rss_growth")
    for key in ("trips.sink_text2_vs_load", "trips.e2e_text1_vs_load", "latency_p99"):
        assert targets[key]["met"] in (True, False), key
    assert "verify OK" in proc.stdout
    assert "targets" in proc.stdout
