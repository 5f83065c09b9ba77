"""headrace: move big CSV drops into MySQL through SQS."""

from headrace.errors import (
    ConfigError,
    DatabaseUnavailable,
    EnvelopeError,
    HeadraceError,
    InputError,
    QueueError,
    SchemaError,
)
from headrace.settings import Settings, load_settings

__all__ = [
    "ConfigError",
    "DatabaseUnavailable",
    "EnvelopeError",
    "HeadraceError",
    "InputError",
    "QueueError",
    "SchemaError",
    "Settings",
    "__version__",
    "load_settings",
]

__version__ = "0.1.0"
