"""Reflected example tables for the schema and typing-rule tests."""

from __future__ import annotations

from support.schemas import obs, things

__all__ = ["obs", "things"]
