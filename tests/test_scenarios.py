"""Every fault scenario of the reliability guide has a test named after it.

The guide lists 34 fault scenarios and 10 hostile-message ones (35-44); each has at least
one ``test_scenario_NN_…`` function under
``tests/`` (the README's Guarantees table names them). Renaming or deleting one fails here.
"""

from __future__ import annotations

import re
from pathlib import Path

SCENARIOS = range(1, 45)
_NAME = re.compile(r"^(?:async )?def (test_scenario_(\d{2})_\w+)\(", re.MULTILINE)


def _scenario_tests() -> dict[int, list[str]]:
    found: dict[int, list[str]] = {}
    for path in Path(__file__).parent.rglob("test_*.py"):
        for name, number in _NAME.findall(path.read_text()):
            found.setdefault(int(number), []).append(f"{path.name}::{name}")
    return found


def test_every_scenario_has_a_test() -> None:
    found = _scenario_tests()
    missing = [n for n in SCENARIOS if n not in found]
    assert missing == [], f"scenarios without a test_scenario_NN_ test: {missing}"
    assert set(found) <= set(SCENARIOS), f"unknown scenario numbers: {set(found) - set(SCENARIOS)}"
