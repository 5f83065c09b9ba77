"""constraints.txt and pyproject.toml cannot drift apart.

`make`, CI and the Docker image install with ``-c constraints.txt``; `make lock` regenerates
it. These tests fail when pyproject names a package the lock lacks, when a pin falls outside
pyproject's range, or when a locked package needs one the lock does not pin.
"""

from __future__ import annotations

import importlib.metadata
import tomllib
from pathlib import Path

import pytest
from packaging.markers import Marker
from packaging.requirements import Requirement
from packaging.utils import NormalizedName, canonicalize_name
from packaging.version import Version

ROOT = Path(__file__).resolve().parent.parent
LOCK = ROOT / "constraints.txt"
PROJECT = "headrace"


def read_lock(path: Path = LOCK) -> dict[NormalizedName, Version]:
    """``name==version`` lines (comments and blanks skipped), by canonical name."""
    pins: dict[NormalizedName, Version] = {}
    for number, raw in enumerate(path.read_text().splitlines(), start=1):
        line = raw.split("#", 1)[0].strip()
        if not line:
            continue
        requirement = Requirement(line)
        specifiers = list(requirement.specifier)
        where = f"{path.name}:{number}: {raw!r}"
        if len(specifiers) != 1 or specifiers[0].operator != "==":
            raise ValueError(f"{where} is not an exact pin (name==version)")
        if requirement.marker or requirement.extras or requirement.url:
            raise ValueError(f"{where}: only name==version belongs in a lock")
        name = canonicalize_name(requirement.name)
        if name in pins:
            raise ValueError(f"{where}: {requirement.name} is pinned twice")
        pins[name] = Version(specifiers[0].version)
    return pins


def project_requirements() -> dict[str, list[Requirement]]:
    """pyproject's dependencies, and each extra's, without the self-references
    (``headrace[demo]`` in dev)."""
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    groups = {"dependencies": project["dependencies"], **project["optional-dependencies"]}
    return {
        group: [
            requirement
            for requirement in map(Requirement, lines)
            if canonicalize_name(requirement.name) != PROJECT
        ]
        for group, lines in groups.items()
    }


def applies_here(marker: Marker | None, extras: set[str]) -> bool:
    """Whether a requirement applies on this interpreter with these extras requested (the
    lock is resolved on the image's platform: Python 3.11 on Linux)."""
    if marker is None:
        return True
    return any(marker.evaluate({"extra": extra}) for extra in extras or {""})


def test_lock_has_only_exact_pins() -> None:
    pins = read_lock()
    for tool in ("pip", "setuptools", "wheel"):
        assert canonicalize_name(tool) in pins, f"{tool} (a build tool) is not pinned"
    assert PROJECT not in pins, "the project itself does not belong in its lock"


def test_every_project_requirement_is_pinned_within_its_range() -> None:
    pins = read_lock()
    problems = []
    for group, requirements in project_requirements().items():
        for requirement in requirements:
            if not applies_here(requirement.marker, set()):
                continue
            name = canonicalize_name(requirement.name)
            if name not in pins:
                problems.append(f"[{group}] {requirement}: not in {LOCK.name}")
            elif not requirement.specifier.contains(pins[name], prereleases=True):
                problems.append(
                    f"[{group}] {requirement}: {LOCK.name} pins {name}=={pins[name]}, "
                    "outside the range"
                )
    assert not problems, "run `make lock`:\n" + "\n".join(problems)


def test_build_requirements_are_pinned_within_their_range() -> None:
    pins = read_lock()
    build = tomllib.loads((ROOT / "pyproject.toml").read_text())["build-system"]["requires"]
    for requirement in map(Requirement, build):
        name = canonicalize_name(requirement.name)
        assert name in pins, f"build requirement {requirement} is not in {LOCK.name}"
        assert requirement.specifier.contains(pins[name]), (
            f"build requirement {requirement}: {LOCK.name} pins {pins[name]}"
        )


def test_lock_is_closed_under_dependencies() -> None:
    """Every package the locked ones need (as the venv's metadata says) is locked too,
    e.g. after a pin was bumped by hand to a release with a new dependency."""
    pins = read_lock()
    missing: list[str] = []
    seen: set[tuple[NormalizedName, frozenset[str]]] = set()
    todo: list[tuple[str, frozenset[str], str]] = [(PROJECT, frozenset({"dev", "demo"}), "")]
    while todo:
        name, extras, parent = todo.pop()
        key = (canonicalize_name(name), extras)
        if key in seen:
            continue
        seen.add(key)
        try:
            distribution = importlib.metadata.distribution(name)
        except importlib.metadata.PackageNotFoundError:
            pytest.skip(f"{name} is not installed: run `make venv`")
        if key[0] != PROJECT and Version(distribution.version) != pins[key[0]]:
            pytest.skip(
                f"{name} {distribution.version} installed, {pins[key[0]]} locked: `make venv`"
            )
        label = f"{name}[{','.join(sorted(extras))}]" if extras else name
        for line in distribution.requires or []:
            requirement = Requirement(line)
            if not applies_here(requirement.marker, set(extras)):
                continue
            child = canonicalize_name(requirement.name)
            if child != PROJECT and child not in pins:
                missing.append(f"{requirement.name} (needed by {label}{parent})")
                continue
            todo.append((requirement.name, frozenset(requirement.extras), f" <- {label}{parent}"))
    assert not missing, f"not in {LOCK.name}, run `make lock`:\n" + "\n".join(sorted(set(missing)))


def test_read_lock_refuses_a_loose_pin(tmp_path: Path) -> None:
    lock = tmp_path / "constraints.txt"
    lock.write_text("# a comment\nrich==15.0.0\n")
    assert read_lock(lock) == {"rich": Version("15.0.0")}
    lock.write_text("rich>=15\n")
    with pytest.raises(ValueError, match="not an exact pin"):
        read_lock(lock)
    lock.write_text("Rich==15.0.0\nrich==15.0.1\n")
    with pytest.raises(ValueError, match="pinned twice"):
        read_lock(lock)
