"""Envelope v1, the wire format: encoding, decoding, and poison detection."""

from __future__ import annotations

import base64
import random
from typing import Any

import orjson
import pytest
import zstandard

from headrace.envelope import MAX_DECODED_BYTES, VERSION, Envelope, decode, encode
from headrace.errors import EnvelopeError
from headrace.schema import Reject

RUN = "0123456789abcdef0123456789abcdef"
SOURCE = "/data/drop-2026-11-23.csv.gz"


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


# --- the optional duplicate mode (issue 12) ---------------------------------------------------


@pytest.mark.parametrize("mode", ["error", "skip", "update"])
def test_duplicate_mode_travels(mode: str) -> None:
    env = _envelope(rows=[["1", None], ["2", "x"], ["3", ""]])
    env.on_duplicate = mode
    msg = encode(env)
    assert msg.encoding == "json"
    assert ('"dup"' in msg.body) is (mode != "error")  # the default adds nothing to a message
    assert decode(msg.body, msg.attributes()).on_duplicate == mode


def test_absent_duplicate_mode_is_error() -> None:
    assert decode(orjson.dumps(_doc()).decode()).on_duplicate == "error"


@pytest.mark.parametrize("dup", ["upsert", "", "SKIP", 1, None, ["skip"], True])
def test_duplicate_mode_is_checked_strictly(dup: object) -> None:
    with pytest.raises(EnvelopeError, match="malformed dup"):
        decode(orjson.dumps(_doc(dup=dup)).decode())
