"""CsvReader and sources: line numbers, chunking, undecodable bytes, limits, gzip bombs."""

from __future__ import annotations

import csv
import gzip
import io
import re
import struct
import zlib
from collections.abc import Iterator
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from cli.datagen import observations
from headrace.errors import InputError
from headrace.schema import Reject, TableSchema
from producer.reader import CsvReader
from producer.sources import Source, open_source

BIG = 1 << 20


@pytest.fixture(autouse=True)
def _restore_csv_field_limit() -> Iterator[None]:
    """CsvReader sets the process-wide csv field limit; leave it as it was."""
    before = csv.field_size_limit()
    yield
    csv.field_size_limit(before)


def _reader(data: bytes, chunk_rows: int = 1000, max_field_bytes: int = BIG) -> CsvReader:
    return CsvReader(
        io.BytesIO(data), source="mem.csv", chunk_rows=chunk_rows, max_field_bytes=max_field_bytes
    )


def _collect_lines(reader: CsvReader, into: list[int]) -> None:
    """Read chunks until the reader stops, keeping the lines seen so far."""
    for chunk in reader.chunks():
        into.extend(chunk.lines)


def _read_all(reader: CsvReader) -> tuple[list[list[str]], list[int], list[Reject], list[int]]:
    rows: list[list[str]] = []
    lines: list[int] = []
    rejects: list[Reject] = []
    sizes: list[int] = []
    for chunk in reader.chunks():
        assert len(chunk.rows) == len(chunk.lines)
        rows.extend(chunk.rows)
        lines.extend(chunk.lines)
        rejects.extend(chunk.rejects)
        sizes.append(len(chunk.rows) + len(chunk.rejects))
    return rows, lines, rejects, sizes


# A file with blank lines, quoted multi-line fields (one holding a blank line), quotes,
# and no newline at the end. Data rows start on lines 2, 4, 7, 9, 13 and 14.
_TRICKY = (
    "a,b,c\n"  # 1
    "1,2,3\n"  # 2
    "\n"  # 3
    '4,"multi\n'  # 4
    'line",6\n'  # 5
    "\n"  # 6
    '7,"say ""hi""",9\n'  # 7
    "\n"  # 8
    '10,"x\n'  # 9
    "\n"  # 10
    "y\n"  # 11
    '",12\n'  # 12
    "13,,\n"  # 13
    "ü,é,😀"  # 14
)
_TRICKY_ROWS = [
    ["1", "2", "3"],
    ["4", "multi\nline", "6"],
    ["7", 'say "hi"', "9"],
    ["10", "x\n\ny\n", "12"],
    ["13", "", ""],
    ["ü", "é", "😀"],
]
_TRICKY_LINES = [2, 4, 7, 9, 13, 14]


@pytest.mark.parametrize("newline", ["\n", "\r\n"], ids=["lf", "crlf"])
def test_line_numbers_with_multiline_fields_and_blank_lines(newline: str) -> None:
    data = _TRICKY.replace("\n", newline).encode("utf-8")
    reader = _reader(data)
    assert reader.header == ["a", "b", "c"]
    rows, lines, rejects, _ = _read_all(reader)
    assert rows == [[v.replace("\n", newline) for v in row] for row in _TRICKY_ROWS]
    assert lines == _TRICKY_LINES
    assert rejects == []
    assert reader.rows_read == 6


def test_blank_lines_before_the_header_are_skipped() -> None:
    reader = _reader(b"\n\r\n\nx,y\n\n1,2\n")
    assert reader.header == ["x", "y"]
    rows, lines, _, _ = _read_all(reader)
    assert (rows, lines) == ([["1", "2"]], [6])


@pytest.mark.parametrize("chunk_rows", [1, 2, 3, 5, 6, 7, 100])
def test_chunking_gives_the_same_rows(chunk_rows: int) -> None:
    data = _TRICKY.encode("utf-8")
    reader = _reader(data, chunk_rows=chunk_rows)
    rows, lines, _, sizes = _read_all(reader)
    assert rows == _TRICKY_ROWS
    assert lines == _TRICKY_LINES
    assert all(0 < n <= chunk_rows for n in sizes)
    assert all(n == chunk_rows for n in sizes[:-1])
    assert reader.rows_read == len(_TRICKY_ROWS)


_FIELD = st.text(
    alphabet=st.characters(exclude_categories=["Cs"], exclude_characters="\x00"), max_size=12
) | st.sampled_from(['"', ",", "\n", "\r\n", "\r", '""', " ", "a\nb", "\ufeff"])


@settings(max_examples=150, deadline=None)
@given(
    rows=st.lists(st.lists(_FIELD, min_size=1, max_size=4), min_size=1, max_size=40),
    blanks=st.lists(st.integers(0, 2), min_size=41, max_size=41),
    chunk_rows=st.integers(1, 8),
)
def test_reader_matches_what_csv_writer_wrote(
    rows: list[list[str]], blanks: list[int], chunk_rows: int
) -> None:
    """Any rows written by csv.writer come back with the line each one starts on."""
    out = io.StringIO()
    # "\r\n": Python 3.11's writer quotes a field holding "\r" only when "\r" is in the
    # line terminator.
    writer = csv.writer(out, lineterminator="\r\n")
    writer.writerow(["h"])
    expected_lines = []
    for row, blank in zip(rows, blanks, strict=False):
        out.write("\n\r\n"[:blank])  # zero, one or two blank lines, mixed endings
        text = out.getvalue()
        expected_lines.append(1 + len(re.findall(r"\r\n|\r|\n", text)))
        writer.writerow(row)  # a lone empty field is written as "", not as a blank line
    reader = _reader(out.getvalue().encode("utf-8"), chunk_rows=chunk_rows)
    got_rows, got_lines, rejects, sizes = _read_all(reader)
    assert rejects == []
    assert got_rows == rows
    assert got_lines == expected_lines
    assert all(0 < n <= chunk_rows for n in sizes)


# --- undecodable bytes ------------------------------------------------------------------------


def test_invalid_utf8_rejects_only_that_row() -> None:
    data = b"a,b,c\n1,2,3\n4,x\xffy,6\n7,8,9\n10,11,\xe2\x82\n13,14,15\n"
    rows, lines, rejects, _ = _read_all(_reader(data))
    assert rows == [["1", "2", "3"], ["7", "8", "9"], ["13", "14", "15"]]
    assert lines == [2, 4, 6]
    assert [r.line for r in rejects] == [3, 5]
    assert rejects[0].reason == "column 2: invalid UTF-8 byte 0xff at offset 1"
    assert rejects[0].raw == "4,x\ufffdy,6"
    assert rejects[1].reason == "column 3: invalid UTF-8 byte 0xe2 at offset 0"


@pytest.mark.parametrize("chunk_rows", [1, 7, 1000])
def test_invalid_utf8_found_however_far_ahead_it_was_decoded(chunk_rows: int) -> None:
    """The text layer decodes kilobytes ahead of the rows handed out: a bad byte decoded while
    reading the header or an earlier chunk must still reject its own row, later."""
    bad_lines = {5, 300, 301, 2000, 4999}
    parts = [b"id,name\n"]
    for line in range(2, 5001):
        if line in bad_lines:
            parts.append(b'%d,"bad\xc3(\n%d"\n' % (line, line))  # quoted, spans two lines
        else:
            parts.append(b"%d,name-%d\n" % (line, line))
    data = b"".join(parts)
    reader = _reader(data, chunk_rows=chunk_rows)
    rows, lines, rejects, _ = _read_all(reader)
    assert len(rows) + len(rejects) == 4999 == reader.rows_read
    assert [r.line for r in rejects] == sorted(_expected_bad_lines(bad_lines))
    assert all(r.reason == "column 2: invalid UTF-8 byte 0xc3 at offset 3" for r in rejects)
    assert all("\udcc3" not in v for row in rows for v in row)
    assert set(lines).isdisjoint(r.line for r in rejects)


def _expected_bad_lines(bad: set[int]) -> list[int]:
    """Line numbers of the bad rows once each earlier bad row has taken two lines."""
    out, shift = [], 0
    for line in range(2, 5001):
        if line in bad:
            out.append(line + shift)
            shift += 1
    return out


def test_invalid_utf8_in_the_header_is_an_input_error() -> None:
    with pytest.raises(InputError, match="header is not valid UTF-8") as err:
        _reader(b"\n\nid,n\xe9m\n1,2\n")
    assert (err.value.line, err.value.column) == (3, 2)


# --- header and limits ------------------------------------------------------------------------


def test_bom_header_resolves() -> None:
    data = (
        b"\xef\xbb\xbfobserved_at,bot_id,sku,price,quantity,in_stock,title\n"
        b"2026-11-23 04:00:00,7,SKU-1,1.50,2,true,Kettle\n"
    )
    reader = _reader(data)
    assert reader.header[0] == "\ufeffobserved_at"
    specs = TableSchema.from_table(observations).resolve_header(reader.header, source="mem.csv")
    assert specs[0].name == "observed_at"
    rows, lines, _, _ = _read_all(reader)
    assert (rows[0][0], lines) == ("2026-11-23 04:00:00", [2])


@pytest.mark.parametrize("data", [b"", b"\n", b"\r\n\r\n\n"], ids=["empty", "lf", "blank"])
def test_empty_file(data: bytes) -> None:
    with pytest.raises(InputError, match="file is empty: no header line") as err:
        _reader(data)
    assert err.value.source == "mem.csv"


def test_header_only_file_has_no_chunks() -> None:
    reader = _reader(b"a,b\n\n")
    assert list(reader.chunks()) == []
    assert reader.rows_read == 0


@pytest.mark.parametrize("quoted", [False, True])
def test_field_over_the_limit(quoted: bool) -> None:
    huge = b"x" * 5000
    field = b'"' + huge[:2000] + b"\n" + huge[2000:] + b'"' if quoted else huge
    data = b"a,b\n1,2\n\n3,4\n5," + field + b"\n7,8\n"
    reader = _reader(data, chunk_rows=1, max_field_bytes=1024)
    got: list[int] = []
    with pytest.raises(InputError, match="field larger than field limit") as err:
        _collect_lines(reader, got)
    assert got == [2, 4]
    assert err.value.line == 5
    assert str(err.value).startswith("mem.csv:5: cannot parse CSV")


def test_field_at_the_limit_is_fine() -> None:
    data = b"a,b\n1," + b"y" * 1024 + b"\n"
    rows, _, _, _ = _read_all(_reader(data, max_field_bytes=1024))
    assert rows == [["1", "y" * 1024]]


# --- files and gzip ---------------------------------------------------------------------------


def _open(path: Path, *, max_ratio: float = 200.0, max_bytes: int = 1 << 40) -> CsvReader:
    source = open_source(str(path))
    stream = source.open(max_ratio=max_ratio, max_bytes=max_bytes)
    return CsvReader(stream, source=source.uri, chunk_rows=2, max_field_bytes=BIG)


@pytest.mark.parametrize("name", ["plain.csv", "packed.csv.gz", "gzip-without-suffix.csv"])
def test_files_plain_and_gzip(tmp_path: Path, name: str) -> None:
    data = _TRICKY.encode("utf-8")
    path = tmp_path / name
    path.write_bytes(data if name == "plain.csv" else gzip.compress(data, mtime=0))
    source = open_source(str(path))
    assert isinstance(source, Source)
    assert source.uri == str(path.resolve())
    assert source.size == path.stat().st_size
    assert source.version == str(path.stat().st_mtime_ns)
    reader = _open(path)
    try:
        rows, lines, rejects, _ = _read_all(reader)
    finally:
        reader.close()
    assert (rows, lines, rejects) == (_TRICKY_ROWS, _TRICKY_LINES, [])


def test_gz_suffix_without_gzip_content_reads_as_plain(tmp_path: Path) -> None:
    path = tmp_path / "not-really.csv.gz"
    path.write_bytes(b"a\n1\n")
    reader = _open(path)
    assert _read_all(reader)[0] == [["1"]]
    reader.close()


def test_open_source_errors(tmp_path: Path) -> None:
    with pytest.raises(InputError, match="cannot open"):
        open_source(str(tmp_path / "missing.csv"))
    with pytest.raises(InputError, match="not a regular file"):
        open_source(str(tmp_path))


def _write_gzip_bomb(path: Path, *, head: bytes, block: bytes, copies: int) -> None:
    """A gzip member of ``head`` + ``copies`` x ``block``, built by repeating one compressed
    block (a full flush resets the compressor, so the block's deflate output can be reused)."""
    co = zlib.compressobj(9, zlib.DEFLATED, -15)
    first = co.compress(head) + co.flush(zlib.Z_FULL_FLUSH)
    body = co.compress(block) + co.flush(zlib.Z_FULL_FLUSH)
    last = co.flush(zlib.Z_FINISH)
    crc = zlib.crc32(head)
    for _ in range(copies):
        crc = zlib.crc32(block, crc)
    size = (len(head) + copies * len(block)) & 0xFFFFFFFF
    with path.open("wb") as fh:
        fh.write(b"\x1f\x8b\x08\x00\x00\x00\x00\x00\x02\xff")
        fh.write(first)
        for _ in range(copies):
            fh.write(body)
        fh.write(last)
        fh.write(struct.pack("<II", crc, size))


def test_gzip_bomb_helper_is_a_valid_gzip(tmp_path: Path) -> None:
    path = tmp_path / "small.gz"
    _write_gzip_bomb(path, head=b"h\n", block=b"0" * 99 + b"\n", copies=30)
    assert gzip.decompress(path.read_bytes()) == b"h\n" + (b"0" * 99 + b"\n") * 30


def test_gzip_bomb_stops_on_the_ratio(tmp_path: Path) -> None:
    path = tmp_path / "bomb.csv.gz"
    line = b"0" * 1023 + b"\n"
    _write_gzip_bomb(path, head=b"zeros\n", block=line * 1024, copies=200)  # 200 MiB of "0"
    assert path.stat().st_size < 1 << 20
    reader = _open(path)
    got: list[int] = []
    with pytest.raises(InputError, match=r"compression ratio passed 200:1") as err:
        _collect_lines(reader, got)
    read = len(got)
    assert "gzip bomb" in str(err.value)
    assert err.value.source == str(path.resolve())
    assert 0 < read * 1024 < 64 << 20  # stopped early, long before the end
    reader.close()


def test_gzip_size_cap(tmp_path: Path) -> None:
    path = tmp_path / "big.csv.gz"
    path.write_bytes(gzip.compress(b"a\n" + b"1\n" * 200_000, mtime=0))
    reader = _open(path, max_bytes=100_000)
    with pytest.raises(InputError, match="decompressed data passed 100000 bytes"):
        _read_all(reader)
    reader.close()
