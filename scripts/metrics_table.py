"""Print the README's metrics table from the metrics owners (`make docs` refreshes it)."""

from __future__ import annotations

import sys

from headrace.metrics import Metrics, ProducerMetrics, WorkerMetrics

BEGIN = "<!-- metrics-table:begin -->"
END = "<!-- metrics-table:end -->"


def table() -> str:
    lines = ["| metric | type | labels | process | meaning |", "| --- | --- | --- | --- | --- |"]
    shared = {info.name for info in Metrics().catalog()}
    seen: set[str] = set()
    for owner in (WorkerMetrics(), ProducerMetrics()):
        for info in owner.catalog():
            if info.name in seen:
                continue
            seen.add(info.name)
            process = "both" if info.name in shared else owner.role
            labels = ", ".join(f"`{label}`" for label in info.labels) or "—"
            text = info.help.replace("|", "\\|")
            lines.append(f"| `{info.name}` | {info.type} | {labels} | {process} | {text} |")
    return "\n".join(lines)


def main() -> int:
    from settings_table import rewrite_readme  # scripts/ is on the path when run as a script

    rewrite_readme(BEGIN, END, table())
    return 0


if __name__ == "__main__":
    sys.exit(main())
