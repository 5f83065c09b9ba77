"""Child processes measured with ``os.wait4``: exit code, user+sys CPU seconds, peak RSS.

A :class:`Child` is started with :class:`subprocess.Popen` but reaped only here, with
``wait4``, which returns the child's own user and system CPU time.

Peak RSS is *not* taken from ``wait4``'s ``ru_maxrss``: on Linux, exec records the RSS of the
address space it replaces, which for a child forked (or vforked) from this process is the
benchmark's own RSS, so ``ru_maxrss`` of every child is at least the parent's size at spawn
time. Instead :func:`sample_forever` reads each live child's ``VmHWM`` (the high-water mark of
its own, post-exec address space) from ``/proc/<pid>/status`` every 20 ms; only growth in a
child's last 20 ms could be missed. ``ru_maxrss`` is kept in the results for reference.

CPU of processes that outlive a stage (mariadbd, moto) is read from ``/proc/<pid>/stat``
before and after.
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

__all__ = ["Child", "Usage", "proc_cpu_s", "proc_hwm_kb", "sample_forever", "system_busy_s"]

_CLK_TCK = os.sysconf("SC_CLK_TCK")
SAMPLE_INTERVAL_S = 0.02
_LIVE: set[Child] = set()


def system_busy_s() -> float:
    """CPU seconds the whole machine has been busy (all processes, all cores), /proc/stat."""
    try:
        with open("/proc/stat", "rb") as fh:
            fields = fh.readline().split()[1:]
    except OSError:
        return 0.0
    # user nice system idle iowait irq softirq steal ...
    values = [int(v) for v in fields[:8]]
    busy = values[0] + values[1] + values[2] + values[5] + values[6] + values[7]
    return busy / _CLK_TCK


def proc_hwm_kb(pid: int) -> int:
    """Peak RSS (VmHWM, KiB) of a live process's current address space; 0 if unknown."""
    try:
        with open(f"/proc/{pid}/status", "rb") as fh:
            for line in fh:
                if line.startswith(b"VmHWM:"):
                    return int(line.split()[1])
    except (OSError, ValueError, IndexError):
        pass
    return 0


async def sample_forever() -> None:
    """Sample the peak RSS of every live :class:`Child` (run as a background task)."""
    while True:
        for child in list(_LIVE):
            child.sample()
        await asyncio.sleep(SAMPLE_INTERVAL_S)


def proc_cpu_s(pid: int) -> float:
    """user+sys CPU seconds of a live process so far (0.0 if it is gone)."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return 0.0
    fields = stat.rpartition(")")[2].split()
    # fields[0] is field 3 (state): utime and stime are fields 14 and 15.
    return (int(fields[11]) + int(fields[12])) / _CLK_TCK


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
