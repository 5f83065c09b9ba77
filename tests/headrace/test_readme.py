"""The README stays true: its configuration table is the Settings model, its metrics table
the metrics owners, its CLI reference the parser."""

from __future__ import annotations

import argparse
import importlib.util
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[2]


def _script(name: str) -> Any:
    spec = importlib.util.spec_from_file_location(name, ROOT / "scripts" / f"{name}.py")
    assert spec is not None
    assert spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_readme_configuration_table_matches_settings() -> None:
    module = _script("settings_table")
    readme = (ROOT / "README.md").read_text()
    expected = f"{module.BEGIN}\n{module.table()}\n{module.END}"
    assert expected in readme, "README configuration table is stale: run `make docs`"


def test_readme_metrics_table_matches_the_metrics_owners() -> None:
    module = _script("metrics_table")
    readme = (ROOT / "README.md").read_text()
    expected = f"{module.BEGIN}\n{module.table()}\n{module.END}"
    assert expected in readme, "README metrics table is stale: run `make docs`"


def test_readme_cli_reference_names_every_command() -> None:
    from cli.main import _parser

    sub = next(a for a in _parser()._actions if isinstance(a, argparse._SubParsersAction))
    readme = (ROOT / "README.md").read_text()
    for command in sub.choices:
        assert f"| `headrace {command}" in readme, f"`headrace {command}` not in the README"


def test_readme_names_the_two_commands() -> None:
    readme = (ROOT / "README.md").read_text()
    assert "make demo" in readme
    assert "make test" in readme
