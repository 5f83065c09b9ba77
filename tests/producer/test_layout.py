"""The producer's message layout is part of its contract with earlier versions: a run that
crashed is resumed by skipping the sequence numbers its checkpoint says were sent, under the
same run id, so a newer producer must pack the same rows into the same messages. This pins
the layout of a generated file (read, typed, packed with the default settings and a 1 MiB
budget, compressed as on SQS) to what the producer has always made of it."""

from __future__ import annotations

import hashlib
from collections.abc import Iterable
from pathlib import Path

from cli.datagen import generate_csv, observations
from headrace.envelope import EncodedMessage
from headrace.schema import TableSchema
from producer.packer import Packer, Packing
from producer.reader import CsvReader

# sha256 over every message's (seq, rows, rejects, raw bytes, body) for the file below, as
# packed by headrace 27e3670 (before the reader, typing and compression changes of issue 16).
LAYOUT = "02ee9aa2283e3a42d370773d937c09b52571090952f92e828dd9460133670b33"


def _layout(path: Path) -> tuple[str, int]:
    schema = TableSchema.from_table(observations)
    digest = hashlib.sha256()
    messages = 0
    with path.open("rb") as fh:
        reader = CsvReader(fh, source="drop.csv", chunk_rows=4096, max_field_bytes=1 << 20)
        specs = schema.resolve_header(reader.header, source="drop.csv")
        packer = Packer(
            run_id="0" * 32,
            table="observations",
            columns=[s.name for s in specs],
            source="drop.csv",
            budget=1024 * 1024,
            packing=Packing(),
        )

        def add(chunk_messages: Iterable[EncodedMessage]) -> None:
            nonlocal messages
            for m in chunk_messages:
                digest.update(f"{m.seq}/{m.row_count}/{m.reject_count}/{m.raw_bytes}/".encode())
                digest.update(m.body.encode())
                messages += 1

        for chunk in reader.chunks():
            valid = schema.validate(specs, chunk.rows, chunk.lines)
            rejects = sorted(chunk.rejects + valid.rejects, key=lambda r: r.line)
            add(packer.add_columns(valid.columns, valid.lines, rejects))
        add(packer.finish())
    return digest.hexdigest(), messages


def test_a_file_packs_into_the_messages_it_always_did(tmp_path: Path) -> None:
    data = generate_csv(tmp_path / "drop.csv", 150_000, seed=16, bad_ratio=0.001)
    digest, messages = _layout(data.path)
    assert messages >= 3  # several full messages (each ~3.9 MB of JSON before compression)
    assert digest == LAYOUT
