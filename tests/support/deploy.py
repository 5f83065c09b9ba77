"""Helpers for tests/deploy: the linters' binaries, the Dockerfile's stages, the template.

The linters are never optional: a missing binary raises (pytest reports an error), it does
not skip, because these tests are the only checks the image and the stack get before a
deploy. hadolint and cfn-lint come from the dev extra (next to this interpreter); checkov
from its own venv, ``.venv-checkov`` (``make checkov``; ``make test`` builds it).
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

ROOT = Path(__file__).resolve().parents[2]
DOCKERFILE = ROOT / "Dockerfile"
TEMPLATE = ROOT / "deploy" / "cloudformation" / "headrace.yaml"
CHECKOV_VENV = ROOT / ".venv-checkov"


def dev_tool(name: str) -> str:
    """A console script of the dev extra, installed beside the running interpreter."""
    path = Path(sys.executable).parent / name
    if not path.exists():
        raise FileNotFoundError(f"{name} not found at {path}: run `make venv` (dev extra)")
    return str(path)


def checkov() -> str:
    path = CHECKOV_VENV / "bin" / "checkov"
    if not path.exists():
        raise FileNotFoundError(f"checkov not found at {path}: run `make checkov`")
    return str(path)


def run_tool(*args: str | Path, timeout_s: float = 300) -> tuple[int, str]:
    """Run a linter from the repository root; its exit code and its stdout + stderr."""
    env = {**os.environ, "NO_COLOR": "1"}
    done = subprocess.run(
        [str(arg) for arg in args],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=timeout_s,
        check=False,
        env=env,
    )
    return done.returncode, done.stdout + done.stderr


def assert_silent(tool: str, *args: str | Path) -> None:
    """The linter exits 0 and prints nothing (no error, warning or note)."""
    code, output = run_tool(tool, *args)
    name = Path(tool).name
    assert code == 0, f"{name} (exit {code}):\n{output}"
    assert not output.strip(), f"{name}:\n{output}"


def assert_checkov_passes(path: Path, framework: str) -> str:
    """checkov on one file, offline (no guideline download, no upload): no failed check
    (skips must be written in the file, with their reason). Returns its report."""
    code, output = run_tool(
        checkov(),
        "--file",
        path,
        "--framework",
        framework,
        "--compact",
        "--quiet",
        "--skip-download",
        "--output",
        "cli",
    )
    assert code == 0, f"checkov (exit {code}):\n{output}"
    assert re.search(r"Failed checks: 0\b", output), output
    return output


@dataclass
class Stage:
    """One FROM ... stage: its base, its name and its instructions as (KEYWORD, arguments)."""

    base: str
    name: str | None
    instructions: list[tuple[str, str]] = field(default_factory=list)

    def all(self, keyword: str) -> list[str]:
        return [args for key, args in self.instructions if key == keyword]


def dockerfile_stages(path: Path = DOCKERFILE) -> list[Stage]:
    """The Dockerfile's stages: continuation lines joined, comments dropped."""
    logical: list[str] = []
    pending = ""
    for raw in path.read_text().splitlines():
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        if line.endswith("\\"):
            pending += line[:-1] + " "
            continue
        logical.append(pending + line)
        pending = ""
    stages: list[Stage] = []
    for line in logical:
        keyword, _, args = line.partition(" ")
        keyword = keyword.upper()
        if keyword == "FROM":
            words = args.split()
            name = words[2] if len(words) >= 3 and words[1].upper() == "AS" else None
            stages.append(Stage(base=words[0], name=name))
        elif stages:
            stages[-1].instructions.append((keyword, " ".join(args.split())))
    return stages


class _CfnLoader(yaml.SafeLoader):
    """Loads CloudFormation's short-form tags as their long form: ``!Ref X`` becomes
    ``{"Ref": "X"}``, ``!GetAtt A.B`` ``{"Fn::GetAtt": ["A", "B"]}``, ``!Sub s``
    ``{"Fn::Sub": s}``."""


def _construct_tag(loader: yaml.SafeLoader, suffix: str, node: yaml.Node) -> dict[str, Any]:
    value: Any
    if isinstance(node, yaml.ScalarNode):
        value = loader.construct_scalar(node)
    elif isinstance(node, yaml.SequenceNode):
        value = loader.construct_sequence(node, deep=True)
    else:
        assert isinstance(node, yaml.MappingNode)
        value = loader.construct_mapping(node, deep=True)
    if suffix == "Ref":
        return {"Ref": value}
    if suffix == "GetAtt" and isinstance(value, str):
        value = value.split(".", 1)
    return {f"Fn::{suffix}": value}


_CfnLoader.add_multi_constructor("!", _construct_tag)


def load_template(path: Path = TEMPLATE) -> dict[str, Any]:
    loaded = yaml.load(path.read_text(), Loader=_CfnLoader)
    assert isinstance(loaded, dict)
    return loaded
