"""Local files: identity from the path, size and modification time."""

from __future__ import annotations

import io
from dataclasses import dataclass
from pathlib import Path

from headrace.errors import InputError
from producer.sources.base import Source

__all__ = ["FileSource", "open_source"]


@dataclass(frozen=True)
class FileSource(Source):
    path: Path

    def _open_raw(self) -> io.BufferedReader:
        return open(self.path, "rb")


def open_source(location: str) -> FileSource:
    path = Path(location)
    try:
        st = path.stat()
    except OSError as exc:
        raise InputError(f"cannot open: {exc.strerror}", source=location) from None
    if not path.is_file():
        raise InputError("not a regular file", source=location)
    return FileSource(
        uri=str(path.resolve()), size=st.st_size, version=str(st.st_mtime_ns), path=path
    )
