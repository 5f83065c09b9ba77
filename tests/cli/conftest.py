"""Reflected example tables for the checksum tests."""

from __future__ import annotations

from support.schemas import obs, things

__all__ = ["obs", "things"]
