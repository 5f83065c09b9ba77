"""The README's Performance figures are the rendering of the results file they name, so a
new `make bench` without `make bench-readme` (or a hand edit of the figures) is caught."""

from __future__ import annotations

import json
import re
from pathlib import Path

from bench.report.paths import measured_paths
from bench.report.readme import BEGIN, END, render

ROOT = Path(__file__).resolve().parents[2]


def test_readme_figures_are_generated_from_the_results_they_name() -> None:
    readme = (ROOT / "README.md").read_text()
    block = readme[readme.index(BEGIN) : readme.index(END) + len(END)]
    named = re.search(r"`(bench/results/bench-\d+\.json)`", block)
    assert named, "the generated block names no results file"
    results = json.loads((ROOT / named.group(1)).read_text())
    assert block == render(results), "README Performance figures are stale: make bench-readme"


def test_every_path_and_target_of_a_run_is_shown() -> None:
    results = json.loads((ROOT / "bench" / "results" / "bench-1000000.json").read_text())
    block = render(results)
    for target in results["targets"]:
        assert f"| {target['label']} |" in block
    for label, run, _ in measured_paths(results):
        assert label in block
        assert f" | {run['rows_per_s']:,.0f} | " in block
