"""What every throwaway server of the tests and the benchmark needs.

Finding its binary (also in the sbin/libexec dirs a non-root PATH lacks), a free port on
127.0.0.1, starting it in its own process group (killed at exit if its owner never stopped
it), and the tail of its log for error messages.
"""

from __future__ import annotations

import atexit
import contextlib
import os
import random
import shutil
import socket
import subprocess
from collections.abc import Sequence
from pathlib import Path
from typing import IO

__all__ = ["HOST", "find_executable", "forget_server", "pick_port", "spawn_server", "tail"]

HOST = "127.0.0.1"
# Below the Linux ephemeral range (32768-60999) so that outgoing client sockets (moto,
# aiobotocore, the drivers) never hold the port we picked between probe and bind.
_PORT_RANGE = (20000, 32000)
_SEARCH_DIRS = ("/usr/sbin", "/usr/libexec", "/usr/bin")
LOG_TAIL_LINES = 40


def find_executable(*names: str) -> str | None:
    extra = os.pathsep.join(_SEARCH_DIRS)
    for name in names:
        found = shutil.which(name) or shutil.which(name, path=extra)
        if found:
            return found
    return None


def _port_is_free(port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind((HOST, port))
        except OSError:
            return False
        return True


def pick_port() -> int:
    rng = random.SystemRandom()
    for _ in range(200):
        port = rng.randrange(*_PORT_RANGE)
        if _port_is_free(port):
            return port
    raise RuntimeError(f"no free TCP port found in {_PORT_RANGE}")


def tail(path: Path, start: int = 0, lines: int = LOG_TAIL_LINES) -> str:
    try:
        with path.open("rb") as fh:
            fh.seek(start)
            data = fh.read()
    except OSError:
        return f"<{path} unreadable>"
    text = data.decode("utf-8", "replace").rstrip()
    return "\n".join(text.splitlines()[-lines:]) if text else "<empty>"


_LIVE: set[subprocess.Popen[bytes]] = set()


@atexit.register
def _kill_leftovers() -> None:
    # Last resort for servers whose owner never called stop() (e.g. an interpreter that
    # exits without running fixture finalizers). SIGKILL also works on stopped processes.
    for proc in list(_LIVE):
        with contextlib.suppress(OSError):
            proc.kill()
        with contextlib.suppress(subprocess.TimeoutExpired):
            proc.wait(timeout=5)
        _LIVE.discard(proc)


def spawn_server(cmd: Sequence[str], out: IO[bytes], cwd: Path) -> subprocess.Popen[bytes]:
    """Start a test server process, output to ``out``; killed at exit if nobody stopped it."""
    proc = subprocess.Popen(
        cmd,
        stdin=subprocess.DEVNULL,
        stdout=out,
        stderr=subprocess.STDOUT,
        cwd=cwd,
        # Own process group: a Ctrl-C in the terminal reaches pytest, which then
        # stops the server cleanly, instead of killing it mid-test.
        start_new_session=True,
    )
    _LIVE.add(proc)
    return proc


def forget_server(proc: subprocess.Popen[bytes]) -> None:
    """The owner stopped (or reaped) ``proc``: no need to kill it at exit."""
    _LIVE.discard(proc)
