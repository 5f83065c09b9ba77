""".pre-commit-config.yaml: valid, offline (local hooks only) and running the venv's tools."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

from pre_commit.clientlib import load_config

ROOT = Path(__file__).resolve().parent.parent
CONFIG = ROOT / ".pre-commit-config.yaml"


def _hooks() -> list[dict[str, Any]]:
    config = load_config(str(CONFIG))  # validates; raises InvalidConfigError
    return [hook for repo in config["repos"] for hook in repo["hooks"]]


def test_every_hook_is_local_so_nothing_is_downloaded() -> None:
    repos = [repo["repo"] for repo in load_config(str(CONFIG))["repos"]]
    assert repos == ["local"], f"remote hook repositories need the network: {repos}"


def test_every_hook_runs_a_tool_the_venv_has() -> None:
    bin_dir = Path(sys.executable).parent
    for hook in _hooks():
        program = Path(hook["entry"].split()[0])
        assert program.parts[:2] == (".venv", "bin"), f"{hook['id']}: {program} not from the venv"
        assert (bin_dir / program.name).exists(), f"{hook['id']}: {program.name} is not installed"


def test_the_hooks_cover_make_lint() -> None:
    ids = {hook["id"] for hook in _hooks()}
    assert {"ruff-check", "ruff-format", "mypy", "lint-imports"} <= ids
    assert {"trailing-whitespace", "end-of-file-fixer"} <= ids
