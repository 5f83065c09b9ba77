"""Two real-world-shaped files into users' own tables, each with its options (issue 12).

* ``data/r_write_csv.csv``: R's ``write.csv`` — row names under an empty header name, quoted
  strings with doubled quotes, ``NA`` for missing values, ``TRUE``/``FALSE``, ISO 8601 ``Z``
  timestamps, exponents in a DOUBLE column.
* ``data/european_export.csv``: a BI export — cp1252, a preamble line, ``;``, CRLF, German
  column names, ``1.234,56`` decimal commas, ``dd.mm.yyyy`` dates, ``ja``/``nein``.

Each loads through the pipeline (producer, SQS, worker) with 0 rejected rows, and matches
``LOAD DATA`` of the same file with explicit ``SET`` conversions into a copy of the table:
compared by count and checksum here; ``headrace verify`` with the same options agrees.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import pytest
import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncEngine

from cli.checksum import row_checksum
from cli.verify import verify_source
from headrace.csvformat import CsvFormat
from headrace.schema import reflect_table
from headrace.settings import Settings
from headrace.tables import rejected_rows
from producer.app import produce
from worker.app import Worker

pytestmark = pytest.mark.slow

DATA = Path(__file__).with_name("data")

WEATHER = """
CREATE TABLE {name} (
    id INT AUTO_INCREMENT PRIMARY KEY,
    station VARCHAR(40) NOT NULL,
    observed_at DATETIME NOT NULL,
    temp_c DECIMAL(4, 1) NULL,
    rain_mm DOUBLE NULL,
    dry TINYINT(1) NULL,
    comment VARCHAR(100) NULL,
    loaded_at TIMESTAMP NOT NULL DEFAULT CURRENT_TIMESTAMP,
    UNIQUE KEY uq_{name} (station, observed_at)
)
"""
WEATHER_LOAD = r"""
LOAD DATA INFILE '{path}' INTO TABLE weather_ref CHARACTER SET utf8mb4
FIELDS TERMINATED BY ',' OPTIONALLY ENCLOSED BY '"' ESCAPED BY ''
LINES TERMINATED BY '\n' IGNORE 1 LINES
(@rowname, station, @observed_at, @temp_c, @rain_mm, @dry, @comment)
SET observed_at = STR_TO_DATE(@observed_at, '%Y-%m-%dT%H:%i:%sZ'),
    temp_c = NULLIF(@temp_c, 'NA'),
    rain_mm = NULLIF(@rain_mm, 'NA'),
    dry = CASE @dry WHEN 'TRUE' THEN 1 WHEN 'FALSE' THEN 0 END,
    comment = NULLIF(@comment, 'NA')
"""
WEATHER_FORMAT = CsvFormat(nulls=["NA"], ignore=[""])

INVOICES = """
CREATE TABLE {name} (
    id INT AUTO_INCREMENT PRIMARY KEY,
    invoice_no VARCHAR(20) NOT NULL,
    customer VARCHAR(60) NOT NULL,
    invoice_date DATE NOT NULL,
    amount DECIMAL(12, 2) NOT NULL,
    vat_rate DECIMAL(4, 1) NOT NULL,
    paid TINYINT(1) NOT NULL,
    note VARCHAR(200) NULL,
    UNIQUE KEY uq_{name} (invoice_no)
)
"""
INVOICES_LOAD = r"""
LOAD DATA INFILE '{path}' INTO TABLE invoices_ref CHARACTER SET latin1
FIELDS TERMINATED BY ';' OPTIONALLY ENCLOSED BY '"' ESCAPED BY ''
LINES TERMINATED BY '\r\n' IGNORE 2 LINES
(invoice_no, customer, @day, @amount, @vat, @paid, @note)
SET invoice_date = STR_TO_DATE(@day, '%d.%m.%Y'),
    amount = REPLACE(REPLACE(@amount, '.', ''), ',', '.'),
    vat_rate = REPLACE(@vat, ',', '.'),
    paid = CASE @paid WHEN 'ja' THEN 1 WHEN 'nein' THEN 0 END,
    note = NULLIF(@note, '')
"""
INVOICES_FORMAT = CsvFormat(
    delimiter=";",
    encoding="cp1252",
    skip_lines=1,
    rename={
        "Rechnungsnr": "invoice_no",
        "Kunde": "customer",
        "Datum": "invoice_date",
        "Betrag": "amount",
        "MwSt-Satz": "vat_rate",
        "Bezahlt": "paid",
        "Bemerkung": "note",
    },
    decimal_comma=True,
    datetime_formats=["%d.%m.%Y"],
    true_words=["ja"],
    false_words=["nein"],
)


async def _table_checksum(
    engine: AsyncEngine, table: str, columns: Sequence[str]
) -> tuple[int, int]:
    async with engine.connect() as conn:
        schema = await reflect_table(conn, table)
        specs = schema.specs_for(columns)
        rows = (await conn.execute(sa.select(*(schema.table.c[c] for c in columns)))).all()
    return row_checksum(specs, rows)


@pytest.mark.parametrize(
    ("file", "table", "ddl", "load", "fmt", "columns", "rows"),
    [
        (
            "r_write_csv.csv",
            "weather",
            WEATHER,
            WEATHER_LOAD,
            WEATHER_FORMAT,
            ("station", "observed_at", "temp_c", "rain_mm", "dry", "comment"),
            60,
        ),
        (
            "european_export.csv",
            "invoices",
            INVOICES,
            INVOICES_LOAD,
            INVOICES_FORMAT,
            ("invoice_no", "customer", "invoice_date", "amount", "vat_rate", "paid", "note"),
            50,
        ),
    ],
)
async def test_real_world_file_matches_load_data(  # noqa: PLR0913 - one case's parameters
    settings: Settings,
    engine: AsyncEngine,
    file: str,
    table: str,
    ddl: str,
    load: str,
    fmt: CsvFormat,
    columns: tuple[str, ...],
    rows: int,
) -> None:
    source = DATA / file
    async with engine.begin() as conn:
        await conn.exec_driver_sql(ddl.format(name=table))
        await conn.exec_driver_sql(ddl.format(name=f"{table}_ref"))
        # The driver formats with %: the SQL's own % are doubled.
        await conn.exec_driver_sql(load.format(path=source.resolve()).replace("%", "%%"))
        warnings = (await conn.exec_driver_sql("SHOW WARNINGS")).all()
    assert warnings == []  # LOAD DATA converted every value without a note

    producer = settings.producer.model_copy(update={"csv": fmt})
    worker = settings.worker.model_copy(update={"idle_exit_s": 0.5, "flush_age_s": 0.1})
    settings = settings.model_copy(update={"producer": producer, "worker": worker})
    report = await produce(settings, str(source), table)
    assert (report.rows_read, report.rows_rejected) == (rows, 0)
    stats = await Worker(settings).run()
    assert (stats.batch_failures, stats.messages_poison) == (0, 0)

    async with engine.connect() as conn:
        rejects = (
            await conn.execute(sa.select(sa.func.count()).select_from(rejected_rows))
        ).scalar()
    assert rejects == 0
    loaded = await _table_checksum(engine, table, columns)
    reference = await _table_checksum(engine, f"{table}_ref", columns)
    assert loaded[0] == rows
    assert loaded == reference

    verified = await verify_source(settings, engine, str(source), table)
    assert verified.ok, verified.line()
    assert (verified.target_rows, verified.rejected_rows) == (rows, 0)
