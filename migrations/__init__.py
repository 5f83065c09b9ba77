"""Alembic migrations for headrace's own tables and the example dataset."""
