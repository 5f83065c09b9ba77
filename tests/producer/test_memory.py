"""The producer keeps big buffers mapped on glibc (the Debian-based image and CI run it)."""

from __future__ import annotations

import platform

import pytest

from producer import memory


@pytest.mark.skipif(platform.libc_ver()[0] != "glibc", reason="mallopt's threshold is glibc's")
def test_glibc_takes_the_mmap_threshold() -> None:
    assert memory.map_big_buffers()


def test_without_mallopt_it_does_nothing(monkeypatch: pytest.MonkeyPatch) -> None:
    class NoMallopt:
        def __init__(self, name: object) -> None:
            pass

    monkeypatch.setattr(memory.ctypes, "CDLL", NoMallopt)
    assert not memory.map_big_buffers()
