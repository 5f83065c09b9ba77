"""Envelope v1: packing into size-bounded SQS messages, decoding, and poison detection."""

from __future__ import annotations

import base64
import random
import re
from collections.abc import Sequence
from typing import Any

import orjson
import pytest
import zstandard
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from headrace.datagen import HEADER, generate_csv
from headrace.envelope import (
    MAX_DECODED_BYTES,
    VERSION,
    EncodedMessage,
    Envelope,
    Packer,
    decode,
    encode,
)
from headrace.errors import EnvelopeError
from headrace.schema import Reject, TableSchema, row_text
from headrace.tables import observations
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
        compression=compression,
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
        run_id=RUN, table="t", columns=["a"], source=SOURCE, budget=budget, compression="zstd"
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


# --- encode / decode --------------------------------------------------------------------------


def _envelope(**changes: Any) -> Envelope:
    fields: dict[str, Any] = {
        "rows": [["1", None], ['ü\n"x"', ""], ["3", "\ufffe"]],
        "lines": [2, 3, 7],
        "rejects": [Reject(5, "a,b,c", "expected 2 fields, found 3")],
        **changes,
    }
    return Envelope.from_rows(RUN, 3, "things", ("a", "b"), SOURCE, **fields)


@pytest.mark.parametrize("compressor", [None, zstandard.ZstdCompressor(level=3)])
def test_encode_decode_round_trip(compressor: zstandard.ZstdCompressor | None) -> None:
    msg = encode(_envelope(), compress=compressor)
    # U+FFFE may not travel as plain text: it is compressed whatever was asked.
    assert msg.encoding == "zstd+b64"
    env = decode(msg.body, msg.attributes())
    assert env.rows == [["1", None], ['ü\n"x"', ""], ["3", "\ufffe"]]
    assert env.lines == [2, 3, 7]
    assert env.rejects == [Reject(5, "a,b,c", "expected 2 fields, found 3")]
    assert (env.run_id, env.seq, env.table, env.columns, env.source) == (
        RUN,
        3,
        "things",
        ("a", "b"),
        SOURCE,
    )
    assert env.raw_bytes == msg.raw_bytes


def test_plain_json_body_and_byte_accounting() -> None:
    msg = encode(_envelope(rows=[["é" * 10, "😀"]], lines=[2], rejects=[]))
    assert msg.encoding == "json"
    assert msg.attributes()["headrace-v"] == {"DataType": "Number", "StringValue": str(VERSION)}
    # No attributes at all means plain JSON.
    env = decode(msg.body)
    assert env.rows == [["é" * 10, "😀"]]
    # raw_bytes feeds statement-size accounting: it counts UTF-8 bytes, not characters.
    assert env.raw_bytes == len(msg.body.encode("utf-8")) == msg.raw_bytes


def _json_attrs(enc: str) -> dict[str, Any]:
    return {"headrace-enc": {"DataType": "String", "StringValue": enc}}


def _doc(**changes: Any) -> dict[str, Any]:
    doc: dict[str, Any] = {
        "v": 1,
        "run": RUN,
        "seq": 0,
        "table": "things",
        "cols": ["a", "b"],
        "src": SOURCE,
        "lines": [[2, 2]],
        "rej": [],
        "n": 2,
        "data": [["1", "3"], ["2", None]],
    }
    doc.update(changes)
    return {k: v for k, v in doc.items() if v is not _MISSING}


_MISSING = object()


def _zstd_bomb(declare_size: bool) -> str:
    """A valid envelope followed by more than MAX_DECODED_BYTES of JSON whitespace."""
    head = orjson.dumps(_doc())
    pad = MAX_DECODED_BYTES + 1
    chunk = b" " * (1 << 20)
    cctx = zstandard.ZstdCompressor(level=1)
    cobj = cctx.compressobj(size=len(head) + pad) if declare_size else cctx.compressobj()
    parts = [cobj.compress(head)]
    left = pad
    while left:
        n = min(left, len(chunk))
        parts.append(cobj.compress(chunk[:n]))
        left -= n
    parts.append(cobj.flush())
    compressed = b"".join(parts)
    assert len(compressed) < 64 * 1024  # a bomb: tiny in, huge out
    return base64.b64encode(compressed).decode()


def _b64_zstd(raw: bytes) -> str:
    return base64.b64encode(zstandard.ZstdCompressor().compress(raw)).decode()


_POISON: list[Any] = [
    pytest.param("not json at all", None, id="non-json"),
    pytest.param("", None, id="empty-body"),
    pytest.param("[1, 2]", None, id="not-an-object"),
    pytest.param(orjson.dumps(_doc(v=2)).decode(), None, id="wrong-version"),
    pytest.param(orjson.dumps(_doc(v="1")).decode(), None, id="version-as-text"),
    pytest.param(orjson.dumps(_doc(v=_MISSING)).decode(), None, id="no-version"),
    pytest.param("!!!not base64!!!", _json_attrs("zstd+b64"), id="bad-base64"),
    pytest.param(
        base64.b64encode(random.Random(3).randbytes(300)).decode(),
        _json_attrs("zstd+b64"),
        id="zstd-garbage",
    ),
    pytest.param(
        orjson.dumps(_doc()).decode(), _json_attrs("zstd+b64"), id="plain-json-labelled-zstd"
    ),
    pytest.param(_b64_zstd(b"\xff\xfe not json"), _json_attrs("zstd+b64"), id="zstd-of-garbage"),
    pytest.param(orjson.dumps(_doc()).decode(), _json_attrs("gzip"), id="unknown-encoding"),
    pytest.param(orjson.dumps(_doc(lines=[[2, 3]])).decode(), None, id="more-lines-than-rows"),
    pytest.param(orjson.dumps(_doc(lines=[[2, 1]])).decode(), None, id="fewer-lines-than-rows"),
    pytest.param(
        orjson.dumps(_doc(lines=[[2, 10**12]])).decode(), None, id="line-run-of-a-trillion"
    ),
    pytest.param(orjson.dumps(_doc(lines=[[2, -5]])).decode(), None, id="negative-line-run"),
    pytest.param(orjson.dumps(_doc(lines=[[2]])).decode(), None, id="malformed-line-run"),
    pytest.param(orjson.dumps(_doc(lines="2")).decode(), None, id="lines-not-a-list"),
    pytest.param(orjson.dumps(_doc(data=[["1", "3"], ["2"]])).decode(), None, id="column-short"),
    pytest.param(
        orjson.dumps(_doc(data=[["1", "3", "5"], ["2", "4"]])).decode(), None, id="column-long"
    ),
    pytest.param(orjson.dumps(_doc(data=[["1", "3"]])).decode(), None, id="missing-column"),
    pytest.param(orjson.dumps(_doc(data=[["1", "3"], "24"])).decode(), None, id="column-not-list"),
    pytest.param(orjson.dumps(_doc(data=[["1", 3], ["2", None]])).decode(), None, id="number"),
    pytest.param(orjson.dumps(_doc(data=[["1", ["x"]], ["2", None]])).decode(), None, id="nested"),
    pytest.param(orjson.dumps(_doc(data=_MISSING)).decode(), None, id="no-data"),
    pytest.param(orjson.dumps(_doc(n=_MISSING)).decode(), None, id="no-row-count"),
    pytest.param(orjson.dumps(_doc(n=3)).decode(), None, id="row-count-too-high"),
    pytest.param(orjson.dumps(_doc(n=-1)).decode(), None, id="negative-row-count"),
    pytest.param(orjson.dumps(_doc(run="xyz")).decode(), None, id="short-run-id"),
    pytest.param(orjson.dumps(_doc(run="A" * 32)).decode(), None, id="uppercase-run-id"),
    pytest.param(orjson.dumps(_doc(run=RUN + "\n")).decode(), None, id="run-id-newline"),
    pytest.param(orjson.dumps(_doc(run=12)).decode(), None, id="run-id-number"),
    pytest.param(orjson.dumps(_doc(seq=-1)).decode(), None, id="negative-seq"),
    pytest.param(orjson.dumps(_doc(seq="0")).decode(), None, id="seq-as-text"),
    pytest.param(orjson.dumps(_doc(table="")).decode(), None, id="empty-table"),
    pytest.param(orjson.dumps(_doc(cols=[])).decode(), None, id="no-columns"),
    pytest.param(orjson.dumps(_doc(cols=["a", 2])).decode(), None, id="column-not-text"),
    pytest.param(orjson.dumps(_doc(cols=["a", "a"])).decode(), None, id="column-named-twice"),
    pytest.param(orjson.dumps(_doc(cols=["a", ""])).decode(), None, id="empty-column-name"),
    pytest.param(orjson.dumps(_doc(rej=[[5, "raw"]])).decode(), None, id="short-reject"),
    pytest.param(orjson.dumps(_doc(rej=[["x", "raw", "r"]])).decode(), None, id="reject-line"),
]


@pytest.mark.parametrize(("body", "attributes"), _POISON)
def test_decode_rejects_poison(body: str, attributes: dict[str, Any] | None) -> None:
    assert decode(orjson.dumps(_doc()).decode()).rows == [["1", "2"], ["3", None]]  # baseline
    with pytest.raises(EnvelopeError):
        decode(body, attributes)


@pytest.mark.parametrize("declare_size", [True, False], ids=["size-in-header", "streamed"])
def test_decode_refuses_a_zstd_bomb(declare_size: bool) -> None:
    body = _zstd_bomb(declare_size)
    with pytest.raises(EnvelopeError):
        decode(body, _json_attrs("zstd+b64"))


def test_unknown_encoding_is_named() -> None:
    with pytest.raises(EnvelopeError, match="unknown envelope encoding 'gzip'"):
        decode(orjson.dumps(_doc()).decode(), _json_attrs("gzip"))


# --- density ----------------------------------------------------------------------------------


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
