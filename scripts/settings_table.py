"""Print the README's configuration table from the Settings model (`make docs` refreshes it)."""

from __future__ import annotations

import sys
from collections.abc import Iterator
from pathlib import Path

from pydantic import BaseModel

from headrace.settings import Settings

BEGIN = "<!-- settings-table:begin -->"
END = "<!-- settings-table:end -->"


def _rows(model: type[BaseModel], prefix: str) -> Iterator[str]:
    for name, field in model.model_fields.items():
        ann = field.annotation
        if isinstance(ann, type) and issubclass(ann, BaseModel):
            yield from _rows(ann, f"{prefix}{name.upper()}__")
            continue
        default = field.default_factory() if field.default_factory is not None else field.default  # type: ignore[call-arg]
        shown = "—" if default is None else f"`{default}`"
        yield f"| `{prefix}{name.upper()}` | {shown} | {field.description or ''} |"


def table() -> str:
    lines = [
        "| variable | default | meaning |",
        "| --- | --- | --- |",
        *_rows(Settings, "HEADRACE_"),
    ]
    return "\n".join(lines)


def rewrite_readme(begin: str, end: str, text: str) -> None:
    """Put ``text`` between the ``begin`` and ``end`` markers of the README (also for
    scripts/metrics_table.py)."""
    readme = Path(__file__).resolve().parent.parent / "README.md"
    head, _, rest = readme.read_text().partition(begin)
    _, _, tail = rest.partition(end)
    readme.write_text(f"{head}{begin}\n{text}\n{end}{tail}")


def main() -> int:
    rewrite_readme(BEGIN, END, table())
    return 0


if __name__ == "__main__":
    sys.exit(main())
