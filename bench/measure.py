"""CPU seconds and SQS request counts over a timed window: snapshots and their differences."""

from __future__ import annotations

import resource

__all__ = ["children_cpu_s", "cpu_delta", "diff_counts", "self_cpu_s"]


def self_cpu_s() -> float:
    ru = resource.getrusage(resource.RUSAGE_SELF)
    return ru.ru_utime + ru.ru_stime


def children_cpu_s() -> float:
    ru = resource.getrusage(resource.RUSAGE_CHILDREN)
    return ru.ru_utime + ru.ru_stime


def cpu_delta(after: dict[str, float], before: dict[str, float]) -> dict[str, float]:
    """Per-process CPU seconds in a window; ``others``: the rest of the machine (processes
    that are not part of the benchmark, e.g. another job on a shared box)."""
    out = {k: round(after[k] - before.get(k, 0.0), 3) for k in after}
    machine = out.pop("machine", 0.0)
    out["others"] = round(max(0.0, machine - sum(out.values())), 3)
    return out


def diff_counts(
    after: dict[str, dict[str, int]], before: dict[str, dict[str, int]]
) -> dict[str, dict[str, int]]:
    out: dict[str, dict[str, int]] = {}
    for op, values in after.items():
        prev = before.get(op, {})
        diff = {k: v - prev.get(k, 0) for k, v in values.items()}
        if diff.get("requests", 0):
            out[op] = diff
    return out
