"""Each reading option end to end on MariaDB (issue 12): a small file written that way goes
through producer, SQS and worker and reads back as the values it spells; and, for any value,
typing either lets it land exactly (read back equal after the conversion) or rejects it with
a reason.
"""

from __future__ import annotations

import codecs
import datetime as dt
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa
from hypothesis import HealthCheck, given
from hypothesis import settings as hsettings
from hypothesis import strategies as st
from sqlalchemy.ext.asyncio import AsyncEngine

from cli.verify import verify_source
from headrace.csvformat import CsvFormat
from headrace.schema import reflect_table
from headrace.settings import Settings
from headrace.tables import rejected_rows
from producer.app import produce
from worker.app import Worker

pytestmark = pytest.mark.slow

DDL = """
CREATE TABLE opts (
    id INT AUTO_INCREMENT PRIMARY KEY,
    k INT NOT NULL,
    n INT NULL,
    label VARCHAR(20) NULL,
    amount DECIMAL(12, 2) NULL,
    ratio DOUBLE NULL,
    at DATETIME(3) NULL,
    ts TIMESTAMP NULL,
    day DATE NULL,
    flag TINYINT(1) NULL,
    UNIQUE KEY uq_opts_k (k)
)
"""
COLUMNS = ("k", "n", "label", "amount", "ratio", "at", "ts", "day", "flag")
D = Decimal
T = dt.datetime


def _row(k: int, **values: Any) -> tuple[Any, ...]:
    return tuple(values.get(c) if c != "k" else k for c in COLUMNS)


# (options, file text, encoding, expected rows (k order), expected reject lines)
CASES: dict[str, tuple[dict[str, Any], str, str, list[tuple[Any, ...]], list[int]]] = {
    "semicolon-and-single-quote": (
        {"delimiter": ";", "quote": "'"},
        "k;label;amount\n1;'a;b';1.50\n2;'it''s';-2\n",
        "utf-8",
        [_row(1, label="a;b", amount=D("1.50")), _row(2, label="it's", amount=D("-2.00"))],
        [],
    ),
    "tab-and-escape": (
        {"delimiter": "tab", "escape": "\\"},
        'k\tlabel\n1\t"say \\"hi\\""\n2\tx\\\ty\n',
        "utf-8",
        [_row(1, label='say "hi"'), _row(2, label="x\ty")],
        [],
    ),
    "latin-1": (
        {"encoding": "latin-1"},
        "k,label\n1,Größe\n2,façade\n",
        "latin-1",
        [_row(1, label="Größe"), _row(2, label="façade")],
        [],
    ),
    "cp1252": (
        {"encoding": "cp1252"},
        "k,label\n1,€ 5 „netto“\n2,Œuvre\n",
        "cp1252",
        [_row(1, label="€ 5 „netto“"), _row(2, label="Œuvre")],
        [],
    ),
    "utf-16": (
        {"encoding": "utf-16"},
        "k,label\n1,日本語\n2,emoji 🎉\n",
        "utf-16",
        [_row(1, label="日本語"), _row(2, label="emoji 🎉")],
        [],
    ),
    "skip-lines": (
        {"skip_lines": 2},
        "report of today\nsecond line, with a comma\nk,n\n1,10\n2,x\n3,30\n",
        "utf-8",
        [_row(1, n=10), _row(3, n=30)],
        [5],
    ),
    "no-header": (
        {"header": False, "columns": ["k", "day"]},
        "1,2026-11-23\n2,2026-11-24\n",
        "utf-8",
        [_row(1, day=dt.date(2026, 11, 23)), _row(2, day=dt.date(2026, 11, 24))],
        [],
    ),
    "map-and-ignore": (
        {"rename": {"Key": "k", "Name": "label"}, "ignore": ["Unused", ""]},
        ",Key,Unused,Name\nr1,1,zz,a\nr2,2,zz,b\n",
        "utf-8",
        [_row(1, label="a"), _row(2, label="b")],
        [],
    ),
    "null-markers": (
        {"nulls": ["NA", "\\N"]},
        "k,n,label,at\n1,NA,,NA\n2,\\N,NA,2026-11-23 04:00:00\n3,,x,\n",
        "utf-8",
        [_row(1, label=""), _row(2, at=T(2026, 11, 23, 4))],
        [4],  # an empty INT field is no marker
    ),
    "empty-marker": (
        {"nulls": ["NA", ""]},
        "k,n,label\n1,,\n2,NA,NA\n",
        "utf-8",
        [_row(1), _row(2)],
        [],
    ),
    "iso-offsets": (
        {},
        "k,at,ts\n1,2013-01-01T05:00:00Z,2013-01-01T05:00:00+02:00\n"
        "2,2013-01-01 05:00:00.125-01:30,\n3,2013-01-01T05:00:00.1255Z,\n",
        "utf-8",
        [
            _row(1, at=T(2013, 1, 1, 5), ts=T(2013, 1, 1, 3)),
            _row(2, at=T(2013, 1, 1, 6, 30, 0, 125000)),
        ],
        [4],  # 4 fractional digits: DATETIME(3) would round
    ),
    "timezone": (
        {"timezone": "America/New_York"},
        "k,at,ts\n1,2026-07-01 12:00:00,2026-07-01 12:00:00\n2,,2026-01-15 08:00:00\n"
        "3,,2026-03-08 02:30:00\n",
        "utf-8",
        [_row(1, at=T(2026, 7, 1, 12), ts=T(2026, 7, 1, 16)), _row(2, ts=T(2026, 1, 15, 13))],
        [4],  # skipped by the daylight-saving change
    ),
    "datetime-formats": (
        {"datetime_formats": ["%d/%m/%Y %H:%M", "%m/%d/%Y"]},
        "k,at,day\n1,23/11/2026 04:05,11/23/2026\n"
        "2,2026-11-24 00:00:00,2026-11-24\n3,,31/11/2026\n",
        "utf-8",
        [
            _row(1, at=T(2026, 11, 23, 4, 5), day=dt.date(2026, 11, 23)),
            _row(2, at=T(2026, 11, 24), day=dt.date(2026, 11, 24)),
        ],
        [4],
    ),
    "decimal-comma": (
        {"decimal_comma": True, "delimiter": ";"},
        "k;amount;ratio\n1;1.234,56;1,5e3\n2;-0,5;2\n3;1.234.567.890,12;\n4;1,234;\n",
        "utf-8",
        [
            _row(1, amount=D("1234.56"), ratio=1500.0),
            _row(2, amount=D("-0.50"), ratio=2.0),
            _row(3, amount=D("1234567890.12")),
        ],
        [5],  # three decimals do not fit DECIMAL(12,2)
    ),
    "true-false-words": (
        {"true_words": ["ja", "J"], "false_words": ["nein"]},
        "k,flag\n1,ja\n2,NEIN\n3,true\n4,j\n5,vielleicht\n",
        "utf-8",
        [_row(1, flag=1), _row(2, flag=0), _row(3, flag=1), _row(4, flag=1)],
        [6],
    ),
}


def _encode(text: str, encoding: str) -> bytes:
    if encoding == "utf-16":
        return codecs.BOM_UTF16_LE + text.encode("utf-16-le")
    return text.encode(encoding)


@pytest.fixture
async def opts(settings: Settings, engine: AsyncEngine) -> Settings:
    async with engine.begin() as conn:
        await conn.exec_driver_sql(DDL)
    worker = settings.worker.model_copy(update={"idle_exit_s": 0.5, "flush_age_s": 0.1})
    return settings.model_copy(update={"worker": worker})


@pytest.mark.parametrize("case", sorted(CASES))
async def test_option_round_trip(
    tmp_path: Path, opts: Settings, engine: AsyncEngine, case: str
) -> None:
    options, text, encoding, expected, reject_lines = CASES[case]
    source = tmp_path / f"{case}.csv"
    source.write_bytes(_encode(text, encoding))
    producer = opts.producer.model_copy(update={"csv": CsvFormat.model_validate(options)})
    settings = opts.model_copy(update={"producer": producer})

    report = await produce(settings, str(source), "opts")
    assert report.rows_rejected == len(reject_lines)
    stats = await Worker(settings).run()
    assert (stats.batch_failures, stats.messages_poison) == (0, 0)

    async with engine.connect() as conn:
        cols = ", ".join(COLUMNS)  # fixed names, not input
        got = (await conn.exec_driver_sql(f"SELECT {cols} FROM opts ORDER BY k")).all()
        rejects = (
            await conn.execute(
                sa.select(rejected_rows.c.line, rejected_rows.c.reason).order_by(
                    rejected_rows.c.line
                )
            )
        ).all()
    assert [tuple(r) for r in got] == expected
    assert [line for line, _ in rejects] == reject_lines
    assert all(reason for _, reason in rejects)
    verified = await verify_source(settings, engine, str(source), "opts")
    assert verified.ok, verified.line()


# --- any value: lands exactly or is rejected with a reason -----------------------------------

_digits = st.text("0123456789", min_size=1, max_size=4)


@st.composite
def comma_numbers(draw: st.DrawFn) -> str:
    """Numbers as a European file writes them, and some near misses."""
    whole = draw(st.integers(0, 10**11))
    grouped = draw(st.booleans())
    text = f"{whole:,}".replace(",", ".") if grouped else str(whole)
    if draw(st.booleans()):
        text += "," + draw(_digits)
    return draw(st.sampled_from(["", "-", "+"])) + text


@st.composite
def iso_datetimes(draw: st.DrawFn) -> str:
    moment = draw(st.datetimes(min_value=T(1000, 1, 2), max_value=T(9999, 12, 30)))
    text = moment.strftime("%Y-%m-%d") + draw(st.sampled_from(["T", " "]))
    text += moment.strftime("%H:%M:%S")
    digits = draw(st.integers(0, 6))
    if digits:
        text += "." + f"{moment.microsecond:06d}"[:digits]
    minutes = draw(st.integers(-14 * 60, 14 * 60))
    zone = draw(
        st.sampled_from(
            [
                "",
                "Z",
                f"{'-' if minutes < 0 else '+'}{abs(minutes) // 60:02d}:{abs(minutes) % 60:02d}",
            ]
        )
    )
    return text + zone


def _expected_decimal(text: str) -> Decimal:
    sign = "-" if text.startswith("-") else ""
    whole, _, frac = text.lstrip("+-").partition(",")
    return Decimal(f"{sign}{whole.replace('.', '')}.{frac or '0'}")


def _expected_datetime(text: str) -> dt.datetime:
    value = dt.datetime.fromisoformat(text.replace("Z", "+00:00"))
    if value.tzinfo is not None:
        value = value.astimezone(dt.UTC).replace(tzinfo=None)
    return value


@given(amount=comma_numbers(), at=iso_datetimes())
@hsettings(
    max_examples=150,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture],
)
async def test_a_value_lands_exactly_or_is_rejected(
    opts: Settings, engine: AsyncEngine, amount: str, at: str
) -> None:
    """Typing's verdict against the database's: what typing accepts, MariaDB stores as the
    value the text means (read back equal); what it refuses has a reason."""
    async with engine.connect() as conn:
        schema = (await reflect_table(conn, "opts")).typed(CsvFormat(decimal_comma=True))
    specs = schema.specs_for(["k", "amount", "at"])
    out = schema.validate(specs, [["1", amount, at]], [2])
    if out.rejects:
        reason = out.rejects[0].reason
        if reason.startswith("column 2 'amount'"):
            whole, _, frac = amount.lstrip("+-").replace(".", "").partition(",")
            assert len(frac) > 2 or len(whole.lstrip("0")) > 10, reason  # does not fit
        else:
            assert reason.startswith("column 3 'at'"), reason
            frac = at.partition(".")[2][:6].rstrip("Z").split("+")[0].split("-")[0]
            year = _expected_datetime(at).year if not frac[3:].strip("0") else 0
            assert frac[3:].strip("0") or not 1000 <= year <= 9999, reason
        return
    _, stored_amount, stored_at = out.rows[0]
    async with engine.begin() as conn:
        await conn.execute(sa.text("DELETE FROM opts"))
        await conn.execute(
            sa.text("INSERT INTO opts (k, amount, at) VALUES (1, :a, :t)"),
            {"a": stored_amount, "t": stored_at},
        )
        back = (await conn.execute(sa.text("SELECT amount, at FROM opts"))).one()
    assert back[0] == _expected_decimal(amount)
    assert back[1] == _expected_datetime(at)
