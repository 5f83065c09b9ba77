"""The one exception hierarchy of headrace."""

from __future__ import annotations

__all__ = [
    "ConfigError",
    "DatabaseUnavailable",
    "EnvelopeError",
    "HeadraceError",
    "InputError",
    "QueueError",
    "QueueUnavailable",
    "SchemaError",
    "TableNotFound",
]


class HeadraceError(Exception):
    """Base class of every error headrace raises on purpose.

    ``transient`` says whether the same call may succeed when made again later: the one
    question :func:`headrace.retry.retry` asks. Errors of the outside world (botocore,
    SQLAlchemy) are turned into these at one boundary per backend.
    """

    transient = False


class ConfigError(HeadraceError):
    """Settings are missing or inconsistent."""


class SchemaError(HeadraceError):
    """The CSV header or a message does not fit the target table."""


class TableNotFound(SchemaError):
    """The target table does not exist (yet: a migration may be under way)."""


class InputError(HeadraceError):
    """A source file cannot be read as CSV; names file, line and column."""

    def __init__(
        self, message: str, *, source: str, line: int | None = None, column: int | None = None
    ) -> None:
        self.source = source
        self.line = line
        self.column = column
        where = source
        if line is not None:
            where += f":{line}"
            if column is not None:
                where += f":{column}"
        super().__init__(f"{where}: {message}")


class EnvelopeError(HeadraceError):
    """A message body is not a valid headrace envelope (a poison message)."""


class QueueError(HeadraceError):
    """SQS refused a request that retries could not fix."""


class QueueUnavailable(QueueError):
    """SQS did not answer, throttled or failed on its side: worth another try later."""

    transient = True


class DatabaseUnavailable(HeadraceError):
    """The database could not be reached (or keeps failing transiently): try again later."""

    transient = True
