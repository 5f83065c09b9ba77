"""Imports between bench/, testbed/ and tests/ go one way, read from the source with ``ast``.

* ``testbed`` (real servers and processes) imports neither ``bench`` nor the tests;
* ``bench`` imports ``testbed``, never the tests (``tests``, or ``support`` with tests/ on
  sys.path), and does not edit ``sys.path`` to reach them;
* the tests import ``bench`` only in ``tests/bench``, which tests the benchmark itself.
"""

from __future__ import annotations

import ast
from collections.abc import Iterator
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
TEST_ONLY = frozenset({"tests", "support"})


def _modules(package: str) -> list[Path]:
    return sorted((ROOT / package).rglob("*.py"))


def _imports(path: Path) -> Iterator[tuple[int, str]]:
    """(line, top-level module) of every import in the file at ``path``."""
    return _imports_in(path.read_text(), path.relative_to(ROOT).parent.parts)


def _imports_in(source: str, package: tuple[str, ...]) -> Iterator[tuple[int, str]]:
    """(line, top-level module) of every import in ``source``, a module of ``package``;
    imports inside functions included, relative ones resolved."""
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Import):
            for alias in node.names:
                yield node.lineno, alias.name.partition(".")[0]
        elif isinstance(node, ast.ImportFrom):
            if node.level == 0:
                yield node.lineno, (node.module or "").partition(".")[0]
            else:
                base = package[: len(package) - (node.level - 1)]
                parts = [*base, *(node.module or "").split(".")]
                yield node.lineno, next((p for p in parts if p), "")


def _violations(package: str, forbidden: frozenset[str]) -> list[str]:
    return [
        f"{path.relative_to(ROOT)}:{line} imports {module}"
        for path in _modules(package)
        for line, module in _imports(path)
        if module in forbidden
    ]


def test_the_checked_packages_exist() -> None:
    for package in ("bench", "testbed", "tests/bench"):
        assert _modules(package), package


@pytest.mark.parametrize(
    ("package", "forbidden"),
    [
        ("testbed", TEST_ONLY | {"bench"}),
        ("bench", TEST_ONLY),
    ],
)
def test_bench_and_testbed_do_not_import_the_tests(package: str, forbidden: frozenset[str]) -> None:
    assert _violations(package, forbidden) == []


def test_only_tests_bench_imports_bench() -> None:
    found = [
        f"{path.relative_to(ROOT)}:{line}"
        for path in _modules("tests")
        if not path.is_relative_to(ROOT / "tests" / "bench")
        for line, module in _imports(path)
        if module == "bench"
    ]
    assert found == []


@pytest.mark.parametrize("package", ["bench", "testbed"])
def test_no_sys_path_edits(package: str) -> None:
    found = [
        f"{path.relative_to(ROOT)}:{node.lineno}"
        for path in _modules(package)
        for node in ast.walk(ast.parse(path.read_text(), filename=str(path)))
        if isinstance(node, ast.Attribute)
        and node.attr == "path"
        and isinstance(node.value, ast.Name)
        and node.value.id == "sys"
    ]
    assert found == [], "reach other code through imports, not sys.path"


def test_the_check_sees_every_kind_of_import() -> None:
    source = (
        "import support.moto\n"
        "from tests.support import pipeline\n"
        "def f():\n"
        "    import bench.procs\n"
        "    from testbed import moto\n"
        "from . import context\n"
        "from ..report import tables\n"
    )
    found = sorted(_imports_in(source, ("bench", "stages")))
    assert found == [
        (1, "support"),
        (2, "tests"),
        (4, "bench"),
        (5, "testbed"),
        (6, "bench"),
        (7, "bench"),
    ]
