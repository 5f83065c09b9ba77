"""``py-spy record`` attached to running children (``python -m bench --py-spy DIR``)."""

from __future__ import annotations

import asyncio
import shutil
import subprocess
import sys
from pathlib import Path

from bench.procs import Child

__all__ = ["Profiler"]


class Profiler:
    """``py-spy record`` attached to running children (``--py-spy DIR``)."""

    def __init__(self, out_dir: Path | None) -> None:
        self.out_dir = out_dir
        self._procs: list[subprocess.Popen[bytes]] = []
        exe = Path(sys.executable).parent / "py-spy"
        self._exe = str(exe) if exe.exists() else (shutil.which("py-spy") or "")
        if out_dir is not None:
            if not self._exe:
                raise RuntimeError("--py-spy: py-spy is not installed")
            out_dir.mkdir(parents=True, exist_ok=True)

    def attach(self, child: Child) -> None:
        if self.out_dir is None:
            return
        for fmt, suffix in (("raw", "txt"), ("flamegraph", "svg")):
            out = self.out_dir / f"{child.name}.{suffix}"
            args = [self._exe, "record", "--pid", str(child.pid), "--rate", "100", "--nonblocking"]
            args += ["--format", fmt, "--output", str(out)]
            self._procs.append(
                subprocess.Popen(args, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
            )

    async def finish(self) -> None:
        for proc in self._procs:
            try:
                await asyncio.to_thread(proc.wait, 30)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
