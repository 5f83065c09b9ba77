"""Child processes measured with ``os.wait4``: exit code, user+sys CPU seconds, peak RSS.

A :class:`Child` is started with :class:`subprocess.Popen` but reaped only here, with
``wait4``, which returns the child's own user and system CPU time.

Peak RSS is *not* taken from ``wait4``'s ``ru_maxrss``, which for a child of this process
includes the benchmark's own RSS at spawn time (see :mod:`testbed.procs`). Instead
:func:`sample_forever` reads each live child's ``VmHWM`` every 20 ms; only growth in a
child's last 20 ms could be missed. ``ru_maxrss`` is kept in the results for reference.

CPU of processes that outlive a stage (mariadbd, moto) is read with
:func:`testbed.procs.proc_cpu_s` before and after.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import subprocess
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from testbed.procs import proc_cpu_s, proc_hwm_kb

__all__ = ["Child", "Usage", "sample_forever"]

SAMPLE_INTERVAL_S = 0.02
_LIVE: set[Child] = set()


async def sample_forever() -> None:
    """Sample the peak RSS of every live :class:`Child` (run as a background task)."""
    while True:
        for child in list(_LIVE):
            child.sample()
        await asyncio.sleep(SAMPLE_INTERVAL_S)


@dataclass
class Usage:
    name: str
    exit_code: int
    user_s: float
    sys_s: float
    max_rss_mb: float  # sampled VmHWM
    ru_maxrss_mb: float  # wait4's figure: includes the parent's RSS at spawn (see above)
    wall_s: float

    @property
    def cpu_s(self) -> float:
        return self.user_s + self.sys_s

    def as_dict(self) -> dict[str, Any]:
        return {**asdict(self), "cpu_s": self.cpu_s}


class Child:
    """One child process; stdout/stderr go to files (never pipes: a full pipe stalls it)."""

    def __init__(
        self,
        name: str,
        args: Sequence[str],
        *,
        env: dict[str, str],
        stdout: Path,
        stderr: Path,
        cwd: Path | None = None,
    ) -> None:
        self.name = name
        self.stdout_path = stdout
        self.stderr_path = stderr
        self.started = time.monotonic()
        with stdout.open("wb") as out, stderr.open("wb") as err:
            self._popen = subprocess.Popen(
                list(args), env=env, stdout=out, stderr=err, cwd=cwd, start_new_session=True
            )
        self.pid = self._popen.pid
        self.usage: Usage | None = None
        self.peak_rss_kb = 0
        _LIVE.add(self)

    def sample(self) -> None:
        if self.usage is None:
            self.peak_rss_kb = max(self.peak_rss_kb, proc_hwm_kb(self.pid))

    @property
    def running(self) -> bool:
        return self.usage is None and self._reap(os.WNOHANG) is None

    def _reap(self, options: int) -> Usage | None:
        if self.usage is not None:
            return self.usage
        try:
            pid, status, ru = os.wait4(self.pid, options)
        except ChildProcessError:
            return self.usage
        if pid == 0:
            return None
        _LIVE.discard(self)
        code = os.waitstatus_to_exitcode(status)
        self._popen.returncode = code  # Popen must not try to reap it again
        self.usage = Usage(
            name=self.name,
            exit_code=code,
            user_s=ru.ru_utime,
            sys_s=ru.ru_stime,
            max_rss_mb=self.peak_rss_kb / 1024,
            ru_maxrss_mb=ru.ru_maxrss / 1024,
            wall_s=time.monotonic() - self.started,
        )
        return self.usage

    async def wait(self, timeout_s: float) -> Usage:
        deadline = time.monotonic() + timeout_s
        while True:
            self.sample()
            usage = self._reap(os.WNOHANG)
            if usage is not None:
                return usage
            if time.monotonic() > deadline:
                self.kill()
                raise TimeoutError(
                    f"{self.name} (pid {self.pid}) still running after {timeout_s:.0f} s; "
                    f"stderr tail:\n{self.tail()}"
                )
            await asyncio.sleep(0.02)

    async def wait_for_output(self, needle: str, timeout_s: float, *, stdout: bool = False) -> str:
        """Poll the child's stderr (or stdout) until it contains ``needle``; returns the text.

        Raises RuntimeError if the child exits first, TimeoutError after ``timeout_s``."""
        path = self.stdout_path if stdout else self.stderr_path
        deadline = time.monotonic() + timeout_s
        while True:
            try:
                text = path.read_text(errors="replace")
            except OSError:
                text = ""
            if needle in text:
                return text
            if not self.running:
                raise RuntimeError(f"{self.name} exited before {needle!r}:\n{self.tail()}")
            if time.monotonic() > deadline:
                raise TimeoutError(
                    f"{self.name}: no {needle!r} after {timeout_s} s; stderr tail:\n{self.tail()}"
                )
            await asyncio.sleep(0.05)

    def cpu_s(self) -> float:
        """CPU seconds so far (live), or the final figure once reaped."""
        if self.usage is not None:
            return self.usage.cpu_s
        return proc_cpu_s(self.pid)

    def terminate(self) -> None:
        self._signal(signal.SIGTERM)

    def kill(self) -> None:
        self._signal(signal.SIGKILL)
        self._reap(0)

    def _signal(self, sig: signal.Signals) -> None:
        if self.usage is None:
            with contextlib.suppress(ProcessLookupError):
                os.kill(self.pid, sig)

    def tail(self, chars: int = 3000) -> str:
        try:
            return self.stderr_path.read_text(errors="replace")[-chars:]
        except OSError:
            return "<no stderr>"
