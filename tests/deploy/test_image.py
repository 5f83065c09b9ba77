"""The production image (Dockerfile, .dockerignore) without a Docker engine.

hadolint and checkov lint the Dockerfile; the structure tests read its stages; and
``test_build_stage_installs_a_runnable_headrace`` replays the build stage's install RUN
(wheel, pinned constraints, no dev or demo extra) into a fresh virtualenv on this machine
and runs the result the way the final stage does: as a non-root user, with
PYTHONDONTWRITEBYTECODE and only the image's environment.
"""

from __future__ import annotations

import json
import os
import re
import shlex
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest
from support.deploy import (
    DOCKERFILE,
    ROOT,
    Stage,
    assert_checkov_passes,
    assert_silent,
    dev_tool,
    dockerfile_stages,
)

from testbed.servers import pick_port

#: Never in the final image: test, lint and demo-only packages (the demo extra: moto, its
#: Flask server, aiosqlite).
FORBIDDEN = {"moto", "aiosqlite", "pytest", "flask", "werkzeug", "hypothesis", "ruff", "mypy"}
NOBODY = 65534


@pytest.fixture(scope="module")
def stages() -> list[Stage]:
    return dockerfile_stages()


def test_hadolint_is_clean() -> None:
    assert_silent(dev_tool("hadolint"), "--no-color", DOCKERFILE)


def test_checkov_passes_the_dockerfile() -> None:
    assert_checkov_passes(DOCKERFILE, "dockerfile")


def test_two_stages_and_the_final_one_runs_headrace_as_non_root(stages: list[Stage]) -> None:
    build, final = stages
    assert build.name == "build"
    assert final.name is None
    assert build.base == final.base
    assert re.fullmatch(r"python:3\.11-slim-\w+", final.base)
    user = final.all("USER")[-1]
    assert user.split(":")[0] not in {"root", "0"}, f"final stage runs as {user}"
    assert final.all("ENTRYPOINT") == ['["headrace"]'], "exec-form entrypoint"
    healthcheck = final.all("HEALTHCHECK")[-1]
    assert healthcheck.endswith('CMD ["headrace", "health"]'), healthcheck
    assert final.all("EXPOSE") == ["9400"]
    env = " ".join(final.all("ENV"))
    for setting in ("PYTHONDONTWRITEBYTECODE=1", "HEADRACE_METRICS__PORT=9400"):
        assert setting in env, f"final stage lacks ENV {setting}"


def test_final_stage_has_no_compiler_and_only_copies_the_venv(stages: list[Stage]) -> None:
    final = stages[-1]
    runs = " ".join(final.all("RUN"))
    for word in ("apt-get", "gcc", "build-essential", "pip "):
        assert word not in runs, f"final stage runs {word!r}"
    copies = final.all("COPY")
    assert copies
    assert all(copy.startswith("--from=build ") for copy in copies), copies


def test_build_stage_installs_the_wheel_with_pins_and_no_extras(stages: list[Stage]) -> None:
    install = _install_run(stages[0])
    assert "pip wheel --no-deps" in install
    assert install.count("-c constraints.txt") >= 3, "every pip call pinned"
    assert "[dev" not in install
    assert "[demo" not in install


def test_dockerignore_lets_in_only_what_the_build_copies(stages: list[Stage]) -> None:
    lines = [
        line
        for line in (ROOT / ".dockerignore").read_text().splitlines()
        if line and not line.startswith("#")
    ]
    assert lines[0] == "*", "deny everything, then allow what the Dockerfile copies"
    allowed = {line[1:] for line in lines if line.startswith("!")}
    copied = {source for sources, _ in _copies(stages[0]) for source in sources}
    assert copied <= allowed, f"copied but ignored: {sorted(copied - allowed)}"


def _copies(stage: Stage) -> list[tuple[list[str], str]]:
    """The stage's COPY instructions from the build context: (sources, destination)."""
    found = []
    for args in stage.all("COPY"):
        words = args.split()
        if any(word.startswith("--from") for word in words):
            continue
        found.append((words[:-1], words[-1]))
    return found


def _install_run(stage: Stage) -> str:
    (install,) = [run for run in stage.all("RUN") if "-m venv /opt/headrace" in run]
    return install


@pytest.fixture(scope="module")
def image_venv(stages: list[Stage]) -> Iterator[Path]:
    """The build stage replayed: its build-context COPYs into a context directory, then its
    install RUN with /opt/headrace and /tmp/wheels moved into a world-readable temporary
    directory (a non-root user must be able to run it)."""
    build = stages[0]
    with tempfile.TemporaryDirectory(prefix="headrace-image-", dir="/tmp") as tmp:
        base = Path(tmp)
        base.chmod(0o755)
        context, venv, wheels = base / "src", base / "opt-headrace", base / "wheels"
        context.mkdir()
        for sources, destination in _copies(build):
            for source in sources:
                target = context / destination / source if destination.endswith("/") else None
                target = target or context / destination
                if (ROOT / source).is_dir():
                    shutil.copytree(
                        ROOT / source, target, ignore=shutil.ignore_patterns("__pycache__")
                    )
                else:
                    shutil.copy2(ROOT / source, target)
        script = _install_run(build).replace("/opt/headrace", str(venv))
        script = script.replace("/tmp/wheels", str(wheels))
        script = re.sub(r"^python ", f"{shlex.quote(sys.executable)} ", script)
        env = {**os.environ, "PIP_NO_CACHE_DIR": "1", "PIP_DISABLE_PIP_VERSION_CHECK": "1"}
        env.pop("VIRTUAL_ENV", None)
        done = subprocess.run(
            ["bash", "-euo", "pipefail", "-c", script],
            cwd=context,
            env=env,
            capture_output=True,
            text=True,
            timeout=600,
            check=False,
        )
        assert done.returncode == 0, f"build stage install failed:\n{done.stdout}{done.stderr}"
        yield venv


def _as_image_user(venv: Path, *args: str, port: int) -> subprocess.CompletedProcess[str]:
    """Run ``headrace ARGS`` from ``venv`` with only the image's environment, as nobody
    when the tests run as root (as the final stage's USER does)."""
    command = [str(venv / "bin" / "headrace"), *args]
    if os.geteuid() == 0:
        command = [
            "setpriv",
            f"--reuid={NOBODY}",
            f"--regid={NOBODY}",
            "--clear-groups",
            "--",
            *command,
        ]
    env = {
        "PATH": f"{venv / 'bin'}:/usr/bin:/bin",
        "PYTHONUNBUFFERED": "1",
        "PYTHONDONTWRITEBYTECODE": "1",
        "TMPDIR": "/tmp",
        "HOME": "/nonexistent",
        "HEADRACE_METRICS__PORT": str(port),
    }
    return subprocess.run(
        command, cwd="/tmp", env=env, capture_output=True, text=True, timeout=60, check=False
    )


def test_build_stage_installs_a_runnable_headrace(image_venv: Path) -> None:
    port = pick_port()  # nothing listens there: the health probe must say so
    for args in (["--help"], ["worker", "--help"]):
        done = _as_image_user(image_venv, *args, port=port)
        assert done.returncode == 0, f"headrace {' '.join(args)}:\n{done.stdout}{done.stderr}"
        assert "usage: headrace" in done.stdout
    done = _as_image_user(image_venv, "health", port=port)
    assert done.returncode == 1, f"headrace health:\n{done.stdout}{done.stderr}"
    assert f"/healthz on port {port}: not ok" in done.stderr


def test_image_venv_has_no_test_or_demo_packages(image_venv: Path) -> None:
    listed = subprocess.run(
        [str(image_venv / "bin" / "python"), "-m", "pip", "list", "--format=json"],
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    )
    installed = {entry["name"].lower() for entry in json.loads(listed.stdout)}
    assert "headrace" in installed
    assert "aiobotocore" in installed
    assert not FORBIDDEN & installed, f"in the image: {sorted(FORBIDDEN & installed)}"


def test_image_venv_ships_the_migrations(image_venv: Path) -> None:
    """`headrace migrate` finds alembic's scripts in the installed package, not in /src."""
    found = list(image_venv.glob("lib/python3.*/site-packages/migrations/versions/0001_*.py"))
    assert found, "migrations/versions is not in the wheel"
    assert list(image_venv.glob("lib/python3.*/site-packages/migrations/script.py.mako"))


def test_image_refuses_the_demo_clearly(image_venv: Path) -> None:
    """The demo's embedded services are not in the image: a one-line error naming the extra."""
    done = _as_image_user(image_venv, "demo", "--rows", "10", port=pick_port())
    assert done.returncode == 2, f"headrace demo:\n{done.stdout}{done.stderr}"
    assert "pip install 'headrace[demo]'" in done.stderr
    assert "Traceback" not in done.stderr
