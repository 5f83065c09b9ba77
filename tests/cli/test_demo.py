"""`headrace demo` on its embedded defaults (moto in process, SQLite), as `make demo` runs it."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.slow


def _demo_env() -> dict[str, str]:
    """No HEADRACE_* settings: the demo must pick its embedded SQS and database."""
    return {k: v for k, v in os.environ.items() if not k.startswith("HEADRACE_")}


def test_demo_runs_and_verifies_on_embedded_defaults(tmp_path: Path) -> None:
    proc = subprocess.run(
        [sys.executable, "-m", "cli", "demo", "--rows", "3000", "--data-dir", str(tmp_path)],
        env={**_demo_env(), "COLUMNS": "120"},
        capture_output=True,
        text=True,
        timeout=180,
        check=False,
    )
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    assert "verify OK: source 3000 rows" in proc.stdout
    assert (tmp_path / "headrace-demo.sqlite3").exists()


def test_demo_without_its_extra_names_the_install_command(tmp_path: Path) -> None:
    """moto missing (sys.modules[name] = None makes its import fail): one clear line, exit 2."""
    code = (
        "import sys; sys.modules['moto'] = None; sys.modules['moto.server'] = None\n"
        "from cli.main import main\n"
        f"sys.exit(main(['demo', '--rows', '10', '--data-dir', {str(tmp_path)!r}]))"
    )
    proc = subprocess.run(
        [sys.executable, "-c", code],
        env=_demo_env(),
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert proc.returncode == 2, proc.stderr[-3000:]
    assert "pip install 'headrace[demo]'" in proc.stderr
    assert "Traceback" not in proc.stderr
