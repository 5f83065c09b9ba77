"""Print the README's metrics table from the metrics owners (`make docs` refreshes it)."""

from __future__ import annotations

import sys
from pathlib import Path

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
    readme = Path(__file__).resolve().parent.parent / "README.md"
    text = readme.read_text()
    head, _, rest = text.partition(BEGIN)
    _, _, tail = rest.partition(END)
    readme.write_text(f"{head}{BEGIN}\n{table()}\n{END}{tail}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
