"""At a terminal, `headrace produce` and `headrace worker --idle-exit` show progress and a
summary table (stderr on a pseudo-terminal); with --json, or HEADRACE_LOG_FORMAT=json, they
keep their JSON lines and report."""

from __future__ import annotations

import json
import os
import pty
import subprocess
import sys
from pathlib import Path

import pytest
from sqlalchemy.ext.asyncio import AsyncEngine
from support.pipeline import count

from cli.datagen import generate_csv

pytestmark = pytest.mark.slow


def _at_a_terminal(env: dict[str, str], *args: str) -> tuple[int, str, str]:
    """Run `headrace ARGS` with stderr on a pseudo-terminal: (exit code, stdout, terminal)."""
    master, slave = pty.openpty()
    proc = subprocess.Popen(
        [sys.executable, "-m", "cli", *args],
        env={**env, "COLUMNS": "160", "TERM": "xterm"},
        stdout=subprocess.PIPE,
        stderr=slave,
        stdin=subprocess.DEVNULL,
    )
    os.close(slave)
    seen = bytearray()
    while True:
        try:
            chunk = os.read(master, 65536)
        except OSError:  # EIO: the process closed its end
            break
        if not chunk:
            break
        seen += chunk
    os.close(master)
    assert proc.stdout is not None
    with proc.stdout:
        out = proc.stdout.read().decode()
    return proc.wait(timeout=120), out, seen.decode(errors="replace")


async def test_produce_and_worker_show_progress_at_a_terminal(
    tmp_path: Path, cli_env: dict[str, str], engine: AsyncEngine
) -> None:
    data = generate_csv(tmp_path / "drop.csv", 20_000, seed=2, bad_ratio=0.001)
    code, out, tty = _at_a_terminal(cli_env, "produce", str(data.path), "--table", "observations")
    assert code == 0, tty[-3000:]
    assert out == ""  # the summary went to the terminal, not the JSON report
    assert "produce → observations" in tty
    assert "rows/s" in tty
    assert "ETA" in tty
    assert "rows read" in tty
    assert "20,000" in tty
    assert '{"' not in tty  # no JSON log lines

    code, out, tty = _at_a_terminal(cli_env, "worker", "--idle-exit", "2")
    assert code == 0, tty[-3000:]
    assert out == ""
    assert "rows applied" in tty
    assert "backlog" in tty
    assert "messages applied" in tty
    assert f"{20_000 - data.bad_rows:,}" in tty
    assert await count(engine) == 20_000 - data.bad_rows


async def test_json_is_kept_at_a_terminal_when_asked_for(
    tmp_path: Path, cli_env: dict[str, str]
) -> None:
    data = generate_csv(tmp_path / "drop.csv", 2_000, seed=2, bad_ratio=0)
    args = ("produce", str(data.path), "--table", "observations")
    code, out, tty = _at_a_terminal(cli_env, *args, "--json")
    assert code == 0, tty[-3000:]
    assert json.loads(out)["rows_read"] == 2_000
    assert '"event": "produce_done"' in tty or '"event":"produce_done"' in tty

    again = tmp_path / "again.csv"
    again.write_bytes(data.path.read_bytes())
    code, out, tty = _at_a_terminal(
        {**cli_env, "HEADRACE_LOG_FORMAT": "json"}, *args[:1], str(again), *args[2:]
    )
    assert code == 0, tty[-3000:]
    assert json.loads(out)["rows_read"] == 2_000
    assert "rows/s" not in tty
