"""The producer's packer: rows into size-bounded SQS messages that decode back exactly."""

from __future__ import annotations

import base64
import random
import re
from collections.abc import Sequence
from typing import Any

import orjson
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from cli.datagen import HEADER, generate_csv, observations
from headrace.envelope import EncodedMessage, Envelope, decode
from headrace.schema import Reject, TableSchema, row_text
from producer.packer import Packer, Packing
from producer.reader import CsvReader

RUN = "0123456789abcdef0123456789abcdef"
SOURCE = "/data/drop-2026-11-23.csv.gz"

# XML 1.0 Char, written out independently of the product: SQS refuses everything else.
_XML_CHAR = re.compile("[\t\n\r\x20-\ud7ff\ue000-\ufffd\U00010000-\U0010ffff]*")
_CUT_REASON = re.compile(r"row is (\d+) bytes encoded; a message carries at most (\d+)")

# --- helpers ----------------------------------------------------------------------------------


def _sqs_size(msg: EncodedMessage) -> int:
    """The message size as SQS counts it: body plus attribute names, types and values."""
    attrs = msg.attributes()
    attr_bytes = sum(
        len(name) + len(value["DataType"]) + len(value["StringValue"])
        for name, value in attrs.items()
    )
    return len(msg.body.encode("utf-8")) + attr_bytes


def _pack(
    chunks: Sequence[tuple[list[list[str | None]], list[int], list[Reject]]],
    *,
    budget: int,
    compression: str,
    columns: Sequence[str] = ("a", "b", "c"),
) -> list[EncodedMessage]:
    packer = Packer(
        run_id=RUN,
        table="things",
        columns=columns,
        source=SOURCE,
        budget=budget,
        packing=Packing(compression=compression),
    )
    out: list[EncodedMessage] = []
    for rows, lines, rejects in chunks:
        out.extend(packer.add(rows, lines, rejects))
    out.extend(packer.finish())
    assert packer.next_seq == len(out)
    return out


def _decode_all(msgs: Sequence[EncodedMessage]) -> list[Envelope]:
    return [decode(m.body, m.attributes()) for m in sorted(msgs, key=lambda m: m.seq)]


def _is_cut_of(raw: str, original: str) -> bool:
    """``raw`` is ``original`` itself, or a prefix of it followed by a '... [N characters, cut]'."""
    if raw == original:
        return True
    if not raw.endswith(" characters, cut]"):
        return False
    return original.startswith(raw[: raw.rindex("... [")])


# --- strategies -------------------------------------------------------------------------------

_NASTY = st.sampled_from(
    [
        "",
        '"',
        '""',
        ",",
        "\n",
        "\r\n",
        "\\",
        "\x00",
        "\x01",
        "\x1f",
        "\x7f",
        "\x85",
        "\u2028",
        "\ufeff",
        "\ufffe",
        "\uffff",
        "\U0001f600",
        "é",
        "'; DROP TABLE x; --",
    ]
)
_SHORT_TEXT = st.text(max_size=40)
# Long and incompressible (random bytes in base85) or long and very compressible.
# (Seeded rather than st.binary: drawing kilobytes through hypothesis is slow.)
_LONG_RANDOM = st.builds(
    lambda seed, n: base64.b64encode(random.Random(seed).randbytes(n)).decode(),
    st.integers(0, 2**32),
    st.integers(500, 12_000),
)
_LONG_REPEAT = st.builds(
    lambda ch, n: ch * n,
    st.sampled_from(["x", "é", "\U0001f600", "\x01", "\uffff"]),
    st.integers(1_000, 40_000),
)
_VALUE = st.one_of(
    st.none(),
    _SHORT_TEXT,
    _NASTY,
    st.lists(_NASTY, max_size=6).map("".join),
    _LONG_RANDOM,
    _LONG_REPEAT,
)


@st.composite
def _workload(
    draw: st.DrawFn,
) -> tuple[int, list[tuple[list[list[str | None]], list[int], list[Reject]]]]:
    width = 3
    budget = draw(st.one_of(st.integers(8 * 1024, 24 * 1024), st.integers(8 * 1024, 1024 * 1024)))
    line = 1
    chunks = []
    for _ in range(draw(st.integers(1, 3))):
        rows: list[list[str | None]] = []
        lines: list[int] = []
        rejects: list[Reject] = []
        for _ in range(draw(st.integers(0, 16))):
            line += draw(st.integers(1, 3))  # gaps: blank lines, multi-line fields, rejects
            if draw(st.integers(0, 9)) == 0:
                raw = draw(st.one_of(_SHORT_TEXT, _LONG_RANDOM, _LONG_REPEAT))
                reason = draw(st.one_of(st.just("column 2 'b': 'x' is not an integer"), _NASTY))
                rejects.append(Reject(line, row_text([raw]), reason))
            else:
                rows.append([draw(_VALUE) for _ in range(width)])
                lines.append(line)
        chunks.append((rows, lines, rejects))
    return budget, chunks


# --- the packing property ---------------------------------------------------------------------


@pytest.mark.parametrize("compression", ["zstd", "none"])
@settings(max_examples=100, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(work=_workload())
def test_packing_round_trips_within_budget(
    compression: str,
    work: tuple[int, list[tuple[list[list[str | None]], list[int], list[Reject]]]],
) -> None:
    budget, chunks = work
    msgs = _pack(chunks, budget=budget, compression=compression)

    # Deterministic: the same input gives byte-identical messages.
    again = _pack(chunks, budget=budget, compression=compression)
    assert [(m.seq, m.encoding, m.body) for m in again] == [
        (m.seq, m.encoding, m.body) for m in msgs
    ]

    assert [m.seq for m in msgs] == list(range(len(msgs)))
    for msg in msgs:
        assert msg.size <= budget
        assert _sqs_size(msg) <= msg.size
        assert _XML_CHAR.fullmatch(msg.body), "body holds a character SQS refuses"
        assert msg.encoding in ("json", "zstd+b64")
        assert msg.row_count + msg.reject_count > 0, "an empty message was sent"
        if compression == "zstd":
            assert msg.encoding == "zstd+b64"

    envs = _decode_all(msgs)
    for msg, env in zip(msgs, envs, strict=True):
        assert (env.run_id, env.seq, env.table, env.source) == (RUN, msg.seq, "things", SOURCE)
        assert env.columns == ("a", "b", "c")
        assert len(env.rows) == msg.row_count == len(env.lines)
        assert len(env.rejects) == msg.reject_count
        assert env.raw_bytes == msg.raw_bytes

    got_rows = [
        (line, list(row)) for env in envs for line, row in zip(env.lines, env.rows, strict=True)
    ]
    got_rejects = {r.line: r for env in envs for r in env.rejects}
    assert len(got_rejects) == sum(len(env.rejects) for env in envs), "a reject was duplicated"

    expected_rows: list[tuple[int, list[str | None]]] = []
    expected_reject_lines: set[int] = set()
    for rows, lines, rejects in chunks:
        for reject in rejects:
            expected_reject_lines.add(reject.line)
            got = got_rejects[reject.line]
            assert got.reason == reject.reason
            assert _is_cut_of(got.raw, reject.raw)
        for row, line in zip(rows, lines, strict=True):
            encoded = len(orjson.dumps(row))
            cut = got_rejects.get(line)
            if cut is None:
                expected_rows.append((line, row))
                continue
            # Only a row too big for any message may turn into a reject, and it says so.
            expected_reject_lines.add(line)
            match = _CUT_REASON.fullmatch(cut.reason)
            assert match, cut.reason
            limit = int(match.group(2))
            assert int(match.group(1)) == encoded
            assert encoded + 8 > limit >= budget // 2  # (8: the packer's per-row allowance)
            assert _is_cut_of(cut.raw, row_text(row))
    assert got_rows == expected_rows  # same rows, same lines, same order, nothing lost
    assert set(got_rejects) == expected_reject_lines


# --- oversized rows and rejects ---------------------------------------------------------------


@pytest.mark.parametrize("compression", ["zstd", "none"])
@pytest.mark.parametrize(
    "value",
    [
        "\U0001f600" * 5_000,  # 20 kB of 4-byte characters: its reject text is also too big
        "\x01" * 5_000,  # 6 bytes each once JSON-escaped
        base64.b85encode(random.Random(1).randbytes(60_000)).decode(),  # incompressible
    ],
    ids=["emoji", "control", "random"],
)
def test_row_larger_than_a_message_becomes_a_reject(compression: str, value: str) -> None:
    budget = 8 * 1024
    rows: list[list[str | None]] = [["before", "1", None], [value, "2", None], ["after", "3", ""]]
    msgs = _pack([(rows, [2, 3, 4], [])], budget=budget, compression=compression)
    assert all(m.size <= budget for m in msgs)
    envs = _decode_all(msgs)
    assert [(line, row) for e in envs for line, row in zip(e.lines, e.rows, strict=True)] == [
        (2, ["before", "1", None]),
        (4, ["after", "3", ""]),
    ]
    rejects = [r for e in envs for r in e.rejects]
    assert len(rejects) == 1
    assert rejects[0].line == 3
    assert _CUT_REASON.fullmatch(rejects[0].reason)
    assert _is_cut_of(rejects[0].raw, row_text(rows[1]))
    assert rejects[0].raw.startswith(value[:100])


def test_row_and_reject_that_overflow_together_are_split_apart() -> None:
    """After a very compressible stretch the zstd estimate lets one incompressible row and one
    incompressible reject share a message that then does not fit: they must be split (this
    used to recurse forever)."""
    rng = random.Random(7)
    budget = 8 * 1024
    packer = Packer(
        run_id=RUN, table="t", columns=["a"], source=SOURCE, budget=budget, packing=Packing()
    )
    msgs = list(packer.add([["x" * 3000]] * 20, list(range(2, 22)), []))
    msgs += list(packer.finish())
    row = base64.b64encode(rng.randbytes(3700)).decode()
    raw = base64.b64encode(rng.randbytes(3000)).decode()
    msgs += list(packer.add([[row]], [31], [Reject(30, raw, "bad")]))
    msgs += list(packer.finish())
    assert [m.seq for m in msgs] == list(range(len(msgs)))
    assert all(m.size <= budget and m.row_count + m.reject_count for m in msgs)
    envs = _decode_all(msgs)
    assert [r for e in envs for r in e.rejects] == [Reject(30, raw, "bad")]
    assert [e.rows for e in envs if 31 in e.lines] == [[[row]]]


def test_with_the_claim_check_an_oversized_row_is_a_message_of_its_own() -> None:
    """Without it the row is a reject; with it, one message over the budget (the producer
    puts it in S3 behind a pointer), in sequence with the others."""
    rng = random.Random(3)
    budget = 8 * 1024
    big = base64.b64encode(rng.randbytes(12_000)).decode()
    rows: list[list[str | None]] = [["a"], [big], ["c"]]
    for claim in (False, True):
        packer = Packer(
            run_id=RUN,
            table="t",
            columns=["a"],
            source=SOURCE,
            budget=budget,
            packing=Packing(claim_check=claim),
        )
        msgs = [*packer.add(rows, [2, 3, 4], []), *packer.finish()]
        assert [m.seq for m in msgs] == list(range(len(msgs)))
        envs = _decode_all(msgs)
        if claim:
            (over,) = [m for m in msgs if m.size > budget]
            assert decode(over.body, over.attributes()).rows == [[big]]
            assert sorted(line for e in envs for line in e.lines) == [2, 3, 4]
        else:
            assert all(m.size <= budget for m in msgs)
            assert [r.line for e in envs for r in e.rejects] == [3]


# --- encode / decode --------------------------------------------------------------------------


@pytest.fixture(scope="module")
def observation_rows(tmp_path_factory: pytest.TempPathFactory) -> tuple[list[Any], list[int]]:
    """Validated ~100-byte rows of the example table, as the producer would pack them."""
    path = tmp_path_factory.mktemp("density") / "obs.csv"
    generate_csv(path, 12_000, seed=11, bad_ratio=0)
    schema = TableSchema.from_table(observations)
    with path.open("rb") as fh:
        reader = CsvReader(fh, source=str(path), chunk_rows=100_000, max_field_bytes=1 << 20)
        specs = schema.resolve_header(reader.header, source=str(path))
        chunks = list(reader.chunks())
    assert reader.header == HEADER
    valid = schema.validate(specs, chunks[0].rows, chunks[0].lines)
    assert not valid.rejects
    assert len(valid.rows) == 12_000
    return valid.rows, valid.lines


def test_many_rows_per_message(observation_rows: tuple[list[Any], list[int]]) -> None:
    rows, lines = observation_rows
    mean = sum(len(orjson.dumps(list(r))) for r in rows) / len(rows)
    assert 80 <= mean <= 130, mean  # the ~100-byte rows the claim is about
    per_message: dict[str, int] = {}
    counts: dict[str, int] = {}
    for compression in ("none", "zstd"):
        msgs = _pack(
            [(rows, lines, [])], budget=256 * 1024, compression=compression, columns=HEADER
        )
        assert all(m.size <= 256 * 1024 for m in msgs)
        assert sum(m.row_count for m in msgs) == len(rows)
        # The first zstd message is cut on a guessed ratio; the later ones on the measured one.
        per_message[compression] = max(m.row_count for m in msgs)
        counts[compression] = len(msgs)
    assert per_message["none"] > 2000
    assert per_message["zstd"] > per_message["none"]
    assert counts["zstd"] < counts["none"]


def test_on_duplicate_is_carried_by_every_message() -> None:
    """The packer writes envelope v1's optional ``dup`` only when it is not the default."""
    from headrace.envelope import decode as decode_body

    rows = [[str(i), f"row {i}"] for i in range(500)]
    for mode in ("error", "update"):
        packer = Packer(
            run_id="0" * 32,
            table="t",
            columns=["a", "b"],
            source="s.csv",
            budget=4096,
            packing=Packing(compression="none", on_duplicate=mode),
        )
        messages = [*packer.add(rows, list(range(2, 502)), []), *packer.finish()]
        assert len(messages) > 1
        assert {decode_body(m.body).on_duplicate for m in messages} == {mode}
