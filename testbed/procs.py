"""CPU time and peak RSS of live processes, read from ``/proc`` (Linux).

Peak RSS is ``VmHWM`` from ``/proc/<pid>/status``: the high-water mark of the process's own,
post-exec address space. ``wait4``'s ``ru_maxrss`` is no substitute for a child of a big
process: on Linux, exec records the RSS of the address space it replaces, so a child forked
(or vforked) from the test or the benchmark reports at least its parent's size at spawn time.
Read ``VmHWM`` often (every 20 ms or so) while the process runs: it is gone once it exits.
"""

from __future__ import annotations

import os
from pathlib import Path

__all__ = ["proc_cpu_s", "proc_hwm_kb", "system_busy_s"]

_CLK_TCK = os.sysconf("SC_CLK_TCK")


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


def proc_cpu_s(pid: int) -> float:
    """user+sys CPU seconds of a live process so far (0.0 if it is gone)."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return 0.0
    fields = stat.rpartition(")")[2].split()
    # fields[0] is field 3 (state): utime and stime are fields 14 and 15.
    return (int(fields[11]) + int(fields[12])) / _CLK_TCK
