"""The run id (issue 12): a changed reading option or duplicate mode is a new run; the
defaults keep today's ids."""

from __future__ import annotations

import hashlib

from headrace import envelope
from headrace.settings import Settings
from producer.app import make_run_id
from producer.sources import Source

SOURCE = Source(uri="/data/f.csv", size=123, version="456")
HEADER = ["a", "b"]


def _id(**producer: object) -> str:
    settings = Settings(producer=producer)  # type: ignore[arg-type]
    return make_run_id(SOURCE, "t", HEADER, budget=262_144, settings=settings)


def test_default_options_keep_the_former_run_id() -> None:
    parts = ["v1", "/data/f.csv", "123", "456", "t", "a\x1fb", "262144", "zstd", "3"]
    assert envelope.VERSION == 1
    former = hashlib.sha256("\x1e".join(parts).encode()).hexdigest()[:32]
    assert _id() == former
    # spelled-out defaults
    assert _id(csv={"delimiter": ","}, on_duplicate="error", chunk_rows=4096) == former


def test_each_option_changes_the_run_id() -> None:
    ids = {
        _id(),
        _id(csv={"delimiter": ";"}),
        _id(csv={"nulls": ["NA"]}),
        _id(csv={"nulls": ["NA", ""]}),
        _id(csv={"encoding": "cp1252"}),
        _id(csv={"skip_lines": 1}),
        _id(csv={"timezone": "Europe/Berlin"}),
        _id(csv={"decimal_comma": True}),
        _id(csv={"rename": {"x": "a"}}),
        _id(on_duplicate="update"),
        _id(on_duplicate="skip"),
        _id(chunk_rows=1024),  # the packer cuts messages within chunks
    }
    assert len(ids) == 12
