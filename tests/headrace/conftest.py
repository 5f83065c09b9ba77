"""Reflected tables shared by the schema and typing-rule tests."""

from __future__ import annotations

import pytest
from support.schemas import things_table

from cli.datagen import observations
from headrace.schema import TableSchema


@pytest.fixture(scope="module")
def things() -> TableSchema:
    return TableSchema.from_table(things_table(), [("code",)])


@pytest.fixture(scope="module")
def obs() -> TableSchema:
    return TableSchema.from_table(observations)
